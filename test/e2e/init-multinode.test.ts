// The staged path on two control planes sharing one etcd, the transition engine's stages: add-reader
// (identity first with the new key as reader) on every node, then promote (the key first), then the
// rewrite; each stage advances only when both nodes report it, and a re-run while the other node
// lags is refused.
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdPrefixCounts, secretHashes } from '../../bench/reencrypt';
import { startBed, type Bed } from '../bed/index';
import { jsonOf, runCli } from '../helpers/cli';

const CONFIG_REL = 'etc/kubernetes/encryption/config.yaml';

let bed: Bed;
let copies: string;
let before: Map<string, string>;

beforeAll(async () => {
  bed = await startBed({ nodes: 2, secrets: 60 });
  copies = await mkdtemp(join(tmpdir(), 'k8s-encrypt-copies-'));
  before = await secretHashes(await bed.api(0));
}, 120_000);
afterAll(async () => {
  await bed?.stop();
  if (copies) await rm(copies, { recursive: true, force: true });
});

const init = (node: number, ...extra: string[]) => runCli([...bed.nodes[node]!.cliArgs, '--yes', '--json', 'init', ...extra]);
const stageOf = async (node: string) => (await (await bed.api(0)).get(`/api/v1/nodes/${node}`)).body.metadata.annotations?.['k8s-encrypt.io/stage'];
const firstProvider = async (node: number) => Object.keys(parse(await readFile(join(bed.nodes[node]!.root, CONFIG_REL), 'utf8')).resources[0].providers[0])[0];

/** Every Secret readable from both apiservers with its original data. */
async function readableFromBoth(): Promise<void> {
  for (const i of [0, 1]) expect(await secretHashes(await bed.api(i))).toEqual(before);
}

describe('init on two control planes', () => {
  it('node 0 goes to the add-reader stage (identity first) and pauses for the other node', async () => {
    const r = await init(0);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const j = jsonOf(r);
    expect(j).toMatchObject({ state: 'waiting', mode: 'staged', multiNode: { controlPlanes: 2, stage: 'add-reader' } });
    expect(j.multiNode.nodes).toEqual([{ node: 'cp-1', reports: 'nothing yet' }]);
    expect(j.multiNode.next).toContain('--from-config');
    expect(await firstProvider(0)).toBe('identity');
    expect(await stageOf('cp-0')).toMatch(/^add-reader:sha256:[0-9a-f]{64}$/);
    // Nothing is encrypted yet: identity still writes.
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ plaintext: before.size });
    await readableFromBoth();
  }, 90_000);

  it('a re-run on node 0 while node 1 is not configured is refused (exit 6) and changes nothing', async () => {
    const starts = bed.nodes[0]!.apiserverStarts();
    const r = await init(0);
    expect(r.exitCode).toBe(6);
    expect(jsonOf(r).error.message).toMatch(/not every control plane runs stage "add-reader".*cp-1: nothing yet/);
    // The pause was planned: the re-run says so instead of calling it an interruption.
    const human = await runCli([...bed.nodes[0]!.cliArgs, '--yes', 'init']);
    expect(human.exitCode).toBe(6);
    expect(human.stderr).toMatch(/paused after stage "add-reader" to wait for the other control planes/);
    expect(human.stderr).not.toMatch(/interrupted/);
    expect(bed.nodes[0]!.apiserverStarts()).toBe(starts);
    expect(await firstProvider(0)).toBe('identity');
  }, 60_000);

  it('node 1 installs the same file with --from-config and records the same stage and hash', async () => {
    const copy = join(copies, 'reader.yaml');
    await copyFile(join(bed.nodes[0]!.root, CONFIG_REL), copy);
    const r = await init(1, '--from-config', copy);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(jsonOf(r)).toMatchObject({ state: 'done', mode: 'from-config', multiNode: { stage: 'add-reader' } });
    expect(await readFile(join(bed.nodes[1]!.root, CONFIG_REL), 'utf8')).toBe(await readFile(copy, 'utf8'));
    expect(await stageOf('cp-1')).toBe(await stageOf('cp-0'));
  }, 90_000);

  it('node 0 then promotes the key (key first) and pauses again for node 1', async () => {
    const r = await init(0);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const j = jsonOf(r);
    expect(j).toMatchObject({ state: 'waiting', multiNode: { stage: 'promote' }, proof: { method: 'etcd' } });
    expect(await firstProvider(0)).toBe('aescbc');
    expect(await stageOf('cp-0')).toMatch(/^promote:/);
    await readableFromBoth();
    const again = await init(0);
    expect(again.exitCode).toBe(6);
  }, 90_000);

  it('node 1 takes the key-first file; node 0 then rewrites everything', async () => {
    const copy = join(copies, 'write.yaml');
    await copyFile(join(bed.nodes[0]!.root, CONFIG_REL), copy);
    const r1 = await init(1, '--from-config', copy);
    expect(r1.exitCode, String(r1.stderr)).toBe(0);
    expect(jsonOf(r1)).toMatchObject({ state: 'done', multiNode: { stage: 'promote' }, proof: { method: 'etcd' } });
    expect(await stageOf('cp-1')).toBe(await stageOf('cp-0'));

    const r0 = await init(0);
    expect(r0.exitCode, String(r0.stderr)).toBe(0);
    const j = jsonOf(r0);
    expect(j).toMatchObject({ state: 'done', rewrite: { failed: 0 } });
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ [`k8s:enc:aescbc:v1:${j.keyName}`]: before.size });
    await readableFromBoth();
    const done = await init(0);
    expect(done.exitCode).toBe(0);
    expect(jsonOf(done).nothingToDo).toBe(true);
  }, 120_000);
});

