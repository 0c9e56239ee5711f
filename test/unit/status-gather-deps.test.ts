// status reads its kubeconfig once per run: the cluster client, each control plane's /metrics
// client and the kubeconfig's server name all come from that one read.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultGatherDeps } from '../../src/status/gather';

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const kubeconfig = (server: string) =>
  [
    'apiVersion: v1',
    'kind: Config',
    `clusters: [{name: c, cluster: {server: "${server}", insecure-skip-tls-verify: true}}]`,
    'users: [{name: u, user: {token: t0ken}}]',
    'contexts: [{name: x, context: {cluster: c, user: u}}]',
    'current-context: x',
  ].join('\n');

describe('defaultGatherDeps', () => {
  it('reads the kubeconfig once for the cluster client, the per-apiserver clients and the server name', async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-gather-'));
    const path = join(dir, 'admin.conf');
    await writeFile(path, kubeconfig('https://cp.example:6443'));
    const deps = defaultGatherDeps(path, () => new Date());
    (await deps.apiClient()).close();
    // Changed (then gone) after the first read: what the run uses is still that first read.
    await writeFile(path, kubeconfig('https://elsewhere.example:6443'));
    expect(await deps.kubeconfigServer()).toBe('https://cp.example:6443');
    await rm(path);
    const one = await deps.apiClient({ url: 'https://10.0.0.11:6443', tlsServerName: 'cp.example' });
    one.close();
    expect(await deps.kubeconfigServer()).toBe('https://cp.example:6443');
  });
});
