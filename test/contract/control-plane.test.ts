/**
 * What k8s-encrypt relies on from a kubeadm control plane, stated as tests. They run against the
 * local bed by default and against a real node with K8S_ENCRYPT_E2E_ROOT=/ (see target.ts); the
 * tests that change the manifest put it back and wait for the apiserver to serve again.
 * Raw etcd values are checked with node:crypto here, not with the project's codec.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { addEncryptionConfigFlag } from '../bed/layout';
import {
  decryptAescbc,
  holdsValue,
  isPlainObject,
  mirrorState,
  openControlPlane,
  readyz,
  sleep,
  waitFor,
  waitServing,
  writeManifest,
  type ControlPlane,
  type MirrorState,
} from './target';

const VECTORS = ['kube-apiserver-v1.24.jsonl', 'kube-apiserver-v1.32.jsonl'].flatMap((f) =>
  readFileSync(new URL(`../fixtures/vectors/${f}`, import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l)),
);

const tag = randomBytes(3).toString('hex');
const NS = `contract-${tag}`;
const b64 = (s: string) => Buffer.from(s).toString('base64');

let cp: ControlPlane;
let original: string;
let originalState: MirrorState;
const madeDirs: string[] = [];

beforeAll(async () => {
  cp = await openControlPlane();
  original = await readFile(cp.manifest, 'utf8');
  originalState = await waitServing(cp, () => true);
  const ns = await cp.api.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  expect([201, 409]).toContain(ns.status);
});

/** Puts the original manifest back (if a test changed it) and waits until it is served again. */
async function restoreManifest(): Promise<void> {
  if ((await readFile(cp.manifest, 'utf8')) !== original) await writeManifest(cp, original);
  await waitServing(cp, (m) => m.hash === originalState.hash);
}

afterEach(restoreManifest);

afterAll(async () => {
  if (!cp) return;
  try {
    const list = await cp.api.get(`/api/v1/namespaces/${NS}/secrets`);
    for (const s of list.body?.items ?? []) await cp.api.delete(`/api/v1/namespaces/${NS}/secrets/${s.metadata.name}`);
    await cp.api.delete(`/api/v1/namespaces/${NS}`);
    for (const d of madeDirs) await rm(d, { recursive: true, force: true });
  } finally {
    await cp.close();
  }
});

/** A fresh directory under <root>/etc/kubernetes for one test's EncryptionConfiguration. */
async function configDir(name: string): Promise<string> {
  const dir = join(cp.root, 'etc/kubernetes', `contract-${tag}-${name}`);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  madeDirs.push(dir);
  return dir;
}

function aescbcConfig(keyName: string, key: Buffer): string {
  return stringify({
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: [{ resources: ['secrets'], providers: [{ aescbc: { keys: [{ name: keyName, secret: key.toString('base64') }] } }, { identity: {} }] }],
  });
}

/** Waits until the apiserver stops answering /readyz (the kubelet killed it), then watches it stay down. */
async function expectStaysDown(): Promise<void> {
  await waitFor('the apiserver to go down', async () => !(await readyz(cp)), cp.restartTimeoutMs);
  const until = Date.now() + cp.downWindowMs;
  while (Date.now() < until) {
    expect(await readyz(cp), 'the apiserver came back').toBe(false);
    await sleep(200);
  }
}

describe('the independent aescbc reader used by these tests', () => {
  it.each(VECTORS.filter((v) => v.provider === 'aescbc').map((v) => [v.keyName, v] as const))(
    'decrypts the real apiserver vector %s',
    (_name, v) => {
      const plain = decryptAescbc(Buffer.from(v.rawBase64, 'base64'), v.keyName, Buffer.from(v.keyBase64, 'base64'));
      expect(isPlainObject(plain)).toBe(true);
      expect(holdsValue(plain, v.data.password)).toBe(true);
    },
  );
});

