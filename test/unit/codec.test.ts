import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { providersFor } from '../../src/config/model';
import type { EncryptionConfiguration } from '../../src/config/schema';
import {
  classifyValue,
  decodeEncryptedObject,
  decodeStored,
  encodeEncryptedObject,
  hkdfSha256Expand,
  identityTransformer,
  kmsV1Transformer,
  looksLikeStoredObject,
  kmsV2Transformer,
  localTransformer,
  transformerLabel,
  transformersForResource,
  valueLabel,
  type KmsV1Service,
  type KmsV2Service,
  type LocalKind,
  type ValueTransformer,
} from '../../src/etcd/codec';

interface Vector {
  provider: 'identity' | LocalKind | 'kms';
  keyName: string;
  keyBase64: string;
  etcdKey: string;
  namespace: string;
  name: string;
  data: Record<string, string>;
  rawBase64: string;
}

const load = (file: string): (Vector & { file: string })[] =>
  readFileSync(fileURLToPath(new URL(`../fixtures/vectors/${file}`, import.meta.url)), 'utf8')
    .trim()
    .split('\n')
    .map((l) => ({ ...(JSON.parse(l) as Vector), file }));
const vectors = [...load('kube-apiserver-v1.24.jsonl'), ...load('kube-apiserver-v1.32.jsonl')];

/** A KMS v2 plugin like the test bed's: AES-256-GCM under sha256("bed-kek-1"), nonce||ct||tag. */
function testKmsV2(keyId = 'bed-kek-1', calls = { encrypt: 0, decrypt: 0, status: 0 }) {
  const kek = () => createHash('sha256').update(keyId).digest();
  const service: KmsV2Service & { keyId: string } = {
    keyId,
    async encrypt(_uid, plaintext) {
      calls.encrypt++;
      const nonce = randomBytes(12);
      const c = createCipheriv('aes-256-gcm', kek(), nonce);
      const body = Buffer.concat([c.update(plaintext), c.final()]);
      return { ciphertext: Buffer.concat([nonce, body, c.getAuthTag()]), keyId };
    },
    async decrypt(_uid, req) {
      calls.decrypt++;
      const ct = Buffer.from(req.ciphertext);
      const k = createHash('sha256').update(req.keyId).digest();
      const d = createDecipheriv('aes-256-gcm', k, ct.subarray(0, 12));
      d.setAuthTag(ct.subarray(ct.length - 16));
      return Buffer.concat([d.update(ct.subarray(12, ct.length - 16)), d.final()]);
    },
    async status() {
      calls.status++;
      return { healthz: 'ok', version: 'v2', keyId };
    },
  };
  return { service, calls, rotate: (id: string) => ((keyId = id), (service.keyId = id)) };
}

function testKmsV1(): KmsV1Service {
  const kek = createHash('sha256').update('v1-kek').digest();
  return {
    async encrypt(p) {
      const nonce = randomBytes(12);
      const c = createCipheriv('aes-256-gcm', kek, nonce);
      const body = Buffer.concat([c.update(p), c.final()]);
      return Buffer.concat([nonce, body, c.getAuthTag()]);
    },
    async decrypt(ct) {
      const b = Buffer.from(ct);
      const d = createDecipheriv('aes-256-gcm', kek, b.subarray(0, 12));
      d.setAuthTag(b.subarray(b.length - 16));
      return Buffer.concat([d.update(b.subarray(12, b.length - 16)), d.final()]);
    },
  };
}

function transformerFor(v: Vector): ValueTransformer {
  if (v.provider === 'identity') return identityTransformer();
  if (v.provider === 'kms') return kmsV2Transformer(v.keyName, testKmsV2().service);
  return localTransformer(v.provider, v.keyName, v.keyBase64);
}

const PLAINTEXT = Buffer.concat([Buffer.from('k8s\0', 'latin1'), randomBytes(300)]);
const ETCD_KEY = '/registry/secrets/default/s1';
const key = (bytes: number) => randomBytes(bytes).toString('base64');

