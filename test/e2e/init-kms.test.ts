// init with KMS v2 on the bed: the plugin is health-checked before the switch (an unhealthy one
// stops init with exit 3 and nothing changed), its socket directory is mounted into the pod, and
// Secrets end up under k8s:enc:kms:v2:<name>:.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdPrefixCounts, secretHashes } from '../../bench/reencrypt';
import { startBed, type Bed } from '../bed/index';
import { startKmsPlugin, type KmsPlugin } from '../bed/kms-plugin';
import { jsonOf, runCli } from '../helpers/cli';

let bed: Bed;
let plugin: KmsPlugin;
let sockDir: string;

beforeAll(async () => {
  sockDir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-kms-'));
  plugin = await startKmsPlugin({ socketPath: join(sockDir, 'kmsplugin', 'grpc.sock'), api: 'v2' });
  bed = await startBed({ secrets: 25 });
}, 120_000);
afterAll(async () => {
  await bed?.stop();
  await plugin?.stop();
  if (sockDir) await rm(sockDir, { recursive: true, force: true });
});

const kmsArgs = () => ['--provider', 'kms', '--kms-name', 'bedkms', '--kms-endpoint', plugin.endpoint];

describe('init --provider kms', () => {
  it('refuses an unhealthy plugin before changing anything (exit 3)', async () => {
    const n = bed.nodes[0]!;
    await plugin.setKnobs({ unhealthy: true });
    const manifest = await readFile(n.manifest, 'utf8');
    const r = await runCli([...n.cliArgs, '--yes', '--json', 'init', ...kmsArgs()]);
    await plugin.setKnobs({ unhealthy: false });
    expect(r.exitCode, String(r.stderr)).toBe(3);
    expect(jsonOf(r).error.message).toMatch(/KMS plugin .* is not healthy/);
    expect(await readFile(n.manifest, 'utf8')).toBe(manifest);
    expect(n.apiserverStarts()).toBe(1);
  });

  it('mounts the socket directory and stores every Secret under the KMS v2 prefix', async () => {
    const n = bed.nodes[0]!;
    const before = await secretHashes(await bed.api());
    const r = await runCli([...n.cliArgs, '--yes', '--json', 'init', ...kmsArgs(), '--kms-timeout', '5s']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const j = jsonOf(r);
    expect(j).toMatchObject({ state: 'done', provider: 'kms', keyName: 'bedkms', proof: { method: 'etcd', observed: 'k8s:enc:kms:v2:bedkms:' } });
    const pod = parse(await readFile(n.manifest, 'utf8'));
    expect(pod.spec.volumes.map((v: { hostPath?: { path: string } }) => v.hostPath?.path)).toContain(dirname(plugin.socketPath));
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ 'k8s:enc:kms:v2:bedkms': before.size });
    expect(await secretHashes(await bed.api())).toEqual(before);
    expect(plugin.stats().encrypt).toBeGreaterThan(0);
  }, 90_000);
});
