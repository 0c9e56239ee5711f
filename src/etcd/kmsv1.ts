/** The KMS v1 envelope (k8s.io/apiserver .../envelope/envelope.go). */
import { randomBytes } from 'node:crypto';
import { cbcOpen, gcmOpen, gcmSeal } from './local';
import { BoundedCache, ENCRYPTED_PREFIX, stripPrefix, type ValueTransformer } from './value';

export interface KmsV1Service {
  encrypt(plaintext: Uint8Array): Promise<Uint8Array>;
  decrypt(ciphertext: Uint8Array): Promise<Uint8Array>;
}

/**
 * `k8s:enc:kms:v1:NAME:` || uint16 big-endian length of the encrypted DEK || encrypted DEK ||
 * data under the DEK. Every write generates a new 32-byte DEK and calls the plugin (upstream
 * does the same). Since 1.25 the data is AES-GCM (nonce || ciphertext || tag, etcd key as
 * additional data); 1.24 wrote AES-CBC, which is still read as a fallback.
 */
export function kmsV1Transformer(name: string, service: KmsV1Service, cacheSize = 1000): ValueTransformer {
  const prefix = `${ENCRYPTED_PREFIX}kms:v1:${name}:`;
  const cache = new BoundedCache<Buffer>(Math.max(1, cacheSize));
  return {
    prefix,
    async encrypt(plaintext, etcdKey) {
      const dek = randomBytes(32);
      let wrapped: Uint8Array;
      try {
        wrapped = await service.encrypt(dek);
      } catch (err) {
        throw new Error(`kms v1 provider "${name}": failed to encrypt DEK: ${(err as Error).message}`);
      }
      if (wrapped.length > 0xffff) throw new Error(`kms v1 provider "${name}": encrypted DEK is too long`);
      const len = Buffer.alloc(2);
      len.writeUInt16BE(wrapped.length);
      cache.set(Buffer.from(wrapped).toString('base64'), dek);
      return Buffer.concat([Buffer.from(prefix, 'latin1'), len, Buffer.from(wrapped), gcmSeal(dek, plaintext, etcdKey)]);
    },
    async decrypt(stored, etcdKey) {
      const body = stripPrefix(stored, prefix);
      if (body.length < 2 || body.length < 2 + body.readUInt16BE(0)) {
        throw new Error(
          'invalid data encountered by envelope transformer: failed to read uint16 length prefixed data',
        );
      }
      const n = body.readUInt16BE(0);
      const wrapped = body.subarray(2, 2 + n);
      const data = body.subarray(2 + n);
      const ck = wrapped.toString('base64');
      let dek = cache.get(ck);
      if (!dek) {
        try {
          dek = Buffer.from(await service.decrypt(wrapped));
        } catch (err) {
          throw new Error(`kms v1 provider "${name}": failed to decrypt DEK: ${(err as Error).message}`);
        }
        cache.set(ck, dek);
      }
      const errs: string[] = [];
      for (const open of [() => gcmOpen(dek, data, etcdKey), () => cbcOpen(dek, data)]) {
        try {
          return open();
        } catch (err) {
          errs.push((err as Error).message);
        }
      }
      throw new Error(`kms v1 provider "${name}": [${errs.join(', ')}]`);
    },
  };
}

/** For a KMS provider the caller cannot reach: values are recognised by prefix, not decrypted. */
export function unreachableKmsTransformer(apiVersion: 'v1' | 'v2', name: string): ValueTransformer {
  const prefix = `${ENCRYPTED_PREFIX}kms:${apiVersion}:${name}:`;
  const refuse = async (): Promise<never> => {
    throw new Error(`kms ${apiVersion} provider "${name}": no connection to its plugin in this process`);
  };
  return { prefix, encrypt: refuse, decrypt: refuse };
}