describe('known-answer vectors from real kube-apiservers', () => {
  it('has vectors for every provider of both versions', () => {
    expect(vectors.map((v) => `${v.file}:${v.provider}`)).toEqual(
      expect.arrayContaining([
        'kube-apiserver-v1.24.jsonl:aescbc',
        'kube-apiserver-v1.24.jsonl:aesgcm',
        'kube-apiserver-v1.24.jsonl:secretbox',
        'kube-apiserver-v1.24.jsonl:identity',
        'kube-apiserver-v1.32.jsonl:kms',
      ]),
    );
  });

  it.each(vectors.map((v) => [`${v.file} ${v.provider} ${v.keyName}`, v] as const))(
    '%s decrypts to the Secret it was created as',
    async (_n, v) => {
      const raw = Buffer.from(v.rawBase64, 'base64');
      const plaintext = await transformerFor(v).decrypt(raw, v.etcdKey);
      expect(plaintext.subarray(0, 4).toString('latin1')).toBe('k8s\0');
      for (const value of Object.values(v.data)) expect(plaintext.includes(value)).toBe(true);
      expect(looksLikeStoredObject(plaintext)).toBe(true);
      if (v.provider === 'identity') expect(plaintext.equals(raw)).toBe(true);
      // Through the apiserver's read path too.
      const d = await decodeStored(raw, v.etcdKey, [transformerFor(v)]);
      expect(d).toMatchObject({ index: 0, stale: false });
      expect(d.plaintext.equals(plaintext)).toBe(true);
    },
  );

  it.each(vectors.map((v) => [`${v.file} ${v.provider} ${v.keyName}`, v] as const))(
    '%s is classified by its prefix',
    (_n, v) => {
      const c = classifyValue(Buffer.from(v.rawBase64, 'base64'));
      if (v.provider === 'identity') expect(c).toEqual({ kind: 'plaintext-protobuf' });
      else if (v.provider === 'kms') {
        expect(c).toEqual({ kind: 'kms', prefix: `k8s:enc:kms:v2:${v.keyName}:`, keyName: v.keyName, kmsVersion: 'v2' });
        expect(valueLabel(c)).toBe(`kms:v2:${v.keyName}`);
      } else {
        expect(c).toEqual({ kind: v.provider, prefix: `k8s:enc:${v.provider}:v1:${v.keyName}:`, keyName: v.keyName });
        expect(valueLabel(c)).toBe(`${v.provider}:${v.keyName}`);
      }
    },
  );

  it('the KMS v2 vector is a 1.29+ seed envelope wrapped by the bed plugin', () => {
    const v = vectors.find((x) => x.provider === 'kms')!;
    const raw = Buffer.from(v.rawBase64, 'base64');
    const o = decodeEncryptedObject(raw.subarray(`k8s:enc:kms:v2:${v.keyName}:`.length));
    expect(o.keyId).toBe('bed-kek-1');
    expect(o.encryptedDEKSourceType).toBe(1); // HKDF_SHA256_XNONCE_AES_GCM_SEED
    expect(o.encryptedDEKSource.length).toBe(12 + 32 + 16);
    // Our encoder writes the same bytes back.
    expect(encodeEncryptedObject(o).equals(raw.subarray(`k8s:enc:kms:v2:${v.keyName}:`.length))).toBe(true);
  });

  it('the KMS v2 vector does not decrypt with another KEK', async () => {
    const v = vectors.find((x) => x.provider === 'kms')!;
    const { service } = testKmsV2();
    const t = kmsV2Transformer(v.keyName, {
      ...service,
      decrypt: (uid, req) => service.decrypt(uid, { ...req, keyId: 'another-kek' }),
    });
    await expect(t.decrypt(Buffer.from(v.rawBase64, 'base64'), v.etcdKey)).rejects.toThrow(/failed to decrypt DEK/);
  });

  it('the aesgcm vector does not decrypt under another etcd key (authenticated data)', async () => {
    const v = vectors.find((x) => x.provider === 'aesgcm')!;
    await expect(
      transformerFor(v).decrypt(Buffer.from(v.rawBase64, 'base64'), '/registry/secrets/default/other'),
    ).rejects.toThrow(/authentication failed/);
  });
});

