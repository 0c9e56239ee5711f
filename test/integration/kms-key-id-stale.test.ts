// KMS v2 values written under a key id other than the plugin's current one are stale, as
// kube-apiserver counts them (kmsv2 envelope.go: EncryptedObject.KeyID != the write key id): the
// real apiserver's KMS v2 vector (key id bed-kek-1) against the bed plugin after a key rotation,
// in a real etcd 3.4.
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseEncryptionConfig } from '../../src/config/parse';
import { transformersForResource } from '../../src/etcd/codec';
import { openEtcd, type EtcdClient } from '../../src/etcd/client';
import { scanEncryptionState } from '../../src/etcd/scan';
import { currentKmsKeyIds } from '../../src/kms/key-ids';
import { defaultGatherDeps, gatherStatus } from '../../src/status/gather';
import { buildStatusReport } from '../../src/status/report';
import { startKmsPlugin, type KmsPlugin } from '../bed/kms-plugin';
import { startEtcd, type RunningEtcd } from '../helpers/etcd';

interface Vector {
  provider: string;
  keyName: string;
  etcdKey: string;
  rawBase64: string;
}
const vector = readFileSync(fileURLToPath(new URL('../fixtures/vectors/kube-apiserver-v1.32.jsonl', import.meta.url)), 'utf8')
  .trim()
  .split('\n')
  .map((l) => JSON.parse(l) as Vector)
  .find((v) => v.provider === 'kms')!;
const stored = Buffer.from(vector.rawBase64, 'base64');

/** The same stored value with its EncryptedObject.keyID (field 2, `0x12 len id`) replaced by hand. */
function withKeyId(raw: Buffer, from: string, to: string): Buffer {
  const field = (id: string) => Buffer.concat([Buffer.from([0x12, id.length]), Buffer.from(id)]);
  const at = raw.indexOf(field(from));
  expect(at).toBeGreaterThan(0);
  expect(raw.indexOf(field(from), at + 1)).toBe(-1);
  return Buffer.concat([raw.subarray(0, at), field(to), raw.subarray(at + from.length + 2)]);
}

const configText = (endpoint: string, other: string) => `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms: {apiVersion: v2, name: ${vector.keyName}, endpoint: "${endpoint}"}
      - kms: {apiVersion: v2, name: other, endpoint: "${other}"}
      - identity: {}
`;

