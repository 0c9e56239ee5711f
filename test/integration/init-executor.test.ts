// runInit in-process against the bed, on the transition engine: a config the apiserver rejects is
// rolled back (manifest and config restored, previous apiserver healthy, exit code RolledBack), and
// the proof falls back to the apiserver's metrics, marked weaker, when etcd cannot be reached.
import { existsSync } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiClient } from '../../src/cluster/api';
import { proveEncryption, removeLeftoverCanaries } from '../../src/cluster/proof';
import { localApiserverClient } from '../../src/cluster/wait';
import { sha256Hex } from '../../src/config/parse';
import { openEtcd } from '../../src/etcd/client';
import { planInit, type InitPlan } from '../../src/init/plan';
import { runInit } from '../../src/init/run';
import type { TransitionDeps } from '../../src/transition/engine';
import { Journal } from '../../src/state/journal';
import { CliError, ExitCode } from '../../src/ui/errors';
import { startBed, type Bed, type BedNode } from '../bed/index';
import { initDeps, startInitJournal } from '../helpers/init-run';

let bed: Bed;
let node: BedNode;
let api: ApiClient;
const KEY = Buffer.alloc(32, 3).toString('base64');

beforeAll(async () => {
  bed = await startBed({ secrets: 10 });
  node = bed.nodes[0]!;
  api = await localApiserverClient(node.kubeconfig, await readFile(node.manifest, 'utf8'), node.manifest);
}, 120_000);
afterAll(async () => {
  api?.close();
  await bed?.stop();
});

const paths = () => ({
  config: join(node.root, 'etc/kubernetes/encryption/config.yaml'),
  stateDir: join(node.root, 'var/lib/k8s-encrypt'),
  backupDir: join(node.root, 'var/lib/k8s-encrypt/backups'),
});

async function planFor(timeoutMs: number): Promise<InitPlan> {
  return planInit({
    manifestText: await readFile(node.manifest, 'utf8'),
    kubeVersion: bed.kubeVersion,
    kubeVersionSource: 'test',
    controlPlanes: 1,
    key: KEY,
    keyName: 'key1',
    options: { provider: 'aescbc', resources: ['secrets'], configPath: paths().config, manifestPath: node.manifest, timeoutMs, kubeadmConfig: true, force: false },
  });
}

const deps = (timeoutMs = 60_000): Promise<TransitionDeps> => initDeps(node, api, { configPath: paths().config, timeoutMs });

/** Swaps the config the plan installs first for `text` (only the apiserver judges it). */
function installInstead(plan: InitPlan, text: string): void {
  plan.config = { ...plan.config, text, sha256: sha256Hex(text) };
  const st = plan.transition?.stages.find((s) => s.name === plan.config.stage);
  if (st) st.config = { ...st.config!, text, sha256: sha256Hex(text) };
}

const journalFor = (plan: InitPlan, timeoutMs: number) => startInitJournal(node, plan, { timeoutMs, key: KEY });