describe('local providers', () => {
  const cases: [LocalKind, number][] = [
    ['aescbc', 16],
    ['aescbc', 24],
    ['aescbc', 32],
    ['aesgcm', 16],
    ['aesgcm', 24],
    ['aesgcm', 32],
    ['secretbox', 32],
  ];

  it.each(cases)('%s with a %i-byte key round-trips and refuses a wrong key', async (kind, bytes) => {
    const secret = key(bytes);
    const t = localTransformer(kind, 'k1', secret);
    expect(t.prefix).toBe(`k8s:enc:${kind}:v1:k1:`);
    const stored = await t.encrypt(PLAINTEXT, ETCD_KEY);
    expect(stored.subarray(0, t.prefix.length).toString()).toBe(t.prefix);
    expect(stored.includes(PLAINTEXT.subarray(4, 40))).toBe(false);
    expect((await t.decrypt(stored, ETCD_KEY)).equals(PLAINTEXT)).toBe(true);
    // Two writes of the same plaintext differ (random IV/nonce).
    expect((await t.encrypt(PLAINTEXT, ETCD_KEY)).equals(stored)).toBe(false);

    const wrong = localTransformer(kind, 'k1', key(bytes));
    const err = await wrong.decrypt(stored, ETCD_KEY).then(
      (p) => (p.equals(PLAINTEXT) ? new Error('decrypted with the wrong key') : new Error('garbage')),
      (e: Error) => e,
    );
    // aescbc has no MAC: a wrong key almost always fails the padding check; on the rare valid
    // padding it yields garbage, which is never the plaintext.
    if (err.message !== 'garbage') {
      expect(err.message).toMatch(new RegExp(`^${kind} key "k1": `));
      expect(err.message).not.toContain(secret);
    }
  });

  it('aesgcm binds the value to its etcd key', async () => {
    const t = localTransformer('aesgcm', 'k1', key(32));
    const stored = await t.encrypt(PLAINTEXT, ETCD_KEY);
    await expect(t.decrypt(stored, '/registry/secrets/default/s2')).rejects.toThrow(/authentication failed/);
  });

  it('a wrong aescbc key is reported as bad padding, not as garbage', async () => {
    const right = localTransformer('aescbc', 'k1', key(32));
    const stored = await right.encrypt(PLAINTEXT, ETCD_KEY);
    let padding = 0;
    for (let i = 0; i < 20; i++) {
      const e = await localTransformer('aescbc', 'k1', key(32)).decrypt(stored, ETCD_KEY).catch((x: Error) => x);
      if (e instanceof Error && /padding|PKCS7/.test(e.message)) padding++;
    }
    expect(padding).toBeGreaterThanOrEqual(15);
  });

  it.each([
    ['aescbc', 'bm90IGEga2V5', /is 9 bytes/],
    ['secretbox', key(16), /is 16 bytes/],
    ['aesgcm', 'not base64!!', /not valid base64/],
  ] as const)('%s refuses a bad key without showing it', (kind, secret, msg) => {
    let err: Error | undefined;
    try {
      localTransformer(kind, 'k1', secret);
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).toMatch(msg);
    expect(err?.message).toContain('"k1"');
    expect(err?.message).not.toContain(secret);
  });

  it('truncated values fail with a clear message', async () => {
    for (const kind of ['aescbc', 'aesgcm', 'secretbox'] as const) {
      const t = localTransformer(kind, 'k1', key(32));
      await expect(t.decrypt(Buffer.from(`${t.prefix}abc`), ETCD_KEY)).rejects.toThrow(/shorter than the required size|multiple of the block size/);
    }
  });
});

describe('identity', () => {
  it('stores plaintext as is and refuses encrypted values', async () => {
    const t = identityTransformer();
    expect(t.prefix).toBe('');
    expect((await t.encrypt(PLAINTEXT, ETCD_KEY)).equals(PLAINTEXT)).toBe(true);
    expect((await t.decrypt(PLAINTEXT, ETCD_KEY)).equals(PLAINTEXT)).toBe(true);
    await expect(t.decrypt(Buffer.from('k8s:enc:aescbc:v1:k:xxxx'), ETCD_KEY)).rejects.toThrow(
      'identity transformer tried to read encrypted data',
    );
  });
});

