// Two control planes on one etcd, driven the way an operator would: the first node runs each stage
// and pauses, the second installs the first node's file with --from-config. A reader polls BOTH
// apiservers during the whole rotation: no Secret may ever fail to read or read back wrong.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
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
const ok = okJson;
const configOf = async (node: number) => parse(await readFile(join(bed.nodes[node]!.root, CONFIG_REL), 'utf8'));
const copyFrom0 = (name: string) => copyConfigFrom0(bed, copies, name);

beforeAll(async () => {
  bed = await startBed({ nodes: 2, secrets: 150 });
  copies = await mkdtemp(join(tmpdir(), 'k8s-encrypt-rotate-copies-'));
  before = await secretHashes(await bed.api(0));
  await initTwoNodes(bed, copies);
}, 120_000);
afterAll(async () => {
  await bed?.stop();
  if (copies) await rm(copies, { recursive: true, force: true });
});

describe('rotate-key on two control planes', () => {
  it('stage by stage, no Secret is ever unreadable from either apiserver', async () => {
    const oldName = (await configOf(0)).resources[0].providers[0].aescbc.keys[0].name;
    const reader = startReader([await bed.api(0), await bed.api(1)], before);
    try {
      // add-reader on node 0: the old key still writes; node 0 pauses for node 1.
      let j = ok(await cli(0, 'rotate-key'));
      expect(j).toMatchObject({ state: 'waiting', stage: 'add-reader', lagging: [{ node: 'cp-1' }] });
      const newName = j.target.name;
      expect((await configOf(0)).resources[0].providers[0].aescbc.keys.map((k: any) => k.name)).toEqual([oldName, newName]);

      // A re-run while node 1 lags is refused and changes nothing.
      const starts = bed.nodes[0]!.apiserverStarts();
      const again = await cli(0, 'rotate-key');
      expect(again.exitCode).toBe(6);
      expect(jsonOf(again).error.message).toMatch(/not every control plane runs stage "add-reader".*cp-1/);
      expect(bed.nodes[0]!.apiserverStarts()).toBe(starts);

      // Starting a second rotation on node 1 (instead of following) would fork the keys: refused.
      const fork = await cli(1, 'rotate-key');
      expect(fork.exitCode).toBe(6);
      expect(jsonOf(fork).error.message).toMatch(/a transition is under way on cp-0 \(stage add-reader\)/);

      // Following restarts node 1's apiserver: without a terminal it needs --yes, and changes nothing.
      const node1Config = await readFile(join(bed.nodes[1]!.root, CONFIG_REL), 'utf8');
      const starts1 = bed.nodes[1]!.apiserverStarts();
      const unasked = await runCli([...bed.nodes[1]!.cliArgs, '--json', 'rotate-key', '--from-config', await copyFrom0('add-reader.yaml')]);
      expect(unasked.exitCode).toBe(2);
      expect(jsonOf(unasked).error.message).toMatch(/^confirmation needed: install .*add-reader\.yaml as .* on cp-1 \(rotate-key, stage add-reader\)\? The apiserver restarts\./);
      expect(await readFile(join(bed.nodes[1]!.root, CONFIG_REL), 'utf8')).toBe(node1Config);
      expect(bed.nodes[1]!.apiserverStarts()).toBe(starts1);

      // Node 1 takes the same file; the stage is found from node 0's record.
      j = ok(await cli(1, 'rotate-key', '--from-config', await copyFrom0('add-reader.yaml')));
      expect(j).toMatchObject({ state: 'done', stage: 'add-reader' });

      // promote on node 0, then node 1.
      j = ok(await cli(0, 'rotate-key'));
      expect(j).toMatchObject({ state: 'waiting', stage: 'promote' });
      expect((await configOf(0)).resources[0].providers[0].aescbc.keys[0].name).toBe(newName);
      expect(await followFromStdin(bed, 1, 'rotate-key')).toMatchObject({ state: 'done', stage: 'promote' });

      // rewrite + verify, then prune on node 0; node 1 prunes last.
      j = ok(await cli(0, 'rotate-key'));
      expect(j).toMatchObject({ state: 'waiting', stage: 'prune' });
      expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ [`k8s:enc:aescbc:v1:${newName}`]: before.size });
      ok(await cli(1, 'rotate-key', '--from-config', await copyFrom0('prune.yaml')));
      j = ok(await cli(0, 'rotate-key'));
      expect(j.state).toBe('done');
      for (const n of [0, 1]) expect((await configOf(n)).resources[0].providers).toEqual([{ aescbc: { keys: [expect.objectContaining({ name: newName })] } }]);
    } finally {
      const seen = await reader.stop();
      expect(seen.failures).toEqual([]);
      expect(seen.rounds).toBeGreaterThan(10);
    }
    for (const i of [0, 1]) expect(await secretHashes(await bed.api(i))).toEqual(before);
  }, 120_000);

  it('the reader does catch the shortcut the stages prevent: --force past a lagging node makes Secrets unreadable there', async () => {
    // add-reader on node 0 only, then promote with --force although node 1 never got the key.
    expect(ok(await cli(0, 'rotate-key', '--stage', 'add-reader'))).toMatchObject({ state: 'stopped', stage: 'add-reader' });
    const j = ok(await cli(0, 'rotate-key', '--stage', 'promote', '--force'));
    expect(j).toMatchObject({ state: 'stopped', stage: 'promote' });
    const reader = startReader([await bed.api(0), await bed.api(1)], before);
    let seen;
    try {
      // The rewrite refuses to start past the lagging node too, unless forced again.
      const refusedRun = await cli(0, 'rotate-key', '--stage', 'rewrite');
      expect(jsonOf(refusedRun)).toMatchObject({ state: 'waiting', lagging: [{ node: 'cp-1' }] });
      ok(await cli(0, 'rotate-key', '--stage', 'rewrite', '--force'));
    } finally {
      seen = await reader.stop();
    }
    expect(seen.failures.length).toBeGreaterThan(0);
    expect(seen.failures.every((f) => /^node 1: HTTP 500 /.test(f))).toBe(true);
    // Node 1 refuses to take a file that writes with a key it does not read yet (it skipped
    // add-reader); forced, it catches up with the promoted file and reads everything again.
    const skipped = await cli(1, 'rotate-key', '--from-config', await copyFrom0('forced-promote.yaml'), '--stage', 'promote');
    expect(skipped.exitCode).toBe(6);
    expect(jsonOf(skipped).error.message).toMatch(/writes with aescbc:key-.*which .* does not read yet/);
    ok(await cli(1, 'rotate-key', '--from-config', await copyFrom0('forced-promote.yaml'), '--stage', 'promote', '--force'));
    for (const i of [0, 1]) expect(await secretHashes(await bed.api(i))).toEqual(before);
  }, 90_000);
});
