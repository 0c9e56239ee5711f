/**
 * The control plane the contract suite runs against: the local bed by default, or a real
 * kubeadm-style node when K8S_ENCRYPT_E2E_ROOT names the root holding its etc/kubernetes (then the
 * suite uses that node's admin.conf, manifest and the etcd flags from the manifest).
 */
import { createDecipheriv } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { parse } from 'yaml';
import { etcdConnectionFromFlags, openEtcd } from '../../src/etcd/client';
import { writeFileAtomic } from '../../src/state/atomic';
import { TestApi } from '../bed/api';
import { startBed, type Bed } from '../bed/index';

export interface ControlPlane {
  kind: 'bed' | 'real';
  root: string;
  nodeName: string;
  manifest: string;
  manifestsDir: string;
  api: TestApi;
  etcdGet(key: string): Promise<Buffer | undefined>;
  /** Only on the bed: the bed itself (kubelet internals, pod logs). */
  bed?: Bed;
  /** How long a restart may take, and how long "stays down" is watched. */
  restartTimeoutMs: number;
  downWindowMs: number;
  close(): Promise<void>;
}

export async function openControlPlane(): Promise<ControlPlane> {
  const realRoot = process.env.K8S_ENCRYPT_E2E_ROOT;
  if (!realRoot) {
    const bed = await startBed({ secrets: 0 });
    const n = bed.nodes[0]!;
    const api = await bed.api();
    return {
      kind: 'bed',
      root: n.root,
      nodeName: n.name,
      manifest: n.manifest,
      manifestsDir: join(n.root, 'etc/kubernetes/manifests'),
      api,
      etcdGet: (k) => bed.etcdGet(k),
      bed,
      restartTimeoutMs: 20_000,
      downWindowMs: 3_000,
      close: () => bed.stop(),
    };
  }
  const manifest = join(realRoot, 'etc/kubernetes/manifests/kube-apiserver.yaml');
  const pod = parse(await readFile(manifest, 'utf8'));
  const c = pod.spec.containers.find((x: any) => x.name === 'kube-apiserver') ?? pod.spec.containers[0];
  const flags = new Map<string, string>();
  for (const a of [...(c.command ?? []), ...(c.args ?? [])].map(String)) {
    const m = /^--([^=]+)=(.*)$/s.exec(a);
    if (m) flags.set(m[1]!, m[2]!);
  }
  // Paths in the manifest are host paths; under a root other than / they live below it.
  const hostPath = (p: string | undefined) => (p && isAbsolute(p) && !p.startsWith(realRoot) ? join(realRoot, p) : p);
  for (const f of ['etcd-cafile', 'etcd-certfile', 'etcd-keyfile']) if (flags.has(f)) flags.set(f, hostPath(flags.get(f))!);
  const etcd = await openEtcd(etcdConnectionFromFlags(flags));
  const api = await TestApi.fromKubeconfig(join(realRoot, 'etc/kubernetes/admin.conf'));
  return {
    kind: 'real',
    root: realRoot,
    nodeName: process.env.K8S_ENCRYPT_E2E_NODE ?? hostname().toLowerCase(),
    manifest,
    manifestsDir: join(realRoot, 'etc/kubernetes/manifests'),
    api,
    etcdGet: (k) => etcd.get(k),
    restartTimeoutMs: 120_000,
    downWindowMs: 20_000,
    async close() {
      api.close();
      etcd.close();
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs: number, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export async function readyz(cp: ControlPlane): Promise<boolean> {
  try {
    return (await cp.api.get('/readyz')).status === 200;
  } catch {
    return false;
  }
}

export interface MirrorState {
  hash: string;
  startedAt?: string;
  ready: boolean;
  restartCount: number;
}

export async function mirrorState(cp: ControlPlane): Promise<MirrorState | undefined> {
  const r = await cp.api.get(`/api/v1/namespaces/kube-system/pods/kube-apiserver-${cp.nodeName}`);
  if (r.status !== 200) return undefined;
  const cs = r.body.status?.containerStatuses?.find((s: any) => s.name === 'kube-apiserver');
  return {
    hash: r.body.metadata.annotations['kubernetes.io/config.hash'],
    startedAt: cs?.state?.running?.startedAt,
    ready: cs?.ready === true,
    restartCount: cs?.restartCount ?? 0,
  };
}

/**
 * Waits until the apiserver answers /readyz and its mirror pod reports a ready container that
 * satisfies `accept` (e.g. a new config.hash).
 */
export async function waitServing(cp: ControlPlane, accept: (m: MirrorState) => boolean, timeoutMs = cp.restartTimeoutMs): Promise<MirrorState> {
  let last = 'nothing yet';
  try {
    return await waitFor(
      'the apiserver to serve with the expected mirror pod',
      async () => {
        if (!(await readyz(cp))) {
          last = '/readyz not ok';
          return undefined;
        }
        const m = await mirrorState(cp);
        last = `mirror pod ${JSON.stringify(m)}`;
        return m && m.ready && accept(m) ? m : undefined;
      },
      timeoutMs,
      150,
    );
  } catch (err) {
    const n = cp.bed?.nodes[0];
    const detail = n ? `\nkubelet:\n${n.kubelet.events.slice(-8).join('\n')}\napiserver log:\n${n.apiserverLog(8)}` : '';
    throw new Error(`${(err as Error).message}; last seen: ${last}${detail}`);
  }
}

export const writeManifest = (cp: ControlPlane, text: string) => writeFileAtomic(cp.manifest, text, { mode: 0o600 });

/** Decrypts an aescbc etcd value with node:crypto alone: 16-byte IV, AES-CBC, PKCS#7. */
export function decryptAescbc(raw: Buffer, keyName: string, key: Buffer): Buffer {
  const prefix = Buffer.from(`k8s:enc:aescbc:v1:${keyName}:`);
  if (!raw.subarray(0, prefix.length).equals(prefix)) throw new Error(`value does not start with ${prefix}`);
  const body = raw.subarray(prefix.length);
  const d = createDecipheriv(`aes-${key.length * 8}-cbc`, key, body.subarray(0, 16));
  return Buffer.concat([d.update(body.subarray(16)), d.final()]);
}

/** A stored plaintext object: the protobuf envelope, or JSON with --storage-media-type=application/json. */
export function isPlainObject(plain: Buffer): boolean {
  return plain.subarray(0, 4).equals(Buffer.from('k8s\0', 'latin1')) || plain.subarray(0, 1).toString() === '{';
}

/** The value as a plaintext object holds it: raw bytes (protobuf) or base64 (JSON's []byte). */
export function holdsValue(plain: Buffer, value: string): boolean {
  return plain.includes(value) || plain.includes(Buffer.from(value).toString('base64'));
}
