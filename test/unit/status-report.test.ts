// buildStatusReport over gathered evidence: which findings each state produces, how apiservers
// are judged, and the JSON shape (schemaVersion 1). Pure: no I/O.
import { describe, expect, it } from 'vitest';
import type { ScanReport, ResourceScan } from '../../src/etcd/scan';
import { buildStatusReport, judgeApiserver } from '../../src/status/report';
import {
  gathered,
  missing,
  skipped,
  type ConfigFacts,
  type ControlPlaneFacts,
  type ManifestFacts,
  type StatusInput,
} from '../../src/status/types';

const SHA_A = 'a'.repeat(64);
const SHA_B = 'b'.repeat(64);
const CHANGED = '2026-11-26T10:00:00.000Z';
const BEFORE = Date.parse(CHANGED) / 1000 - 60;
const AFTER = Date.parse(CHANGED) / 1000 + 60;

const manifest = (o: Partial<ManifestFacts> = {}): ManifestFacts => ({
  path: '/etc/kubernetes/manifests/kube-apiserver.yaml',
  configFlag: '/etc/kubernetes/encryption/config.yaml',
  configMount: { volumeName: 'encryption-config', hostPath: '/etc/kubernetes/encryption', mountPath: '/etc/kubernetes/encryption', readOnly: true },
  configHostPath: '/etc/kubernetes/encryption/config.yaml',
  kubeVersion: '1.32.6',
  args: [],
  ...o,
});

const config = (o: Partial<ConfigFacts> = {}): ConfigFacts => ({
  path: '/etc/kubernetes/encryption/config.yaml',
  mode: '0600',
  dirMode: '0700',
  sha256: SHA_A,
  modifiedAt: CHANGED,
  rules: [{ index: 0, resources: ['secrets'], providers: [{ kind: 'aescbc', keys: ['key-20261120T000000Z'], prefix: 'k8s:enc:aescbc:v1:key-20261120T000000Z:' }, { kind: 'identity' }] }],
  resources: [{ resource: 'secrets', writeLabel: 'aescbc:key-20261120T000000Z', readLabels: ['aescbc:key-20261120T000000Z', 'plaintext'] }],
  problems: [],
  ...o,
});

const cp = (o: Partial<ControlPlaneFacts> = {}): ControlPlaneFacts => ({
  name: 'cp-0',
  thisNode: true,
  hasNode: true,
  hasMirrorPod: true,
  flagInPod: true,
  metrics: gathered({ processStart: AFTER }),
  ...o,
});

function resource(o: Partial<ResourceScan> = {}): ResourceScan {
  return {
    resource: 'secrets',
    etcdPrefix: '/registry/secrets/',
    total: 3,
    counts: { 'aescbc:key-20261120T000000Z': 3 },
    writeLabel: 'aescbc:key-20261120T000000Z',
    stale: { count: 0, items: [] },
    plaintext: { count: 0, items: [] },
    ...o,
  };
}

const scan = (...resources: ResourceScan[]): ScanReport => ({
  resources,
  total: resources.reduce((n, r) => n + r.total, 0),
  staleTotal: resources.reduce((n, r) => n + r.stale.count, 0),
  plaintextTotal: resources.reduce((n, r) => n + r.plaintext.count, 0),
  durationMs: 12,
});

function input(o: Partial<StatusInput> = {}): StatusInput {
  return {
    now: '2026-11-26T12:00:00.000Z',
    options: { decryptCheck: false, exitCode: true, etcd: true, cluster: true, resources: ['secrets'], listLimit: 100 },
    manifest: gathered(manifest()),
    kubeadmConfig: gathered({ present: true, configFlag: '/etc/kubernetes/encryption/config.yaml', configVolume: 'encryption-config' }),
    config: gathered(config()),
    apiservers: gathered({ thisNode: { name: 'cp-0', how: 'test' }, controlPlanes: [cp()] }),
    etcd: gathered(scan(resource())),
    kms: gathered([]),
    ...o,
  };
}

const ids = (i: StatusInput) => buildStatusReport(i).findings.map((f) => `${f.level}:${f.id}`).sort();

