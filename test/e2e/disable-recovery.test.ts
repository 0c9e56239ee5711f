// disable after kill -9 at its stage boundaries (the config write, the rewrite, the unpatch, the
// removal of the file): the re-run finishes, every Secret is plaintext and reads back unchanged.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdPrefixCounts, secretHashes } from '../../bench/reencrypt';
import { startBed, type Bed } from '../bed/index';
import { BIN, jsonOf, NODE, runCli } from '../helpers/cli';
import { killAtEachBoundary } from './rotate-helpers';

const JOURNAL_REL = 'var/lib/k8s-encrypt/journals/disable.json';
let bed: Bed;
let before: Map<string, string>;
const root = () => bed.nodes[0]!.root;
const journal = async () => JSON.parse(await readFile(join(root(), JOURNAL_REL), 'utf8').catch(() => '{"steps":[]}'));
const userSecrets = async () => new Map([...(await secretHashes(await bed.api(0)))].filter(([k]) => !k.includes('/k8s-encrypt-canary-')));

beforeAll(async () => {
  bed = await startBed({ secrets: 150 });
  before = await secretHashes(await bed.api(0));
  const r = await runCli([...bed.nodes[0]!.cliArgs, '--yes', 'init']);
  expect(r.exitCode, String(r.stderr)).toBe(0);
}, 90_000);
afterAll(async () => bed?.stop());

describe('disable after kill -9', () => {
  it('continues from every boundary and leaves nothing encrypted and nothing lost', async () => {
    const boundaries = ['promote:begin', 'promote:write', 'promote:wait', 'rewrite:run', 'prune:check', 'prune:unpatch', 'prune:wait', 'prune:kubeadm-config', 'prune:remove-config'];
    const killedAt = await killAtEachBoundary({
      node: bed.nodes[0]!,
      command: 'disable',
      boundaries,
      journal,
      afterKill: async () => expect(await userSecrets()).toEqual(before),
    });
    expect(killedAt.length).toBeGreaterThanOrEqual(5);
    if ((await journal()).status !== 'done') {
      const r = await runCli([...bed.nodes[0]!.cliArgs, '--yes', '--json', 'disable']);
      expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
      expect(jsonOf(r).state).toBe('done');
    }
    await bed.nodes[0]!.waitReady(30_000);
    expect(await secretHashes(await bed.api(0))).toEqual(before);
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ plaintext: before.size });
    expect(await readFile(bed.nodes[0]!.manifest, 'utf8')).not.toContain('--encryption-provider-config');
    await expect(stat(join(root(), 'etc/kubernetes/encryption/config.yaml'))).rejects.toThrow();
    const backups = await readdir(join(root(), 'var/lib/k8s-encrypt/backups'));
    expect(backups.some((b) => b.startsWith('config.yaml.'))).toBe(true);
  }, 90_000);
});

describe("disable's last stage when the apiserver does not come back without the flag", () => {
  it('puts the manifest with the flag back, keeps the config, exits 5, and a re-run retries', async () => {
    const cli = (...args: string[]) => runCli([...bed.nodes[0]!.cliArgs, '--yes', '--json', ...args]);
    // Encryption on again (the test above turned it off), then disable up to its last stage.
    expect((await cli('init')).exitCode).toBe(0);
    expect(jsonOf(await cli('disable', '--stage', 'promote')).state).toBe('stopped');
    expect(jsonOf(await cli('disable', '--stage', 'rewrite')).state).toBe('stopped');
    const config = join(root(), 'etc/kubernetes/encryption/config.yaml');
    const manifestBefore = await readFile(bed.nodes[0]!.manifest, 'utf8');
    const configBefore = await readFile(config, 'utf8');
    expect(manifestBefore).toContain('--encryption-provider-config');

    await bed.nodes[0]!.setKnobs({ crashOnStart: true });
    // Human output: the warning that it rolls back is the operator's cue (--json keeps stderr quiet).
    const child = execa(NODE, [BIN, ...bed.nodes[0]!.cliArgs, '--yes', 'disable', '--timeout', '12s'], { reject: false, env: { NO_COLOR: '1', CI: 'true' } });
    // The operator fixes the node while the tool puts the previous manifest back.
    child.stderr?.on('data', (d: Buffer) => {
      if (d.toString().includes('rolling back stage prune')) void bed.nodes[0]!.setKnobs({});
    });
    const r = await child;
    await bed.nodes[0]!.setKnobs({});
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(5);
    expect(r.stderr).toMatch(/^error: the apiserver did not come back without --encryption-provider-config within 12 s; rolled back: .*kube-apiserver\.yaml from .*kube-apiserver\.yaml\.\d{8}T\d{6}Z(-\d+)?\.bak; .*config\.yaml left in place; the previous apiserver is healthy again \(see why in the apiserver log: crictl logs/m);
    expect(r.stderr).toMatch(/crictl logs.*re-run to retry/);
    expect(await readFile(bed.nodes[0]!.manifest, 'utf8')).toBe(manifestBefore);
    expect(await readFile(config, 'utf8')).toBe(configBefore);
    const kubeadm = (await (await bed.api(0)).get('/api/v1/namespaces/kube-system/configmaps/kubeadm-config')).body.data.ClusterConfiguration;
    expect(kubeadm).toContain('encryption-provider-config');
    expect((await journal()).status).toBe('waiting');
    await bed.nodes[0]!.waitReady(30_000);
    expect(await userSecrets()).toEqual(before);

    const again = await cli('disable');
    expect(again.exitCode, `${again.stdout}\n${again.stderr}`).toBe(0);
    expect(jsonOf(again).state).toBe('done');
    expect(await readFile(bed.nodes[0]!.manifest, 'utf8')).not.toContain('--encryption-provider-config');
    await expect(stat(config)).rejects.toThrow();
    await bed.nodes[0]!.waitReady(30_000);
    expect(await secretHashes(await bed.api(0))).toEqual(before);
  }, 120_000);
});
