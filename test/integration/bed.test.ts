import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { startBed, TestApi, type Bed } from '../bed/index';

/** startBed as tests and the CLI see it: the kubeadm layout, the objects, two nodes, clean stop. */

const CONTRACT_PKI = [
  'ca.crt', 'ca.key', 'apiserver.crt', 'apiserver.key', 'apiserver-etcd-client.crt', 'apiserver-etcd-client.key',
  'front-proxy-ca.crt', 'sa.pub', 'sa.key', 'etcd/ca.crt', 'etcd/ca.key',
];

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('a one-node bed with a few hundred Secrets', () => {
  let bed: Bed;
  let api: TestApi;
  let startMs = 0;
  beforeAll(async () => {
    const t0 = Date.now();
    bed = await startBed({ secrets: 300 });
    startMs = Date.now() - t0;
    api = await bed.api();
  });
  afterAll(() => bed?.stop());

  it('starts quickly', () => {
    // The brief's budget is ~5 s on an idle machine; allow for a busy shared one.
    expect(startMs).toBeLessThan(10_000);
  });

  it('lays out a kubeadm node under its root', async () => {
    const n = bed.nodes[0]!;
    expect(n.cliArgs).toEqual(['--root', n.root]);
    expect(n.manifest).toBe(join(n.root, 'etc/kubernetes/manifests/kube-apiserver.yaml'));
    expect(n.kubeconfig).toBe(join(n.root, 'etc/kubernetes/admin.conf'));
    for (const f of CONTRACT_PKI) expect(existsSync(join(n.root, 'etc/kubernetes/pki', f)), f).toBe(true);

    const pod = parse(await readFile(n.manifest, 'utf8'));
    const c = pod.spec.containers[0];
    expect(c.name).toBe('kube-apiserver');
    expect(c.image).toBe('registry.k8s.io/kube-apiserver:v1.32.6');
    expect(c.command[0]).toBe('kube-apiserver');
    const flags = new Map<string, string>(c.command.slice(1).map((f: string) => f.replace(/^--/, '').split(/=(.*)/s).slice(0, 2)));
    expect(flags.get('secure-port')).toBe(new URL(n.apiserverUrl).port);
    expect(flags.get('etcd-servers')).toBe(bed.etcd.endpoint);
    expect(flags.get('service-account-issuer')).toBe('https://kubernetes.default.svc.cluster.local');
    for (const f of ['client-ca-file', 'tls-cert-file', 'etcd-cafile', 'etcd-certfile', 'etcd-keyfile', 'service-account-key-file']) {
      const p = flags.get(f)!;
      expect(isAbsolute(p) && p.startsWith(`${n.root}/`), `${f}=${p}`).toBe(true);
      expect(existsSync(p), p).toBe(true);
    }
    expect(c.readinessProbe.httpGet).toMatchObject({ host: '127.0.0.1', path: '/readyz', scheme: 'HTTPS', port: Number(flags.get('secure-port')) });
    expect(c.livenessProbe.httpGet.path).toBe('/livez');
    expect(c.startupProbe.httpGet.path).toBe('/livez');
    const certs = pod.spec.volumes.find((v: any) => v.name === 'k8s-certs');
    expect(certs.hostPath.path).toBe(join(n.root, 'etc/kubernetes/pki'));
    expect(c.volumeMounts).toContainEqual({ mountPath: certs.hostPath.path, name: 'k8s-certs', readOnly: true });
    expect(pod.spec.volumes.every((v: any) => v.hostPath.path.startsWith(`${n.root}/`))).toBe(true);
  });

  it('admin.conf is a working kubernetes-admin kubeconfig for this node', async () => {
    const kc = parse(await readFile(bed.nodes[0]!.kubeconfig, 'utf8'));
    expect(kc.clusters[0].cluster.server).toBe(bed.nodes[0]!.apiserverUrl);
    const cert = Buffer.from(kc.users[0].user['client-certificate-data'], 'base64').toString();
    const { X509Certificate } = await import('node:crypto');
    expect(new X509Certificate(cert).subject).toMatch(/O=system:masters[\s\S]*CN=kubernetes-admin/);
    const viaConf = await TestApi.fromKubeconfig(bed.nodes[0]!.kubeconfig);
    try {
      expect((await viaConf.get('/api/v1/namespaces/default/secrets/bed-secret-0')).status).toBe(200);
    } finally {
      viaConf.close();
    }
  });

  it('created the Secrets through the apiserver, stored in plaintext in the real etcd', async () => {
    let total = 0;
    let token: string | undefined;
    const namespaces = new Set<string>();
    do {
      const page = await api.list('/api/v1/secrets', { limit: 120, continue: token });
      expect(page.status).toBe(200);
      for (const s of page.body.items) if (s.metadata.name.startsWith('bed-secret-')) (total++, namespaces.add(s.metadata.namespace));
      token = page.body.metadata.continue || undefined;
    } while (token);
    expect(total).toBe(300);
    expect([...namespaces].sort()).toEqual([...bed.secretNamespaces].sort());
    const raw = await bed.etcdGet('/registry/secrets/default/bed-secret-0');
    // Plaintext: the protobuf envelope (k8s\0) or JSON, as with --storage-media-type=application/json.
    expect(raw!.subarray(0, 8).toString('latin1')).not.toMatch(/^k8s:enc:/);
    // protobuf holds the bytes as they are; JSON holds []byte as base64.
    const pw = 'bed-password-0';
    expect(raw!.includes(pw) || raw!.includes(Buffer.from(pw).toString('base64'))).toBe(true);
  });

  it('has kubeadm-config, the mirror pod and the control-plane Node', async () => {
    const cm = await api.get('/api/v1/namespaces/kube-system/configmaps/kubeadm-config');
    expect(cm.status).toBe(200);
    const cc = parse(cm.body.data.ClusterConfiguration);
    expect(cc).toMatchObject({ apiVersion: 'kubeadm.k8s.io/v1beta4', kind: 'ClusterConfiguration', kubernetesVersion: 'v1.32.6' });
    expect(cc.apiServer.extraArgs).toContainEqual({ name: 'bind-address', value: '127.0.0.1' });

    const mirror = await api.get('/api/v1/namespaces/kube-system/pods/kube-apiserver-cp-0');
    expect(mirror.status).toBe(200);
    const ann = mirror.body.metadata.annotations;
    expect(ann['kubernetes.io/config.source']).toBe('file');
    expect(ann['kubernetes.io/config.hash']).toMatch(/^[0-9a-f]{32}$/);
    expect(ann['kubernetes.io/config.mirror']).toBe(ann['kubernetes.io/config.hash']);
    const cs = mirror.body.status.containerStatuses[0];
    expect(cs).toMatchObject({ name: 'kube-apiserver', ready: true, started: true, restartCount: 0 });
    expect(Date.parse(cs.state.running.startedAt)).toBeGreaterThan(0);
    expect(mirror.body.status.conditions).toContainEqual(expect.objectContaining({ type: 'Ready', status: 'True' }));

    const node = await api.get('/api/v1/nodes/cp-0');
    expect(node.status).toBe(200);
    expect(node.body.metadata.labels['node-role.kubernetes.io/control-plane']).toBe('');
  });

  it('etcdPut writes behind the apiserver and etcdGet reads raw bytes back', async () => {
    await bed.etcdPut('/registry/bed-test/raw', Buffer.from([0, 1, 2, 255]));
    expect(await bed.etcdGet('/registry/bed-test/raw')).toEqual(Buffer.from([0, 1, 2, 255]));
    expect(await bed.etcdGet('/registry/bed-test/absent')).toBeUndefined();
  });

  it('setKnobs applies at the next apiserver start', async () => {
    const n = bed.nodes[0]!;
    await n.setKnobs({ latencyMs: 1 });
    expect(JSON.parse(readFileSync(join(n.root, 'bed/knobs.json'), 'utf8'))).toEqual({ latencyMs: 1 });
    const starts = n.apiserverStarts();
    await n.setKnobs({ startDelayMs: 300 });
    process.kill(n.kubelet.pid()!, 'SIGKILL');
    await n.kubelet.readyAfterStart(starts + 1);
    expect(n.apiserverStarts()).toBe(starts + 1);
    expect(n.kubelet.podViews()[0]!.restartCount).toBe(1);
    await n.waitReady(5000);
  });
});

