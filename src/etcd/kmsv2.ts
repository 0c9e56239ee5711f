/**
 * The KMS v2 envelope (k8s.io/apiserver .../envelope/kmsv2/envelope.go, v2/api.proto): the
 * EncryptedObject message, the HKDF seed DEK source of 1.29+, and the transformer.
 */
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { gcmOpen, gcmSeal } from './local';
import { ProtoWriter, readFields } from './protobuf';
import { BoundedCache, ENCRYPTED_PREFIX, stripPrefix, type ValueTransformer } from './value';

export interface KmsV2EncryptResponse {
  ciphertext: Uint8Array;
  keyId: string;
  annotations?: Record<string, Uint8Array>;
}
export interface KmsV2DecryptRequest {
  ciphertext: Uint8Array;
  keyId: string;
  annotations?: Record<string, Uint8Array>;
}
/** What the apiserver asks of a KMS v2 plugin (its gRPC service, as plain calls). */
export interface KmsV2Service {
  encrypt(uid: string, plaintext: Uint8Array): Promise<KmsV2EncryptResponse>;
  decrypt(uid: string, req: KmsV2DecryptRequest): Promise<Uint8Array>;
  status(): Promise<{ healthz: string; version: string; keyId: string }>;
}

/** EncryptedObject.encryptedDEKSourceType (field 5). */
export const DEK_SOURCE_AES_GCM_KEY = 0;
export const DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED = 1;

export interface EncryptedObject {
  /** field 1 */
  encryptedData: Buffer;
  /** field 2 */
  keyId: string;
  /** field 3 (named encryptedDEK before 1.29, same number) */
  encryptedDEKSource: Buffer;
  /** field 4, map<string, bytes> */
  annotations: Record<string, Buffer>;
  /** field 5 */
  encryptedDEKSourceType: number;
}

export function encodeEncryptedObject(o: EncryptedObject): Buffer {
  const w = new ProtoWriter()
    .bytes(1, o.encryptedData)
    .bytes(2, o.keyId)
    .bytes(3, o.encryptedDEKSource);
  // Go's proto.Marshal writes map entries in key order (deterministic output is not guaranteed,
  // but sorting keeps our own output stable).
  for (const k of Object.keys(o.annotations).sort()) {
    w.message(4, new ProtoWriter().bytes(1, k).bytes(2, o.annotations[k]));
  }
  return w.uint(5, o.encryptedDEKSourceType).finish();
}

export function decodeEncryptedObject(data: Uint8Array): EncryptedObject {
  const o: EncryptedObject = {
    encryptedData: Buffer.alloc(0),
    keyId: '',
    encryptedDEKSource: Buffer.alloc(0),
    annotations: {},
    encryptedDEKSourceType: 0,
  };
  for (const f of readFields(data)) {
    if (f.field === 1 && f.bytes) o.encryptedData = f.bytes;
    else if (f.field === 2 && f.bytes) o.keyId = f.bytes.toString('utf8');
    else if (f.field === 3 && f.bytes) o.encryptedDEKSource = f.bytes;
    else if (f.field === 4 && f.bytes) {
      let k = '';
      let v: Buffer = Buffer.alloc(0);
      for (const e of readFields(f.bytes)) {
        if (e.field === 1 && e.bytes) k = e.bytes.toString('utf8');
        else if (e.field === 2 && e.bytes) v = e.bytes;
      }
      o.annotations[k] = v;
    } else if (f.field === 5 && f.int !== undefined) o.encryptedDEKSourceType = Number(BigInt.asIntN(32, f.int)); // an enum is int32, as Go reads it
  }
  validateEncryptedObject(o);
  return o;
}

/**
 * The KMS key id a stored `k8s:enc:kms:v2:NAME:` value was written under (EncryptedObject.keyID,
 * kept in the clear), or undefined when the value is not a well-formed one of provider `name`.
 */
export function storedKmsV2KeyId(stored: Uint8Array, name: string): string | undefined {
  const prefix = `${ENCRYPTED_PREFIX}kms:v2:${name}:`;
  try {
    return decodeEncryptedObject(stripPrefix(stored, prefix)).keyId;
  } catch {
    return undefined;
  }
}