describe('two control planes that cannot be discovered (no mirror pods, no Node objects)', () => {
  let bed2: Bed;
  let dir: string;
  beforeAll(async () => {
    bed2 = await startBed({ nodes: 2, secrets: 30, mirrorPods: false });
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-copies-'));
  }, 120_000);
  afterAll(async () => {
    await bed2?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const run = (node: number, ...extra: string[]) => runCli([...bed2.nodes[node]!.cliArgs, '--yes', '--json', 'init', '--node-name', `cp-${node}`, ...extra]);
  const state = async () => (await (await bed2.api(0)).get('/api/v1/namespaces/kube-system/configmaps/k8s-encrypt-state')).body.data;

  it('warns that it found no control plane; --control-planes 2 takes the staged path, records go to the state ConfigMap', async () => {
    const dry = await runCli([...bed2.nodes[0]!.cliArgs, '--json', 'init', '--dry-run']);
    expect(dry.exitCode, String(dry.stderr)).toBe(0);
    expect(jsonOf(dry).mode).toBe('single');
    expect(jsonOf(dry).warnings.join('\n')).toMatch(/no control plane found.*--control-planes/);

    const r = await run(0, '--control-planes', '2');
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(jsonOf(r)).toMatchObject({ state: 'waiting', mode: 'staged', multiNode: { stage: 'add-reader' } });
    expect(Object.keys(await state())).toEqual(['cp-0']);

    const again = await run(0);
    expect(again.exitCode).toBe(6);
    expect(jsonOf(again).error.message).toMatch(/control plane 2 of 2, not reporting yet/);
  }, 90_000);

  it('the other node records itself with --from-config; the stages then advance to the rewrite', async () => {
    const reader = join(dir, 'reader.yaml');
    await copyFile(join(bed2.nodes[0]!.root, CONFIG_REL), reader);
    expect((await run(1, '--from-config', reader)).exitCode).toBe(0);
    const st = await state();
    expect(st['cp-1']).toBe(st['cp-0']);

    const promote = await run(0);
    expect(promote.exitCode, String(promote.stderr)).toBe(0);
    expect(jsonOf(promote)).toMatchObject({ state: 'waiting', multiNode: { stage: 'promote' } });

    const write = join(dir, 'write.yaml');
    await copyFile(join(bed2.nodes[0]!.root, CONFIG_REL), write);
    expect((await run(1, '--from-config', write)).exitCode).toBe(0);
    const done = await run(0);
    expect(done.exitCode, String(done.stderr)).toBe(0);
    const j = jsonOf(done);
    expect(j).toMatchObject({ state: 'done', rewrite: { failed: 0 } });
    const names = [...(await secretHashes(await bed2.api(0))).keys()];
    expect(await etcdPrefixCounts(bed2, names)).toEqual({ [`k8s:enc:aescbc:v1:${j.keyName}`]: names.length });
  }, 120_000);
});

describe('a promotion the apiserver does not survive', () => {
  let bed3: Bed;
  let dir: string;
  beforeAll(async () => {
    bed3 = await startBed({ nodes: 2, secrets: 10 });
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-copies-'));
  }, 120_000);
  afterAll(async () => {
    await bed3?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  const run = (node: number, ...extra: string[]) => runCli([...bed3.nodes[node]!.cliArgs, '--yes', '--json', 'init', ...extra]);

  it('is rolled back to the add-reader stage (exit 5), and a re-run promotes again', async () => {
    expect((await run(0)).exitCode).toBe(0);
    const reader = join(dir, 'reader.yaml');
    await copyFile(join(bed3.nodes[0]!.root, CONFIG_REL), reader);
    expect((await run(1, '--from-config', reader)).exitCode).toBe(0);
    const manifest = await readFile(bed3.nodes[0]!.manifest, 'utf8');

    await bed3.nodes[0]!.setKnobs({ crashOnStart: true });
    const r = await run(0, '--timeout', '6s');
    await bed3.nodes[0]!.setKnobs({});
    expect(r.exitCode, String(r.stderr)).toBe(5);
    expect(jsonOf(r).error.message).toMatch(/rolled back: .*kube-apiserver\.yaml from .*; .*config\.yaml from /);
    // Back at the add-reader stage: same config bytes and manifest as before the attempt.
    expect(await readFile(join(bed3.nodes[0]!.root, CONFIG_REL), 'utf8')).toBe(await readFile(reader, 'utf8'));
    expect(await readFile(bed3.nodes[0]!.manifest, 'utf8')).toBe(manifest);
    expect(await bed3.etcdGet('/registry/secrets/default/bed-secret-0').then((v) => v?.subarray(0, 8).toString('latin1'))).not.toMatch(/^k8s:enc/);

    const again = await run(0);
    expect(again.exitCode, String(again.stderr)).toBe(0);
    expect(jsonOf(again)).toMatchObject({ state: 'waiting', multiNode: { stage: 'promote' } });
  }, 120_000);
});
