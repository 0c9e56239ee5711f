// waitForApiserver and `k8s-encrypt wait-apiserver` against a bed without mirror pods: an old
// process is never taken for a restarted one, a restart is found through process_start_time_seconds,
// and the CLI reports the evidence (or times out with exit 3).
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiClient } from '../../src/cluster/api';
import { localApiserverClient, waitForApiserver, WaitTimeoutError } from '../../src/cluster/wait';
import { planRestartAnnotation } from '../../src/manifest/restart';
import { writeFileAtomic } from '../../src/state/atomic';
import { startBed, type Bed } from '../bed/index';
import { jsonOf, runCli } from '../helpers/cli';

let bed: Bed;
let api: ApiClient;
let restartedAt: Date;

beforeAll(async () => {
  bed = await startBed({ mirrorPods: false });
  const n = bed.nodes[0]!;
  api = await localApiserverClient(n.kubeconfig, await readFile(n.manifest, 'utf8'), n.manifest);
}, 120_000);
afterAll(async () => {
  api?.close();
  await bed?.stop();
});

describe('waitForApiserver', () => {
  it('does not take the running (old) process for a restarted one: times out', async () => {
    const err = await waitForApiserver({ api }, { since: new Date(), mode: 'restart', timeoutMs: 2500, nodeName: 'cp-0' }).catch((e) => e);
    expect(err).toBeInstanceOf(WaitTimeoutError);
    expect(err.message).toMatch(/before the change/);
  });

  it('finds a restart through process_start_time_seconds where there are no mirror pods', async () => {
    const n = bed.nodes[0]!;
    const starts = n.apiserverStarts();
    restartedAt = new Date();
    const text = await readFile(n.manifest, 'utf8');
    await writeFileAtomic(n.manifest, planRestartAnnotation(text, n.manifest, 'f'.repeat(64)).newText, { mode: 0o600 });
    const seen: string[] = [];
    const r = await waitForApiserver({ api, onProgress: (m) => seen.push(m) }, { since: restartedAt, mode: 'restart', timeoutMs: 30_000, nodeName: 'cp-0' });
    expect(r.evidence).toBe('process-start-time');
    expect(n.apiserverStarts()).toBe(starts + 1);
  }, 60_000);
});

describe('k8s-encrypt wait-apiserver', () => {
  it('--json gives the evidence of the restart since the given time', async () => {
    const n = bed.nodes[0]!;
    const r = await runCli([...n.cliArgs, '--json', 'wait-apiserver', '--since', restartedAt.toISOString(), '--timeout', '20s']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(jsonOf(r)).toMatchObject({ ok: true, evidence: 'process-start-time', mode: 'restart' });
  });

  it('times out with exit 3 when nothing restarted after --since', async () => {
    const n = bed.nodes[0]!;
    const r = await runCli([...n.cliArgs, '--json', 'wait-apiserver', '--since', new Date(Date.now() + 60_000).toISOString(), '--timeout', '2s']);
    expect(r.exitCode).toBe(3);
    expect(jsonOf(r).error.message).toMatch(/did not come back.*within 2 s/);
  });

  it('a bad --since is a usage error', async () => {
    const r = await runCli([...bed.nodes[0]!.cliArgs, 'wait-apiserver', '--since', 'yesterday']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toMatch(/not an ISO 8601 time/);
  });
});
