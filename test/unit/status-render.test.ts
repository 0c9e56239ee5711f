// The human status report (no colour) and the pure helpers of the gatherers.
import { Chalk } from 'chalk';
import { describe, expect, it } from 'vitest';
import { buildStatusReport } from '../../src/status/report';
import { renderStatus } from '../../src/status/render';
import { endpointFromArgs, hostPathOf, kubeadmConfigEntries, metricsFacts, resourcesToScan } from '../../src/status/gather';
import { gathered, missing, skipped, type StatusInput } from '../../src/status/types';

const plain = new Chalk({ level: 0 });
const coloured = new Chalk({ level: 1 });
const SHA = 'c'.repeat(64);

function input(o: Partial<StatusInput> = {}): StatusInput {
  return {
    now: '2026-11-26T12:00:00.000Z',
    options: { decryptCheck: true, exitCode: false, etcd: true, cluster: true, resources: ['secrets'], listLimit: 100 },
    manifest: gathered({
      path: '/m/kube-apiserver.yaml',
      configFlag: '/etc/kubernetes/enc/config.yaml',
      configMount: { volumeName: 'encryption-config', hostPath: '/etc/kubernetes/enc', mountPath: '/etc/kubernetes/enc', readOnly: true },
      kubeVersion: '1.32.6',
      args: [],
    }),
    kubeadmConfig: gathered({ present: false }),
    config: gathered({
      path: '/etc/kubernetes/enc/config.yaml',
      mode: '0600',
      dirMode: '0700',
      sha256: SHA,
      modifiedAt: '2026-11-26T10:00:00.000Z',
      rules: [{ index: 0, resources: ['secrets'], providers: [{ kind: 'aescbc', keys: ['new', 'old'] }, { kind: 'identity' }] }],
      resources: [{ resource: 'secrets', writeLabel: 'aescbc:new', readLabels: ['aescbc:new', 'aescbc:old', 'plaintext'] }],
      problems: [],
    }),
    apiservers: gathered({
      thisNode: { name: 'cp-0', how: 't' },
      controlPlanes: [
        { name: 'cp-0', thisNode: true, hasNode: true, hasMirrorPod: true, flagInPod: true, metrics: gathered({ configInfoHash: `sha256:${SHA}` }) },
        { name: 'cp-1', thisNode: false, hasNode: true, hasMirrorPod: true, flagInPod: true, metrics: missing('connect ECONNREFUSED'), podConfigSha256: 'd'.repeat(64) },
      ],
    }),
    etcd: gathered({
      resources: [
        {
          resource: 'secrets',
          etcdPrefix: '/registry/secrets/',
          total: 15,
          counts: { 'aescbc:new': 3, 'aescbc:old': 11, plaintext: 1 },
          writeLabel: 'aescbc:new',
          stale: {
            count: 12,
            items: Array.from({ length: 12 }, (_, i) => ({ namespace: 'default', name: `s${i}`, label: i === 0 ? 'plaintext' : 'aescbc:old' })),
          },
          plaintext: { count: 1, items: [{ namespace: 'default', name: 's0', label: 'plaintext' }] },
          decryptFailures: { count: 1, items: [{ namespace: 'team-a', name: 'broken', label: 'aescbc:new', error: 'invalid padding' }] },
          kmsNotChecked: 0,
        },
      ],
      total: 15,
      staleTotal: 12,
      plaintextTotal: 1,
      decryptFailuresTotal: 1,
      durationMs: 1234,
    }),
    kms: gathered([]),
    ...o,
  };
}

