/**
 * The data ciphers of pkg/storage/value/encrypt: aes (GCM, CBC, and the HKDF extended-nonce GCM of
 * KMS v2 seeds) and secretbox, on node:crypto and tweetnacl, with upstream's error texts.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import nacl from 'tweetnacl';
import type { Transformer } from './transformer';

const BLOCK = 16;

const aesName = (key: Buffer, mode: 'gcm' | 'cbc') => {
  // aes.NewCipher
  if (key.length !== 16 && key.length !== 24 && key.length !== 32) throw new Error(`crypto/aes: invalid key size ${key.length}`);
  return `aes-${key.length * 8}-${mode}`;
};

/** aes.NewGCMTransformer: random 12-byte nonce || sealed data with its 16-byte tag; the etcd key authenticated. */
export function gcmTransformer(key: Buffer): Transformer {
  const name = aesName(key, 'gcm') as 'aes-256-gcm';
  return {
    async fromStorage(data, ctx) {
      if (data.length < 12) throw new Error('the stored data was shorter than the required size');
      if (data.length < 12 + 16) throw new Error('cipher: message authentication failed');
      const d = createDecipheriv(name, key, data.subarray(0, 12));
      d.setAAD(ctx);
      d.setAuthTag(data.subarray(data.length - 16));
      try {
        return { out: Buffer.concat([d.update(data.subarray(12, data.length - 16)), d.final()]), stale: false };
      } catch {
        throw new Error('cipher: message authentication failed');
      }
    },
    async toStorage(data, ctx) {
      const nonce = randomBytes(12);
      const c = createCipheriv(name, key, nonce);
      c.setAAD(ctx);
      const sealed = Buffer.concat([c.update(data), c.final()]);
      return Buffer.concat([nonce, sealed, c.getAuthTag()]);
    },
  };
}

/** aes.NewCBCTransformer: random IV || CBC with PKCS#7 padding checked as upstream does (no MAC). */
export function cbcTransformer(key: Buffer): Transformer {
  const name = aesName(key, 'cbc');
  return {
    async fromStorage(data) {
      if (data.length < BLOCK) throw new Error('the stored data was shorter than the required size');
      const body = data.subarray(BLOCK);
      if (body.length % BLOCK !== 0) throw new Error('the stored data is not a multiple of the block size');
      const d = createDecipheriv(name, key, data.subarray(0, BLOCK)).setAutoPadding(false);
      const result = Buffer.concat([d.update(body), d.final()]);
      const c = result.at(-1) ?? 0;
      if (c === 0 || c > result.length) throw new Error('invalid PKCS7 data (empty or not padded)');
      if (!result.subarray(result.length - c).every((b) => b === c)) throw new Error('invalid padding on input');
      return { out: result.subarray(0, result.length - c), stale: false };
    },
    async toStorage(data) {
      const pad = BLOCK - (data.length % BLOCK);
      const iv = randomBytes(BLOCK);
      const c = createCipheriv(name, key, iv).setAutoPadding(false);
      return Buffer.concat([iv, c.update(Buffer.concat([data, Buffer.alloc(pad, pad)])), c.final()]);
    },
  };
}

/** secretbox.NewSecretboxTransformer: 24-byte random nonce || XSalsa20-Poly1305 box. */
export function secretboxTransformer(key: Buffer): Transformer {
  const k = new Uint8Array(key);
  return {
    async fromStorage(data) {
      if (data.length < 24 + nacl.secretbox.overheadLength) throw new Error('the stored data was shorter than the required size');
      const opened = nacl.secretbox.open(new Uint8Array(data.subarray(24)), new Uint8Array(data.subarray(0, 24)), k);
      if (!opened) throw new Error('output array was not large enough for encryption');
      return { out: Buffer.from(opened), stale: false };
    },
    async toStorage(data) {
      const nonce = nacl.randomBytes(24);
      return Buffer.concat([nonce, nacl.secretbox(new Uint8Array(data), nonce, k)]);
    },
  };
}

export const MIN_SEED_SIZE = 32;
const INFO_SIZE = 32;

/**
 * aes.NewHKDFExtendedNonceGCMTransformer: per write 32 random info bytes, key =
 * HKDF-Expand(SHA-256, seed, info) (no Extract step), then info || GCM under that key. A 32-byte
 * key is one HMAC block: T(1) = HMAC(seed, info || 0x01).
 */
export function extendedNonceGcmTransformer(seed: Buffer): Transformer {
  if (seed.length < MIN_SEED_SIZE) throw new Error(`invalid seed length ${seed.length} used for key generation`);
  const derived = (info: Buffer) => gcmTransformer(createHmac('sha256', seed).update(info).update(Buffer.of(1)).digest());
  return {
    async fromStorage(data, ctx) {
      if (data.length < INFO_SIZE) throw new Error('the stored data was shorter than the required size');
      return derived(data.subarray(0, INFO_SIZE)).fromStorage(data.subarray(INFO_SIZE), ctx);
    },
    async toStorage(data, ctx) {
      const info = randomBytes(INFO_SIZE);
      return Buffer.concat([info, await derived(info).toStorage(data, ctx)]);
    },
  };
}
