/**
 * KMS v1 (pkg/storage/value/encrypt/envelope/envelope.go): every write makes a new 32-byte DEK,
 * has the plugin wrap it, and stores uint16 length || wrapped DEK || data under the DEK. The data
 * cipher is a union: 1.25+ writes AES-GCM and still reads AES-CBC, 1.24 wrote AES-CBC and read both
 * (config.go envelopePrefixTransformer); reading through the second member is stale.
 */
import { randomBytes } from 'node:crypto';
import type { KmsV1Plugin } from '../kms-grpc';
import { atLeast, type KubeVersion } from '../version';
import { cbcTransformer, gcmTransformer } from './ciphers';
import { aggregate, type Transformer } from './transformer';

/** unionTransformers: writes with the first, reads with the first that works (stale unless the first). */
function unionTransformers(members: Transformer[]): Transformer {
  return {
    async fromStorage(data, ctx) {
      const errs: Error[] = [];
      for (const [i, t] of members.entries()) {
        try {
          const r = await t.fromStorage(data, ctx);
          return { out: r.out, stale: r.stale || i !== 0 };
        } catch (err) {
          errs.push(err as Error);
        }
      }
      throw aggregate(errs) ?? new Error('unionTransformers: unable to transform from storage');
    },
    toStorage: (data, ctx) => members[0]!.toStorage(data, ctx),
  };
}

/** A bounded LRU of DEK transformers by wrapped DEK (cachesize; negative disables it). */
class LruCache<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly size: number) {}
  get(k: string): V | undefined {
    const v = this.map.get(k);
    if (v !== undefined) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }
  set(k: string, v: V): void {
    if (this.size <= 0) return;
    this.map.delete(k);
    this.map.set(k, v);
    if (this.map.size > this.size) this.map.delete(this.map.keys().next().value!);
  }
}

export function kmsV1EnvelopeTransformer(plugin: KmsV1Plugin, cacheSize: number, version: KubeVersion): Transformer {
  const cache = new LruCache<Transformer>(cacheSize);
  const dataTransformer = (dek: Buffer) =>
    unionTransformers(atLeast(version, 25) ? [gcmTransformer(dek), cbcTransformer(dek)] : [cbcTransformer(dek), gcmTransformer(dek)]);
  return {
    async fromStorage(data, ctx) {
      if (data.length < 2 || data.length < 2 + data.readUInt16BE(0)) {
        throw new Error('invalid data encountered by envelope transformer: failed to read uint16 length prefixed data');
      }
      const encKey = data.subarray(2, 2 + data.readUInt16BE(0));
      const id = encKey.toString('latin1');
      let t = cache.get(id);
      if (!t) {
        t = dataTransformer(await plugin.decrypt(Buffer.from(encKey)));
        cache.set(id, t);
      }
      return t.fromStorage(data.subarray(2 + encKey.length), ctx);
    },
    async toStorage(data, ctx) {
      const dek = randomBytes(32);
      const encKey = await plugin.encrypt(dek);
      if (encKey.length > 0xffff) throw new Error('the encrypted DEK is longer than 65535 bytes');
      const t = dataTransformer(dek);
      cache.set(encKey.toString('latin1'), t);
      const len = Buffer.alloc(2);
      len.writeUInt16BE(encKey.length);
      return Buffer.concat([len, encKey, await t.toStorage(data, ctx)]);
    },
  };
}