/** upstream ValidateEncryptedObject, same limits and wording. */
function validateEncryptedObject(o: EncryptedObject): void {
  if (
    o.encryptedDEKSourceType !== DEK_SOURCE_AES_GCM_KEY &&
    o.encryptedDEKSourceType !== DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED
  ) {
    throw new Error(`unknown encryptedDEKSourceType: ${o.encryptedDEKSourceType}`);
  }
  if (o.encryptedData.length === 0) throw new Error('encrypted data is empty');
  if (o.encryptedDEKSource.length === 0) {
    throw new Error('failed to validate encrypted DEK source: encrypted DEK source is empty');
  }
  if (o.encryptedDEKSource.length > 1024) {
    throw new Error(
      `failed to validate encrypted DEK source: encrypted DEK source is ${o.encryptedDEKSource.length} bytes, which exceeds the max size of 1024`,
    );
  }
  if (o.keyId.length === 0) throw new Error('failed to validate key id: keyID is empty');
  if (Buffer.byteLength(o.keyId) > 1024) {
    throw new Error('failed to validate key id: keyID exceeds the max size of 1024');
  }
  let size = 0;
  for (const [k, v] of Object.entries(o.annotations)) size += Buffer.byteLength(k) + v.length;
  if (size > 32 * 1024) {
    throw new Error(`failed to validate annotations: total size of annotations is ${size}, which exceeds the max size of 32768`);
  }
}

/** HKDF-Expand only (RFC 5869 §2.3) with SHA-256, as upstream's sha256KDFExpandOnly; no Extract. */
export function hkdfSha256Expand(prk: Uint8Array, info: Uint8Array, length: number): Buffer {
  const blocks: Buffer[] = [];
  let prev = Buffer.alloc(0);
  for (let i = 1; blocks.length * 32 < length; i++) {
    prev = createHmac('sha256', prk)
      .update(prev)
      .update(info)
      .update(Buffer.from([i]))
      .digest();
    blocks.push(prev);
  }
  return Buffer.concat(blocks).subarray(0, length);
}

/** 1.29+: info(32 random bytes) || nonce(12) || ciphertext || tag, key = HKDF-Expand(seed, info). */
const XNONCE_INFO = 32;
const SEED_SIZE = 32;

function seedSeal(seed: Buffer, plaintext: Uint8Array, etcdKey: string): Buffer {
  const info = randomBytes(XNONCE_INFO);
  const key = hkdfSha256Expand(seed, info, 32);
  return Buffer.concat([info, gcmSeal(key, plaintext, etcdKey)]);
}

function seedOpen(seed: Buffer, data: Buffer, etcdKey: string): Buffer {
  if (data.length < XNONCE_INFO) throw new Error('the stored data was shorter than the required size');
  const key = hkdfSha256Expand(seed, data.subarray(0, XNONCE_INFO), 32);
  return gcmOpen(key, data.subarray(XNONCE_INFO), etcdKey);
}

/** upstream generateCacheKey: type, uint16-prefixed source and key id, sorted annotations. */
function kmsV2CacheKey(o: Pick<EncryptedObject, 'encryptedDEKSourceType' | 'encryptedDEKSource' | 'keyId' | 'annotations'>): string {
  const u16 = (b: Buffer) => {
    const l = Buffer.alloc(2);
    l.writeUInt16BE(b.length);
    return [l, b];
  };
  const type = Buffer.alloc(4);
  type.writeUInt32BE(o.encryptedDEKSourceType);
  const parts = [type, ...u16(o.encryptedDEKSource), ...u16(Buffer.from(o.keyId))];
  const keys = Object.keys(o.annotations).sort();
  if (keys.length) {
    const n = Buffer.alloc(4);
    n.writeUInt32BE(keys.length);
    parts.push(n);
    for (const k of keys) parts.push(...u16(Buffer.from(k)), ...u16(o.annotations[k]!));
  }
  return Buffer.concat(parts).toString('base64');
}

export interface KmsV2TransformerOptions {
  /**
   * How often an encrypt asks the plugin's Status for its key id (upstream polls every minute
   * while healthy). A new key id makes the next write generate and wrap a new seed.
   */
  statusIntervalMs?: number;
  /**
   * How long the seed may still be used for writes after the last successful Status call
   * (upstream: 3 minutes; then writes fail until the plugin answers again).
   */
  writeTtlMs?: number;
  now?: () => number;
}

const toBuffers = (a: Record<string, Uint8Array> | undefined): Record<string, Buffer> =>
  Object.fromEntries(Object.entries(a ?? {}).map(([k, v]) => [k, Buffer.from(v)]));

/**
 * The KMS v2 envelope as kube-apiserver 1.29+ writes it: `k8s:enc:kms:v2:NAME:` followed by a
 * protobuf EncryptedObject. The DEK source is a 32-byte seed wrapped once by the plugin and reused
 * for every write (one Encrypt call per seed, not per object); each object gets its own AES-256-GCM
 * key HKDF-SHA256-expanded from the seed with 32 random bytes of info, and the etcd key as
 * additional data.
 *
 * Seed rotation, as upstream: a new seed is generated when the transformer is created (an
 * apiserver restart) and when the plugin's Status reports a key id other than the one the seed
 * was wrapped under; the old seeds stay readable through the plugin's Decrypt. Reads also accept
 * the 1.27/1.28 form (encryptedDEKSourceType AES_GCM_KEY: the unwrapped DEK is the AES-GCM key).
 */
