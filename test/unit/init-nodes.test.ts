import { describe, expect, it } from 'vitest';
import { convergence, formatStage, identifyThisNode, notConvergedError, parseStage, type ControlPlane, type NodeStage } from '../../src/cluster/nodes';
import { PassThrough } from 'node:stream';
import { ApiError } from '../../src/cluster/errors';
import { ExitCode } from '../../src/ui/errors';
import { Output } from '../../src/ui/output';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);

describe('stage records', () => {
  it('round-trip STAGE:sha256:HEX and reject anything else', () => {
    expect(formatStage({ stage: 'reader', sha256: A })).toBe(`reader:sha256:${A}`);
    expect(parseStage(`write:sha256:${B}`)).toEqual({ stage: 'write', sha256: B });
    for (const bad of [undefined, '', 'reader', `reader:sha256:${A.slice(1)}`, `reader:md5:${A}`, `Reader:sha256:${A}`]) {
      expect(parseStage(bad)).toBeUndefined();
    }
  });

  const stages = (...s: [string, string | undefined][]): NodeStage[] =>
    s.map(([node, v]) => ({ node, where: 'node-annotation' as const, ...(v ? { record: parseStage(v)! } : {}) }));

  const cases: { name: string; s: NodeStage[]; agreed: boolean; lagging: string[] }[] = [
    { name: 'all at the wanted stage and hash', s: stages(['cp-0', `reader:sha256:${A}`], ['cp-1', `reader:sha256:${A}`]), agreed: true, lagging: [] },
    { name: 'one node has nothing yet', s: stages(['cp-0', `reader:sha256:${A}`], ['cp-1', undefined]), agreed: false, lagging: ['cp-1'] },
    { name: 'same stage, another config', s: stages(['cp-0', `reader:sha256:${A}`], ['cp-1', `reader:sha256:${B}`]), agreed: false, lagging: ['cp-1'] },
    { name: 'same config, another stage', s: stages(['cp-0', `reader:sha256:${A}`], ['cp-1', `write:sha256:${A}`]), agreed: false, lagging: ['cp-1'] },
  ];
  for (const c of cases) {
    it(`convergence: ${c.name}`, () => {
      const r = convergence(c.s, { stage: 'reader', sha256: A });
      expect(r.agreed).toBe(c.agreed);
      expect(r.lagging.map((l) => l.node)).toEqual(c.lagging);
    });
  }

  it('the refusal names every lagging node and exits Refused', () => {
    const c = convergence(stages(['cp-0', `reader:sha256:${A}`], ['cp-1', undefined], ['cp-2', `reader:sha256:${B}`]), { stage: 'reader', sha256: A });
    const err = notConvergedError({ stage: 'reader', sha256: A }, c, 'init --from-config');
    expect(err.exitCode).toBe(ExitCode.Refused);
    expect(err.message).toMatch(/cp-1: nothing yet; cp-2: reader \(sha256 bbbbbbbbbbbb…\)/);
  });
});

describe('identifyThisNode', () => {
  const cmd = (port: number) => ['kube-apiserver', `--secure-port=${port}`, '--etcd-servers=https://127.0.0.1:2379'];
  const cps: ControlPlane[] = [
    { name: 'cp-0', hasNode: true, hasMirrorPod: true, command: cmd(6443) },
    { name: 'cp-1', hasNode: true, hasMirrorPod: true, command: cmd(6444) },
  ];
  const cases: { name: string; cps: ControlPlane[]; args: string[]; given?: string; host: string; want: string }[] = [
    { name: '--node-name wins', cps, args: cmd(6443), given: 'manual', host: 'x', want: 'manual' },
    { name: 'the mirror pod running this manifest', cps, args: ['/usr/local/bin/kube-apiserver', ...cmd(6444).slice(1)], host: 'cp-0', want: 'cp-1' },
    { name: 'the host name when no command matches', cps, args: cmd(7000), host: 'CP-0.example.com', want: 'cp-0' },
    { name: 'the only control plane', cps: [cps[0]!], args: cmd(7000), host: 'elsewhere', want: 'cp-0' },
    { name: 'no control plane found: the host name', cps: [], args: cmd(7000), host: 'Node-9', want: 'node-9' },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(identifyThisNode(c.cps, c.args, c.given, c.host).name).toBe(c.want);
    });
  }
});

