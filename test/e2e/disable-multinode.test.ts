// disable on two control planes: identity first on both (every key still a reader), the rewrite to
// plaintext, then each node drops the flag, the mount and the file. A reader polls both apiservers
// the whole time; no Secret may fail to read.
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdPrefixCounts, secretHashes } from '../../bench/reencrypt';
import { startBed, type Bed } from '../bed/index';
import { jsonOf, runCli } from '../helpers/cli';
import { CONFIG_REL, copyConfigFrom0, followFromStdin, initTwoNodes, okJson, startReader } from './rotate-helpers';

let bed: Bed;
let copies: string;
let before: Map<string, string>;

const cli = (node: number, ...args: string[]) => runCli([...bed.nodes[node]!.cliArgs, '--yes', '--json', ...args]);

beforeAll(async () => {
  bed = await startBed({ nodes: 2, secrets: 120 });
  copies = await mkdtemp(join(tmpdir(), 'k8s-encrypt-disable-copies-'));
  before = await secretHashes(await bed.api(0));
  await initTwoNodes(bed, copies);
}, 120_000);
afterAll(async () => {
  await bed?.stop();
  if (copies) await rm(copies, { recursive: true, force: true });
});

describe('disable on two control planes', () => {
  it('identity first everywhere, rewrite, then each node unpatched; never unreadable', async () => {
    const encrypted = await etcdPrefixCounts(bed, [...before.keys()]);
    expect(Object.keys(encrypted)).toEqual([expect.stringMatching(/^k8s:enc:aescbc:v1:key-/)]);
    const kubeadm = async () => (await (await bed.api(0)).get('/api/v1/namespaces/kube-system/configmaps/kubeadm-config')).body.data.ClusterConfiguration;
    expect(await kubeadm()).toContain('encryption-provider-config');
    const reader = startReader([await bed.api(0), await bed.api(1)], before);
    try {
      // The --dry-run on node 0 changes nothing and shows identity moving first.
      const dry = okJson(await cli(0, 'disable', '--dry-run'));
      expect(dry.stages.map((s: any) => s.name)).toEqual(['promote', 'rewrite', 'prune']);
      expect(dry.stages[0].diff).toMatch(/^\+\s+- identity: \{\}/m);

      let j = okJson(await cli(0, 'disable'));
      expect(j).toMatchObject({ state: 'waiting', stage: 'promote', lagging: [{ node: 'cp-1' }] });
      const cfg0 = parse(await readFile(join(bed.nodes[0]!.root, CONFIG_REL), 'utf8'));
      expect(cfg0.resources[0].providers[0]).toEqual({ identity: {} });
      expect(cfg0.resources[0].providers[1].aescbc).toBeDefined();

      // The follower asks too (it restarts node 1's apiserver): no terminal, no --yes, exit 2, nothing changed.
      const cfg1 = await readFile(join(bed.nodes[1]!.root, CONFIG_REL), 'utf8');
      const unasked = await runCli([...bed.nodes[1]!.cliArgs, '--json', 'disable', '--from-config', await copyConfigFrom0(bed, copies, 'identity-first.yaml')]);
      expect(unasked.exitCode).toBe(2);
      expect(jsonOf(unasked).error.message).toMatch(/^confirmation needed: install .* on cp-1 \(disable, stage promote\)/);
      expect(await readFile(join(bed.nodes[1]!.root, CONFIG_REL), 'utf8')).toBe(cfg1);

      expect(await followFromStdin(bed, 1, 'disable')).toMatchObject({ state: 'done', stage: 'promote' });

      // Rewrite to plaintext and verify, then node 0 drops encryption and waits for node 1.
      j = okJson(await cli(0, 'disable'));
      expect(j).toMatchObject({ state: 'waiting', stage: 'prune' });
      expect(j.next).toContain('--stage prune');
      expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ plaintext: before.size });

      // A re-run while node 1 still has the flag is refused.
      const again = await cli(0, 'disable');
      expect(again.exitCode).toBe(6);

      j = okJson(await cli(1, 'disable', '--stage', 'prune'));
      expect(j).toMatchObject({ state: 'done', stage: 'prune' });
      expect(okJson(await cli(0, 'disable')).state).toBe('done');
    } finally {
      const seen = await reader.stop();
      expect(seen.failures).toEqual([]);
    }
    for (const n of [0, 1]) {
      const node = bed.nodes[n]!;
      expect(await readFile(node.manifest, 'utf8')).not.toContain('--encryption-provider-config');
      await expect(stat(join(node.root, CONFIG_REL))).rejects.toThrow();
      const backups = join(node.root, 'var/lib/k8s-encrypt/backups');
      const kept = (await readdir(backups)).filter((f) => f.startsWith('config.yaml.'));
      expect(kept.length).toBeGreaterThan(0);
      for (const f of kept) expect((await stat(join(backups, f))).mode & 0o777).toBe(0o600);
      expect(await secretHashes(await bed.api(n))).toEqual(before);
    }
    // kubeadm-config no longer carries the flag.
    expect(await kubeadm()).not.toContain('encryption-provider-config');
    // A further disable has nothing to do.
    for (const r of [await cli(1, 'disable', '--stage', 'prune'), await cli(0, 'disable')]) {
      expect(r.exitCode, String(r.stderr)).toBe(0);
      expect(jsonOf(r)).toMatchObject({ nothingToDo: true });
    }
  }, 120_000);
});