describe('KMS v2', () => {
  it('round-trips and wraps one seed for many objects', async () => {
    const { service, calls } = testKmsV2();
    const t = kmsV2Transformer('p1', service);
    expect(t.prefix).toBe('k8s:enc:kms:v2:p1:');
    const stored = await Promise.all(
      Array.from({ length: 20 }, (_, i) => t.encrypt(PLAINTEXT, `/registry/secrets/default/s${i}`)),
    );
    expect(calls.encrypt).toBe(1);
    for (const [i, s] of stored.entries()) {
      expect(classifyValue(s)).toMatchObject({ kind: 'kms', kmsVersion: 'v2', keyName: 'p1' });
      expect((await t.decrypt(s, `/registry/secrets/default/s${i}`)).equals(PLAINTEXT)).toBe(true);
    }
    // Same seed for all, a different derived key (info) for each.
    const objs = stored.map((s) => decodeEncryptedObject(s.subarray(t.prefix.length)));
    expect(new Set(objs.map((o) => o.encryptedDEKSource.toString('hex'))).size).toBe(1);
    expect(new Set(objs.map((o) => o.encryptedData.subarray(0, 32).toString('hex'))).size).toBe(20);
    expect(objs[0]!.encryptedDEKSourceType).toBe(1);
    // Reads of our own writes need no plugin call; another transformer (a restart) needs one.
    expect(calls.decrypt).toBe(0);
    const other = kmsV2Transformer('p1', service);
    expect((await other.decrypt(stored[0]!, '/registry/secrets/default/s0')).equals(PLAINTEXT)).toBe(true);
    expect((await other.decrypt(stored[1]!, '/registry/secrets/default/s1')).equals(PLAINTEXT)).toBe(true);
    expect(calls.decrypt).toBe(1);
    await expect(t.decrypt(stored[0]!, '/registry/secrets/default/s1')).rejects.toThrow(/authentication failed/);
  });

  it('generates a new seed when the plugin reports a new key id', async () => {
    const { service, calls, rotate } = testKmsV2('kek-a');
    let clock = 0;
    const t = kmsV2Transformer('p1', service, { statusIntervalMs: 1000, now: () => clock });
    const a = await t.encrypt(PLAINTEXT, ETCD_KEY);
    clock = 500;
    await t.encrypt(PLAINTEXT, ETCD_KEY);
    expect(calls).toMatchObject({ encrypt: 1, status: 0 });
    clock = 2000;
    await t.encrypt(PLAINTEXT, ETCD_KEY);
    expect(calls).toMatchObject({ encrypt: 1, status: 1 });
    rotate('kek-b');
    clock = 4000;
    const b = await t.encrypt(PLAINTEXT, ETCD_KEY);
    expect(calls.encrypt).toBe(2);
    const ka = decodeEncryptedObject(a.subarray(t.prefix.length)).keyId;
    const kb = decodeEncryptedObject(b.subarray(t.prefix.length)).keyId;
    expect([ka, kb]).toEqual(['kek-a', 'kek-b']);
    expect((await t.decrypt(a, ETCD_KEY)).equals(PLAINTEXT)).toBe(true);
  });

  it('keeps writing briefly when Status fails, then refuses', async () => {
    const { service } = testKmsV2();
    let clock = 0;
    let up = true;
    const t = kmsV2Transformer(
      'p1',
      { ...service, status: async () => (up ? service.status() : Promise.reject(new Error('unavailable'))) },
      { statusIntervalMs: 1000, writeTtlMs: 5000, now: () => clock },
    );
    await t.encrypt(PLAINTEXT, ETCD_KEY);
    up = false;
    clock = 3000;
    await t.encrypt(PLAINTEXT, ETCD_KEY);
    clock = 6000;
    await expect(t.encrypt(PLAINTEXT, ETCD_KEY)).rejects.toThrow(/has not answered Status/);
  });

  it('reads the 1.27/1.28 form (the unwrapped DEK is the AES-GCM key)', async () => {
    const { service } = testKmsV2();
    const dek = randomBytes(32);
    const wrapped = await service.encrypt('u', dek);
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', dek, nonce);
    c.setAAD(Buffer.from(ETCD_KEY));
    const data = Buffer.concat([nonce, c.update(PLAINTEXT), c.final(), c.getAuthTag()]);
    const obj = encodeEncryptedObject({
      encryptedData: data,
      keyId: wrapped.keyId,
      encryptedDEKSource: Buffer.from(wrapped.ciphertext),
      annotations: { 'example.com/x': Buffer.from('y') },
      encryptedDEKSourceType: 0,
    });
    const t = kmsV2Transformer('p1', service);
    const stored = Buffer.concat([Buffer.from(t.prefix), obj]);
    expect((await t.decrypt(stored, ETCD_KEY)).equals(PLAINTEXT)).toBe(true);
    expect(decodeEncryptedObject(obj).annotations['example.com/x']?.toString()).toBe('y');
  });

  it('rejects malformed envelopes with upstream wording', async () => {
    const t = kmsV2Transformer('p1', testKmsV2().service);
    const enc = (o: Partial<Parameters<typeof encodeEncryptedObject>[0]>) =>
      Buffer.concat([
        Buffer.from(t.prefix),
        encodeEncryptedObject({
          encryptedData: Buffer.from([1]),
          keyId: 'k',
          encryptedDEKSource: Buffer.from([1]),
          annotations: {},
          encryptedDEKSourceType: 1,
          ...o,
        }),
      ]);
    await expect(t.decrypt(enc({ keyId: '' }), ETCD_KEY)).rejects.toThrow('keyID is empty');
    await expect(t.decrypt(enc({ encryptedData: Buffer.alloc(0) }), ETCD_KEY)).rejects.toThrow('encrypted data is empty');
    await expect(t.decrypt(enc({ encryptedDEKSourceType: 7 }), ETCD_KEY)).rejects.toThrow('unknown encryptedDEKSourceType: 7');
    await expect(t.decrypt(Buffer.from(`${t.prefix}\xff`, 'latin1'), ETCD_KEY)).rejects.toThrow(/protobuf/);
  });

  it('HKDF-Expand matches RFC 5869 test case 1 (expand step)', () => {
    const prk = Buffer.from('077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5', 'hex');
    const info = Buffer.from('f0f1f2f3f4f5f6f7f8f9', 'hex');
    expect(hkdfSha256Expand(prk, info, 42).toString('hex')).toBe(
      '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865',
    );
  });
});