describe('renderStatus', () => {
  const text = renderStatus(buildStatusReport(input()), plain);

  it('has one aligned section per source', () => {
    const heads = text.split('\n').filter((l) => /^\S/.test(l) && !/^[✓✗!]/.test(l));
    expect(heads).toEqual(['This node', 'Apiservers', 'etcd', 'Audit (CIS Kubernetes Benchmark v1.9–v1.12)']);
    expect(text).toContain('  ✓ manifest         --encryption-provider-config=/etc/kubernetes/enc/config.yaml, mounted read-only from /etc/kubernetes/enc (volume encryption-config)');
    expect(text).toContain('  ✓ config           /etc/kubernetes/enc/config.yaml  mode 0600  dir 0700  sha256 cccccccccccc…');
    expect(text).toContain('                     secrets: aescbc[new, old] → identity');
    expect(text).toContain('  ✓ write key        secrets: aescbc:new');
  });

  it('names the apiservers, their evidence and the disagreement', () => {
    expect(text).toContain('  ✓ cp-0 (this)      runs the current config');
    expect(text).toContain('  ✗ cp-1             does not run the current config');
    expect(text).toMatch(/✗ disagreement\s+configs differ: cp-0 on sha256 cccccccccccc…; cp-1 on sha256 dddddddddddd…/);
  });

  it('lists stale, plaintext and undecryptable objects, capped, with totals', () => {
    expect(text).toContain('  ✗ secrets          15 objects: 11 aescbc:old, 3 aescbc:new ✓, 1 plaintext  (write: aescbc:new)');
    expect(text).toContain('not under the write key (12):');
    expect(text).toContain('  default/s9 (aescbc:old)');
    expect(text).not.toContain('default/s10 ');
    expect(text).toContain('  … and 2 more');
    expect(text).toMatch(/plaintext \(1\):\n\s+default\/s0/);
    expect(text).toContain('team-a/broken (aescbc:new): invalid padding');
  });

  it('ends with every problem and no colour codes when colour is off', () => {
    expect(text).toMatch(/✗ \d+ problems:\n/);
    expect(text).not.toMatch(/\u001b\[/);
    expect(renderStatus(buildStatusReport(input()), coloured)).toMatch(/\u001b\[3[12]m/);
  });

  it('says why a source is missing, and marks skipped ones as such', () => {
    const t = renderStatus(buildStatusReport(input({ etcd: skipped('--no-etcd'), apiservers: missing('cannot read kubeconfig /k: it does not exist') })), plain);
    expect(t).toContain('  · scan             skipped (--no-etcd)');
    expect(t).toContain('  ! control planes   not available: cannot read kubeconfig /k: it does not exist');
  });

  it('shows KMS providers with health and key id', () => {
    const t = renderStatus(
      buildStatusReport(input({ kms: gathered([{ name: 'vault', apiVersion: 'v2', endpoint: 'unix:///s.sock', health: gathered({ ok: true, keyId: 'kid-7', checks: [] }) }]) })),
      plain,
    );
    expect(t).toContain('  ✓ vault (v2)       unix:///s.sock: healthy, key id kid-7; 0 objects under kms:v2:vault');
  });
});

describe('gatherer helpers', () => {
  const mounts = [
    { volumeName: 'k8s-certs', hostPath: '/etc/kubernetes/pki', mountPath: '/etc/kubernetes/pki', readOnly: true },
    { volumeName: 'enc', hostPath: '/srv/enc', mountPath: '/etc/kubernetes/enc', readOnly: true },
    { volumeName: 'file', hostPath: '/srv/one.yaml', mountPath: '/etc/one.yaml', readOnly: true },
  ];
  it.each([
    ['/etc/kubernetes/enc/config.yaml', '/srv/enc/config.yaml', 'enc'],
    ['/etc/kubernetes/pki/enc.yaml', '/etc/kubernetes/pki/enc.yaml', 'k8s-certs'],
    ['/etc/one.yaml', '/srv/one.yaml', 'file'],
    ['/etc/kubernetes/encryption/config.yaml', undefined, undefined],
  ])('hostPathOf(%s)', (podPath, host, volume) => {
    const r = hostPathOf(mounts, podPath);
    expect(r?.hostPath).toBe(host);
    expect(r?.mount.volumeName).toBe(volume);
  });

  it.each([
    ['v1beta3 map', 'apiVersion: kubeadm.k8s.io/v1beta3\napiServer:\n  extraArgs:\n    encryption-provider-config: /etc/kubernetes/enc/c.yaml\n  extraVolumes:\n  - name: enc\n    hostPath: /etc/kubernetes/enc\n    mountPath: /etc/kubernetes/enc\n', { configFlag: '/etc/kubernetes/enc/c.yaml', configVolume: 'enc' }],
    ['v1beta4 list', 'apiVersion: kubeadm.k8s.io/v1beta4\napiServer:\n  extraArgs:\n  - name: encryption-provider-config\n    value: /etc/kubernetes/enc/c.yaml\n', { configFlag: '/etc/kubernetes/enc/c.yaml' }],
    ['nothing recorded', 'apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n', {}],
  ])('kubeadmConfigEntries: %s', (_n, text, want) => {
    const { present, apiVersion: _a, ...rest } = kubeadmConfigEntries(text, '/etc/kubernetes/enc/c.yaml');
    expect(present).toBe(true);
    expect(rest).toEqual(want);
  });

  it('reads start time, config hash and reload timestamps from /metrics', () => {
    const text = [
      '# TYPE process_start_time_seconds gauge',
      'process_start_time_seconds 1.7e9',
      `apiserver_encryption_config_controller_last_config_info{apiserver_id_hash="sha256:x",hash="sha256:${SHA}"} 1`,
      'apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds{apiserver_id_hash="x",status="failure"} 1700000100',
    ].join('\n');
    expect(metricsFacts(text)).toEqual({ processStart: 1.7e9, configInfoHash: `sha256:${SHA}`, lastReloadFailure: 1700000100 });
  });

  it.each([
    [['kube-apiserver', '--advertise-address=10.0.0.5', '--secure-port=6443'], '10.0.0.5:6443'],
    [['--bind-address=127.0.0.1', '--advertise-address=10.0.0.5', '--secure-port=7443'], '127.0.0.1:7443'],
    [['--bind-address=0.0.0.0', '--advertise-address', 'fd00::1'], '[fd00::1]:6443'],
    [['--secure-port=6443'], undefined],
  ])('endpointFromArgs(%j)', (args, want) => {
    expect(endpointFromArgs(args)).toBe(want);
  });

  it('scans secrets plus every resource the config names, or exactly --resources', () => {
    const cfg = { apiVersion: 'apiserver.config.k8s.io/v1', kind: 'EncryptionConfiguration', resources: [{ resources: ['configmaps', '*.apps'], providers: [{ identity: {} }] }] } as any;
    expect(resourcesToScan(undefined, cfg)).toEqual(['secrets', 'configmaps']);
    expect(resourcesToScan(['widgets.example.com'], cfg)).toEqual(['widgets.example.com']);
    expect(resourcesToScan(undefined, undefined)).toEqual(['secrets']);
  });
});