describe('discoverControlPlanes', () => {
  /** The few list calls discovery makes, answered from fixed data (an apiserver without mirror pods and Nodes). */
  const fakeApi = (answers: Record<string, unknown>) => ({
    list: async (path: string) => {
      if (!(path in answers)) throw new Error(`unexpected ${path}`);
      return answers[path];
    },
    get: async () => ({}),
    patch: async () => ({}),
    post: async () => ({}),
  });

  it('falls back to the apiserver identity leases when there are no mirror pods or Nodes', async () => {
    const { discoverControlPlanes } = await import('../../src/cluster/nodes');
    const lease = (host: string) => ({ metadata: { name: `apiserver-${host}`, labels: { 'apiserver.kubernetes.io/identity': 'kube-apiserver', 'kubernetes.io/hostname': host } } });
    const api = fakeApi({
      '/api/v1/namespaces/kube-system/pods': { items: [] },
      '/api/v1/nodes': { items: [] },
      '/apis/coordination.k8s.io/v1/namespaces/kube-system/leases': { items: [lease('m2'), lease('m1')] },
    });
    expect(await discoverControlPlanes(api as never)).toEqual([
      { name: 'm1', hasNode: false, hasMirrorPod: false },
      { name: 'm2', hasNode: false, hasMirrorPod: false },
    ]);
  });

  it('mirror pods and control-plane Nodes are merged by node name; leases are not needed then', async () => {
    const { discoverControlPlanes } = await import('../../src/cluster/nodes');
    const api = fakeApi({
      '/api/v1/namespaces/kube-system/pods': {
        items: [
          { metadata: { name: 'kube-apiserver-a', annotations: { 'kubernetes.io/config.hash': 'h' } }, spec: { nodeName: 'a', containers: [{ name: 'kube-apiserver', command: ['kube-apiserver', '--x=1'] }] } },
          { metadata: { name: 'etcd-a' }, spec: { nodeName: 'a' } },
        ],
      },
      '/api/v1/nodes': { items: [{ metadata: { name: 'a' } }, { metadata: { name: 'b' } }] },
    });
    expect(await discoverControlPlanes(api as never)).toEqual([
      { name: 'a', hasNode: true, hasMirrorPod: true, command: ['kube-apiserver', '--x=1'], configHash: 'h' },
      { name: 'b', hasNode: true, hasMirrorPod: false },
    ]);
  });
});

describe('identity leases behind a 403 while a run re-discovers the control planes', () => {
  const api = {
    list: async (path: string) => {
      if (path.startsWith('/apis/coordination.k8s.io/')) throw new ApiError({ status: 403, reason: 'Forbidden', method: 'GET', path, url: `https://127.0.0.1:6443${path}`, message: 'leases.coordination.k8s.io is forbidden' });
      return { items: [] };
    },
    get: async () => ({ data: { 'cp-0': 'x', 'cp-1': 'y' } }),
    patch: async () => ({}),
    post: async () => ({}),
  };

  it('the stage gates say it (stagesOfAll passes warn on), and a run says it once', async () => {
    const { discoverControlPlanes, stagesOfAll } = await import('../../src/cluster/nodes');
    const stderr = new PassThrough();
    let text = '';
    stderr.on('data', (c) => (text += c));
    const out = new Output({ json: false, verbose: false, color: false, interactive: false, stderr, stdout: new PassThrough() });
    const warned: string[] = [];
    const warn = (m: string) => {
      warned.push(m);
      out.warn(m);
    };
    // The front's discovery, then two gates.
    await discoverControlPlanes(api as never, { warn });
    for (let i = 0; i < 2; i++) expect((await stagesOfAll(api as never, { name: 'cp-0', hasNode: false }, 2, warn)).map((s) => s.node)).toEqual(['cp-0', 'cp-1']);
    expect(warned).toHaveLength(3);
    expect(warned.every((w) => /^cannot list the apiserver identity leases in kube-system: 403 Forbidden/.test(w))).toBe(true);
    expect(text.split('\n').filter((l) => l.startsWith('warning: cannot list the apiserver identity leases'))).toHaveLength(1);
    expect(out.takeWarnings()).toHaveLength(1);
    out.warn('another cause');
    expect(out.takeWarnings()).toEqual(['another cause']);
  });
});