describe('KMS v1', () => {
  it('round-trips with a length-prefixed wrapped DEK and AES-GCM data', async () => {
    const t = kmsV1Transformer('old', testKmsV1());
    const stored = await t.encrypt(PLAINTEXT, ETCD_KEY);
    expect(classifyValue(stored)).toMatchObject({ kind: 'kms', kmsVersion: 'v1', keyName: 'old' });
    const body = stored.subarray(t.prefix.length);
    const n = body.readUInt16BE(0);
    expect(n).toBe(12 + 32 + 16);
    expect(body.length).toBe(2 + n + 12 + PLAINTEXT.length + 16);
    const fresh = kmsV1Transformer('old', testKmsV1());
    expect((await fresh.decrypt(stored, ETCD_KEY)).equals(PLAINTEXT)).toBe(true);
    await expect(fresh.decrypt(stored, '/registry/secrets/x/y')).rejects.toThrow(/authentication failed/);
  });

  it('reads the 1.24 form (AES-CBC under the DEK)', async () => {
    const svc = testKmsV1();
    const dek = randomBytes(32);
    const wrapped = Buffer.from(await svc.encrypt(dek));
    const iv = randomBytes(16);
    const c = createCipheriv('aes-256-cbc', dek, iv);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(wrapped.length);
    const stored = Buffer.concat([Buffer.from('k8s:enc:kms:v1:old:'), len, wrapped, iv, c.update(PLAINTEXT), c.final()]);
    expect((await kmsV1Transformer('old', svc).decrypt(stored, ETCD_KEY)).equals(PLAINTEXT)).toBe(true);
  });
});

describe('classifyValue', () => {
  it.each([
    ['k8s\0\n\x0c', { kind: 'plaintext-protobuf' }],
    ['{"kind":"Secret"}', { kind: 'plaintext-json' }],
    ['  \n {"kind":"Secret"}', { kind: 'plaintext-json' }],
    ['k8s:enc:aescbc:v1:key1:\x01\x02', { kind: 'aescbc', prefix: 'k8s:enc:aescbc:v1:key1:', keyName: 'key1' }],
    ['k8s:enc:aesgcm:v1:k:', { kind: 'aesgcm', prefix: 'k8s:enc:aesgcm:v1:k:', keyName: 'k' }],
    ['k8s:enc:kms:v1:vault:\x00\x10', { kind: 'kms', prefix: 'k8s:enc:kms:v1:vault:', keyName: 'vault', kmsVersion: 'v1' }],
    ['k8s:enc:aes:v1:key1:xx', { kind: 'unknown', prefix: 'k8s:enc:aes:v1:key1:' }],
    ['k8s:enc:garbage', { kind: 'unknown' }],
    ['\x00\x01binary', { kind: 'unknown' }],
    ['', { kind: 'unknown' }],
  ])('%j', (text, expected) => {
    expect(classifyValue(Buffer.from(text, 'latin1'))).toEqual(expected);
  });

  it('tells a stored object from garbage that starts like one', () => {
    expect(looksLikeStoredObject(Buffer.from('{"kind":"Secret"}'))).toBe(true);
    expect(looksLikeStoredObject(Buffer.from('{"kind":'))).toBe(false);
    expect(looksLikeStoredObject(PLAINTEXT)).toBe(false);
    expect(looksLikeStoredObject(randomBytes(64))).toBe(false);
  });

  it('labels transformers as their values are labelled', () => {
    expect(transformerLabel(identityTransformer())).toBe('plaintext');
    expect(transformerLabel(localTransformer('secretbox', 'k2', key(32)))).toBe('secretbox:k2');
    expect(transformerLabel(kmsV2Transformer('p', testKmsV2().service))).toBe('kms:v2:p');
  });
});

