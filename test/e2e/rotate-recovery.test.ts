// Interruptions and refusals on one control plane: kill -9 at stage boundaries then a re-run
// completes with nothing lost; prune is refused while etcd still holds an object under the old key;
// rollback restores the previous stage only while that config can read everything in etcd.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdPrefixCounts, secretHashes } from '../../bench/reencrypt';
import { startBed, type Bed } from '../bed/index';
import { BIN, jsonOf, NODE, runCli } from '../helpers/cli';
import { killAtEachBoundary } from './rotate-helpers';

const CONFIG_REL = 'etc/kubernetes/encryption/config.yaml';
const JOURNAL_REL = 'var/lib/k8s-encrypt/journals/rotate-key.json';

let bed: Bed;
let before: Map<string, string>;
const root = () => bed.nodes[0]!.root;
const cli = (...args: string[]) => runCli([...bed.nodes[0]!.cliArgs, '--json', ...args]);
const ok = (r: Awaited<ReturnType<typeof runCli>>) => {
  expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
  return jsonOf(r);
};
const configText = () => readFile(join(root(), CONFIG_REL), 'utf8');
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const writeLabel = async () => {
  const first = parse(await configText()).resources[0].providers[0];
  const kind = Object.keys(first)[0]!;
  return `k8s:enc:${kind}:v1:${first[kind].keys[0].name}`;
};
/** The Secrets through the API, without canaries (a kill during a proof may leave one until the next run). */
const userSecrets = async () => new Map([...(await secretHashes(await bed.api(0)))].filter(([k]) => !k.includes('/k8s-encrypt-canary-')));
async function allUnder(label: string): Promise<void> {
  // A canary a kill left behind goes only once it is old (it could be another node's proof).
  expect(await userSecrets()).toEqual(before);
  expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ [label]: before.size });
}
const journal = async () => JSON.parse(await readFile(join(root(), JOURNAL_REL), 'utf8').catch(() => '{"steps":[]}'));

beforeAll(async () => {
  bed = await startBed({ secrets: 200 });
  before = await secretHashes(await bed.api(0));
  ok(await cli('--yes', 'init'));
}, 90_000);
afterAll(async () => bed?.stop());

describe('rotate-key after kill -9 at stage boundaries', () => {
  it('each kill leaves a state the next run continues from; the last run completes and nothing is lost', async () => {
    const boundaries = ['promote:begin', 'promote:write', 'promote:apply', 'promote:wait', 'rewrite:run', 'prune:check', 'prune:write', 'prune:wait'];
    const killedAt = await killAtEachBoundary({
      node: bed.nodes[0]!,
      command: 'rotate-key',
      boundaries,
      journal,
      afterKill: async () => expect(await userSecrets()).toEqual(before),
    });
    expect(killedAt.length).toBeGreaterThanOrEqual(4);
    if ((await journal()).status !== 'done') ok(await cli('--yes', 'rotate-key'));
    const j = await journal();
    expect(j.status).toBe('done');
    expect(await writeLabel()).toBe(`k8s:enc:aescbc:v1:${j.inputs.targetName}`);
    await allUnder(await writeLabel());
    expect(parse(await configText()).resources[0].providers).toHaveLength(1);
  }, 90_000);
});

