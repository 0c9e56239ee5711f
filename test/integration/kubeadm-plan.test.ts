// The kubeadm-config change is part of the plan: planned from the ConfigMap as read (the
// ClusterConfiguration's sha256 and the resourceVersion), written only while it is still that, with
// that resourceVersion. Someone changing the ConfigMap between the plan and the write (before the
// executor reads it, or between its read and its PUT) makes it plan again, say so in one line, and
// keep their change: never a lost update.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiClient } from '../../src/cluster/api';
import { applyKubeadmChange, readKubeadmConfig } from '../../src/cluster/kubeadm-config';
import { localApiserverClient } from '../../src/cluster/wait';
import { sha256Hex } from '../../src/config/parse';
import { planInit } from '../../src/init/plan';
import { runInit } from '../../src/init/run';
import { planKubeadmChange } from '../../src/manifest/kubeadm-config';
import { startBed, type Bed, type BedNode, type TestApi } from '../bed/index';
import { initDeps, startInitJournal } from '../helpers/init-run';

const CM = '/api/v1/namespaces/kube-system/configmaps/kubeadm-config';
const KEY = Buffer.alloc(32, 5).toString('base64');

let bed: Bed;
let node: BedNode;
let api: ApiClient;
let other: TestApi;

beforeAll(async () => {
  bed = await startBed({ secrets: 5 });
  node = bed.nodes[0]!;
  api = await localApiserverClient(node.kubeconfig, await readFile(node.manifest, 'utf8'), node.manifest);
  other = await bed.api();
}, 120_000);
afterAll(async () => {
  api?.close();
  other?.close();
  await bed?.stop();
});

const clusterConfiguration = async (): Promise<string> => (await other.get(CM)).body.data.ClusterConfiguration;

/** Someone else (an operator, kubeadm) edits the ConfigMap: `edit` its ClusterConfiguration, or another key. */
async function someoneEdits(edit: { cc?: (t: string) => string; key?: [string, string] }): Promise<void> {
  const cm = (await other.get(CM)).body;
  if (edit.cc) cm.data.ClusterConfiguration = edit.cc(cm.data.ClusterConfiguration);
  if (edit.key) cm.data[edit.key[0]] = edit.key[1];
  const r = await other.put(CM, cm);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
}

const options = (dir: string) => ({ configPath: `${dir}/config.yaml`, mountDir: dir, volumeName: 'encryption-config' });

