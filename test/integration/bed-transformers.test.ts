/**
 * The apiserver stand-in's storage transformers (test/bed/apiserver/value, written from upstream's
 * code on node:crypto and tweetnacl) against what real kube-apiservers stored
 * (test/fixtures/vectors), through the stand-in's own config loading and gRPC calls. Then the
 * project's codec against the stand-in: each reads what the other writes, so a bug in one shows.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadEncryption, type LoadedEncryption } from '../bed/apiserver/encryption';
import { KmsPlugins } from '../bed/apiserver/kms';
import { kmsV2Plugin } from '../bed/apiserver/kms-grpc';
import { PodFs } from '../bed/apiserver/mounts';
import { decodeEncryptedObject, DEK_SOURCE_AES_GCM_KEY, DEK_SOURCE_HKDF_SEED, KmsV2Provider } from '../bed/apiserver/value/kmsv2';
import { parseKubeVersion } from '../bed/apiserver/version';
import { startKmsPlugin, type KmsPlugin } from '../bed/kms-plugin';
import { decodeStored, transformersForResource } from '../../src/etcd/codec';
import { connectKmsV1, connectKmsV2 } from '../../src/kms/client';
import { parseEncryptionConfig } from '../../src/config/parse';

interface Vector {
  provider: 'identity' | 'aescbc' | 'aesgcm' | 'secretbox' | 'kms';
  keyName: string;
  keyBase64: string;
  etcdKey: string;
  data: Record<string, string>;
  rawBase64: string;
  file: string;
}
const load = (file: string): Vector[] =>
  readFileSync(new URL(`../fixtures/vectors/${file}`, import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .map((l) => ({ ...(JSON.parse(l) as Vector), file }));
const vectors = [...load('kube-apiserver-v1.24.jsonl'), ...load('kube-apiserver-v1.32.jsonl')];
const local = vectors.filter((v) => v.provider !== 'kms');
const kmsVector = vectors.find((v) => v.provider === 'kms')!;

let dir: string;
let plugin: KmsPlugin;
let kms: KmsPlugins;
const loaded: LoadedEncryption[] = [];
const counted: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-bedvalue-'));
  plugin = await startKmsPlugin({ socketPath: join(dir, 'kms.sock'), api: 'both' });
  kms = new KmsPlugins(PodFs.fromEnv(undefined));
});
afterAll(async () => {
  for (const l of loaded) l.close();
  kms.closeAll();
  await plugin.stop();
  await rm(dir, { recursive: true, force: true });
});

const yamlOf = (resources: string[][], providers: string[]) =>
  [
    'apiVersion: apiserver.config.k8s.io/v1',
    'kind: EncryptionConfiguration',
    'resources:',
    ...resources.flatMap((rs, i) => [`  - resources: [${rs.join(', ')}]`, '    providers:', `      - ${providers[i]}`]),
    '',
  ].join('\n');
const providerOf = (v: Vector) => (v.provider === 'identity' ? 'identity: {}' : `${v.provider}: {keys: [{name: ${v.keyName}, secret: ${v.keyBase64}}]}`);

async function bed(text: string, version = '1.32.6', featureGates: Record<string, boolean> = {}): Promise<LoadedEncryption> {
  const l = await loadEncryption('/etc/kubernetes/enc/config.yaml', Buffer.from(text), {
    version: parseKubeVersion(version),
    featureGates,
    reload: false,
    kms,
    record: (type, prefix, failed) => counted.push(`${type} ${prefix} ${failed ? 'Unknown' : 'OK'}`),
  });
  loaded.push(l);
  return l;
}

const secretsOf = (l: LoadedEncryption) => l.transformers.secrets!;
const key = (etcdKey: string) => Buffer.from(etcdKey);
const holdsData = (plain: Buffer, v: Vector) => Object.values(v.data).every((d) => plain.includes(Buffer.from(d)));

describe("the stand-in's transformers read what real kube-apiservers stored", () => {
  it.each(local.map((v) => [`${v.file} ${v.provider} ${v.keyName}`, v] as const))('%s', async (_name, v) => {
    const t = secretsOf(await bed(yamlOf([['secrets']], [providerOf(v)])));
    const { out, stale } = await t.fromStorage(Buffer.from(v.rawBase64, 'base64'), key(v.etcdKey));
    expect(out.subarray(0, 4)).toEqual(Buffer.from('k8s\0', 'latin1'));
    expect(holdsData(out, v)).toBe(true);
    expect(stale).toBe(false);
  });

  it('aesgcm binds the value to its etcd key; aescbc with the wrong key fails as upstream says', async () => {
    const gcm = local.find((v) => v.provider === 'aesgcm')!;
    const t = secretsOf(await bed(yamlOf([['secrets']], [providerOf(gcm)])));
    await expect(t.fromStorage(Buffer.from(gcm.rawBase64, 'base64'), key('/registry/secrets/default/other'))).rejects.toThrow(
      'cipher: message authentication failed',
    );
    const cbc = local.find((v) => v.provider === 'aescbc')!;
    const wrong = secretsOf(await bed(yamlOf([['secrets']], [`aescbc: {keys: [{name: ${cbc.keyName}, secret: ${Buffer.alloc(32, 9).toString('base64')}}]}`])));
    await expect(wrong.fromStorage(Buffer.from(cbc.rawBase64, 'base64'), key(cbc.etcdKey))).rejects.toThrow(/invalid (PKCS7 data|padding on input)/);
    const other = secretsOf(await bed(yamlOf([['secrets']], ['aescbc: {keys: [{name: nope, secret: ' + Buffer.alloc(32, 9).toString('base64') + '}]}'])));
    await expect(other.fromStorage(Buffer.from(cbc.rawBase64, 'base64'), key(cbc.etcdKey))).rejects.toThrow(
      'no matching key was found for the provided AES transformer',
    );
    const none = secretsOf(await bed(yamlOf([['secrets']], ['secretbox: {keys: [{name: s, secret: ' + Buffer.alloc(32, 9).toString('base64') + '}]}'])));
    await expect(none.fromStorage(Buffer.from(cbc.rawBase64, 'base64'), key(cbc.etcdKey))).rejects.toThrow('no matching prefix found');
  });

  it('reads the KMS v2 value through the bed plugin over its own gRPC calls, stale once the key id moves on', async () => {
    const provider = new KmsV2Provider(kmsVector.keyName, kmsV2Plugin(plugin.endpoint, 3000), true);
    await provider.start();
    try {
      const t = provider.envelope();
      const raw = Buffer.from(kmsVector.rawBase64, 'base64');
      const prefix = `k8s:enc:kms:v2:${kmsVector.keyName}:`;
      expect(raw.subarray(0, prefix.length).toString()).toBe(prefix);
      const body = raw.subarray(prefix.length);
      expect(decodeEncryptedObject(body)).toMatchObject({ keyId: 'bed-kek-1', encryptedDEKSourceType: DEK_SOURCE_HKDF_SEED });
      const first = await t.fromStorage(body, key(kmsVector.etcdKey));
      expect(holdsData(first.out, kmsVector)).toBe(true);
      expect(first.stale).toBe(false);
      await plugin.setKnobs({ keyId: 'bed-kek-2' });
      const rotated = new KmsV2Provider(kmsVector.keyName, kmsV2Plugin(plugin.endpoint, 3000), true);
      await rotated.start();
      try {
        expect((await rotated.envelope().fromStorage(body, key(kmsVector.etcdKey))).stale).toBe(true);
        const written = decodeEncryptedObject(await rotated.envelope().toStorage(Buffer.from('x'), key('/k')));
        expect(written).toMatchObject({ keyId: 'bed-kek-2', encryptedDEKSourceType: DEK_SOURCE_HKDF_SEED });
      } finally {
        rotated.stop();
      }
    } finally {
      provider.stop();
      await plugin.setKnobs({ keyId: 'bed-kek-1' });
    }
  });

  it('writes a seed from 1.29 and one AES-GCM DEK on 1.27/1.28 (KMSv2KDF)', async () => {
    const cfg = yamlOf([['secrets']], [`kms: {apiVersion: v2, name: p, endpoint: "unix://${plugin.socketPath}"}`]);
    for (const [version, type] of [['1.32.6', DEK_SOURCE_HKDF_SEED], ['1.28.0', DEK_SOURCE_AES_GCM_KEY]] as const) {
      const t = secretsOf(await bed(cfg, version));
      const stored = await t.toStorage(Buffer.from('k8s\0plain', 'latin1'), key('/registry/secrets/a/b'));
      expect(decodeEncryptedObject(stored.subarray('k8s:enc:kms:v2:p:'.length)).encryptedDEKSourceType).toBe(type);
      expect((await t.fromStorage(stored, key('/registry/secrets/a/b'))).out.toString('latin1')).toBe('k8s\0plain');
    }
  });

  it('asks a KMS v1 plugin its Version before the first call, and refuses another API version', async () => {
    const fresh = new KmsPlugins(PodFs.fromEnv(undefined));
    try {
      await plugin.setKnobs({ wrongVersion: true });
      await expect(fresh.v1('v1x', `unix://${plugin.socketPath}`, 3000).encrypt(Buffer.from('x'))).rejects.toThrow(
        'KMS provider api version v2 is not supported, only v1beta1 is supported now',
      );
      await plugin.setKnobs({ wrongVersion: false });
      const p = fresh.v1('v1y', `unix://${plugin.socketPath}`, 3000);
      expect(await p.decrypt(await p.encrypt(Buffer.from('x')))).toEqual(Buffer.from('x'));
    } finally {
      await plugin.setKnobs({ wrongVersion: false });
      fresh.closeAll();
    }
  });

  it('serves a resource from every exact rule naming it, else *.group, else *.* (config.go)', async () => {
    const a = local.find((v) => v.provider === 'aescbc')!;
    const b = local.find((v) => v.provider === 'secretbox')!;
    const l = await bed(yamlOf([['secrets'], ['secrets'], ['"*."']], [providerOf(a), providerOf(b), 'identity: {}']));
    const second = await l.transformers.secrets!.fromStorage(Buffer.from(b.rawBase64, 'base64'), key(b.etcdKey));
    expect(second.stale).toBe(true);
    expect(l.transformers.configmaps).toBeDefined();
    await expect(l.transformers.configmaps!.fromStorage(Buffer.from(a.rawBase64, 'base64'), key(a.etcdKey))).rejects.toThrow(
      'no matching prefix found',
    );
    // each level of the nested prefix transformers counts under its own prefix
    expect(counted).toContain('from_storage k8s:enc:secretbox:v1: OK');
    expect(counted).toContain(`from_storage ${b.keyName}: OK`);
  });
});

describe('the codec and the stand-in agree on every format', () => {
  const etcdKey = '/registry/secrets/default/agree';
  const plain = Buffer.concat([Buffer.from('k8s\0', 'latin1'), Buffer.from('{"kind":"Secret"}')]);
  const k32 = Buffer.alloc(32, 5).toString('base64');
  const k16 = Buffer.alloc(16, 6).toString('base64');
  it.each([
    ['aescbc', `aescbc: {keys: [{name: k, secret: ${k32}}]}`],
    ['aescbc 16-byte key', `aescbc: {keys: [{name: k, secret: ${k16}}]}`],
    ['aesgcm', `aesgcm: {keys: [{name: k, secret: ${k32}}]}`],
    ['secretbox', `secretbox: {keys: [{name: k, secret: ${k32}}]}`],
    ['identity', 'identity: {}'],
    ['kms v2', () => `kms: {apiVersion: v2, name: v2p, endpoint: "unix://${plugin.socketPath}"}`],
    ['kms v1 (1.32 with the gate)', () => `kms: {name: v1p, endpoint: "unix://${plugin.socketPath}"}`],
  ])('%s', async (_name, provider) => {
    const text = yamlOf([['secrets']], [typeof provider === 'function' ? provider() : provider]);
    const b = secretsOf(await bed(text, '1.32.6', { KMSv1: true }));
    const v1 = connectKmsV1(plugin.endpoint);
    const v2 = connectKmsV2(plugin.endpoint);
    try {
      const codec = transformersForResource(parseEncryptionConfig(text, 'config.yaml'), 'secrets', { v1: () => v1, v2: () => v2 });
      const byBed = await b.toStorage(plain, key(etcdKey));
      expect((await decodeStored(byBed, etcdKey, codec)).plaintext).toEqual(plain);
      const byCodec = await codec[0]!.encrypt(plain, etcdKey);
      expect((await b.fromStorage(byCodec, key(etcdKey))).out).toEqual(plain);
    } finally {
      v1.close();
      v2.close();
    }
  });
});
