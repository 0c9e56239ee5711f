// Two control planes on one etcd, driven the way an operator would: the first node runs each stage
// and pauses, the second installs the first node's file with --from-config. A reader polls BOTH
// apiservers during the whole rotation: no Secret may ever fail to read or read back wrong.
import { createHash } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdPrefixCounts, secretHashes } from '../../bench/reencrypt';
import { startBed, type Bed, type TestApi } from '../bed/index';
import { jsonOf, runCli } from '../helpers/cli';

const CONFIG_REL = 'etc/kubernetes/encryption/config.yaml';

let bed: Bed;
let copies: string;
let before: Map<string, string>;

const cli = (node: number, ...args: string[]) => runCli([...bed.nodes[node]!.cliArgs, '--yes', '--json', ...args]);
const ok = (r: Awaited<ReturnType<typeof runCli>>) => {
  expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
  return jsonOf(r);
};
const configOf = async (node: number) => parse(await readFile(join(bed.nodes[node]!.root, CONFIG_REL), 'utf8'));
async function copyFrom0(name: string): Promise<string> {
  const p = join(copies, name);
  await copyFile(join(bed.nodes[0]!.root, CONFIG_REL), p);
  return p;
}

/** Reads every Secret from both apiservers in a loop until stopped; counts what went wrong. */
function startReader(apis: TestApi[]) {
  const failures: string[] = [];
  let rounds = 0;
  let unavailable = 0;
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      for (const [i, api] of apis.entries()) {
        let r;
        try {
          r = await api.get('/api/v1/secrets?limit=1000');
        } catch {
          // Connection refused while the kubelet restarts that node's apiserver: the node is
          // down, not serving unreadable data. Counted, not a failure.
          unavailable++;
          continue;
        }
        if (r.status === 429) continue;
        if (r.status !== 200) {
          failures.push(`node ${i}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
          continue;
        }
        for (const s of r.body.items) {
          const id = `${s.metadata.namespace}/${s.metadata.name}`;
          const want = before.get(id);
          if (!want) continue; // canaries
          const h = createHash('sha256').update(JSON.stringify({ type: s.type, data: s.data ?? {} })).digest('hex');
          if (h !== want) failures.push(`node ${i}: ${id} reads back different data`);
        }
        const seen = new Set(r.body.items.map((s: any) => `${s.metadata.namespace}/${s.metadata.name}`));
        for (const id of before.keys()) if (!seen.has(id)) failures.push(`node ${i}: ${id} missing from the list`);
      }
      rounds++;
      await new Promise((res) => setTimeout(res, 50));
    }
  })();
  return {
    async stop() {
      stop = true;
      await loop;
      return { failures, rounds, unavailable };
    },
  };
}

beforeAll(async () => {
  bed = await startBed({ nodes: 2, secrets: 150 });
  copies = await mkdtemp(join(tmpdir(), 'k8s-encrypt-rotate-copies-'));
  before = await secretHashes(await bed.api(0));
  // Encryption on, the staged init way: reader on both, then key on both, then the rewrite.
  expect(ok(await cli(0, 'init')).state).toBe('waiting');
  ok(await cli(1, 'init', '--from-config', await copyFrom0('init-reader.yaml')));
  expect(ok(await cli(0, 'init')).state).toBe('waiting');
  ok(await cli(1, 'init', '--from-config', await copyFrom0('init-write.yaml')));
  expect(ok(await cli(0, 'init')).state).toBe('done');
}, 120_000);
afterAll(async () => {
  await bed?.stop();
  if (copies) await rm(copies, { recursive: true, force: true });
});

describe('rotate-key on two control planes', () => {
  it('stage by stage, no Secret is ever unreadable from either apiserver', async () => {
    const oldName = (await configOf(0)).resources[0].providers[0].aescbc.keys[0].name;
    const reader = startReader([await bed.api(0), await bed.api(1)]);
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

      // Node 1 takes the same file; the stage is found from node 0's record.
      j = ok(await cli(1, 'rotate-key', '--from-config', await copyFrom0('add-reader.yaml')));
      expect(j).toMatchObject({ state: 'done', stage: 'add-reader' });

      // promote on node 0, then node 1.
      j = ok(await cli(0, 'rotate-key'));
      expect(j).toMatchObject({ state: 'waiting', stage: 'promote' });
      expect((await configOf(0)).resources[0].providers[0].aescbc.keys[0].name).toBe(newName);
      ok(await cli(1, 'rotate-key', '--from-config', await copyFrom0('promote.yaml')));

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
    const reader = startReader([await bed.api(0), await bed.api(1)]);
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
    expect(seen.failures.every((f) => f.startsWith('node 1:'))).toBe(true);
    // Node 1 catches up with the promoted file and reads everything again.
    ok(await cli(1, 'rotate-key', '--from-config', await copyFrom0('forced-promote.yaml'), '--stage', 'promote'));
    for (const i of [0, 1]) expect(await secretHashes(await bed.api(i))).toEqual(before);
  }, 90_000);
});