describe('resources', () => {
  const k1 = key(32);
  const k2 = key(32);
  const cfg: EncryptionConfiguration = {
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: [
      {
        resources: ['secrets', 'configmaps'],
        providers: [
          { aescbc: { keys: [{ name: 'new', secret: k1 }, { name: 'old', secret: k2 }] } },
          { kms: { apiVersion: 'v2', name: 'vault', endpoint: 'unix:///x.sock' } },
          { identity: {} },
        ],
      },
      { resources: ['*.*'], providers: [{ secretbox: { keys: [{ name: 'sb', secret: k1 }] } }] },
    ],
  };

  it('follows providersFor (upstream\'s rule), one transformer per key', () => {
    expect(transformersForResource(cfg, 'secrets').map((t) => t.prefix)).toEqual([
      'k8s:enc:aescbc:v1:new:',
      'k8s:enc:aescbc:v1:old:',
      'k8s:enc:kms:v2:vault:',
      '',
    ]);
    expect(transformersForResource(cfg, 'deployments.apps').map((t) => t.prefix)).toEqual(['k8s:enc:secretbox:v1:sb:']);
    expect(transformersForResource({ ...cfg, resources: [cfg.resources[0]!] }, 'pods')).toEqual([]);
    // Two rules naming one resource both serve it, in file order (upstream appends them).
    const twice: EncryptionConfiguration = {
      ...cfg,
      resources: [cfg.resources[0]!, { resources: ['secrets'], providers: [{ secretbox: { keys: [{ name: 'sb', secret: k1 }] } }] }],
    };
    expect(transformersForResource(twice, 'secrets').map(transformerLabel)).toEqual([
      'aescbc:new',
      'aescbc:old',
      'kms:v2:vault',
      'plaintext',
      'secretbox:sb',
    ]);
    for (const r of ['secrets', 'configmaps', 'pods', 'deployments.apps']) {
      expect(transformersForResource(twice, r).length).toBe(
        providersFor(twice, r).reduce((n, p) => n + (p.aescbc?.keys.length ?? p.secretbox?.keys.length ?? 1), 0),
      );
    }
  });

  it('builds KMS transformers through the factories it is given, with the timeout', async () => {
    const seen: unknown[] = [];
    const ts = transformersForResource(
      { ...cfg, resources: [{ resources: ['secrets'], providers: [{ kms: { name: 'a', endpoint: 'unix:///a', timeout: '1m30s' } }] }] },
      'secrets',
      { v1: (...args) => (seen.push(args), testKmsV1()) },
    );
    expect(seen).toEqual([['a', 'unix:///a', 90_000]]);
    const stored = await ts[0]!.encrypt(PLAINTEXT, ETCD_KEY);
    expect(classifyValue(stored)).toMatchObject({ kind: 'kms', kmsVersion: 'v1', keyName: 'a' });
  });

  it('without a KMS factory the provider is recognised but cannot decrypt', async () => {
    const [, , kms] = transformersForResource(cfg, 'secrets');
    await expect(kms!.decrypt(Buffer.from('k8s:enc:kms:v2:vault:x'), ETCD_KEY)).rejects.toThrow(/no connection to its plugin/);
  });

  it.each(['', '3', 'abc', '3x', '-1s'])('refuses a kms timeout %j that is not a positive Go duration', (timeout) => {
    const cfg: EncryptionConfiguration = {
      kind: 'EncryptionConfiguration',
      apiVersion: 'apiserver.config.k8s.io/v1',
      resources: [{ resources: ['secrets'], providers: [{ kms: { apiVersion: 'v2', name: 'vault', endpoint: 'unix:///k.sock', timeout } }] }],
    };
    expect(() => transformersForResource(cfg, 'secrets')).toThrow(/kms provider "vault": invalid timeout/);
  });
});

