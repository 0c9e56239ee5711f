import { describe, expect, it } from 'vitest';
import { judge, parseMetrics, waitForApiserver, WaitTimeoutError, type Observation } from '../../src/cluster/wait';
import { ApiConnectionError } from '../../src/cluster/errors';
import { CliError, ExitCode } from '../../src/ui/errors';

const since = new Date('2026-11-26T14:00:00.500Z');
const sec = (iso: string) => Date.parse(iso) / 1000;
const SHA = 'a'.repeat(64);

const metrics = (lines: string[]) => parseMetrics(lines.join('\n'));

describe('parseMetrics', () => {
  it('reads names, labels (with escapes) and values, skipping comments', () => {
    const s = parseMetrics(
      [
        '# HELP process_start_time_seconds Start time',
        'process_start_time_seconds 1.7641656e+09',
        'apiserver_encryption_config_controller_last_config_info{apiserver_id_hash="sha256:x",hash="sha256:ab"} 1',
        'weird{a="q\\"uote"} 2',
      ].join('\n'),
    );
    expect(s).toEqual([
      { name: 'process_start_time_seconds', labels: {}, value: 1.7641656e9 },
      { name: 'apiserver_encryption_config_controller_last_config_info', labels: { apiserver_id_hash: 'sha256:x', hash: 'sha256:ab' }, value: 1 },
      { name: 'weird', labels: { a: 'q"uote' }, value: 2 },
    ]);
  });
});

describe('judge', () => {
  const base = { since, mode: 'restart' as const, nodeName: 'cp-0', configSha256: SHA };
  const cases: { name: string; obs: Observation; opts?: Partial<typeof base> & { expectMirrorPodHashChange?: string }; want: string }[] = [
    { name: 'not ready is never proof', obs: { ready: false, metrics: metrics([`process_start_time_seconds ${sec('2026-11-26T14:00:03Z')}`]) }, want: 'pending' },
    {
      name: 'config hash metric wins',
      obs: { ready: true, metrics: metrics([`apiserver_encryption_config_controller_last_config_info{hash="sha256:${SHA}"} 1`, `process_start_time_seconds ${sec('2026-11-26T14:00:03Z')}`]) },
      want: 'config-info-metric',
    },
    {
      name: 'another config hash is not proof, an old process neither',
      obs: { ready: true, metrics: metrics([`apiserver_encryption_config_controller_last_config_info{hash="sha256:${'b'.repeat(64)}"} 1`, `process_start_time_seconds ${sec('2026-11-26T13:00:00Z')}`]) },
      want: 'pending',
    },
    {
      name: 'mirror pod with a new hash, started after and ready',
      obs: { ready: true, metrics: [], mirrorPod: { configHash: 'new', startedAtMs: Date.parse('2026-11-26T14:00:00Z'), ready: true } },
      opts: { expectMirrorPodHashChange: 'old' },
      want: 'mirror-pod',
    },
    {
      name: 'mirror pod still on the old hash: process start time is weak proof',
      obs: { ready: true, metrics: metrics([`process_start_time_seconds ${sec('2026-11-26T14:00:02Z')}`]), mirrorPod: { configHash: 'old', startedAtMs: Date.parse('2026-11-26T14:00:02Z'), ready: true } },
      opts: { expectMirrorPodHashChange: 'old' },
      want: 'process-start-time(weak)',
    },
    {
      name: 'no mirror pods here: process start time is enough',
      obs: { ready: true, metrics: metrics([`process_start_time_seconds ${sec('2026-11-26T14:00:02Z')}`]), mirrorPod: null },
      want: 'process-start-time',
    },
    {
      name: 'the mirror pod it had before is missing for now (the kubelet re-creates it): process start time is weak proof',
      obs: { ready: true, metrics: metrics([`process_start_time_seconds ${sec('2026-11-26T14:00:02Z')}`]), mirrorPod: null },
      opts: { expectMirrorPodHashChange: 'old' },
      want: 'process-start-time(weak)',
    },
    {
      name: 'process started before the change',
      obs: { ready: true, metrics: metrics([`process_start_time_seconds ${sec('2026-11-26T14:00:00Z')}`]), mirrorPod: null },
      want: 'pending',
    },
    {
      name: 'reload mode: a successful reload after the change',
      obs: { ready: true, metrics: metrics([`apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds{status="success"} ${sec('2026-11-26T14:00:05Z')}`]) },
      opts: { mode: 'reload' as never },
      want: 'reload-metric',
    },
    {
      name: 'reload mode: a restart is not what is waited for',
      obs: { ready: true, metrics: metrics([`process_start_time_seconds ${sec('2026-11-26T14:00:05Z')}`]) },
      opts: { mode: 'reload' as never },
      want: 'pending',
    },
    {
      name: 'reload mode: a failed reload after the change fails at once',
      obs: { ready: true, metrics: metrics([`apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds{status="failure"} ${sec('2026-11-26T14:00:05Z')}`]) },
      opts: { mode: 'reload' as never },
      want: 'failed',
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const v = judge(c.obs, { ...base, ...(c.opts ?? {}) });
      const got = v.kind === 'proven' ? `${v.evidence}${v.weak ? '(weak)' : ''}` : v.kind;
      expect(got).toBe(c.want);
    });
  }
});

describe('waitForApiserver', () => {
  /** A 30 s restart wait on a clock that moves only by its sleeps, whose /readyz probe is `probe`; its error. */
  const waitFailing = (probe: () => Promise<never>) => {
    let t = Date.parse('2026-11-26T14:00:00Z');
    const api = { probe, getText: async () => '', get: async () => ({}) };
    return waitForApiserver(
      { api: api as never, now: () => new Date(t), sleep: async (ms) => void (t += ms) },
      { since, mode: 'restart', timeoutMs: 30_000 },
    ).catch((e) => e);
  };

  it('treats connection refused as "not yet" and times out with what it last saw', async () => {
    const err = await waitFailing(async () => Promise.reject(new ApiConnectionError('https://127.0.0.1:1/readyz', 'connect ECONNREFUSED', 'ECONNREFUSED')));
    expect(err).toBeInstanceOf(WaitTimeoutError);
    expect(err.message).toMatch(/within 30 s.*ECONNREFUSED/);
  });

  it("the client's own refusal (credentials that do not load) ends the wait at once, as it is", async () => {
    const refusal = new CliError('kubeconfig x: cannot load the client key (client-key-data or client-key): DECODER routines::unsupported', { exitCode: ExitCode.Usage });
    let probes = 0;
    const err = await waitFailing(async () => {
      probes++;
      throw refusal;
    });
    expect(err).toBe(refusal);
    expect(probes).toBe(1);
  });

  it('returns once a restarted process is ready', async () => {
    let t = Date.parse('2026-11-26T14:00:00Z');
    let calls = 0;
    const api = {
      probe: async () => ({ status: ++calls > 3 ? 200 : 500, body: '' }),
      getText: async () => `process_start_time_seconds ${sec('2026-11-26T14:00:04Z')}\n`,
      get: async () => ({}),
    };
    const r = await waitForApiserver({ api: api as never, now: () => new Date(t), sleep: async (ms) => void (t += ms) }, { since, mode: 'restart', timeoutMs: 60_000 });
    expect(r.evidence).toBe('process-start-time');
  });
});