describe('KMS v2 staleness by key id', () => {
  let etcd: RunningEtcd;
  let client: EtcdClient;
  let plugin: KmsPlugin;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-keyid-'));
    etcd = await startEtcd();
    client = await openEtcd({ endpoints: [etcd.endpoint] });
    // The plugin has rotated: bed-kek-2 is current, bed-kek-1 (the vector's) still decrypts.
    plugin = await startKmsPlugin({ socketPath: join(dir, 'kms', 'grpc.sock'), api: 'v2', keyId: 'bed-kek-1' });
    await plugin.setKnobs({ keyId: 'bed-kek-2' });
    await client.put(vector.etcdKey, stored);
    await client.put('/registry/secrets/default/rewritten', withKeyId(stored, 'bed-kek-1', 'bed-kek-2'));
    // A value of a provider whose plugin is not running: no key id, so not judged by one.
    await client.put('/registry/secrets/default/other', Buffer.concat([Buffer.from('k8s:enc:kms:v2:other:'), stored.subarray(`k8s:enc:kms:v2:${vector.keyName}:`.length)]));
  }, 60_000);
  afterAll(async () => {
    await plugin?.stop();
    client?.close();
    await etcd?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("asks each KMS v2 plugin of the config for its current key id; one that does not answer is named", async () => {
    const cfg = parseEncryptionConfig(configText(plugin.endpoint, `unix://${join(dir, 'none', 'grpc.sock')}`), 'test');
    const ids = await currentKmsKeyIds(cfg, (p) => p, 1000);
    expect(ids.keyIds).toEqual({ [vector.keyName]: 'bed-kek-2' });
    expect(ids.unknown.map((u) => u.name)).toEqual(['other']);
  });

  it('counts the value under the old key id as stale, labelled with it; the rewritten one is current', async () => {
    const cfg = parseEncryptionConfig(configText(plugin.endpoint, `unix://${join(dir, 'none', 'grpc.sock')}`), 'test');
    const opts = {
      resources: [{ resource: 'secrets', etcdPrefix: '/registry/secrets/' }],
      transformersFor: (r: string) => transformersForResource(cfg, r),
    };
    const { keyIds } = await currentKmsKeyIds(cfg, (p) => p, 1000);
    const r = (await scanEncryptionState(client, { ...opts, kmsKeyIds: keyIds })).resources[0]!;
    const name = vector.keyName;
    expect(r.writeLabel).toBe(`kms:v2:${name}`);
    expect(r.counts).toEqual({ [`kms:v2:${name}`]: 1, [`kms:v2:${name} (key id bed-kek-1)`]: 1, 'kms:v2:other': 1 });
    expect(r.stale.items.map((o) => `${o.name} ${o.label}`).sort()).toEqual([`${vector.etcdKey.split('/').pop()} kms:v2:${name} (key id bed-kek-1)`, 'other kms:v2:other']);

    // Without the current key ids only the provider name counts (what a scan can tell alone).
    const blind = (await scanEncryptionState(client, opts)).resources[0]!;
    expect(blind.stale.count).toBe(1);
    expect(blind.counts).toEqual({ [`kms:v2:${name}`]: 2, 'kms:v2:other': 1 });
  });

  it('a key id too long or unprintable for a label is shown as its hash', async () => {
    const long = 'k'.repeat(100);
    await client.put('/registry/secrets/long/one', withKeyId(stored, 'bed-kek-1', long));
    const cfg = parseEncryptionConfig(configText(plugin.endpoint, plugin.endpoint), 'test');
    const r = (
      await scanEncryptionState(client, {
        resources: [{ resource: 'secrets', etcdPrefix: '/registry/secrets/long/' }],
        transformersFor: (x) => transformersForResource(cfg, x),
        kmsKeyIds: { [vector.keyName]: 'bed-kek-2' },
      })
    ).resources[0]!;
    expect(Object.keys(r.counts)).toEqual([expect.stringMatching(new RegExp(`^kms:v2:${vector.keyName} \\(key id sha256:[0-9a-f]{16}\\)$`))]);
    expect(JSON.stringify(r)).not.toContain(long);
  });

  it('status asks the plugin first and reports the old-key-id value as stale', async () => {
    const cfgPath = join(dir, 'config.yaml');
    await writeFile(cfgPath, configText(plugin.endpoint, `unix://${join(dir, 'none', 'grpc.sock')}`), { mode: 0o600 });
    const manifestPath = join(dir, 'kube-apiserver.yaml');
    await writeFile(
      manifestPath,
      `apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  containers:
  - name: kube-apiserver
    image: registry.k8s.io/kube-apiserver:v1.32.6
    command:
    - kube-apiserver
    - --encryption-provider-config=${cfgPath}
    - --etcd-servers=${etcd.endpoint}
`,
    );
    const input = await gatherStatus(defaultGatherDeps(join(dir, 'no-kubeconfig'), () => new Date()), {
      manifestPath,
      defaultConfigPath: cfgPath,
      resources: ['secrets'],
      decryptCheck: false,
      exitCode: true,
      etcd: true,
      cluster: false,
      listLimit: 100,
      kmsTimeoutMs: 2000,
    });
    expect(input.etcd.ok).toBe(true);
    const secrets = input.etcd.ok ? input.etcd.data.resources.find((x) => x.resource === 'secrets')! : undefined;
    // (the previous test left a value under a long key id in namespace "long")
    expect(secrets?.stale.items.filter((o) => o.namespace === 'default').map((o) => o.label).sort()).toEqual([`kms:v2:${vector.keyName} (key id bed-kek-1)`, 'kms:v2:other']);
    const report = buildStatusReport(input);
    expect(JSON.stringify(report.findings)).toContain(`kms:v2:${vector.keyName} (key id bed-kek-1)`);
  });
});
