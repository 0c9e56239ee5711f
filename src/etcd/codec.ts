/**
 * The apiserver's storage transformers, byte for byte: what kube-apiserver writes to etcd for each
 * EncryptionConfiguration provider and how it reads it back (k8s.io/apiserver
 * pkg/storage/value/...). Pure crypto, no I/O; KMS plugins are reached through the service
 * interfaces the caller passes in.
 *
 * Error messages never contain key material: they name the provider, the key name and the
 * upstream reason only.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  randomBytes,
  randomUUID,
  type CipherGCMTypes,
} from 'node:crypto';
import nacl from 'tweetnacl';
import { decodeKey } from '../config/keys';
import { providerKinds, type EncryptionConfiguration, type ProviderConfig } from '../config/schema';
import { ProtoWriter, readFields } from './protobuf';

/** One provider key as the apiserver applies it to a stored value. */
export interface ValueTransformer {
  /** e.g. `k8s:enc:aescbc:v1:key1:`; '' for identity (plaintext). */
  readonly prefix: string;
  /** Returns the FULL stored value, prefix included. */
  encrypt(plaintext: Uint8Array, etcdKey: string): Promise<Buffer>;
  /** Takes the FULL stored value, prefix included. */
  decrypt(stored: Uint8Array, etcdKey: string): Promise<Buffer>;
}

export type LocalKind = 'aescbc' | 'aesgcm' | 'secretbox';

export const ENCRYPTED_PREFIX = 'k8s:enc:';
const ENCRYPTED_PREFIX_BYTES = Buffer.from(ENCRYPTED_PREFIX);
const PROTOBUF_MAGIC = Buffer.from('k8s\0', 'latin1');

const GCM_NONCE = 12;
const GCM_TAG = 16;
const CBC_BLOCK = 16;
const SECRETBOX_NONCE = nacl.secretbox.nonceLength; // 24

const asBuffer = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

function startsWith(data: Uint8Array, prefix: string | Buffer): boolean {
  const p = typeof prefix === 'string' ? Buffer.from(prefix, 'latin1') : prefix;
  if (data.length < p.length) return false;
  return asBuffer(data).subarray(0, p.length).equals(p);
}

function stripPrefix(stored: Uint8Array, prefix: string): Buffer {
  if (!startsWith(stored, prefix)) {
    throw new Error(`the stored value does not carry the prefix ${JSON.stringify(prefix)}`);
  }
  return asBuffer(stored).subarray(Buffer.byteLength(prefix, 'latin1'));
}

// ---------------------------------------------------------------------------------------------
// AES-GCM and AES-CBC as k8s.io/apiserver/pkg/storage/value/encrypt/aes does them.

function gcmAlgorithm(key: Buffer): CipherGCMTypes {
  if (![16, 24, 32].includes(key.length)) throw new Error(`invalid AES key size ${key.length}`);
  return `aes-${key.length * 8}-gcm` as CipherGCMTypes;
}

/** nonce(12) || ciphertext || tag(16), additional data = the etcd key. */
function gcmSeal(key: Buffer, plaintext: Uint8Array, aad: string): Buffer {
  const nonce = randomBytes(GCM_NONCE);
  const c = createCipheriv(gcmAlgorithm(key), key, nonce, { authTagLength: GCM_TAG });
  c.setAAD(Buffer.from(aad, 'utf8'));
  const body = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([nonce, body, c.getAuthTag()]);
}

