// What status tells an operator about the Kubernetes version and about evidence it could not
// read: /version is preferred over the manifest's image tag and both are shown when they differ
// (through the built CLI); a mirror pod that cannot be read (403) is reported as such, not taken
// for a pod that vanished during a restart.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Chalk } from 'chalk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError } from '../../src/cluster/errors';
import type { ApiClient } from '../../src/cluster/api';
import { defaultGatherDeps, gatherStatus, type GatherDeps } from '../../src/status/gather';
import { renderStatus } from '../../src/status/render';
import { buildStatusReport } from '../../src/status/report';
import { startBed, type Bed, type BedNode } from '../bed/index';
import { jsonOf, runCli } from '../helpers/cli';

const OLD_MANIFEST = fileURLToPath(new URL('../fixtures/manifests/kubeadm-1.24.yaml', import.meta.url));
let bed: Bed;
let node: BedNode;
beforeAll(async () => {
  bed = await startBed({ secrets: 2, kubeVersion: '1.32.6' });
  node = bed.nodes[0]!;
}, 120_000);
afterAll(() => bed?.stop());

describe('status: which Kubernetes version', () => {
  it('shows what the apiserver answers on /version', async () => {
    const r = await runCli([...node.cliArgs, 'status', '--no-etcd']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(r.stdout).toMatch(/\n  · kubernetes +v1\.32\.6 \(apiserver \/version\)\n/);
  });

  it('shows both, with a warning, when the manifest image says another version', async () => {
    const r = await runCli([...node.cliArgs, '--manifest', OLD_MANIFEST, 'status', '--no-etcd']);
    expect(r.stdout).toMatch(/\n  ! kubernetes +v1\.32\.6 \(apiserver \/version\); the manifest's image is v1\.24\.17\n/);
    const j = jsonOf(await runCli([...node.cliArgs, '--json', '--manifest', OLD_MANIFEST, 'status', '--no-etcd']));
    expect(j.node.kubernetes).toEqual({ version: 'v1.32.6', source: 'apiserver', apiserver: 'v1.32.6', image: 'v1.24.17', differ: true });
    expect(j.findings.map((f: { id: string }) => f.id)).toContain('node.version-differs');
  });

  it('falls back to the image tag when the apiserver is not asked', async () => {
    const j = jsonOf(await runCli([...node.cliArgs, '--json', '--manifest', OLD_MANIFEST, 'status', '--no-etcd', '--no-cluster']));
    expect(j.node.kubernetes).toEqual({ version: 'v1.24.17', source: 'manifest image', apiserver: null, image: 'v1.24.17', differ: false });
  });
});

const forbidden = (path: string, what: string) =>
  new ApiError({ status: 403, method: 'GET', path, url: path, reason: 'Forbidden', message: `${what} is forbidden: User "ops" cannot get it` });

/** status as the CLI gathers it, through an apiserver client whose answers `override` may replace. */
async function statusText(override: (path: string) => unknown | undefined) {
  const real = defaultGatherDeps(node.kubeconfig, () => new Date());
  const deps: GatherDeps = {
    ...real,
    async apiClient(server) {
      const api = await real.apiClient(server);
      const wrap = <F extends (path: string, o?: never) => Promise<unknown>>(f: F) =>
        (async (path: string, o?: never) => {
          const v = override(path);
          if (v instanceof Error) throw v;
          return v === undefined ? f(path, o) : v;
        }) as unknown as F;
      return { ...api, get: wrap(api.get), list: wrap(api.list) } as ApiClient;
    },
  };
  const input = await gatherStatus(deps, {
    manifestPath: node.manifest,
    defaultConfigPath: join(node.root, 'etc/kubernetes/encryption/config.yaml'),
    decryptCheck: false,
    exitCode: false,
    etcd: false,
    cluster: true,
    listLimit: 10,
  });
  const report = buildStatusReport(input);
  return { report, text: renderStatus(report, new Chalk({ level: 0 })) };
}

describe('status: evidence it cannot read is reported, not swallowed', () => {
  it('a mirror pod behind a 403 is reported with its reason, not treated as a pod that vanished', async () => {
    const { report, text } = await statusText((path) =>
      path.startsWith('/api/v1/namespaces/kube-system/pods/kube-apiserver-') ? forbidden(path, 'pods "kube-apiserver-cp-0"') : undefined,
    );
    expect(text).toMatch(/\n {21}mirror pod not readable: cannot read mirror pod kube-system\/kube-apiserver-cp-0: 403 Forbidden: .*forbidden/);
    expect(text).not.toContain('vanished');
    expect(report.findings.find((f) => f.id === 'apiservers.pod-unreadable')).toMatchObject({ level: 'warn', message: expect.stringMatching(/^cannot read cp-0's mirror pod: .*403 Forbidden/) });
  });

  it('identity leases behind a 403 (no mirror pods, no Nodes to go by) are a warning', async () => {
    const { report, text } = await statusText((path) => {
      if (path === '/api/v1/namespaces/kube-system/pods' || path === '/api/v1/nodes') return { items: [], metadata: {} };
      if (path.startsWith('/apis/coordination.k8s.io/v1/namespaces/kube-system/leases')) return forbidden(path, 'leases.coordination.k8s.io');
      return undefined;
    });
    const f = report.findings.find((x) => x.id === 'apiservers.discovery');
    expect(f).toMatchObject({ level: 'warn', message: expect.stringMatching(/^control planes may be missing: cannot list the apiserver identity leases in kube-system: 403 Forbidden/) });
    expect(text).toContain(`! ${f!.message}`);
  });
});
