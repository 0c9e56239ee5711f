// What discovery could not read is said, not dropped: with no mirror pods and no control-plane
// Nodes, the apiserver identity leases are what is left to count control planes by; behind a 403
// they are a warning on stderr and in --json `warnings` of init, rotate-key and wait-apiserver
// (as status reports it), through the built CLI against the bed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBed, type Bed, type BedNode } from '../bed/index';
import { jsonOf, runCli } from '../helpers/cli';

const LEASES = /^cannot list the apiserver identity leases in kube-system: 403 Forbidden/;

describe('identity leases behind a 403', () => {
  let bed: Bed;
  let n: BedNode;
  beforeAll(async () => {
    bed = await startBed({ secrets: 4, mirrorPods: false, knobs: { forbidPaths: ['/apis/coordination.k8s.io/'] } });
    n = bed.nodes[0]!;
  }, 120_000);
  afterAll(() => bed?.stop());

  const leaseWarnings = (j: { warnings?: string[] }) => (j.warnings ?? []).filter((w) => LEASES.test(w));

  it('init --dry-run says so on stderr, once', async () => {
    const r = await runCli([...n.cliArgs, 'init', '--dry-run']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stderr).split('\n').filter((l) => /^warning: cannot list the apiserver identity leases in kube-system: 403 Forbidden/.test(l))).toHaveLength(1);
  });

  it('init --yes --json has it in warnings, and still turns encryption on', async () => {
    const r = await runCli([...n.cliArgs, '--yes', '--json', 'init', '--node-name', 'cp-0']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const j = jsonOf(r);
    expect(j.state).toBe('done');
    expect(leaseWarnings(j)).toHaveLength(1);
  }, 120_000);

  it('rotate-key --dry-run --json has it in warnings', async () => {
    const r = await runCli([...n.cliArgs, '--json', 'rotate-key', '--dry-run', '--node-name', 'cp-0']);
    expect(r.exitCode, String(r.stdout)).toBe(0);
    expect(leaseWarnings(jsonOf(r))).toHaveLength(1);
  });

  it('wait-apiserver --json has it in warnings', async () => {
    const since = new Date(Date.now() - 3_600_000).toISOString();
    const r = await runCli([...n.cliArgs, '--json', 'wait-apiserver', '--since', since, '--mode', 'restart', '--timeout', '60s']);
    expect(r.exitCode, String(r.stdout)).toBe(0);
    const j = jsonOf(r);
    expect(j.evidence).toBe('process-start-time');
    expect(leaseWarnings(j)).toHaveLength(1);
  });
});
