/**
 * The local control plane for tests and the demo: a real etcd with kubeadm's TLS layout, one or
 * two kubeadm-shaped node roots, and per node a kubelet stand-in running the apiserver stand-in
 * from the node's own static pod manifest. Tests start their own bed and stop it in afterAll;
 * a bed left running when the process exits is killed and removed by an exit hook.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { writeFileAtomic } from '../../src/state/atomic';
import { freePort, startEtcd, type RunningEtcd } from '../helpers/etcd';
import { TestApi } from './api';
import { Kubelet } from './kubelet';
import type { ApiserverKnobs } from './knobs';
import {
  KUBEADM_CA_DIRS,
  nodePaths,
  parseKubeVersion,
  renderAdminConf,
  renderApiserverManifest,
  renderKubeadmConfigMap,
} from './layout';
import { generatePki, NODE_PKI_FILES } from './pki';

export type { ApiserverKnobs } from './knobs';
export { TestApi } from './api';

export interface BedOptions {
  nodes?: 1 | 2 | 3;
  secrets?: number;
  kubeVersion?: string;
  mirrorPods?: boolean;
  knobs?: ApiserverKnobs;
}

export interface BedNode {
  name: string;
  root: string;
  manifest: string;
  kubeconfig: string;
  apiserverUrl: string;
  cliArgs: string[];
  setKnobs(k: ApiserverKnobs): Promise<void>;
  apiserverStarts(): number;
  /** Waits until the apiserver is ready as of the manifests on disk now (the kubelet synced first). */
  waitReady(timeoutMs?: number): Promise<void>;
  /** The node's kubelet stand-in (pods, pid, readyAfterStart, its own event log). */
  kubelet: Kubelet;
  /** The last lines of this node's kube-apiserver container log. */
  apiserverLog(lines?: number): string;
}

export interface Bed {
  nodes: BedNode[];
  etcd: { endpoint: string; caFile: string; certFile: string; keyFile: string };
  etcdGet(key: string): Promise<Buffer | undefined>;
  etcdPut(key: string, value: Uint8Array): Promise<void>;
  api(nodeIndex?: number): Promise<TestApi>;
  stop(): Promise<void>;
  /** The temp dir holding everything the bed made (node roots, shared PKI, etcd data). */
  dir: string;
  kubeVersion: string;
  /** Namespaces the initial Secrets were spread over, and their names (`bed-secret-<i>`). */
  secretNamespaces: string[];
}

export const DEFAULT_KUBE_VERSION = '1.32.6';
export const SECRET_NAMESPACES = ['default', 'kube-system', 'team-a', 'team-b'];

/** The repository root (holding package.json), from src or from a bundle under dist/. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'k8s-encrypt') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the k8s-encrypt repository root from the test bed');
    dir = up;
  }
}

/**
 * A private copy of the built bundles (the apiserver stand-in and its chunks) for one bed: pods
 * restart from it, so a `npm run build` elsewhere in the tree (which empties dist/) cannot break a
 * running bed. Dependencies resolve through a node_modules link.
 */
async function snapshotBundles(bedDir: string): Promise<string> {
  const root = repoRoot();
  const script = 'dist/test/bed/bin/apiserver.js';
  for (let attempt = 0; ; attempt++) {
    if (!existsSync(join(root, script))) {
      if (attempt >= 20) throw new Error(`${join(root, script)} is missing: run \`npm run build\` first`);
      await sleep(250); // a build may be under way
      continue;
    }
    try {
      const files = (await readdir(join(root, 'dist'), { recursive: true })).filter((f) => f.endsWith('.js'));
      await Promise.all(
        files.map(async (f) => {
          await mkdir(dirname(join(bedDir, 'dist', f)), { recursive: true });
          await copyFile(join(root, 'dist', f), join(bedDir, 'dist', f));
        }),
      );
      break;
    } catch (err) {
      if (attempt >= 20) throw err;
      await rm(join(bedDir, 'dist'), { recursive: true, force: true });
      await sleep(250);
    }
  }
  await writeFile(join(bedDir, 'package.json'), '{ "type": "module" }\n');
  await symlink(join(root, 'node_modules'), join(bedDir, 'node_modules'));
  return join(bedDir, script);
}

