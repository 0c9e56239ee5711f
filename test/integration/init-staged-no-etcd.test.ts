// The add-reader stage of init on several control planes when this node cannot read etcd: the
// plaintext proof falls back to the apiserver's transformation counts (marked weaker), the stage
// is recorded, and init waits for the other control planes as it does with etcd in reach.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiClient } from '../../src/cluster/api';
import { observedPrefix } from '../../src/cluster/proof';
import { localApiserverClient } from '../../src/cluster/wait';
import { openEtcd } from '../../src/etcd/client';
import { planInit } from '../../src/init/plan';
import { runInit } from '../../src/init/run';
import { readApiserverFlags } from '../../src/manifest/manifest';
import type { TransitionDeps } from '../../src/transition/engine';
import { startBed, type Bed, type BedNode } from '../bed/index';
import { initDeps, startInitJournal } from '../helpers/init-run';

let bed: Bed;
let node: BedNode;
let api: ApiClient;
const KEY = Buffer.alloc(32, 7).toString('base64');

beforeAll(async () => {
  bed = await startBed({ secrets: 5 });
  node = bed.nodes[0]!;
  api = await localApiserverClient(node.kubeconfig, await readFile(node.manifest, 'utf8'), node.manifest);
}, 120_000);
afterAll(async () => {
  api?.close();
  await bed?.stop();
});

describe('init add-reader without etcd', () => {
  it('proves plaintext writes from the metrics (weaker), records the stage and waits for the other control plane', async () => {
    const config = join(node.root, 'etc/kubernetes/encryption/config.yaml');
    const plan = planInit({
      manifestText: await readFile(node.manifest, 'utf8'),
      kubeVersion: bed.kubeVersion,
      kubeVersionSource: 'test',
      controlPlanes: 2,
      key: KEY,
      keyName: 'key1',
      options: { provider: 'aescbc', resources: ['secrets'], configPath: config, manifestPath: node.manifest, timeoutMs: 60_000, kubeadmConfig: true, force: false },
    });
    expect(plan.config.stage).toBe('add-reader');
    const journal = await startInitJournal(node, plan, { timeoutMs: 60_000, key: KEY });
    const lines: string[] = [];
    // etcd out of reach for the tool (not for the apiserver).
    const deps: TransitionDeps = {
      ...(await initDeps(node, api, { configPath: config, lines })),
      etcd: { endpoints: ['https://127.0.0.1:1'] },
      openEtcd: (c) => openEtcd(c, { callTimeoutMs: 1500 }),
      rewrite: async () => {
        throw new Error('no rewrite at add-reader');
      },
    };
    const r = await runInit(deps, plan, journal);
    expect(r).toMatchObject({ state: 'waiting', multiNode: { stage: 'add-reader' }, proof: { method: 'metrics', weaker: true, observed: 'plaintext (metrics)' } });
    expect(r.proof!.detail).toMatch(/etcd could not be read.*counted the canary .* under identity .* and no encrypted write \(weaker/);
    expect(lines.join('\n')).toMatch(/falling back to the apiserver's metrics \(weaker evidence\)/);
    expect(readApiserverFlags(await readFile(node.manifest, 'utf8'), node.manifest).flags.get('encryption-provider-config')).toBe(config);
    expect(journal.output('add-reader:record')).toBeDefined();
    // What the metrics said is what etcd holds: new writes are still plaintext.
    await api.post('/api/v1/namespaces/default/secrets', { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'after-add-reader' }, data: { a: 'Yg==' } });
    expect(observedPrefix((await bed.etcdGet('/registry/secrets/default/after-add-reader'))!)).toMatch(/^plaintext/);
  }, 120_000);
});
