import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { planKubeadmConfigPatch } from '../../src/manifest/kubeadm-config';
import { CliError, ExitCode } from '../../src/ui/errors';

const dir = fileURLToPath(new URL('../fixtures/manifests/', import.meta.url));
const fixture = (name: string) => readFileSync(dir + name, 'utf8');

const opts = {
  configPath: '/etc/kubernetes/encryption/config.yaml',
  mountDir: '/etc/kubernetes/encryption',
  volumeName: 'encryption-config',
};
const wantVolume = {
  name: 'encryption-config',
  hostPath: '/etc/kubernetes/encryption',
  mountPath: '/etc/kubernetes/encryption',
  readOnly: true,
  pathType: 'DirectoryOrCreate',
};

describe.each([
  {
    file: 'clusterconfiguration-v1beta3.yaml',
    args: (cc: any) => cc.apiServer.extraArgs,
    want: { 'authorization-mode': 'Node,RBAC', 'audit-log-path': '/var/log/kubernetes/audit.log', 'encryption-provider-config': opts.configPath },
    volumesBefore: 1,
  },
  {
    file: 'clusterconfiguration-v1beta4.yaml',
    args: (cc: any) => cc.apiServer.extraArgs,
    want: [
      { name: 'authorization-mode', value: 'Node,RBAC' },
      { name: 'encryption-provider-config', value: opts.configPath },
    ],
    volumesBefore: 0,
  },
  {
    file: 'clusterconfiguration-minimal-v1beta3.yaml',
    args: (cc: any) => cc.apiServer.extraArgs,
    want: { 'encryption-provider-config': opts.configPath },
    volumesBefore: 0,
  },
])('planKubeadmConfigPatch on $file', ({ file, args, want, volumesBefore }) => {
  const original = fixture(file);
  const plan = planKubeadmConfigPatch(original, opts);
  const cc = parse(plan.newText);

  it('records the flag in the shape of its apiVersion and the volume', () => {
    expect(plan.changed).toBe(true);
    expect(args(cc)).toEqual(want);
    expect(cc.apiServer.extraVolumes).toHaveLength(volumesBefore + 1);
    expect(cc.apiServer.extraVolumes[volumesBefore]).toEqual(wantVolume);
    // Block style, even where the original had `apiServer: {}`.
    expect(plan.newText).not.toMatch(/apiServer: \{/);
  });

  it('keeps everything else', () => {
    const before = parse(original);
    const after = structuredClone(cc);
    delete after.apiServer.extraVolumes;
    delete after.apiServer.extraArgs;
    delete before.apiServer.extraVolumes;
    delete before.apiServer.extraArgs;
    expect(after).toEqual(before);
  });

  it('is idempotent', () => {
    const again = planKubeadmConfigPatch(plan.newText, opts);
    expect(again.changed).toBe(false);
    expect(again.newText).toBe(plan.newText);
  });

  it('removes exactly what it added, and removal is idempotent', () => {
    const removed = planKubeadmConfigPatch(plan.newText, { ...opts, remove: true });
    expect(removed.changed).toBe(true);
    const r = parse(removed.newText);
    const o = parse(original);
    expect(r.apiServer).toEqual(o.apiServer);
    expect(planKubeadmConfigPatch(removed.newText, { ...opts, remove: true }).changed).toBe(false);
  });
});

describe('planKubeadmConfigPatch details', () => {
  it('updates a stale value instead of adding a second entry (v1beta4)', () => {
    const text = fixture('clusterconfiguration-v1beta4.yaml').replace(
      '  - name: authorization-mode',
      '  - name: encryption-provider-config\n    value: /old/config.yaml\n  - name: authorization-mode',
    );
    const cc = parse(planKubeadmConfigPatch(text, opts).newText);
    expect(cc.apiServer.extraArgs.filter((a: any) => a.name === 'encryption-provider-config')).toEqual([
      { name: 'encryption-provider-config', value: opts.configPath },
    ]);
  });

  it('records no volume when the config lies under kubeadm mounts, and the reload flag when asked', () => {
    const cc = parse(
      planKubeadmConfigPatch(fixture('clusterconfiguration-v1beta3.yaml'), {
        configPath: '/etc/kubernetes/pki/encryption.yaml',
        reloadFlag: true,
      }).newText,
    );
    expect(cc.apiServer.extraVolumes).toHaveLength(1);
    expect(cc.apiServer.extraArgs['encryption-provider-config-automatic-reload']).toBe('true');
  });

  it('adds a KMS socket dir as a Directory volume', () => {
    const cc = parse(
      planKubeadmConfigPatch(fixture('clusterconfiguration-v1beta4.yaml'), {
        ...opts,
        extraVolumes: [{ name: 'kms-socket', dir: '/var/run/kmsplugin', pathType: 'Directory' }],
      }).newText,
    );
    expect(cc.apiServer.extraVolumes.map((v: any) => [v.name, v.pathType])).toEqual([
      ['encryption-config', 'DirectoryOrCreate'],
      ['kms-socket', 'Directory'],
    ]);
  });

  it('refuses a second volume at the same mountPath', () => {
    const text = fixture('clusterconfiguration-v1beta3.yaml').replace('mountPath: /var/log/kubernetes', 'mountPath: /etc/kubernetes/encryption');
    expect(() => planKubeadmConfigPatch(text, opts)).toThrow(/already mounts audit-log at \/etc\/kubernetes\/encryption/);
  });

  it.each([
    ['apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\n', /apiVersion kubeadm.k8s.io\/v1beta2; k8s-encrypt knows kubeadm.k8s.io\/v1beta3 and kubeadm.k8s.io\/v1beta4/],
    ['apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\n', /holds kind InitConfiguration, not ClusterConfiguration/],
    ['apiServer: [\n', /does not parse at line/],
    ['apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\napiServer:\n  extraArgs: [a]\n', /apiServer.extraArgs is not a mapping/],
  ])('rejects %j with a clear error', (text, message) => {
    let err: unknown;
    try {
      planKubeadmConfigPatch(text, opts);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).message).toMatch(message);
  });
});