describe('buildStatusReport', () => {
  it('a cluster fully encrypted with its write key is healthy, with no finding', () => {
    const r = buildStatusReport(input());
    expect(r.findings).toEqual([]);
    expect(r.healthy).toBe(true);
    expect(r.schemaVersion).toBe(1);
    expect(r.summary).toBe('every scanned object (3) is under its write key (aescbc:key-20261120T000000Z)');
    expect(r.audit.map((a) => [a.id, a.result])).toEqual([
      ['1.2.27', 'pass'],
      ['1.2.28', 'pass'],
    ]);
    expect(r.node.available && r.node.config.available && r.node.config.writeKey).toEqual({
      resource: 'secrets',
      label: 'aescbc:key-20261120T000000Z',
      createdAt: '2026-11-20T00:00:00.000Z',
      ageDays: 6,
    });
  });

  const plaintextScan = scan(
    resource({
      counts: { plaintext: 2 },
      total: 2,
      writeLabel: 'plaintext',
      plaintext: { count: 2, items: [{ namespace: 'default', name: 'a', label: 'plaintext' }, { namespace: 'default', name: 'b', label: 'plaintext' }] },
    }),
  );

  it.each<[string, Partial<StatusInput>, string[]]>([
    [
      'never encrypted',
      {
        manifest: gathered(manifest({ configFlag: undefined, configMount: undefined, configHostPath: undefined })),
        config: skipped('not configured'),
        kms: skipped('not configured'),
        apiservers: gathered({ thisNode: { name: 'cp-0', how: 't' }, controlPlanes: [cp({ flagInPod: false })] }),
        etcd: gathered(plaintextScan),
      },
      ['fail:audit.cis-1.2.27', 'fail:audit.cis-1.2.28', 'fail:etcd.not-encrypted', 'fail:node.flag'],
    ],
    [
      'stale objects under the old key',
      {
        etcd: gathered(
          scan(
            resource({
              counts: { 'aescbc:key-20261120T000000Z': 1, 'aescbc:old': 2 },
              stale: { count: 2, items: [{ namespace: 'default', name: 'x', label: 'aescbc:old' }] },
            }),
          ),
        ),
      },
      ['fail:etcd.stale'],
    ],
    [
      'a decrypt failure',
      { etcd: gathered(scan(resource({ decryptFailures: { count: 1, items: [{ namespace: 'ns', name: 'bad', label: 'aescbc:k', error: 'invalid padding' }] } }))) },
      ['fail:etcd.decrypt-failed'],
    ],
    ['etcd unreadable fails closed', { etcd: missing('cannot read the etcd CA file /x: permission denied') }, ['fail:etcd.unavailable']],
    ['--no-etcd is no finding', { etcd: skipped('--no-etcd') }, []],
    ['--no-cluster is no finding', { apiservers: skipped('--no-cluster'), kubeadmConfig: skipped('--no-cluster') }, []],
    ['apiserver down is a warning', { apiservers: missing('connect ECONNREFUSED') }, ['warn:apiservers.unavailable']],
    ['manifest unreadable', { manifest: missing('permission denied') }, ['fail:node.manifest']],
    ['flag without a mount', { manifest: gathered(manifest({ configMount: undefined })) }, ['fail:node.mount']],
    ['writable mount', { manifest: gathered(manifest({ configMount: { ...manifest().configMount!, readOnly: false } })) }, ['warn:node.mount-writable']],
    ['config readable by others', { config: gathered(config({ mode: '0644', dirMode: '0755' })) }, ['warn:node.config-dir-mode', 'warn:node.config-mode']],
    ['config the apiserver would refuse', { config: gathered(config({ problems: ['x: secret is not of the expected length'] })) }, ['fail:node.config-invalid']],
    ['config not readable (not root)', { config: missing('permission denied') }, ['fail:node.config', 'warn:apiservers.unproven']],
    ['kubeadm-config lacks the flag', { kubeadmConfig: gathered({ present: true }) }, ['warn:node.kubeadm-config']],
    ['kubeadm-config lacks the volume', { kubeadmConfig: gathered({ present: true, configFlag: '/etc/kubernetes/encryption/config.yaml' }) }, ['warn:node.kubeadm-config-volume']],
    ['no kubeadm-config at all', { kubeadmConfig: gathered({ present: false }) }, []],
    [
      'identity first (staged reader)',
      {
        config: gathered(
          config({
            rules: [{ index: 0, resources: ['secrets'], providers: [{ kind: 'identity' }, { kind: 'aescbc', keys: ['k'] }] }],
            resources: [{ resource: 'secrets', writeLabel: 'plaintext', readLabels: ['plaintext', 'aescbc:k'] }],
          }),
        ),
        etcd: gathered(plaintextScan),
      },
      ['fail:audit.cis-1.2.28', 'fail:etcd.not-encrypted', 'warn:node.identity-first'],
    ],
    [
      'aesgcm first fails CIS 1.2.28 only',
      {
        config: gathered(
          config({
            rules: [{ index: 0, resources: ['secrets'], providers: [{ kind: 'aesgcm', keys: ['g'] }] }],
            resources: [{ resource: 'secrets', writeLabel: 'aesgcm:g', readLabels: ['aesgcm:g'] }],
          }),
        ),
        etcd: gathered(scan(resource({ writeLabel: 'aesgcm:g', counts: { 'aesgcm:g': 3 } }))),
      },
      ['fail:audit.cis-1.2.28'],
    ],
    [
      'this apiserver started before the config changed',
      { apiservers: gathered({ thisNode: { name: 'cp-0', how: 't' }, controlPlanes: [cp({ metrics: gathered({ processStart: BEFORE }) })] }) },
      ['fail:apiservers.not-current'],
    ],
    [
      'two control planes on different configs (config-info metric)',
      {
        apiservers: gathered({
          thisNode: { name: 'cp-0', how: 't' },
          controlPlanes: [
            cp({ metrics: gathered({ configInfoHash: `sha256:${SHA_A}` }) }),
            cp({ name: 'cp-1', thisNode: false, metrics: gathered({ configInfoHash: `sha256:${SHA_B}` }) }),
          ],
        }),
      },
      ['fail:apiservers.disagree'],
    ],
    [
      'one control plane without the flag',
      {
        apiservers: gathered({
          thisNode: { name: 'cp-0', how: 't' },
          controlPlanes: [cp(), cp({ name: 'cp-1', thisNode: false, flagInPod: false, metrics: missing('down') })],
        }),
      },
      ['fail:apiservers.disagree'],
    ],
    [
      'stages differ',
      {
        apiservers: gathered({
          thisNode: { name: 'cp-0', how: 't' },
          controlPlanes: [cp({ stage: { stage: 'write', sha256: SHA_A } }), cp({ name: 'cp-1', thisNode: false, stage: { stage: 'reader', sha256: SHA_B }, metrics: missing('down') })],
        }),
      },
      ['fail:apiservers.disagree', 'fail:apiservers.disagree'],
    ],
    [
      'KMS plugin unhealthy',
      { kms: gathered([{ name: 'vault', apiVersion: 'v2', endpoint: 'unix:///k.sock', health: gathered({ ok: false, checks: [{ name: 'healthz', ok: false, detail: 'not ok', ms: 1 }] }) }]) },
      ['fail:kms.unhealthy'],
    ],
    ['KMS socket absent', { kms: gathered([{ name: 'vault', apiVersion: 'v2', endpoint: 'unix:///k.sock', health: missing('no socket') }]) }, ['warn:kms.unreachable']],
  ])('%s', (_name, over, want) => {
    expect(ids(input(over))).toEqual(want.sort());
    expect(buildStatusReport(input(over)).healthy).toBe(!want.some((w) => w.startsWith('fail:')));
  });

  it('counts kms:v2 objects per KMS provider and keeps the key id', () => {
    const r = buildStatusReport(
      input({
        etcd: gathered(scan(resource({ writeLabel: 'kms:v2:vault', counts: { 'kms:v2:vault': 5, 'aescbc:old': 1 }, total: 6, stale: { count: 1, items: [] } }))),
        kms: gathered([{ name: 'vault', apiVersion: 'v2', endpoint: 'unix:///k.sock', health: gathered({ ok: true, keyId: 'kid-1', checks: [] }) }]),
      }),
    );
    expect(r.kms).toEqual({
      available: true,
      providers: [{ name: 'vault', apiVersion: 'v2', endpoint: 'unix:///k.sock', health: { available: true, ok: true, keyId: 'kid-1', failedChecks: [] }, objects: 5 }],
    });
  });

  it('warns (without failing) that wildcard rules may cover resources the scan did not list', () => {
    const wildcard = config({ rules: [{ index: 0, resources: ['secrets'], providers: [{ kind: 'identity' }] }, { index: 1, resources: ['*.*'], providers: [{ kind: 'identity' }] }] });
    const r = buildStatusReport(input({ config: gathered(wildcard) }));
    const f = r.findings.find((x) => x.id === 'etcd.wildcard-not-scanned');
    expect(f).toMatchObject({ level: 'warn', section: 'etcd' });
    expect(f!.message).toMatch(/"\*\.\*" may cover more than the scanned secrets/);
    expect(buildStatusReport(input()).findings.map((x) => x.id)).not.toContain('etcd.wildcard-not-scanned');
  });

  it('says why a section is missing, and whether it was skipped', () => {
    const r = buildStatusReport(input({ etcd: skipped('--no-etcd'), apiservers: missing('no kubeconfig') }));
    expect(r.etcd).toEqual({ available: false, reason: '--no-etcd', skipped: true });
    expect(r.apiservers).toEqual({ available: false, reason: 'no kubeconfig', skipped: false });
  });
});