describe('refusals', () => {
  it('a new rotation starts only at its first stage; a wrong --stage journals nothing', async () => {
    const j0 = await journal();
    for (const [stage, code] of [['add-reader', 2], ['prune', 6], ['nonsense', 2]] as const) {
      const r = await cli('--yes', 'rotate-key', '--stage', stage);
      expect(r.exitCode, `${stage}: ${r.stdout}`).toBe(code);
    }
    expect((await journal()).id).toBe(j0.id);
  }, 30_000);

  it('prune is refused while etcd holds an object under the key it removes, and named', async () => {
    const oldLabel = await writeLabel();
    const [victim] = [...before.keys()];
    const oldRaw = (await bed.etcdGet(`/registry/secrets/${victim}`))!;
    ok(await cli('--yes', 'rotate-key', '--stage', 'promote'));
    // A --stage run continues the journal: it executes the plan recorded when the rotation began.
    const rw = await runCli([...bed.nodes[0]!.cliArgs, '--yes', 'rotate-key', '--stage', 'rewrite']);
    expect(rw.exitCode, `${rw.stdout}\n${rw.stderr}`).toBe(0);
    expect(String(rw.stderr)).toContain('resumed from the plan recorded in the journal');
    const newLabel = await writeLabel();
    // The object goes back under the old key behind the apiserver's back (a missed write).
    await bed.etcdPut(`/registry/secrets/${victim}`, oldRaw);
    const cfg = await configText();
    const r = await cli('--yes', 'rotate-key');
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(6);
    const err = jsonOf(r).error;
    expect(err.message).toContain(`1 secrets under ${oldLabel.replace(/^k8s:enc:/, '').replace(':v1:', ':')}`);
    expect(err.message).toContain(victim);
    expect(await configText()).toBe(cfg);
    // Rewrite it, and the prune goes through.
    ok(await cli('re-encrypt-all'));
    expect(ok(await cli('--yes', 'rotate-key')).state).toBe('done');
    await allUnder(newLabel);
  }, 90_000);

  it('--stage out of order is refused', async () => {
    ok(await cli('--yes', 'rotate-key', '--stage', 'promote'));
    const r = await cli('--yes', 'rotate-key', '--stage', 'prune');
    expect(r.exitCode).toBe(6);
    expect(jsonOf(r).error.message).toMatch(/stage "prune" comes after "rewrite"/);
  }, 60_000);
});

describe('rollback', () => {
  it('restores the previous config while it can still read everything, and the journal steps back', async () => {
    // The rotation of the previous test stopped after promote: nothing is under the new key yet.
    const j0 = await journal();
    const promoted = await configText();
    const dry = ok(await cli('rollback', '--dry-run'));
    expect(dry.diff).toContain('<redacted>');
    expect(await configText()).toBe(promoted);
    const r = ok(await cli('--yes', 'rollback'));
    expect(r.sha256).toBe(j0.inputs.baseSha256);
    expect(sha(await configText())).toBe(j0.inputs.baseSha256);
    expect((await journal()).status).toBe('rolled-back');
    expect(await userSecrets()).toEqual(before);
  }, 60_000);

  it('is refused once objects are under a key the previous config does not have', async () => {
    ok(await cli('--yes', 'rotate-key', '--stage', 'promote'));
    ok(await cli('--yes', 'rotate-key', '--stage', 'rewrite'));
    const cfg = await configText();
    const r = await cli('--yes', 'rollback');
    expect(r.exitCode).toBe(6);
    expect(jsonOf(r).error.message).toMatch(/refusing to restore .*etcd still holds 20\d secrets under aescbc:key-/);
    // rollback has no --force, so its hint must not offer one.
    expect(jsonOf(r).error.hint).toMatch(/--to FILE.*rollback never makes objects unreadable/);
    expect(jsonOf(r).error.hint).not.toContain('--force');
    expect(await configText()).toBe(cfg);
    expect(ok(await cli('--yes', 'rotate-key')).state).toBe('done');
    await allUnder(await writeLabel());
  }, 60_000);
});

describe('a stage whose apiserver does not come back', () => {
  it('puts the previous config back (exit 5), and a re-run retries the stage', async () => {
    const base = await configText();
    await bed.nodes[0]!.setKnobs({ crashOnStart: true });
    const child = execa(NODE, [BIN, ...bed.nodes[0]!.cliArgs, '--yes', '--json', 'rotate-key', '--timeout', '12s'], { reject: false, env: { NO_COLOR: '1', CI: 'true' } });
    // The operator fixes the node while the tool restores the previous config.
    child.stderr?.on('data', (d: Buffer) => {
      if (d.toString().includes('putting the previous config back')) void bed.nodes[0]!.setKnobs({});
    });
    const r = await child;
    await bed.nodes[0]!.setKnobs({});
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(5);
    expect(jsonOf(r).error.message).toMatch(/did not run the promote config within 12 s; rolled back: .*config\.yaml from /);
    expect(await configText()).toBe(base);
    await bed.nodes[0]!.waitReady(30_000);
    expect(await userSecrets()).toEqual(before);
    expect(ok(await cli('--yes', 'rotate-key')).state).toBe('done');
    await allUnder(await writeLabel());
  }, 90_000);
});