describe('runInit', () => {
  it('rolls back a config the apiserver rejects: old manifest, config removed (kept as a 0600 backup), apiserver healthy', async () => {
    const original = await readFile(node.manifest, 'utf8');
    const plan = await planFor(8000);
    // A key the validator would refuse (5 bytes): only the apiserver sees this config.
    installInstead(plan, plan.config.text.replace(KEY, Buffer.from('short').toString('base64')));
    const journal = await journalFor(plan, 8000);
    const startsBefore = node.apiserverStarts();

    const err = await runInit(await deps(8000), plan, journal).catch((e) => e);
    expect(err).toBeInstanceOf(CliError);
    expect(err.exitCode).toBe(ExitCode.RolledBack);
    expect(err.message).toMatch(/rolled back/);
    expect(err.details.healthy).toBe(true);
    expect(node.apiserverStarts()).toBeGreaterThan(startsBefore);
    expect(await readFile(node.manifest, 'utf8')).toBe(original);
    expect(existsSync(paths().config)).toBe(false);
    const kept = (await readdir(paths().backupDir)).filter((f) => f.startsWith('config.yaml.'));
    expect(kept).toHaveLength(1);
    expect((await stat(join(paths().backupDir, kept[0]!))).mode & 0o777).toBe(0o600);
    expect((await api.probe('/readyz')).status).toBe(200);
    expect((await Journal.load(paths().stateDir, 'init'))!.status).toBe('rolled-back');
    // The apiserver's log says why it refused (where the message tells the operator to look).
    expect(node.apiserverLog(200)).toMatch(/secret|length|key/i);
  }, 90_000);

  it('a good plan runs to the end; the proof falls back to metrics (weaker) when etcd is unreachable', async () => {
    const plan = await planFor(60_000);
    const journal = await journalFor(plan, 60_000);
    // etcd out of reach for the tool (not for the apiserver): init still finishes, and says how
    // much weaker its evidence is instead of failing after the Secrets were rewritten.
    const noEtcd = { ...(await deps()), etcd: { endpoints: ['https://127.0.0.1:1'] }, openEtcd: (c: Parameters<typeof openEtcd>[0]) => openEtcd(c, { callTimeoutMs: 1500 }) };
    const r = await runInit(noEtcd, plan, journal);
    expect(r).toMatchObject({ state: 'done', proof: { method: 'metrics', weaker: true }, kubeadmConfig: { status: 'updated' }, rewrite: { failed: 0 } });
    expect(String((r as { verified?: unknown }).verified)).toMatch(/not verified from etcd/);
    expect(journal.status).toBe('done');
    // Every Secret did end up under the new key, as the metrics said.
    const raw = await bed.etcdGet('/registry/secrets/default/bed-secret-0');
    expect(raw?.subarray(0, 22).toString()).toBe('k8s:enc:aescbc:v1:key1');

    const notes: string[] = [];
    const p = await proveEncryption(
      { api, openEtcd: (c) => openEtcd(c, { callTimeoutMs: 1500 }), onProgress: (m) => notes.push(m) },
      { expectedPrefix: plan.expectedPrefix, etcd: { endpoints: ['https://127.0.0.1:1'] } },
    );
    expect(p).toMatchObject({ method: 'metrics', weaker: true });
    expect(notes.join()).toMatch(/etcd could not be read.*falling back/);
    const left = await api.get<{ items: unknown[] }>('/api/v1/namespaces/kube-system/secrets', { query: { labelSelector: 'app.kubernetes.io/managed-by=k8s-encrypt' } });
    expect(left.items).toEqual([]);
  }, 90_000);

  it('a canary stored under another prefix is a verification failure, and the canary is still deleted', async () => {
    const err = await proveEncryption(
      { api, openEtcd: (c) => openEtcd(c) },
      { expectedPrefix: 'k8s:enc:secretbox:v1:other:', etcd: (await deps()).etcd },
    ).catch((e) => e);
    expect(err).toBeInstanceOf(CliError);
    expect(err.exitCode).toBe(ExitCode.Verification);
    expect(err.message).toMatch(/stored as "k8s:enc:aescbc:v1:key1:"/);
    const left = await api.get<{ items: unknown[] }>('/api/v1/namespaces/kube-system/secrets', { query: { labelSelector: 'app.kubernetes.io/managed-by=k8s-encrypt' } });
    expect(left.items).toEqual([]);
  }, 60_000);
});

describe('proveEncryption with a fixed canary name', () => {
  it('replaces the canary an interrupted proof left under that name, however young, and cleans up', async () => {
    const name = 'k8s-encrypt-canary-fixedname1';
    await api.post('/api/v1/namespaces/kube-system/secrets', {
      apiVersion: 'v1', kind: 'Secret', metadata: { name, labels: { 'app.kubernetes.io/managed-by': 'k8s-encrypt' } }, data: { canary: 'eA==' },
    });
    const p = await proveEncryption({ api, openEtcd: (c) => openEtcd(c) }, { expectedPrefix: 'k8s:enc:aescbc:v1:key1:', etcd: (await deps()).etcd, name });
    expect(p).toMatchObject({ method: 'etcd', weaker: false, canary: `kube-system/${name}` });
    const left = await api.get<{ items: unknown[] }>('/api/v1/namespaces/kube-system/secrets', { query: { labelSelector: 'app.kubernetes.io/managed-by=k8s-encrypt' } });
    expect(left.items).toEqual([]);
  });
});