// Last-resort cleanup when a test process ends without stop(): kill pods, remove temp dirs.
const liveBeds = new Set<{ kubelets: Kubelet[]; dir: string }>();
let exitHook = false;
function killAndRemoveSync(): void {
  for (const b of liveBeds) {
    for (const k of b.kubelets) {
      for (const pid of k.pids()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    rmSync(b.dir, { recursive: true, force: true });
  }
}
function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.on('exit', killAndRemoveSync);
  // A signal ends the process without 'exit': clean up, then let the signal do its work unless
  // someone else (npm run bed) handles it.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      killAndRemoveSync();
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(what())), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log yet)';
  }
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function eachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

async function mustWrite(r: Promise<{ status: number; body: any }>, what: string, ok: number[] = [200, 201]) {
  const res = await r;
  if (!ok.includes(res.status)) throw new Error(`${what}: HTTP ${res.status} ${res.body?.message ?? ''}`);
  return res;
}

export async function startBed(opts: BedOptions = {}): Promise<Bed> {
  const kubeVersion = (opts.kubeVersion ?? DEFAULT_KUBE_VERSION).replace(/^v/, '');
  parseKubeVersion(kubeVersion);
  const nodeCount = opts.nodes ?? 1;
  const dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-bed-'));
  const kubelets: Kubelet[] = [];
  const apis: TestApi[] = [];
  const entry = { kubelets, dir };
  liveBeds.add(entry);
  installExitHook();
  let etcd: RunningEtcd | undefined;
  let reader: Etcd3 | undefined;
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      await Promise.all(kubelets.map((k) => k.stop().catch(() => {})));
      for (const a of apis) a.close();
      reader?.close();
      await etcd?.stop().catch(() => {});
      await rm(dir, { recursive: true, force: true });
      liveBeds.delete(entry);
    })());

  try {
    const sharedPki = join(dir, 'pki');
    const [script, pki] = await Promise.all([snapshotBundles(dir), generatePki(sharedPki)]);
    etcd = await startEtcd({
      tls: { caFile: pki.etcdCaCrt, certFile: pki.etcdServerCrt, keyFile: pki.etcdServerKey },
      dataDir: join(dir, 'etcd'),
    });
    const etcdInfo = {
      endpoint: etcd.endpoint,
      caFile: pki.etcdCaCrt,
      certFile: pki.etcdClientCrt,
      keyFile: pki.etcdClientKey,
    };
    // Raw etcd reads and writes for tests go through the etcd3 package, not src/etcd: what a test
    // sees stored must not come through the code it checks.
    const [etcdCa, etcdCert, etcdKey] = await Promise.all([etcdInfo.caFile, etcdInfo.certFile, etcdInfo.keyFile].map((f) => readFile(f)));
    reader = new Etcd3({ hosts: etcd.endpoint, credentials: { rootCertificate: etcdCa!, certChain: etcdCert!, privateKey: etcdKey! }, dialTimeout: 5000 });
    const [caPem, certPem, keyPem] = await Promise.all([pki.caCrt, pki.adminCrt, pki.adminKey].map((f) => readFile(f, 'utf8')));
    const adminCreds = { ca: caPem!, cert: certPem!, key: keyPem! };

    const nodes: BedNode[] = [];
    for (let i = 0; i < nodeCount; i++) {
      const name = `cp-${i}`;
      const paths = nodePaths(join(dir, name));
      await Promise.all(
        NODE_PKI_FILES.map(async (f) => {
          await mkdir(dirname(join(paths.pki, f)), { recursive: true, mode: 0o700 });
          await copyFile(join(sharedPki, f), join(paths.pki, f));
        }),
      );
      for (const d of KUBEADM_CA_DIRS) await mkdir(join(paths.root, d.path), { recursive: true });
      const port = await freePort();
      const apiserverUrl = `https://127.0.0.1:${port}`;
      await writeFileAtomic(paths.adminConf, renderAdminConf({ server: apiserverUrl, caPem: caPem!, certPem: certPem!, keyPem: keyPem! }));
      await writeFileAtomic(paths.knobs, JSON.stringify(opts.knobs ?? {}, null, 2));
      await writeFileAtomic(
        paths.manifest,
        renderApiserverManifest({
          root: paths.root,
          nodeName: name,
          port,
          kubeVersion,
          etcdEndpoint: etcd.endpoint,
          caDirs: KUBEADM_CA_DIRS.map((d) => d.name),
        }),
      );
      const api = new TestApi({ server: apiserverUrl, ...adminCreds });
      apis.push(api);
      const kubelet = new Kubelet({
        nodeName: name,
        manifestsDir: paths.manifestsDir,
        podLogDir: paths.podLogDir,
        knobsFile: paths.knobs,
        apiserverScript: script,
        api,
        mirrorPods: opts.mirrorPods ?? true,
        kubeletVersion: kubeVersion,
      });
      kubelets.push(kubelet);
      const apiserverLog = (lines = 30) => tail(join(paths.podLogDir, 'kube-apiserver.log'), lines);
      nodes.push({
        name,
        root: paths.root,
        manifest: paths.manifest,
        kubeconfig: paths.adminConf,
        apiserverUrl,
        cliArgs: ['--root', paths.root],
        kubelet,
        apiserverLog,
        setKnobs: (k) => writeFileAtomic(paths.knobs, JSON.stringify(k, null, 2)),
        apiserverStarts: () => kubelet.starts(),
        async waitReady(timeoutMs = 30_000) {
          const deadline = Date.now() + timeoutMs;
          // Ready as of the manifests on disk now: a change the kubelet has not acted on yet (a
          // CLI killed right after writing it) would restart the apiserver after this returned.
          await withTimeout(kubelet.synced(), timeoutMs, () => `${name}: the kubelet did not sync with its manifests within ${timeoutMs} ms; kubelet:\n${kubelet.events.slice(-5).join('\n')}`);
          while (!kubelet.isReady()) {
            if (Date.now() > deadline) {
              throw new Error(`${name}: kube-apiserver not ready after ${timeoutMs} ms; its log:\n${apiserverLog()}`);
            }
            await sleep(50);
          }
        },
      });
    }
    await Promise.all(kubelets.map((k) => k.start()));
    await Promise.all(
      nodes.map((n) =>
        withTimeout(
          n.kubelet.readyAfterStart(1),
          30_000,
          () => `${n.name}: kube-apiserver did not become ready; kubelet:\n${n.kubelet.events.slice(-5).join('\n')}\nits log:\n${n.apiserverLog()}`,
        ),
      ),
    );

    const api0 = apis[0]!;
    for (const ns of SECRET_NAMESPACES) {
      await mustWrite(api0.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } }), `create namespace ${ns}`, [200, 201, 409]);
    }
    await mustWrite(
      api0.create(
        '/api/v1/namespaces/kube-system/configmaps',
        renderKubeadmConfigMap({
          kubeVersion,
          controlPlaneEndpoint: new URL(nodes[0]!.apiserverUrl).host,
          certificatesDir: nodePaths(nodes[0]!.root).pki,
          etcd: etcdInfo,
        }),
      ),
      'create kube-system/kubeadm-config',
    );
    const count = opts.secrets ?? 0;
    await eachLimit(
      Array.from({ length: count }, (_, i) => i),
      32,
      async (i) => {
        const ns = SECRET_NAMESPACES[i % SECRET_NAMESPACES.length]!;
        await mustWrite(api0.create(`/api/v1/namespaces/${ns}/secrets`, bedSecret(ns, i)), `create secret ${ns}/bed-secret-${i}`);
      },
    );
    if (opts.mirrorPods ?? true) {
      await Promise.all(nodes.map((n, i) => waitMirrorReady(apis[i]!, n.name, 15_000)));
    }

    return {
      nodes,
      etcd: etcdInfo,
      dir,
      kubeVersion,
      secretNamespaces: SECRET_NAMESPACES,
      etcdGet: async (key) => (await reader!.get(key).buffer()) ?? undefined,
      etcdPut: async (key, value) => {
        await reader!.put(key).value(Buffer.from(value));
      },
      async api(nodeIndex = 0) {
        const n = nodes[nodeIndex];
        if (!n) throw new Error(`the bed has no node ${nodeIndex}`);
        const api = new TestApi({ server: n.apiserverUrl, ...adminCreds });
        apis.push(api);
        return api;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The initial Secret number i: plain data a test can recognise in raw etcd bytes. */
export function bedSecret(namespace: string, i: number) {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: `bed-secret-${i}`, namespace },
    type: 'Opaque',
    data: { username: b64(`user-${i}`), password: b64(`bed-password-${i}`) },
  };
}

/** Waits until the node's mirror pod exists and reports the apiserver container ready. */
async function waitMirrorReady(api: TestApi, node: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const r = await api.get(`/api/v1/namespaces/kube-system/pods/kube-apiserver-${node}`).catch((e: Error) => ({ status: 0, body: { message: e.message } }));
    if (r.status === 200 && r.body?.status?.containerStatuses?.[0]?.ready === true) return;
    last = `HTTP ${r.status} ${r.body?.message ?? ''}`;
    await sleep(50);
  }
  throw new Error(`${node}: mirror pod kube-system/kube-apiserver-${node} not ready after ${timeoutMs} ms (${last})`);
}