function gcmOpen(key: Buffer, data: Buffer, aad: string): Buffer {
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

function cbcOpen(key: Buffer, data: Buffer): Buffer {
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
          const box = nacl.secretbox(new Uint8Array(plaintext), new Uint8Array(nonce), k);
          return withPrefix(Buffer.concat([nonce, Buffer.from(box)]));
        },
        decrypt: async (stored) => {
          const body = stripPrefix(stored, prefix);
          if (body.length < SECRETBOX_NONCE + nacl.secretbox.overheadLength) {
            return fail(new Error('the stored data was shorter than the required size'));
          }
          const opened = nacl.secretbox.open(
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

// ---------------------------------------------------------------------------------------------
// KMS v2 (k8s.io/apiserver .../envelope/kmsv2/envelope.go, v2/api.proto).

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
    } else if (f.field === 5 && f.int !== undefined) o.encryptedDEKSourceType = f.int;
  }
  validateEncryptedObject(o);
  return o;
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

/** A bounded map: the oldest entry goes first when it is full. */
class BoundedCache<V> {
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

// ---------------------------------------------------------------------------------------------
// KMS v1 (k8s.io/apiserver .../envelope/envelope.go).

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

// ---------------------------------------------------------------------------------------------
// Recognising stored values.

export type ValueKind =
  | 'plaintext-protobuf'
  | 'plaintext-json'
  | 'aescbc'
  | 'aesgcm'
  | 'secretbox'
  | 'kms'
  | 'unknown';

export interface ValueClass {
  kind: ValueKind;
  /** The full `k8s:enc:...:` prefix, for encrypted values. */
  prefix?: string;
  /** The key name (local providers) or the KMS provider name. */
  keyName?: string;
  kmsVersion?: 'v1' | 'v2';
}

const ENC_HEADER = /^k8s:enc:([a-z0-9]+):(v[0-9a-z]+):([^:]*):/;

/**
 * What a raw etcd value is, from its first bytes. Key names are read up to the next ':'
 * (upstream writes `NAME:` right after the version; KMS v2 forbids ':' in names).
 */
export function classifyValue(raw: Uint8Array): ValueClass {
  const b = asBuffer(raw);
  if (startsWith(b, PROTOBUF_MAGIC)) return { kind: 'plaintext-protobuf' };
  if (startsWith(b, ENCRYPTED_PREFIX_BYTES)) {
    const head = b.subarray(0, 512).toString('latin1');
    const m = ENC_HEADER.exec(head);
    if (!m) return { kind: 'unknown' };
    const [prefix, kind, version, keyName] = m as unknown as [string, string, string, string];
    if ((kind === 'aescbc' || kind === 'aesgcm' || kind === 'secretbox') && version === 'v1') {
      return { kind, prefix, keyName };
    }
    if (kind === 'kms' && (version === 'v1' || version === 'v2')) {
      return { kind: 'kms', prefix, keyName, kmsVersion: version };
    }
    return { kind: 'unknown', prefix };
  }
  let i = 0;
  while (i < b.length && (b[i] === 0x20 || b[i] === 0x09 || b[i] === 0x0a || b[i] === 0x0d)) i++;
  if (b[i] === 0x7b) return { kind: 'plaintext-json' };
  return { kind: 'unknown' };
}

/** A short label for reports: `aescbc:key1`, `kms:v2:name`, `plaintext`, `unknown`. */
export function valueLabel(c: ValueClass): string {
  switch (c.kind) {
    case 'plaintext-protobuf':
    case 'plaintext-json':
      return 'plaintext';
    case 'kms':
      return `kms:${c.kmsVersion}:${c.keyName}`;
    case 'unknown':
      return 'unknown';
    default:
      return `${c.kind}:${c.keyName}`;
  }
}

/** The label values written through this transformer get (`plaintext` for identity). */
export function transformerLabel(t: ValueTransformer): string {
  return t.prefix === '' ? 'plaintext' : valueLabel(classifyValue(Buffer.from(t.prefix, 'latin1')));
}

/**
 * Plaintext as the apiserver stores objects: the protobuf envelope `k8s\0` + runtime.Unknown
 * (typeMeta = 1, raw = 2, ...) that parses to its end, or a JSON document. aescbc has no MAC, so
 * this is what catches a wrong key that happened to leave valid padding.
 */
export function looksLikeStoredObject(plaintext: Uint8Array): boolean {
  const k = classifyValue(plaintext).kind;
  if (k === 'plaintext-json') {
    try {
      JSON.parse(asBuffer(plaintext).toString('utf8'));
      return true;
    } catch {
      return false;
    }
  }
  if (k !== 'plaintext-protobuf') return false;
  try {
    const fields = readFields(plaintext.subarray(PROTOBUF_MAGIC.length));
    return fields.some((f) => f.field === 1 && f.bytes) && fields.some((f) => f.field === 2 && f.bytes);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Which transformers apply to a resource.

/** The group of `resource.group` ('' for core), as schema.ParseGroupResource splits it. */
function groupOf(resource: string): string {
  const dot = resource.indexOf('.');
  return dot === -1 ? '' : resource.slice(dot + 1);
}

/**
 * Whether an EncryptionConfiguration resource entry covers a resource: exact names
 * (`secrets`, `widgets.example.com`), `*.*` (everything), `*.GROUP`, and `*.` (the core group).
 */
export function resourceMatches(pattern: string, resource: string): boolean {
  if (pattern === '*.*') return true;
  if (pattern.startsWith('*.')) return groupOf(resource) === pattern.slice(2);
  return pattern === resource;
}

export type KmsV1Factory = (name: string, endpoint: string, timeoutMs: number) => KmsV1Service;
export type KmsV2Factory = (name: string, endpoint: string, timeoutMs: number) => KmsV2Service;

/** Go duration strings as the kms `timeout` field takes them (`3s`, `500ms`, `1m30s`). */
export function parseGoDuration(text: string): number {
  const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, µs: 0.001, ns: 0.000001 };
  const re = /(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * units[m[2]!]!;
    matched += m[0].length;
  }
  if (text === '' || matched !== text.length) throw new Error(`invalid duration "${text}"`);
  return total;
}

function providerTransformers(
  p: ProviderConfig,
  kms?: { v1?: KmsV1Factory; v2?: KmsV2Factory },
): ValueTransformer[] {
  const [kind] = providerKinds(p);
  switch (kind) {
    case 'aescbc':
    case 'aesgcm':
    case 'secretbox':
      return p[kind]!.keys.map((k) => localTransformer(kind, k.name, k.secret));
    case 'identity':
      return [identityTransformer()];
    case 'kms': {
      const c = p.kms!;
      const version = c.apiVersion ?? 'v1';
      const timeoutMs = parseGoDuration(c.timeout ?? '3s');
      if (version === 'v2') {
        return [kms?.v2 ? kmsV2Transformer(c.name, kms.v2(c.name, c.endpoint, timeoutMs)) : unreachableKmsTransformer('v2', c.name)];
      }
      if (version === 'v1') {
        return [
          kms?.v1
            ? kmsV1Transformer(c.name, kms.v1(c.name, c.endpoint, timeoutMs), c.cachesize ?? 1000)
            : unreachableKmsTransformer('v1', c.name),
        ];
      }
      throw new Error(`kms provider "${c.name}": unsupported apiVersion "${version}"`);
    }
    default:
      throw new Error('a provider element must set exactly one of aescbc, aesgcm, secretbox, identity or kms');
  }
}

/**
 * The transformers the apiserver would use for a resource: the providers of the first rule that
 * covers it, in order, one per key. `[]` when no rule covers it (the apiserver stores it as
 * plaintext). KMS providers without a factory get a transformer that recognises their prefix but
 * cannot decrypt.
 */
export function transformersForResource(
  cfg: EncryptionConfiguration,
  resource: string,
  kms?: { v1?: KmsV1Factory; v2?: KmsV2Factory },
): ValueTransformer[] {
  const rule = cfg.resources.find((r) => r.resources.some((p) => resourceMatches(p, resource)));
  return rule ? rule.providers.flatMap((p) => providerTransformers(p, kms)) : [];
}

// ---------------------------------------------------------------------------------------------
// Reading a stored value the way the apiserver does.

export interface Decoded {
  plaintext: Buffer;
  /** Which transformer read it. */
  index: number;
  /** Read through anything other than transformers[0]: the apiserver would rewrite it on update. */
  stale: boolean;
}

const LOCAL_GROUP = /^k8s:enc:(aescbc|aesgcm|secretbox):v1:/;
const NO_KEY_MESSAGE: Record<string, string> = {
  aescbc: 'no matching key was found for the provided AES transformer',
  aesgcm: 'no matching key was found for the provided AES transformer',
  secretbox: 'no matching key was found for the provided Secretbox transformer',
};

/**
 * Reads a stored value as the apiserver's prefix transformers do: providers in order, the first
 * whose prefix matches and that decrypts wins; a failing match does not stop later ones (two
 * providers of one kind share a prefix during rotation); identity reads only values without the
 * `k8s:enc:` prefix. With no transformers at all the resource is not encrypted (identity). Throws
 * with upstream's wording: "no matching prefix found", or "no matching key was found for the
 * provided AES transformer" when the provider matches but none of its keys does.
 */
export async function decodeStored(
  raw: Uint8Array,
  etcdKey: string,
  transformers: ValueTransformer[],
): Promise<Decoded> {
  const list = transformers.length ? transformers : [identityTransformer()];
  const errs: string[] = [];
  // Provider groups (one provider element = consecutive keys with the same `k8s:enc:KIND:v1:`)
  // whose prefix matched but none of whose keys did.
  let group: { prefix: string; kind: string; keyMatched: boolean } | undefined;
  const closeGroup = () => {
    if (group && !group.keyMatched) errs.push(NO_KEY_MESSAGE[group.kind]!);
    group = undefined;
  };
  for (const [index, t] of list.entries()) {
    const local = LOCAL_GROUP.exec(t.prefix);
    if (!local || local[0] !== group?.prefix) closeGroup();
    if (local && !group && startsWith(raw, local[0])) {
      group = { prefix: local[0], kind: local[1]!, keyMatched: false };
    }
    if (t.prefix === '') {
      if (startsWith(raw, ENCRYPTED_PREFIX_BYTES)) continue;
    } else if (!startsWith(raw, t.prefix)) {
      continue;
    }
    if (group) group.keyMatched = true;
    try {
      const plaintext = await t.decrypt(raw, etcdKey);
      return { plaintext, index, stale: index !== 0 };
    } catch (err) {
      errs.push((err as Error).message);
    }
  }
  closeGroup();
  const unique = [...new Set(errs)];
  if (unique.length === 1) throw new Error(unique[0]);
  if (unique.length > 1) throw new Error(`[${unique.join(', ')}]`);
  throw new Error('no matching prefix found');
}