describe('removeLeftoverCanaries', () => {
  it('deletes canaries an interrupted run left, but not one a proof may be using right now', async () => {
    const name = 'k8s-encrypt-canary-leftover1';
    await api.post('/api/v1/namespaces/kube-system/secrets', {
      apiVersion: 'v1', kind: 'Secret', metadata: { name, labels: { 'app.kubernetes.io/managed-by': 'k8s-encrypt' } }, data: { canary: 'eA==' },
    });
    expect(await removeLeftoverCanaries(api)).toEqual([]);
    expect(await removeLeftoverCanaries(api, { now: new Date(Date.now() + 10 * 60_000) })).toEqual([name]);
    const left = await api.get<{ items: unknown[] }>('/api/v1/namespaces/kube-system/secrets', { query: { labelSelector: 'app.kubernetes.io/managed-by=k8s-encrypt' } });
    expect(left.items).toEqual([]);
  });
});

describe('runInit with automatic reload on (--from-config behind an unchanged manifest)', () => {
  const KEY2 = Buffer.alloc(32, 9).toString('base64');
  const configWith = (write: [string, string], read: [string, string]) =>
    [
      'apiVersion: apiserver.config.k8s.io/v1',
      'kind: EncryptionConfiguration',
      'resources:',
      '  - resources: [secrets]',
      '    providers:',
      `      - aescbc: {keys: [{name: ${write[0]}, secret: "${write[1]}"}, {name: ${read[0]}, secret: "${read[1]}"}]}`,
      '      - identity: {}',
      '',
    ].join('\n');

  async function fromConfigRun(text: string, timeoutMs: number) {
    const plan = planInit({
      manifestText: await readFile(node.manifest, 'utf8'),
      kubeVersion: bed.kubeVersion,
      kubeVersionSource: 'test',
      controlPlanes: 1,
      keyName: 'unused',
      configText: text,
      configSource: 'from-config',
      existingConfigText: await readFile(paths().config, 'utf8'),
      options: { provider: 'aescbc', resources: ['secrets'], configPath: paths().config, manifestPath: node.manifest, timeoutMs, kubeadmConfig: false, force: false },
    });
    const journal = await journalFor(plan, timeoutMs);
    return { plan, journal };
  }

  it('waits for the reload (no restart) and proves the new write key', async () => {
    // Turn automatic reload on (the operator's choice; init never adds it).
    const { planSetFlag } = await import('../../src/manifest/patch');
    const { writeFileAtomic } = await import('../../src/state/atomic');
    const text = await readFile(node.manifest, 'utf8');
    const since = new Date();
    await writeFileAtomic(node.manifest, planSetFlag(text, node.manifest, 'encryption-provider-config-automatic-reload', 'true').newText, { mode: 0o600 });
    const { waitForApiserver } = await import('../../src/cluster/wait');
    await waitForApiserver({ api }, { since, mode: 'restart', timeoutMs: 30_000 });

    const { plan, journal } = await fromConfigRun(configWith(['key2', KEY2], ['key1', KEY]), 30_000);
    expect(plan.restart).toBeUndefined();
    const starts = node.apiserverStarts();
    const r = await runInit(await deps(30_000), plan, journal);
    expect(r.evidence?.evidence).toBe('reload-metric');
    expect(r.proof).toMatchObject({ method: 'etcd', observed: 'k8s:enc:aescbc:v1:key2:' });
    expect(node.apiserverStarts()).toBe(starts);
  }, 90_000);

  it('a reload the apiserver rejects fails fast and puts the previous config back, without a restart', async () => {
    const previous = await readFile(paths().config, 'utf8');
    const { plan, journal } = await fromConfigRun(configWith(['key3', KEY2], ['key2', KEY2]), 60_000);
    // Only the apiserver sees the 5-byte key: the validator would have refused it.
    const bad = plan.config.text.replace(`key3, secret: "${KEY2}"`, `key3, secret: "${Buffer.from('short').toString('base64')}"`);
    expect(bad).not.toBe(plan.config.text);
    installInstead(plan, bad);
    const starts = node.apiserverStarts();
    const t0 = Date.now();
    const err = await runInit(await deps(60_000), plan, journal).catch((e) => e);
    expect(err).toBeInstanceOf(CliError);
    expect(err.exitCode).toBe(ExitCode.RolledBack);
    expect(err.message).toMatch(/tried to reload the new config .* and failed/);
    expect(Date.now() - t0).toBeLessThan(30_000);
    expect(await readFile(paths().config, 'utf8')).toBe(previous);
    expect(node.apiserverStarts()).toBe(starts);
    expect(err.details.healthy).toBe(true);
  }, 90_000);
});
