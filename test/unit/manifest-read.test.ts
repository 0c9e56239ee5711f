import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  flagsOfArgs,
  apiserverEndpoint,
  etcdFlags,
  getFlag,
  kubeVersionOfImage,
  listHostPathMounts,
  parseManifest,
  readApiserverFlags,
} from '../../src/manifest/manifest';
import { planManifestPatch } from '../../src/manifest/patch';
import { CliError, ExitCode } from '../../src/ui/errors';

const dir = fileURLToPath(new URL('../fixtures/manifests/', import.meta.url));
const fixture = (name: string) => readFileSync(dir + name, 'utf8');

describe('readApiserverFlags', () => {
  it.each([
    ['kubeadm-1.24.yaml', 'command', '1.24.17', 0],
    ['kubeadm-1.29.yaml', 'command', '1.29.4', 0],
    ['kubeadm-1.32.yaml', 'command', '1.32.6', 0],
    ['args-style.yaml', 'args', '1.30.2', 0],
    ['split-flags.yaml', 'command', '1.28.9', 0],
    ['comments-quoting.yaml', 'command', '1.31.1', 0],
    ['kube-apiserver.json', 'command', '1.32.6', 0],
    ['sidecar-first.yaml', 'command', '1.29.10', 1],
    ['flow-style.yaml', 'command', '1.29.4', 0],
  ])('%s: flags in %s, version %s, container #%i', (file, where, version, index) => {
    const text = fixture(file);
    const f = readApiserverFlags(text, file);
    expect(f.where).toBe(where);
    expect(f.kubeVersionFromImage).toBe(version);
    expect(parseManifest(text, file).containerIndex).toBe(index);
    expect(f.args[0]).toMatch(/kube-apiserver$/);
    expect(f.flags.get('etcd-servers')).toMatch(/^https:\/\//);
  });

  it('gives the argv the kubelet would run, split flags included', () => {
    const f = readApiserverFlags(fixture('split-flags.yaml'), 's.yaml');
    expect(f.args.slice(0, 3)).toEqual(['kube-apiserver', '--advertise-address', '192.168.100.11']);
    expect(f.flags.get('secure-port')).toBe('6443');
    expect(f.flags.get('authorization-mode')).toBe('Node,RBAC');
    expect(getFlag(fixture('split-flags.yaml'), '--tls-cert-file')).toBe('/etc/kubernetes/pki/apiserver.crt');
  });

  it('reads command then args for the argv', () => {
    const f = readApiserverFlags(fixture('args-style.yaml'), 'a.yaml');
    expect(f.args.slice(0, 2)).toEqual(['kube-apiserver', '--advertise-address=10.20.0.5']);
  });

  it.each([
    ['registry.k8s.io/kube-apiserver:v1.29.3', '1.29.3'],
    ['registry.k8s.io/kube-apiserver:v1.30.0-rc.1', '1.30.0'],
    ['my.registry:5000/kube-apiserver:v1.28.2@sha256:abcd', '1.28.2'],
    ['registry.k8s.io/kube-apiserver@sha256:abcd', undefined],
    ['my.registry:5000/kube-apiserver:latest', undefined],
  ])('kubeVersionOfImage(%s) = %s', (image, v) => {
    expect(kubeVersionOfImage(image)).toBe(v);
  });
});

describe('apiserverEndpoint and etcdFlags', () => {
  const minimal = (flags: string[]) =>
    ['apiVersion: v1', 'kind: Pod', 'spec:', '  containers:', '  - name: kube-apiserver', '    command:', '    - kube-apiserver', ...flags.map((f) => `    - ${f}`)].join('\n');

  it.each([
    [fixture('kubeadm-1.29.yaml'), { host: '10.0.0.10', port: 6443 }],
    [fixture('args-style.yaml'), { host: '10.20.0.5', port: 8443 }],
    [minimal(['--bind-address=10.1.1.1', '--advertise-address=10.2.2.2', '--secure-port=7443']), { host: '10.1.1.1', port: 7443 }],
    [minimal(['--bind-address=0.0.0.0']), { host: '127.0.0.1', port: 6443 }],
    [minimal(['--advertise-address=', '--bind-address=::']), { host: '127.0.0.1', port: 6443 }],
    [minimal([]), { host: '127.0.0.1', port: 6443 }],
  ])('endpoint #%#', (text, want) => {
    expect(apiserverEndpoint(text)).toEqual(want);
  });

  it('reads the etcd client flags', () => {
    expect(etcdFlags(fixture('args-style.yaml'))).toEqual({
      servers: ['https://10.20.0.5:2379', 'https://10.20.0.6:2379', 'https://10.20.0.7:2379'],
      caFile: '/etc/kubernetes/pki/etcd/ca.crt',
      certFile: '/etc/kubernetes/pki/apiserver-etcd-client.crt',
      keyFile: '/etc/kubernetes/pki/apiserver-etcd-client.key',
    });
    expect(etcdFlags(minimal([]))).toEqual({ servers: [] });
  });

  it('lists hostPath mounts of the apiserver container only', () => {
    const mounts = listHostPathMounts(fixture('sidecar-first.yaml'));
    expect(mounts).toEqual([
      { volumeName: 'konnectivity-uds', hostPath: '/etc/kubernetes/konnectivity-server', mountPath: '/etc/kubernetes/konnectivity-server', readOnly: false, type: 'DirectoryOrCreate' },
      { volumeName: 'k8s-certs', hostPath: '/etc/kubernetes/pki', mountPath: '/etc/kubernetes/pki', readOnly: true, type: 'DirectoryOrCreate' },
    ]);
  });
});

describe('bad manifests: one clear line, exit code 2', () => {
  const pod = fixture('kubeadm-1.29.yaml');
  it.each([
    ['unparseable YAML', 'apiVersion: v1\nkind: Pod\nspec:\n  containers: [\n  - x: y', 'm.yaml', /^m\.yaml: YAML does not parse at line \d+: /],
    ['duplicate keys', 'apiVersion: v1\nkind: Pod\nkind: Pod\n', 'm.yaml', /YAML does not parse at line 3: Map keys must be unique/],
    ['broken JSON', '{"apiVersion": "v1",\n "kind" "Pod"}', 'm.json', /^m\.json: JSON does not parse at line 2/],
    ['not a Pod', 'apiVersion: apps/v1\nkind: Deployment\n', 'm.yaml', /^m\.yaml: not a Pod manifest \(kind: Deployment\)$/],
    ['empty file', '', 'm.yaml', /not a Pod manifest \(kind: none\)/],
    ['no apiserver container', pod.replace(/kube-apiserver/g, 'kube-scheduler'), 'm.yaml', /^m\.yaml: no kube-apiserver container in this Pod$/],
  ])('%s', (_what, text, path, message) => {
    let err: unknown;
    try {
      parseManifest(text, path);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).message).toMatch(message);
    expect((err as CliError).message).not.toContain('\n');
    expect((err as CliError).hint).toBeTruthy();
  });

  it('refuses a relative config path', () => {
    expect(() => planManifestPatch(pod, 'm.yaml', { configPath: 'encryption/config.yaml' })).toThrow(
      /--config-path must be an absolute path, got "encryption\/config.yaml"/,
    );
  });
});

describe('flagsOfArgs (a running pod\'s flags, as status reads its mirror pod)', () => {
  it.each([
    ['--name=value', ['kube-apiserver', '--encryption-provider-config=/etc/enc/config.yaml']],
    ['--name value (split)', ['kube-apiserver', '--encryption-provider-config', '/etc/enc/config.yaml']],
  ])('%s', (_, args) => {
    expect(flagsOfArgs(args).get('encryption-provider-config')).toBe('/etc/enc/config.yaml');
  });
  it('no flag: undefined', () => {
    expect(flagsOfArgs(['kube-apiserver', '--secure-port=6443']).get('encryption-provider-config')).toBeUndefined();
  });
});
