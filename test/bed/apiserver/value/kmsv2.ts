/**
 * KMS v2 as the apiserver runs it: the envelope (pkg/storage/value/encrypt/envelope/kmsv2/envelope.go)
 * and the per-provider state its probe keeps (server/options/encryptionconfig/config.go: prime at
 * load, Status every minute, a new DEK source when the key id changes, writes refused three
 * minutes after the last good Status). 1.29+ (gate KMSv2KDF) wraps a 32-byte seed and derives a key
 * per write with HKDF; 1.27/1.28 wrap one AES-GCM DEK. Reads are stale when the object's key id or
 * DEK source type is not the current one.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { cachedCheck, type KmsProbe } from '../kms';
import type { KmsV2Plugin } from '../kms-grpc';
import { encodeMessage, fields, mapEntry } from '../protobuf';
import { extendedNonceGcmTransformer, gcmTransformer } from './ciphers';
import { aggregate, type Transformer } from './transformer';

export const DEK_SOURCE_AES_GCM_KEY = 0;
export const DEK_SOURCE_HKDF_SEED = 1;

/** kmsv2/v2 EncryptedObject, fields by their numbers in upstream's api.proto. */
export type EncryptedObject = {
  /* 1 */ encryptedData: Buffer; /* 2 */ keyId: string; /* 3 */ encryptedDEKSource: Buffer;
  /* 4 */ annotations: Record<string, Buffer>; /* 5 */ encryptedDEKSourceType: number;
};

export function decodeEncryptedObject(data: Buffer): EncryptedObject {
  const o: EncryptedObject = { encryptedData: Buffer.alloc(0), keyId: '', encryptedDEKSource: Buffer.alloc(0), annotations: {}, encryptedDEKSourceType: 0 };
  for (const f of fields(data)) {
    if (f.no === 5 && f.n !== undefined) o.encryptedDEKSourceType = Number(f.n);
    if (!f.bytes) continue;
    if (f.no === 1) o.encryptedData = f.bytes;
    else if (f.no === 2) o.keyId = f.bytes.toString('utf8');
    else if (f.no === 3) o.encryptedDEKSource = f.bytes;
    else if (f.no === 4) {
      const [k, v] = mapEntry(f.bytes);
      o.annotations[k] = v;
    }
  }
  validate(o);
  return o;
}

export function encodeEncryptedObject(o: EncryptedObject): Buffer {
  validate(o);
  return encodeMessage([
    { no: 1, bytes: o.encryptedData },
    { no: 2, bytes: o.keyId },
    { no: 3, bytes: o.encryptedDEKSource },
    { no: 4, map: o.annotations },
    { no: 5, uint: o.encryptedDEKSourceType },
  ]);
}

/** ValidateEncryptedObject and ValidateKeyID, upstream's limits and texts. */
function validate(o: EncryptedObject): void {
  if (o.encryptedDEKSourceType !== DEK_SOURCE_AES_GCM_KEY && o.encryptedDEKSourceType !== DEK_SOURCE_HKDF_SEED) {
    throw new Error(`unknown encryptedDEKSourceType: ${o.encryptedDEKSourceType}`);
  }
  if (!o.encryptedData.length) throw new Error('encrypted data is empty');
  const n = o.encryptedDEKSource.length;
  if (n === 0 || n > 1024) {
    throw new Error(`failed to validate encrypted DEK source: ${n ? `encrypted DEK source is ${n} bytes, which exceeds the max size of 1024` : 'encrypted DEK source is empty'}`);
  }
  const keyIdError = validateKeyId(o.keyId);
  if (keyIdError) throw new Error(`failed to validate key id: ${keyIdError}`);
  const size = Object.entries(o.annotations).reduce((s, [k, v]) => s + Buffer.byteLength(k) + v.length, 0);
  if (size > 32 * 1024) throw new Error(`failed to validate annotations: total size of annotations is ${size}, which exceeds the max size of 32768`);
}

const validateKeyId = (keyId: string) =>
  keyId === '' ? 'keyID is empty' : Buffer.byteLength(keyId) > 1024 ? `keyID is ${Buffer.byteLength(keyId)} bytes, which exceeds the max size of 1024` : undefined;

const cacheKeyOf = (o: Omit<EncryptedObject, 'encryptedData'>) =>
  JSON.stringify([o.encryptedDEKSourceType, o.encryptedDEKSource.toString('base64'), o.keyId, Object.entries(o.annotations).sort().map(([k, v]) => [k, v.toString('base64')])]);

interface State {
  transformer: Transformer;
  object: Omit<EncryptedObject, 'encryptedData'>;
  expiresAt: number;
  cacheKey: string;
}

const POLL_OK_MS = 60_000; // kmsv2PluginHealthzPositiveInterval
const POLL_FAILING_MS = 1_000; // kmsv2PluginHealthzNegativeInterval
const WRITE_TTL_MS = 3 * 60_000; // kmsv2PluginWriteDEKSourceMaxTTL