describe('judgeApiserver', () => {
  const ctx = { config: config(), manifest: manifest() };
  it.each<[string, Partial<ControlPlaneFacts>, Partial<{ config: ConfigFacts; manifest: ManifestFacts }>, string]>([
    ['config-info metric naming this config', { metrics: gathered({ configInfoHash: `sha256:${SHA_A}` }) }, {}, 'yes'],
    ['config-info metric naming another', { metrics: gathered({ configInfoHash: `sha256:${SHA_B}` }) }, {}, 'no'],
    ['started after the change', { metrics: gathered({ processStart: AFTER }) }, {}, 'yes'],
    ['started before the change', { metrics: gathered({ processStart: BEFORE }) }, {}, 'no'],
    ['mirror pod started after the change', { metrics: missing('403'), startedAt: new Date(AFTER * 1000).toISOString() }, {}, 'yes'],
    ['started before, reload on, reload after', { metrics: gathered({ processStart: BEFORE, lastReloadSuccess: AFTER }) }, { manifest: manifest({ reloadFlag: 'true' }) }, 'yes'],
    ['started before, reload on, reload failed', { metrics: gathered({ processStart: BEFORE, lastReloadFailure: AFTER }) }, { manifest: manifest({ reloadFlag: 'true' }) }, 'no'],
    ['started before, reload on, no reload yet', { metrics: gathered({ processStart: BEFORE }) }, { manifest: manifest({ reloadFlag: 'true' }) }, 'unknown'],
    ['pod without the flag', { flagInPod: false }, {}, 'no'],
    ['other node: annotation naming this config', { thisNode: false, metrics: missing('x'), podConfigSha256: SHA_A }, {}, 'yes'],
    ['other node: stage record naming another', { thisNode: false, metrics: missing('x'), stage: { stage: 'write', sha256: SHA_B } }, {}, 'no'],
    ['other node: nothing known', { thisNode: false, metrics: missing('x') }, {}, 'unknown'],
    ['not configured and pod without the flag', { flagInPod: false }, { manifest: manifest({ configFlag: undefined }) }, 'yes'],
    ['not configured but pod still has the flag', { flagInPod: true }, { manifest: manifest({ configFlag: undefined }) }, 'no'],
  ])('%s', (_n, over, c, want) => {
    expect(judgeApiserver(cp(over), { ...ctx, ...c }).runs).toBe(want);
  });
});
