// The built CLI against the bed: --dry-run writes nothing, kill -9 mid-run then --resume finishes
// with fewer PUTs than a full run, data unchanged, etcd all under the new key (--verify agrees),
// and the error paths exit with the documented codes.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aescbcConfig, applyEncryptionConfig, etcdPrefixCounts, newKey, secretHashes } from '../../bench/reencrypt';
import { CHECKPOINT_FILE } from '../../src/state/checkpoint';
import { startBed, type Bed, type TestApi } from '../bed/index';
import { BIN, jsonOf, NODE, runCli } from '../helpers/cli';

const N = 1200;
let bed: Bed;
let test: TestApi;
let stateDir: string;
let before: Map<string, string>;
let prefix: string;
let args: string[];

beforeAll(async () => {
  bed = await startBed({ secrets: N, mirrorPods: false });
  test = await bed.api();
  stateDir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-e2e-state-'));
  before = await secretHashes(test);
  // Slow PUTs so the run can be killed in the middle.
  await bed.nodes[0]!.setKnobs({ latencyMs: 4 });
  const key = newKey('key1');
  await applyEncryptionConfig(bed.nodes[0]!, aescbcConfig(key));
  prefix = `k8s:enc:aescbc:v1:${key.name}`;
  args = [...bed.nodes[0]!.cliArgs, '--state-dir', stateDir];
}, 120_000);

afterAll(async () => {
  await bed?.stop();
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
});

describe('k8s-encrypt re-encrypt-all', () => {
  it('--dry-run lists and counts, writes nothing', async () => {
    const r = await runCli([...args, '--json', 're-encrypt-all', '--dry-run']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(jsonOf(r)).toMatchObject({ ok: true, dryRun: true, listed: before.size, rewritten: 0 });
    expect(await etcdPrefixCounts(bed, [...before.keys()].slice(0, 50))).toEqual({ plaintext: 50 });
    expect(existsSync(join(stateDir, CHECKPOINT_FILE))).toBe(false);
  });

  it('kill -9 in the middle, then --resume: everything rewritten once more at most, the checkpoint honoured', async () => {
    const cp = join(stateDir, CHECKPOINT_FILE);
    const child = spawn(NODE, [BIN, ...args, 're-encrypt-all', '--concurrency', '2', '--page-size', '200'], {
      stdio: 'ignore',
      env: { ...process.env, NO_COLOR: '1', CI: 'true' },
    });
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    const deadline = Date.now() + 40_000;
    let done: string | undefined;
    while (Date.now() < deadline) {
      try {
        done = JSON.parse(readFileSync(cp, 'utf8')).resources?.secrets?.doneThrough;
      } catch {
        // not written yet, or being renamed into place
      }
      if (done) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(done, 'a checkpoint with progress appeared').toBeTruthy();
    child.kill('SIGKILL');
    await exited;
    const mid = await etcdPrefixCounts(bed, [...before.keys()]);
    expect(mid.plaintext, 'killed before the end').toBeGreaterThan(0);

    const r = await runCli([...args, '--json', 're-encrypt-all', '--resume', '--verify', '--concurrency', '8']);
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    const s = jsonOf(r);
    expect(s).toMatchObject({ ok: true, resumed: true, failed: 0, verify: { ok: true } });
    expect(s.perResource.secrets.skipped).toBeGreaterThan(0);
    // Fewer PUTs than a full run: only what the checkpoint did not cover was sent again.
    expect(s.listed).toBeLessThan(before.size);
    // The resume lists from the page holding the checkpoint, so earlier pages are not even listed.
    expect(s.listed + s.perResource.secrets.skipped).toBeLessThanOrEqual(before.size);
    expect(existsSync(cp), 'a finished run removes its checkpoint').toBe(false);

    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ [prefix]: before.size });
    expect(await secretHashes(test)).toEqual(before);
  }, 60_000);

  it('human output: a summary line on stdout; a second run finds everything current', async () => {
    const r = await runCli([...args, 're-encrypt-all', '--concurrency', '16']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toMatch(new RegExp(`rewrote secrets: 0 rewritten, ${before.size} already current`));
  }, 30_000);

  it('--verify with etcd out of reach fails before the first PUT', async () => {
    const manifest = join(stateDir, 'unreachable-etcd.yaml');
    const text = readFileSync(bed.nodes[0]!.manifest, 'utf8').replace(/--etcd-servers=\S+/, '--etcd-servers=https://127.0.0.1:1');
    writeFileSync(manifest, text);
    const r = await runCli([...args, 're-encrypt-all', '--verify', '--manifest', manifest]);
    expect(r.exitCode).toBe(3);
    expect(String(r.stderr)).toMatch(/etcd connection check at https:\/\/127\.0\.0\.1:1/);
    expect(String(r.stderr)).not.toMatch(/rewriting secrets/);
  }, 30_000);

  it.each([
    [['re-encrypt-all', '--resources', 'a b'], 2, /--resources/],
    [['re-encrypt-all', '--resources', 'nosuchthings'], 2, /does not serve the resource .*nosuchthings/],
    [['re-encrypt-all', '--server', 'https://127.0.0.1:1'], 3, /cannot reach the apiserver at https:\/\/127\.0\.0\.1:1/],
    [['re-encrypt-all', '--concurrency', '0'], 2, /--concurrency must be a whole number/],
  ])('%j exits %i', async (extra, code, msg) => {
    const r = await runCli([...args, '--json', ...extra]);
    expect(r.exitCode).toBe(code);
    expect(`${r.stdout}${r.stderr}`).toMatch(msg);
  });
});