describe('a two-node bed on an older version, and stop()', () => {
  it('shares etcd and the CA, gives each node its own apiserver, and removes everything on stop', async () => {
    const bed = await startBed({ nodes: 2, kubeVersion: '1.29.4', secrets: 4 });
    let stopped = false;
    try {
      const [a, b] = bed.nodes as [Bed['nodes'][0], Bed['nodes'][0]];
      expect([a.name, b.name]).toEqual(['cp-0', 'cp-1']);
      expect(a.apiserverUrl).not.toBe(b.apiserverUrl);
      expect(readFileSync(join(a.root, 'etc/kubernetes/pki/ca.crt'))).toEqual(readFileSync(join(b.root, 'etc/kubernetes/pki/ca.crt')));
      expect(readFileSync(b.manifest, 'utf8')).toContain('registry.k8s.io/kube-apiserver:v1.29.4');

      const api1 = await bed.api(1);
      const created = await api1.create('/api/v1/namespaces/default/secrets', { metadata: { name: 'from-cp-1' }, data: { k: 'dg==' } });
      expect(created.status).toBe(201);
      const api0 = await bed.api(0);
      expect((await api0.get('/api/v1/namespaces/default/secrets/from-cp-1')).status).toBe(200);
      for (const name of ['cp-0', 'cp-1']) {
        expect((await api0.get(`/api/v1/namespaces/kube-system/pods/kube-apiserver-${name}`)).status).toBe(200);
      }
      const cc = parse((await api0.get('/api/v1/namespaces/kube-system/configmaps/kubeadm-config')).body.data.ClusterConfiguration);
      expect(cc.apiVersion).toBe('kubeadm.k8s.io/v1beta3');
      expect(cc.apiServer.extraArgs).toEqual({ 'bind-address': '127.0.0.1' });

      const pids = bed.nodes.map((n) => n.kubelet.pid()!);
      await bed.stop();
      stopped = true;
      expect(existsSync(bed.dir)).toBe(false);
      expect(pids.some(alive)).toBe(false);
    } finally {
      if (!stopped) await bed.stop();
    }
  });

  it('with mirrorPods off, the kubelet neither registers the Node nor mirror pods', async () => {
    const bed = await startBed({ mirrorPods: false });
    try {
      const api = await bed.api();
      expect((await api.get('/api/v1/nodes/cp-0')).status).toBe(404);
      expect((await api.get('/api/v1/namespaces/kube-system/pods/kube-apiserver-cp-0')).status).toBe(404);
    } finally {
      await bed.stop();
    }
  });
});
