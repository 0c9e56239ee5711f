// status with two control planes sharing one etcd (Kubernetes 1.34 stand-ins, which publish the
// config-info metric): one node without encryption, then the two on different configs. Also the
// gatherers when evidence is missing: no kubeconfig, unreadable etcd certificates.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aescbcConfig, applyEncryptionConfig, newKey } from '../../bench/reencrypt';
import { buildStatusReport } from '../../src/status/report';
import { defaultGatherDeps, gatherStatus } from '../../src/status/gather';
import { startBed, type Bed, type BedNode } from '../bed/index';
import { jsonOf, runCli } from '../helpers/cli';

let bed: Bed;
let cp0: BedNode;
let cp1: BedNode;

async function report(node: BedNode, extra: Partial<Parameters<typeof gatherStatus>[1]> = {}) {
  const input = await gatherStatus(defaultGatherDeps(node.kubeconfig, () => new Date()), {
    manifestPath: node.manifest,
    defaultConfigPath: join(node.root, 'etc/kubernetes/encryption/config.yaml'),
    decryptCheck: false,
    exitCode: true,
    etcd: true,
    cluster: true,
    listLimit: 100,
    ...extra,
  });
  return buildStatusReport(input);
}

type Report = Awaited<ReturnType<typeof report>>;

/**
 * What one node can see of the others (their mirror pods, their metrics) settles a moment after
 * an apiserver is ready again (the kubelet re-creates its mirror pod), and status is a
 * point-in-time view: polls the report until `settled` holds of it (for up to 15 s).
 */
async function settledReport(node: BedNode, extra: Partial<Parameters<typeof gatherStatus>[1]>, settled: (r: Report) => boolean): Promise<Report> {
  let r = await report(node, extra);
  for (let i = 0; i < 60 && r.apiservers.available && !settled(r); i++) {
    await new Promise((res) => setTimeout(res, 250));
    r = await report(node, extra);
  }
  return r;
}
const judged = (r: Report, flagged: string[]) =>
  r.apiservers.available && r.apiservers.nodes.every((n) => n.runsCurrentConfig !== 'unknown' && (!flagged.includes(n.name) || n.flagSet));

beforeAll(async () => {
  bed = await startBed({ nodes: 2, secrets: 6, kubeVersion: '1.34.1' });
  [cp0, cp1] = bed.nodes as [BedNode, BedNode];
}, 120_000);

afterAll(async () => {
  await bed?.stop();
});

describe('status with two control planes', () => {
  it('one node encrypting, the other not: disagreement, each node named', async () => {
    await applyEncryptionConfig(cp0, aescbcConfig(newKey('a1')));
    // Until cp-0's new mirror pod is up, cp-0 is (rightly) not judged, or seen without the flag.
    const r = await settledReport(cp0, {}, (x) => judged(x, ['cp-0']));
    expect(r.apiservers.available).toBe(true);
    if (!r.apiservers.available) return;
    const byName = Object.fromEntries(r.apiservers.nodes.map((n) => [n.name, n]));
    expect(byName['cp-0']).toMatchObject({ thisNode: true, runsCurrentConfig: 'yes', flagSet: true });
    expect(byName['cp-0']!.evidence[0]).toMatch(/^config-info metric: sha256 \w{12}… \(this config\)/);
    expect(byName['cp-1']).toMatchObject({ thisNode: false, runsCurrentConfig: 'no', flagSet: false });
    expect(r.apiservers.agree).toBe(false);
    expect(r.apiservers.disagreement).toEqual(['cp-0 runs with --encryption-provider-config, cp-1 without']);
    expect(r.healthy).toBe(false);
  });

  it('two nodes on different configs: disagreement by config hash, --exit-code 4 through the CLI', async () => {
    await applyEncryptionConfig(cp1, aescbcConfig(newKey('b1')));
    // Until cp-1's new mirror pod is up, cp-1 is (rightly) reported as running without the flag.
    const r = await settledReport(cp0, { cluster: true, etcd: false }, (x) => judged(x, ['cp-0', 'cp-1']));
    if (!r.apiservers.available) throw new Error(r.apiservers.reason);
    expect(r.apiservers.nodes.map((n) => [n.name, n.runsCurrentConfig])).toEqual([
      ['cp-0', 'yes'],
      ['cp-1', 'no'],
    ]);
    expect(r.apiservers.disagreement).toHaveLength(1);
    expect(r.apiservers.disagreement[0]).toMatch(/^configs differ: cp-0 on sha256 \w{12}…; cp-1 on sha256 \w{12}…$/);

    const cli = await runCli([...cp1.cliArgs, 'status', '--json', '--exit-code', '--no-etcd']);
    expect(cli.exitCode).toBe(4);
    const json = jsonOf(cli);
    expect(json.apiservers.thisNode.name).toBe('cp-1');
    expect(json.findings.map((f: any) => f.id)).toContain('apiservers.disagree');
    const human = await runCli([...cp1.cliArgs, 'status', '--no-etcd']);
    expect(human.exitCode).toBe(0);
    expect(human.stdout).toMatch(/✗ disagreement\s+configs differ/);
  });

  it('reports what it cannot read instead of failing: no kubeconfig, etcd certificates unreadable', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-status-'));
    try {
      // This node's manifest, pointing at a client key nobody may read.
      const { readFile } = await import('node:fs/promises');
      const text = (await readFile(cp0.manifest, 'utf8')).replace(/--etcd-keyfile=\S+/, `--etcd-keyfile=${join(dir, 'locked.key')}`);
      await writeFile(join(dir, 'locked.key'), 'x');
      await chmod(join(dir, 'locked.key'), 0o000);
      const manifest = join(dir, 'kube-apiserver.yaml');
      await writeFile(manifest, text);
      const cli = await runCli(['--root', dir, 'status', '--json', '--manifest', manifest, '--kubeconfig', join(dir, 'missing.conf')]);
      expect(cli.exitCode).toBe(0);
      const json = jsonOf(cli);
      expect(json.node.available).toBe(true);
      expect(json.node.config.available).toBe(true); // the config the manifest names is still readable
      expect(json.apiservers).toMatchObject({ available: false, skipped: false });
      expect(json.apiservers.reason).toContain('missing.conf');
      expect(json.etcd).toMatchObject({ available: false, skipped: false });
      // root reads anything: then the key is read and rejected by TLS; otherwise permission denied.
      expect(json.etcd.reason).toMatch(process.getuid?.() === 0 ? /etcd|TLS|key/i : /locked\.key: permission denied/);
      expect(json.findings.map((f: any) => f.id)).toContain('etcd.unavailable');
      const gate = await runCli(['--root', dir, 'status', '--json', '--exit-code', '--manifest', manifest, '--kubeconfig', join(dir, 'missing.conf')]);
      expect(gate.exitCode).toBe(4);
    } finally {
      await chmod(join(dir, 'locked.key'), 0o600).catch(() => {});
      await rm(dir, { recursive: true, force: true });
    }
  });
});