export function kmsV2Transformer(
  name: string,
  service: KmsV2Service,
  options: KmsV2TransformerOptions = {},
): ValueTransformer {
  const prefix = `${ENCRYPTED_PREFIX}kms:v2:${name}:`;
  const statusIntervalMs = options.statusIntervalMs ?? 60_000;
  const writeTtlMs = options.writeTtlMs ?? 3 * 60_000;
  const now = options.now ?? Date.now;
  const readCache = new BoundedCache<{ type: number; key: Buffer }>(1000);

  interface WriteState {
    seed: Buffer;
    keyId: string;
    encryptedDEKSource: Buffer;
    annotations: Record<string, Buffer>;
    checkedAt: number;
  }
  let state: Promise<WriteState> | undefined;

  const newSeed = async (): Promise<WriteState> => {
    const seed = randomBytes(SEED_SIZE);
    let resp: KmsV2EncryptResponse;
    try {
      resp = await service.encrypt(randomUUID(), seed);
    } catch (err) {
      throw new Error(`kms v2 provider "${name}": failed to encrypt DEK, error: ${(err as Error).message}`);
    }
    const ws: WriteState = {
      seed,
      keyId: resp.keyId,
      encryptedDEKSource: Buffer.from(resp.ciphertext),
      annotations: toBuffers(resp.annotations),
      checkedAt: now(),
    };
    validateEncryptedObject({ ...ws, encryptedData: Buffer.from([0]), encryptedDEKSourceType: DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED });
    readCache.set(
      kmsV2CacheKey({ ...ws, encryptedDEKSourceType: DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED }),
      { type: DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED, key: seed },
    );
    return ws;
  };

  const writeState = async (): Promise<WriteState> => {
    if (!state) {
      state = newSeed();
      state.catch(() => (state = undefined));
    }
    const ws = await state;
    if (now() - ws.checkedAt < statusIntervalMs) return ws;
    let keyId: string;
    try {
      keyId = (await service.status()).keyId;
    } catch (err) {
      if (now() - ws.checkedAt <= writeTtlMs) return ws;
      throw new Error(
        `kms v2 provider "${name}": the plugin has not answered Status for ${Math.round((now() - ws.checkedAt) / 1000)}s; refusing to write with a seed that may be stale: ${(err as Error).message}`,
      );
    }
    if (keyId === ws.keyId) {
      ws.checkedAt = now();
      return ws;
    }
    // The plugin's key changed: wrap a fresh seed under it (once, shared by concurrent writers).
    if ((await state) === ws) {
      state = newSeed();
      state.catch(() => (state = undefined));
    }
    return state;
  };

  return {
    prefix,
    async encrypt(plaintext, etcdKey) {
      const ws = await writeState();
      const obj = encodeEncryptedObject({
        encryptedData: seedSeal(ws.seed, plaintext, etcdKey),
        keyId: ws.keyId,
        encryptedDEKSource: ws.encryptedDEKSource,
        annotations: ws.annotations,
        encryptedDEKSourceType: DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED,
      });
      return Buffer.concat([Buffer.from(prefix, 'latin1'), obj]);
    },
    async decrypt(stored, etcdKey) {
      const o = decodeEncryptedObject(stripPrefix(stored, prefix));
      const ck = kmsV2CacheKey(o);
      let entry = readCache.get(ck);
      if (!entry) {
        let key: Uint8Array;
        try {
          key = await service.decrypt(randomUUID(), {
            ciphertext: o.encryptedDEKSource,
            keyId: o.keyId,
            annotations: o.annotations,
          });
        } catch (err) {
          throw new Error(`kms v2 provider "${name}": failed to decrypt DEK, error: ${(err as Error).message}`);
        }
        if (o.encryptedDEKSourceType === DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED && key.length < SEED_SIZE) {
          throw new Error(`kms v2 provider "${name}": invalid seed length ${key.length} used for key generation`);
        }
        entry = { type: o.encryptedDEKSourceType, key: Buffer.from(key) };
        readCache.set(ck, entry);
      }
      try {
        return entry.type === DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED
          ? seedOpen(entry.key, o.encryptedData, etcdKey)
          : gcmOpen(entry.key, o.encryptedData, etcdKey);
      } catch (err) {
        throw new Error(`kms v2 provider "${name}": ${(err as Error).message}`);
      }
    },
  };
}
