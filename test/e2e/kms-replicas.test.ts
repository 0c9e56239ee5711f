// kms plugin-manifest --variant deployment runs one plugin per control plane: --replicas defaults
// to the control planes found through the kubeconfig when the cluster answers, and is required
// (with the reason) only when it does not.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBed, type Bed } from '../bed/index';
import { jsonOf, runCli } from '../helpers/cli';

const ACK = ['kms', 'plugin-manifest', '--plugin', 'ack-kms-plugin', '--variant', 'deployment', '--region', 'cn-hangzhou', '--key-id', 'key-hzz62f1cb0c3ad1d1a2b3c', '--credentials-secret', 'kms-creds'];

describe('kms plugin-manifest --variant deployment', () => {
  let bed: Bed;
  beforeAll(async () => {
    bed = await startBed({ nodes: 2, secrets: 1 });
  }, 120_000);
  afterAll(() => bed?.stop());

  it('defaults --replicas to the control planes the cluster shows, and says so', async () => {
    const n = bed.nodes[0]!;
    const r = await runCli([...n.cliArgs, ...ACK]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(r.stdout).toMatch(/\n  replicas: 2\n/);
    expect(r.stderr).toContain(`note: --replicas 2: the control planes found through ${n.kubeconfig} (cp-0, cp-1)`);
    const j = jsonOf(await runCli([...n.cliArgs, '--json', ...ACK]));
    expect(j.manifest).toMatch(/\n  replicas: 2\n/);
  });

  it('an explicit --replicas wins', async () => {
    const r = await runCli([...bed.nodes[0]!.cliArgs, ...ACK, '--replicas', '3']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(r.stdout).toMatch(/\n  replicas: 3\n/);
    expect(r.stderr).not.toContain('control planes found');
  });

  it('without a reachable cluster it asks for --replicas and says why, exit 2', async () => {
    const r = await runCli(['--kubeconfig', '/nonexistent/admin.conf', ...ACK]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    const line = String(r.stderr).trim().split('\n');
    expect(line).toHaveLength(1);
    expect(line[0]).toMatch(/^error: missing required option for ack-kms-plugin --variant deployment: --replicas \(the control planes could not be counted: .*\/nonexistent\/admin\.conf.*\)/);
  });
});