describe('decodeStored', () => {
  const k1 = localTransformer('aescbc', 'key2', key(32));
  const k2 = localTransformer('aescbc', 'key1', key(32));
  const gcm = localTransformer('aesgcm', 'g1', key(32));
  const sb = localTransformer('secretbox', 's1', key(32));
  const id = identityTransformer();

  it('is fresh through the first transformer and stale through any other', async () => {
    const list = [k1, k2, sb, id];
    expect(await decodeStored(await k1.encrypt(PLAINTEXT, ETCD_KEY), ETCD_KEY, list)).toMatchObject({ index: 0, stale: false });
    expect(await decodeStored(await k2.encrypt(PLAINTEXT, ETCD_KEY), ETCD_KEY, list)).toMatchObject({ index: 1, stale: true });
    expect(await decodeStored(await sb.encrypt(PLAINTEXT, ETCD_KEY), ETCD_KEY, list)).toMatchObject({ index: 2, stale: true });
    const p = await decodeStored(PLAINTEXT, ETCD_KEY, list);
    expect(p).toMatchObject({ index: 3, stale: true });
    expect(p.plaintext.equals(PLAINTEXT)).toBe(true);
  });

  it('identity first reads plaintext fresh and still reads encrypted values (disable)', async () => {
    expect(await decodeStored(PLAINTEXT, ETCD_KEY, [id, k1])).toMatchObject({ index: 0, stale: false });
    expect(await decodeStored(await k1.encrypt(PLAINTEXT, ETCD_KEY), ETCD_KEY, [id, k1])).toMatchObject({ index: 1, stale: true });
  });

  it('no transformers means identity', async () => {
    expect(await decodeStored(PLAINTEXT, ETCD_KEY, [])).toMatchObject({ index: 0, stale: false });
    await expect(decodeStored(await k1.encrypt(PLAINTEXT, ETCD_KEY), ETCD_KEY, [])).rejects.toThrow('no matching prefix found');
  });

  it('tries every key of a kind, including a second provider of the same kind', async () => {
    const sameName = localTransformer('aescbc', 'key1', key(32));
    const stored = await k2.encrypt(PLAINTEXT, ETCD_KEY);
    // A provider whose key has the same name but other bytes fails first; the later one reads it.
    expect(await decodeStored(stored, ETCD_KEY, [sameName, gcm, k2])).toMatchObject({ index: 2, stale: true });
  });

  it.each([
    ['a key name no provider has', 'aescbc', 'no matching key was found for the provided AES transformer'],
    ['an aesgcm key name no provider has', 'aesgcm', 'no matching key was found for the provided AES transformer'],
    ['a secretbox key name no provider has', 'secretbox', 'no matching key was found for the provided Secretbox transformer'],
  ] as const)('reports %s with upstream wording', async (_n, kind, message) => {
    const other = localTransformer(kind, 'gone', key(32));
    const stored = await other.encrypt(PLAINTEXT, ETCD_KEY);
    await expect(decodeStored(stored, ETCD_KEY, [k1, gcm, sb, id])).rejects.toThrow(message);
  });

  it('reports values of no configured provider, and plaintext without identity', async () => {
    await expect(decodeStored(await sb.encrypt(PLAINTEXT, ETCD_KEY), ETCD_KEY, [k1, gcm])).rejects.toThrow(/^no matching prefix found$/);
    await expect(decodeStored(PLAINTEXT, ETCD_KEY, [k1])).rejects.toThrow(/^no matching prefix found$/);
  });

  it('reports a wrong key under a matching name without the key', async () => {
    const secret = key(32);
    const wrong = localTransformer('aesgcm', 'g1', secret);
    const err = await decodeStored(await gcm.encrypt(PLAINTEXT, ETCD_KEY), ETCD_KEY, [wrong]).catch((e: Error) => e);
    expect((err as Error).message).toMatch(/^aesgcm key "g1": cipher: message authentication failed/);
    expect((err as Error).message).not.toContain(secret);
  });
});
