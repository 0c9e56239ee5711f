/**
 * What every storage transformer shares: the interface the apiserver applies to a stored value
 * (k8s.io/apiserver pkg/storage/value), the `k8s:enc:` prefix, and byte helpers. Error messages
 * of every transformer never contain key material: they name the provider, the key name and the
 * upstream reason only.
 */

/** One provider key as the apiserver applies it to a stored value. */
export interface ValueTransformer {
  /** e.g. `k8s:enc:aescbc:v1:key1:`; '' for identity (plaintext). */
  readonly prefix: string;
  /** Returns the FULL stored value, prefix included. */
  encrypt(plaintext: Uint8Array, etcdKey: string): Promise<Buffer>;
  /** Takes the FULL stored value, prefix included. */
  decrypt(stored: Uint8Array, etcdKey: string): Promise<Buffer>;
}

export const ENCRYPTED_PREFIX = 'k8s:enc:';
export const ENCRYPTED_PREFIX_BYTES = Buffer.from(ENCRYPTED_PREFIX);
export const PROTOBUF_MAGIC = Buffer.from('k8s\0', 'latin1');

export const asBuffer = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

export function startsWith(data: Uint8Array, prefix: string | Buffer): boolean {
  const p = typeof prefix === 'string' ? Buffer.from(prefix, 'latin1') : prefix;
  if (data.length < p.length) return false;
  return asBuffer(data).subarray(0, p.length).equals(p);
}

export function stripPrefix(stored: Uint8Array, prefix: string): Buffer {
  if (!startsWith(stored, prefix)) {
    throw new Error(`the stored value does not carry the prefix ${JSON.stringify(prefix)}`);
  }
  return asBuffer(stored).subarray(Buffer.byteLength(prefix, 'latin1'));
}

/** A bounded map: the oldest entry goes first when it is full. */
export class BoundedCache<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly max: number) {}
  get(k: string): V | undefined {
    return this.map.get(k);
  }
  set(k: string, v: V): void {
    if (this.map.size >= this.max && !this.map.has(k)) {
      const oldest = this.map.keys().next().value;
      if (oldest !== undefined) this.map.delete(oldest);
    }
    this.map.set(k, v);
  }
}
