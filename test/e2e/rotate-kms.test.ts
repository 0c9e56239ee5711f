// A provider change from aescbc to KMS v2: the plugin is checked first, its socket directory is
// mounted by the promote stage, and every Secret ends up under k8s:enc:kms:v2:<name>:.
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
let before: Map<string, string>;
const cli = (...args: string[]) => runCli([...bed.nodes[0]!.cliArgs, '--yes', '--json', ...args]);
const kmsArgs = () => ['--provider', 'kms', '--kms-name', 'bedkms', '--kms-endpoint', plugin.endpoint];

beforeAll(async () => {
  sockDir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-rotate-kms-'));
  plugin = await startKmsPlugin({ socketPath: join(sockDir, 'kmsplugin', 'grpc.sock'), api: 'v2' });
  bed = await startBed({ secrets: 60 });
  before = await secretHashes(await bed.api(0));
  const r = await cli('init');
  expect(r.exitCode, String(r.stderr)).toBe(0);
}, 90_000);
afterAll(async () => {
  await bed?.stop();
  await plugin?.stop();
  if (sockDir) await rm(sockDir, { recursive: true, force: true });
});

describe('rotate-key --provider kms', () => {
  it('refuses an unhealthy plugin before anything changes (exit 3)', async () => {
    await plugin.setKnobs({ unhealthy: true });
    const manifest = await readFile(bed.nodes[0]!.manifest, 'utf8');
    const r = await cli('rotate-key', ...kmsArgs());
    await plugin.setKnobs({ unhealthy: false });
    expect(r.exitCode, String(r.stderr)).toBe(3);
    expect(jsonOf(r).error.message).toMatch(/KMS plugin .* is not healthy/);
    expect(await readFile(bed.nodes[0]!.manifest, 'utf8')).toBe(manifest);
  }, 30_000);

  it('mounts the socket directory and moves every Secret under the KMS v2 prefix', async () => {
    const r = await cli('rotate-key', ...kmsArgs());
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(jsonOf(r)).toMatchObject({ state: 'done', target: { provider: 'kms', name: 'bedkms', label: 'kms:v2:bedkms' } });
    const pod = parse(await readFile(bed.nodes[0]!.manifest, 'utf8'));
    expect(pod.spec.volumes.map((v: { hostPath?: { path: string } }) => v.hostPath?.path)).toContain(dirname(plugin.socketPath));
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ 'k8s:enc:kms:v2:bedkms': before.size });
    expect(await secretHashes(await bed.api(0))).toEqual(before);
    const cfg = parse(await readFile(join(bed.nodes[0]!.root, 'etc/kubernetes/encryption/config.yaml'), 'utf8'));
    expect(cfg.resources[0].providers).toEqual([{ kms: expect.objectContaining({ name: 'bedkms', apiVersion: 'v2' }) }]);
  }, 60_000);
});
