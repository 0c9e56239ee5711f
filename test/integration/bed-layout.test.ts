import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { addEncryptionConfigFlag, parseKubeVersion, renderApiserverManifest, renderKubeadmConfigMap } from '../bed/layout';
import { containerArgv, isApiserverContainer, podMounts, versionFromImage } from '../bed/kubelet';
import { knobsEnv } from '../bed/knobs';

/** The bed's pure parts: the kubeadm layout it renders and what the kubelet derives from a pod. */

const input = (kubeVersion: string) => ({
  root: '/r/cp-0',
  nodeName: 'cp-0',
  port: 6443,
  kubeVersion,
  etcdEndpoint: 'https://127.0.0.1:2379',
  caDirs: ['ca-certs'],
});

const flagsOf = (yamlText: string) => parse(yamlText).spec.containers[0].command.slice(1) as string[];

describe('kube-apiserver manifest per version', () => {
  it.each([
    ['1.19.16', '--insecure-port=0', '--service-account-issuer=https://kubernetes.default.svc.cluster.local'],
    ['1.24.0', '--service-account-issuer=https://kubernetes.default.svc.cluster.local', '--insecure-port=0'],
    ['1.32.6', '--service-account-signing-key-file=/r/cp-0/etc/kubernetes/pki/sa.key', '--insecure-port=0'],
  ])('%s has %s and not %s', (v, has, hasNot) => {
    const text = renderApiserverManifest(input(v));
    expect(flagsOf(text)).toContain(has);
    expect(flagsOf(text)).not.toContain(hasNot);
    expect(parse(text).spec.containers[0].image).toBe(`registry.k8s.io/kube-apiserver:v${v}`);
  });

  it('sorts flags like kubeadm and mounts only the CA dirs that exist, plus pki', () => {
    const pod = parse(renderApiserverManifest(input('1.32.6')));
    const flags = flagsOf(renderApiserverManifest(input('1.32.6')));
    expect(flags).toEqual([...flags].sort());
    expect(pod.spec.volumes.map((v: any) => v.name)).toEqual(['ca-certs', 'k8s-certs']);
    expect(pod.spec.volumes[0].hostPath.path).toBe('/r/cp-0/etc/ssl/certs');
  });

  it('rejects a version that is not x.y[.z]', () => {
    expect(() => parseKubeVersion('latest')).toThrow(/not a Kubernetes version/);
    expect(parseKubeVersion('v1.31.2')).toEqual([1, 31]);
  });
});

describe('kubeadm-config ClusterConfiguration', () => {
  it.each([
    ['1.30.4', 'kubeadm.k8s.io/v1beta3'],
    ['1.31.0', 'kubeadm.k8s.io/v1beta4'],
    ['1.33.1', 'kubeadm.k8s.io/v1beta4'],
  ])('%s uses %s', (v, apiVersion) => {
    const cm = renderKubeadmConfigMap({
      kubeVersion: v,
      controlPlaneEndpoint: '127.0.0.1:6443',
      certificatesDir: '/r/pki',
      etcd: { endpoint: 'https://127.0.0.1:2379', caFile: 'ca', certFile: 'c', keyFile: 'k' },
    }) as any;
    const cc = parse(cm.data.ClusterConfiguration);
    expect(cc.apiVersion).toBe(apiVersion);
    expect(cc.kubernetesVersion).toBe(`v${v}`);
    expect(cc.etcd.external.endpoints).toEqual(['https://127.0.0.1:2379']);
  });
});

describe('the manual encryption edit', () => {
  it('adds the flag, a read-only hostPath volume and its mount, leaving the rest as it was', () => {
    const before = renderApiserverManifest(input('1.32.6'));
    const after = parse(addEncryptionConfigFlag(before, { configFile: '/r/enc/config.yaml', mountDir: '/r/enc' }));
    const c = after.spec.containers[0];
    expect(c.command.at(-1)).toBe('--encryption-provider-config=/r/enc/config.yaml');
    expect(c.volumeMounts.at(-1)).toEqual({ mountPath: '/r/enc', name: 'encryption-config', readOnly: true });
    expect(after.spec.volumes.at(-1)).toEqual({ hostPath: { path: '/r/enc', type: 'DirectoryOrCreate' }, name: 'encryption-config' });
    expect(c.command.slice(0, -1)).toEqual(parse(before).spec.containers[0].command);
  });

  it('adds only the flag when no directory is given (a config the pod cannot see)', () => {
    const before = renderApiserverManifest(input('1.32.6'));
    const after = parse(addEncryptionConfigFlag(before, { configFile: '/elsewhere/config.yaml' }));
    expect(after.spec.volumes).toEqual(parse(before).spec.volumes);
  });
});

describe('what the kubelet stand-in derives from a pod', () => {
  it.each([
    [{ command: ['kube-apiserver', '--a=1'], image: 'x' }, true],
    [{ command: ['/usr/local/bin/kube-apiserver'], image: 'x' }, true],
    [{ args: ['--a=1'], image: 'registry.k8s.io/kube-apiserver:v1.32.6' }, true],
    [{ command: ['/kms'], image: 'example.com/kms:1' }, false],
    [{ command: ['etcd'], image: 'registry.k8s.io/etcd:3.5.15-0' }, false],
  ])('%j is an apiserver: %s', (c, want) => {
    expect(isApiserverContainer(c)).toBe(want);
  });

  it('runs command then args, takes the version from the image tag, joins mounts with hostPath volumes', () => {
    expect(containerArgv({ command: ['a', 'b'], args: ['c'] })).toEqual(['a', 'b', 'c']);
    expect(versionFromImage('registry.k8s.io/kube-apiserver:v1.29.4')).toBe('1.29.4');
    expect(versionFromImage('localhost:5000/kube-apiserver')).toBeUndefined();
    const pod = {
      spec: {
        volumes: [
          { name: 'pki', hostPath: { path: '/h/pki' } },
          { name: 'tmp', emptyDir: {} },
        ],
      },
    };
    const c = { volumeMounts: [{ name: 'pki', mountPath: '/etc/kubernetes/pki', readOnly: true }, { name: 'tmp', mountPath: '/tmp' }, { name: 'gone', mountPath: '/x' }] };
    expect(podMounts(pod, c)).toEqual([{ hostPath: '/h/pki', mountPath: '/etc/kubernetes/pki', readOnly: true }]);
  });

  it.each([
    [{}, [], { BED_RELOAD_INTERVAL_MS: '1000' }],
    [{ rate429: 0.2, retryAfterSeconds: 1, latencyMs: 5, reloadIntervalMs: 200 }, [],
      { BED_RATE_429: '0.2', BED_RETRY_AFTER: '1', BED_LATENCY_MS: '5', BED_RELOAD_INTERVAL_MS: '200' }],
    [{ crashOnStart: true }, [], { BED_CRASH_ON_START: '1', BED_RELOAD_INTERVAL_MS: '1000' }],
    [{ crashOnStartIfFlag: '--encryption-provider-config' }, ['--encryption-provider-config=/x'], { BED_CRASH_ON_START: '1', BED_RELOAD_INTERVAL_MS: '1000' }],
    [{ crashOnStartIfFlag: '--encryption-provider-config' }, ['--encryption-provider-config-automatic-reload=true'], { BED_RELOAD_INTERVAL_MS: '1000' }],
  ])('knobs %j with argv %j -> env %j', (knobs, argv, env) => {
    expect(knobsEnv(knobs, argv)).toEqual(env);
  });
});