describe('control plane contract', () => {
  it('restarts on a config change: new config.hash, later startedAt; Secrets written after it are stored under the write key', async () => {
    const dir = await configDir('enc');
    const key = randomBytes(32);
    const keyName = `contract-${tag}`;
    await writeFile(join(dir, 'config.yaml'), aescbcConfig(keyName, key), { mode: 0o600 });
    const before = await mirrorState(cp);
    expect(before?.startedAt).toBeTruthy();

    await writeManifest(cp, addEncryptionConfigFlag(original, { configFile: join(dir, 'config.yaml'), mountDir: dir }));
    const after = await waitServing(cp, (m) => m.hash !== before!.hash);
    expect(Date.parse(after.startedAt!)).toBeGreaterThan(Date.parse(before!.startedAt!));

    const name = `after-change-${tag}`;
    const created = await cp.api.create(`/api/v1/namespaces/${NS}/secrets`, { metadata: { name }, data: { password: b64(`pw-${tag}`) } });
    expect(created.status).toBe(201);
    try {
      const raw = (await cp.etcdGet(`/registry/secrets/${NS}/${name}`))!;
      expect(raw.subarray(0, 40).toString('latin1')).toMatch(new RegExp(`^k8s:enc:aescbc:v1:${keyName}:`));
      expect(holdsValue(raw, `pw-${tag}`)).toBe(false);
      const plain = decryptAescbc(raw, keyName, key);
      expect(isPlainObject(plain)).toBe(true);
      expect(holdsValue(plain, `pw-${tag}`)).toBe(true);
    } finally {
      // Without its key (the restored manifest has none) the apiserver could never list Secrets
      // again and would stay unready: delete it while this config can still read it.
      expect((await cp.api.delete(`/api/v1/namespaces/${NS}/secrets/${name}`)).status).toBe(200);
    }
  });

  it('answers a PUT with a stale resourceVersion with 409 Conflict', async () => {
    const path = `/api/v1/namespaces/${NS}/secrets`;
    const c = await cp.api.create(path, { metadata: { name: `stale-${tag}` }, data: { v: b64('1') } });
    expect(c.status).toBe(201);
    const first = c.body;
    const upd = await cp.api.put(`${path}/stale-${tag}`, { ...first, data: { v: b64('2') } });
    expect(upd.status).toBe(200);
    expect(upd.body.metadata.resourceVersion).not.toBe(first.metadata.resourceVersion);
    const stale = await cp.api.put(`${path}/stale-${tag}`, { ...first, data: { v: b64('3') } });
    expect(stale.status).toBe(409);
    expect(stale.body).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Conflict', code: 409 });
    expect((await cp.api.get(`${path}/stale-${tag}`)).body.data.v).toBe(b64('2'));
  });

  it('pages a list with limit and continue, every object exactly once', async () => {
    const path = `/api/v1/namespaces/${NS}/secrets`;
    const names = Array.from({ length: 7 }, (_, i) => `page-${tag}-${i}`);
    for (const name of names) expect((await cp.api.create(path, { metadata: { name, labels: { page: tag } } })).status).toBe(201);
    const seen: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const r = await cp.api.list(path, { limit: 3, continue: token, labelSelector: `page=${tag}` });
      expect(r.status).toBe(200);
      expect(r.body.items.length).toBeLessThanOrEqual(3);
      seen.push(...r.body.items.map((s: any) => s.metadata.name));
      token = r.body.metadata.continue || undefined;
      pages++;
    } while (token && pages < 10);
    expect(pages).toBeGreaterThanOrEqual(3);
    expect(seen.sort()).toEqual([...names].sort());
  });

  it('does not rewrite an unchanged PUT of a fresh object: same resourceVersion, same etcd bytes', async () => {
    const path = `/api/v1/namespaces/${NS}/secrets`;
    const name = `unchanged-${tag}`;
    expect((await cp.api.create(path, { metadata: { name }, data: { v: b64('x') } })).status).toBe(201);
    const got = await cp.api.get(`${path}/${name}`);
    const rawBefore = await cp.etcdGet(`/registry/secrets/${NS}/${name}`);
    const put = await cp.api.put(`${path}/${name}`, got.body);
    expect(put.status).toBe(200);
    expect(put.body.metadata.resourceVersion).toBe(got.body.metadata.resourceVersion);
    expect(await cp.etcdGet(`/registry/secrets/${NS}/${name}`)).toEqual(rawBefore);
  });

  it('keeps the apiserver down with an invalid config, and restoring the manifest brings it back', async () => {
    const dir = await configDir('invalid');
    // aescbc keys are 16, 24 or 32 bytes: 5 bytes make the apiserver refuse to start.
    await writeFile(join(dir, 'config.yaml'), aescbcConfig('short', randomBytes(5)), { mode: 0o600 });
    await writeManifest(cp, addEncryptionConfigFlag(original, { configFile: join(dir, 'config.yaml'), mountDir: dir }));
    await expectStaysDown();
    if (cp.bed) expect(cp.bed.nodes[0]!.apiserverLog(60)).toMatch(/secret is not of the expected length/);
    await restoreManifest();
    expect((await cp.api.get(`/api/v1/namespaces/${NS}/secrets`)).status).toBe(200);
  });

  it('crash-loops when the config file is outside every mounted directory', async () => {
    const dir = await configDir('unmounted');
    await writeFile(join(dir, 'config.yaml'), aescbcConfig('unmounted', randomBytes(32)), { mode: 0o600 });
    await writeManifest(cp, addEncryptionConfigFlag(original, { configFile: join(dir, 'config.yaml') }));
    await expectStaysDown();
    if (cp.bed) {
      expect(cp.bed.nodes[0]!.apiserverLog(60)).toMatch(/no such file or directory/);
      const pod = cp.bed.nodes[0]!.kubelet.podViews().find((p) => p.pod === `kube-apiserver-${cp.nodeName}`)!;
      expect(pod.restartCount).toBeGreaterThanOrEqual(1);
    }
  });

  it('runs a stray manifest left in the manifests dir as a second static pod', async () => {
    const stray = join(cp.manifestsDir, `kube-apiserver-backup-${tag}.yaml`);
    const pod = parse(original);
    pod.metadata.name = `kube-apiserver-backup-${tag}`;
    await writeFile(stray, stringify(pod), { mode: 0o600 });
    try {
      const mirror = `/api/v1/namespaces/kube-system/pods/kube-apiserver-backup-${tag}-${cp.nodeName}`;
      const r = await waitFor('the second pod', async () => {
        const m = await cp.api.get(mirror);
        return m.status === 200 ? m : undefined;
      }, cp.restartTimeoutMs);
      expect(r.body.metadata.annotations['kubernetes.io/config.source']).toBe('file');
      // Same host port: the second apiserver cannot serve; the first one keeps serving.
      expect(await readyz(cp)).toBe(true);
    } finally {
      await unlink(stray);
    }
    await waitFor('the second pod to go', async () => (await cp.api.get(`/api/v1/namespaces/kube-system/pods/kube-apiserver-backup-${tag}-${cp.nodeName}`)).status === 404, cp.restartTimeoutMs);
  });

  it('lets a backup copy named after the manifest shadow it: the later file in name order is the pod that runs', async () => {
    const backup = `${cp.manifest}.bak`;
    await writeFile(backup, original, { mode: 0o600 });
    try {
      // Same content, another file: a new pod (the hash covers the file), run from the backup.
      const fromBackup = await waitServing(cp, (m) => m.hash !== originalState.hash);
      // Edits to the real manifest now change nothing.
      const dir = await configDir('shadowed');
      await writeFile(join(dir, 'config.yaml'), aescbcConfig('shadowed', randomBytes(32)), { mode: 0o600 });
      await writeManifest(cp, addEncryptionConfigFlag(original, { configFile: join(dir, 'config.yaml'), mountDir: dir }));
      await sleep(cp.downWindowMs);
      const still = await waitServing(cp, () => true);
      expect(still.hash).toBe(fromBackup.hash);
      expect(still.startedAt).toBe(fromBackup.startedAt);
    } finally {
      await unlink(backup);
    }
  });
});