describe('applyKubeadmChange', () => {
  it('writes exactly the planned text while the ConfigMap is what the plan read, and says nothing', async () => {
    const read = await readKubeadmConfig(api);
    const planned = planKubeadmChange(read, options('/srv/a'));
    expect(planned.status).toBe('update');
    const lines: string[] = [];
    const r = await applyKubeadmChange(api, planned, planned.options, (l) => void lines.push(l));
    expect(lines).toEqual([]);
    expect(r).toMatchObject({ status: 'update', replanned: false, outputSha256: planned.outputSha256 });
    expect(await clusterConfiguration()).toBe(planned.newText);
  });

  it('a change already written (interrupted before its step was journaled) is not "changed since the plan"', async () => {
    const planned = planKubeadmChange(await readKubeadmConfig(api), options('/srv/again'));
    expect(planned.status).toBe('update');
    await applyKubeadmChange(api, planned, planned.options, () => undefined);
    // The resumed run executes the same recorded change against the ConfigMap it already wrote.
    const lines: string[] = [];
    const r = await applyKubeadmChange(api, planned, planned.options, (l) => void lines.push(l));
    expect(lines).toEqual([]);
    expect(r).toMatchObject({ status: 'update', replanned: false, outputSha256: planned.outputSha256 });
    expect(await clusterConfiguration()).toBe(planned.newText);
  });

  it('a write between its read and its PUT is a 409 (the plan\'s resourceVersion): planned again, said once, both changes kept', async () => {
    const read = await readKubeadmConfig(api);
    const planned = planKubeadmChange(read, options('/srv/b'));
    let raced = false;
    // The ConfigMap changes after the executor read it and before its write lands.
    const racing: Pick<ApiClient, 'get' | 'put'> = {
      get: (p, o) => api.get(p, o),
      put: async (p, body, o) => {
        if (!raced) {
          raced = true;
          await someoneEdits({ cc: (t) => t.replace('imageRepository: registry.k8s.io', 'imageRepository: registry.example.com') });
        }
        return api.put(p, body, o);
      },
    };
    const lines: string[] = [];
    const r = await applyKubeadmChange(racing, planned, planned.options, (l) => void lines.push(l));
    expect(raced).toBe(true);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^kube-system\/kubeadm-config changed since the plan \(ClusterConfiguration sha256 [0-9a-f]{12}… is now [0-9a-f]{12}…\): its change is planned again from the ConfigMap as it is$/);
    const now = await clusterConfiguration();
    expect(now).toContain('imageRepository: registry.example.com');
    expect(now).toContain('value: /srv/b/config.yaml');
    expect(r).toMatchObject({ replanned: true, outputSha256: sha256Hex(now) });
    expect(r.outputSha256).not.toBe(planned.outputSha256);
  });

  it('another key of the ConfigMap changed (same ClusterConfiguration): planned again from the new resourceVersion, their key kept', async () => {
    const planned = planKubeadmChange(await readKubeadmConfig(api), options('/srv/c'));
    await someoneEdits({ key: ['note', 'edited by someone'] });
    const lines: string[] = [];
    const r = await applyKubeadmChange(api, planned, planned.options, (l) => void lines.push(l));
    expect(lines).toEqual([expect.stringMatching(/changed since the plan \(resourceVersion \d+ is now \d+, ClusterConfiguration as planned\)/)]);
    expect(r.newText).toBe(planned.newText);
    expect(await clusterConfiguration()).toBe(planned.newText);
    expect((await other.get(CM)).body.data.note).toBe('edited by someone');
  });
});

describe('init: kubeadm-config changed by someone between the plan and its execution', () => {
  it('the executor plans its change again, says so on one line, and both changes are in the ConfigMap', async () => {
    const config = join(node.root, 'etc/kubernetes/encryption/config.yaml');
    const before = await clusterConfiguration();
    const plan = planInit({
      manifestText: await readFile(node.manifest, 'utf8'),
      kubeVersion: bed.kubeVersion,
      kubeVersionSource: 'test',
      controlPlanes: 1,
      key: KEY,
      keyName: 'key1',
      kubeadm: await readKubeadmConfig(api),
      options: { provider: 'aescbc', resources: ['secrets'], configPath: config, manifestPath: node.manifest, timeoutMs: 60_000, kubeadmConfig: true, force: false },
    });
    expect(plan.kubeadmChange).toMatchObject({ status: 'update', inputSha256: sha256Hex(before) });
    // After the plan (a dry run, a confirmation), before the executor reaches kubeadm-config.
    await someoneEdits({ cc: (t) => t.replace('clusterName: kubernetes', 'clusterName: renamed-meanwhile') });

    const journal = await startInitJournal(node, plan, { timeoutMs: 60_000, key: KEY });
    const lines: string[] = [];
    const deps = await initDeps(node, api, { configPath: config, lines });
    const r = await runInit(deps, plan, journal);
    expect(r.state).toBe('done');
    const replans = lines.filter((l) => /kubeadm-config changed since the plan/.test(l));
    expect(replans).toHaveLength(1);
    expect(replans[0]).toMatch(/ClusterConfiguration sha256 [0-9a-f]{12}… is now [0-9a-f]{12}…/);
    const now = await clusterConfiguration();
    // Theirs and ours: no lost update.
    expect(now).toContain('clusterName: renamed-meanwhile');
    expect(now).toContain(`value: ${config}`);
    expect(r.kubeadmConfig).toMatchObject({ status: 'updated', replanned: true, sha256: sha256Hex(now) });
  }, 90_000);
});