export class KmsV2Provider implements KmsProbe {
  readonly apiVersion = 'v2';
  private state?: State;
  private statusVersion?: string;
  private readonly cache = new Map<string, Transformer>();
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    readonly name: string,
    private readonly plugin: KmsV2Plugin,
    private readonly useSeed: boolean,
  ) {}

  /** primeAndProbeKMSv2: one check inline, then the poll (fast while failing). */
  async start(): Promise<void> {
    let ok = await this.check().then(() => true, () => false);
    const next = () => {
      if (this.stopped) return;
      this.timer = setTimeout(async () => {
        ok = await this.check().then(() => true, () => false);
        next();
      }, ok ? POLL_OK_MS : POLL_FAILING_MS);
      this.timer.unref();
    };
    next();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** The probe: Status, then maybe a new DEK source. */
  readonly check = cachedCheck(() => this.statusAndMaybeRotate());

  private async statusAndMaybeRotate(): Promise<void> {
    let s;
    try {
      s = await this.plugin.status();
    } catch (err) {
      throw new Error(`failed to perform status section of the healthz check for KMS Provider ${this.name}, error: ${(err as Error).message}`);
    }
    const errs: Error[] = [];
    if (s.healthz !== 'ok') errs.push(new Error(`got unexpected healthz status: ${s.healthz}`));
    if (s.version !== 'v2' && s.version !== 'v2beta1') errs.push(new Error(`expected KMSv2 API version v2, got ${s.version}`));
    else if ((this.statusVersion ??= s.version) !== s.version) {
      errs.push(new Error(`KMSv2 API version should not change after the initial status response version ${this.statusVersion}, got ${s.version}`));
    }
    const keyIdError = validateKeyId(s.keyId);
    if (keyIdError) errs.push(new Error(`got invalid KMSv2 KeyID: ${keyIdError}`));
    else await this.rotateOnKeyIdChange(s.keyId).catch((e: Error) => errs.push(e));
    const err = aggregate(errs);
    if (err) throw new Error(`kmsv2 Provider ${this.name} is not healthy, error: ${err.message}`);
  }

  private async rotateOnKeyIdChange(statusKeyId: string): Promise<void> {
    const expiresAt = Date.now() + WRITE_TTL_MS;
    const type = this.useSeed ? DEK_SOURCE_HKDF_SEED : DEK_SOURCE_AES_GCM_KEY;
    if (this.state && this.state.object.keyId === statusKeyId && this.state.object.encryptedDEKSourceType === type) {
      this.state.expiresAt = expiresAt;
      return;
    }
    // GenerateTransformer
    const key = randomBytes(32);
    const uid = randomUUID();
    let object: State['object'];
    try {
      const resp = await this.plugin.encrypt(uid, key);
      object = { keyId: resp.keyId, encryptedDEKSource: resp.ciphertext, annotations: resp.annotations, encryptedDEKSourceType: type };
      validate({ ...object, encryptedData: Buffer.of(0) });
    } catch (err) {
      throw new Error(`failed to rotate DEK uid="${uid}", errGen=failed to encrypt DEK, error: ${(err as Error).message}`);
    }
    if (object.keyId !== statusKeyId) throw new Error(`failed to rotate DEK uid="${uid}": the key id of Encrypt is not the one Status reported`);
    const transformer = this.useSeed ? extendedNonceGcmTransformer(key) : gcmTransformer(key);
    this.state = { transformer, object, expiresAt, cacheKey: cacheKeyOf(object) };
  }

  private current(): State {
    if (!this.state) throw new Error('got unexpected nil transformer');
    return this.state;
  }

  /** NewEnvelopeTransformer with this provider's state. */
  envelope(): Transformer {
    return {
      fromStorage: async (data, ctx) => {
        const o = decodeEncryptedObject(data);
        const state = this.current();
        const key = cacheKeyOf(o);
        let t = this.cache.get(key);
        if (!t) {
          let dek: Buffer;
          try {
            dek = await this.plugin.decrypt(randomUUID(), { ciphertext: o.encryptedDEKSource, keyId: o.keyId, annotations: o.annotations });
          } catch (err) {
            throw new Error(`failed to decrypt DEK, error: ${(err as Error).message}`);
          }
          t = o.encryptedDEKSourceType === DEK_SOURCE_HKDF_SEED ? extendedNonceGcmTransformer(dek) : gcmTransformer(dek);
          this.cache.set(key, t);
        }
        const r = await t.fromStorage(o.encryptedData, ctx);
        const stale = r.stale || o.keyId !== state.object.keyId || o.encryptedDEKSourceType !== state.object.encryptedDEKSourceType;
        return { out: r.out, stale };
      },
      toStorage: async (data, ctx) => {
        const state = this.current();
        if (Date.now() > state.expiresAt) {
          throw new Error(`encryptedDEKSource with keyID hash expired at ${new Date(state.expiresAt).toISOString()}`);
        }
        this.cache.set(state.cacheKey, state.transformer);
        return encodeEncryptedObject({ ...state.object, encryptedData: await state.transformer.toStorage(data, ctx) });
      },
    };
  }
}
