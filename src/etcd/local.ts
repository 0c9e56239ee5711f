/**
 * The local providers as k8s.io/apiserver pkg/storage/value/encrypt/{aes,secretbox,identity} do
 * them: AES-GCM and AES-CBC (also the data ciphers of the KMS envelopes), secretbox, identity.
 */
import { createCipheriv, createDecipheriv, randomBytes, type CipherGCMTypes } from 'node:crypto';
import { decodeKey } from '../config/keys';
import { ENCRYPTED_PREFIX, ENCRYPTED_PREFIX_BYTES, startsWith, stripPrefix, type ValueTransformer } from './value';

export type LocalKind = 'aescbc' | 'aesgcm' | 'secretbox';

const GCM_NONCE = 12;
const GCM_TAG = 16;
const CBC_BLOCK = 16;
const SECRETBOX_NONCE = 24; // nacl.secretbox.nonceLength
const SECRETBOX_OVERHEAD = 16; // nacl.secretbox.overheadLength

/** tweetnacl on first use: most runs never see secretbox and need not load it (~2 MB of RSS). */
type Nacl = typeof import('tweetnacl');
let naclModule: Promise<Nacl> | undefined;
// A CommonJS module: under Node's ESM its exports are the default export.
const secretbox = async () => {
  const m = await (naclModule ??= import('tweetnacl'));
  return ((m as { default?: Nacl }).default ?? m).secretbox;
};

function gcmAlgorithm(key: Buffer): CipherGCMTypes {
  if (![16, 24, 32].includes(key.length)) throw new Error(`invalid AES key size ${key.length}`);
  return `aes-${key.length * 8}-gcm` as CipherGCMTypes;
}

/** nonce(12) || ciphertext || tag(16), additional data = the etcd key. */
export function gcmSeal(key: Buffer, plaintext: Uint8Array, aad: string): Buffer {
  const nonce = randomBytes(GCM_NONCE);
  const c = createCipheriv(gcmAlgorithm(key), key, nonce, { authTagLength: GCM_TAG });
  c.setAAD(Buffer.from(aad, 'utf8'));
  const body = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([nonce, body, c.getAuthTag()]);
}

export function gcmOpen(key: Buffer, data: Buffer, aad: string): Buffer {
  if (data.length < GCM_NONCE + GCM_TAG) {
    throw new Error('the stored data was shorter than the required size');
  }
  const nonce = data.subarray(0, GCM_NONCE);
  const tag = data.subarray(data.length - GCM_TAG);
  const d = createDecipheriv(gcmAlgorithm(key), key, nonce, { authTagLength: GCM_TAG });
  d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(tag);
  try {
    return Buffer.concat([d.update(data.subarray(GCM_NONCE, data.length - GCM_TAG)), d.final()]);
  } catch {
    throw new Error(
      'cipher: message authentication failed (wrong key, a corrupted value, or a value copied from another etcd key)',
    );
  }
}

/** IV(16) || AES-CBC(PKCS#7 padded plaintext); no MAC. */
function cbcSeal(key: Buffer, plaintext: Uint8Array): Buffer {
  const iv = randomBytes(CBC_BLOCK);
  const c = createCipheriv(`aes-${key.length * 8}-cbc`, key, iv);
  return Buffer.concat([iv, c.update(plaintext), c.final()]);
}

export function cbcOpen(key: Buffer, data: Buffer): Buffer {
  if (data.length < CBC_BLOCK) throw new Error('the stored data was shorter than the required size');
  const body = data.subarray(CBC_BLOCK);
  if (body.length % CBC_BLOCK !== 0) {
    throw new Error('the stored data is not a multiple of the block size');
  }
  const d = createDecipheriv(`aes-${key.length * 8}-cbc`, key, data.subarray(0, CBC_BLOCK));
  d.setAutoPadding(false);
  const out = Buffer.concat([d.update(body), d.final()]);
  // Checked by hand to report what upstream reports; with no MAC, a wrong key shows up here.
  const pad = out.length ? out[out.length - 1]! : 0;
  if (pad === 0 || pad > out.length || pad > CBC_BLOCK) {
    throw new Error('invalid PKCS7 data (empty or not padded): wrong key or a corrupted value');
  }
  for (let i = out.length - pad; i < out.length; i++) {
    if (out[i] !== pad) throw new Error('invalid padding on input: wrong key or a corrupted value');
  }
  return out.subarray(0, out.length - pad);
}

// ---------------------------------------------------------------------------------------------
// Local providers and identity.

/**
 * One key of an aescbc / aesgcm / secretbox provider. The key is checked (base64, length) here;
 * errors name the key, never its bytes.
 */
export function localTransformer(kind: LocalKind, keyName: string, keyBase64: string): ValueTransformer {
  const key = decodeKey(kind, keyBase64, `the ${kind} key "${keyName}"`);
  const prefix = `${ENCRYPTED_PREFIX}${kind}:v1:${keyName}:`;
  const withPrefix = (payload: Buffer) => Buffer.concat([Buffer.from(prefix, 'latin1'), payload]);
  const fail = (err: unknown): never => {
    throw new Error(`${kind} key "${keyName}": ${(err as Error).message}`);
  };
  switch (kind) {
    case 'aescbc':
      return {
        prefix,
        encrypt: async (plaintext) => withPrefix(cbcSeal(key, plaintext)),
        decrypt: async (stored) => {
          const body = stripPrefix(stored, prefix);
          try {
            return cbcOpen(key, body);
          } catch (err) {
            return fail(err);
          }
        },
      };
    case 'aesgcm':
      return {
        prefix,
        encrypt: async (plaintext, etcdKey) => withPrefix(gcmSeal(key, plaintext, etcdKey)),
        decrypt: async (stored, etcdKey) => {
          const body = stripPrefix(stored, prefix);
          try {
            return gcmOpen(key, body, etcdKey);
          } catch (err) {
            return fail(err);
          }
        },
      };
    case 'secretbox': {
      const k = new Uint8Array(key);
      return {
        prefix,
        encrypt: async (plaintext) => {
          const nonce = randomBytes(SECRETBOX_NONCE);
          const box = (await secretbox())(new Uint8Array(plaintext), new Uint8Array(nonce), k);
          return withPrefix(Buffer.concat([nonce, Buffer.from(box)]));
        },
        decrypt: async (stored) => {
          const body = stripPrefix(stored, prefix);
          if (body.length < SECRETBOX_NONCE + SECRETBOX_OVERHEAD) {
            return fail(new Error('the stored data was shorter than the required size'));
          }
          const opened = (await secretbox()).open(
            new Uint8Array(body.subarray(SECRETBOX_NONCE)),
            new Uint8Array(body.subarray(0, SECRETBOX_NONCE)),
            k,
          );
          if (!opened) {
            return fail(new Error('authentication failed: wrong key or a corrupted value'));
          }
          return Buffer.from(opened);
        },
      };
    }
  }
}

/** `identity: {}`: stores plaintext; refuses to "decrypt" a value that is encrypted. */
export function identityTransformer(): ValueTransformer {
  return {
    prefix: '',
    encrypt: async (plaintext) => Buffer.from(plaintext),
    decrypt: async (stored) => {
      if (startsWith(stored, ENCRYPTED_PREFIX_BYTES)) {
        throw new Error('identity transformer tried to read encrypted data');
      }
      return Buffer.from(stored);
    },
  };
}
