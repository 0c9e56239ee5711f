import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { basename, join } from 'node:path';
import { parse } from 'yaml';
import type { TestApi } from './api';
import type { ApiserverKnobs } from './knobs';
import { knobsEnv } from './knobs';

/**
 * A kubelet stand-in for one node: runs the static pods of a manifests directory as local
 * processes the way the kubelet does (file source, restart on change, CrashLoopBackOff, readiness
 * probe, mirror pods). Only the `kube-apiserver` container is really executed; any other static
 * pod is recorded as running so that stray files in the directory are visible as pods.
 */

export interface KubeletOptions {
  nodeName: string;
  manifestsDir: string;
  /** <root>/var/log/pods: each pod's container log (stdout+stderr), appended across restarts. */
  podLogDir: string;
  /** <root>/bed/knobs.json, read at every start of an apiserver container. */
  knobsFile: string;
  /** The built apiserver stand-in (dist/test/bed/bin/apiserver.js). */
  apiserverScript: string;
  /** Client for this node's apiserver; mirror pods and the Node object go through it. */
  api?: TestApi;
  mirrorPods?: boolean;
  kubeletVersion?: string;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** SIGTERM, then SIGKILL after this long (a pod's terminationGracePeriodSeconds, shortened). */
  graceMs?: number;
  rescanMs?: number;
  probeIntervalMs?: number;
}

export interface ContainerView {
  pod: string; // full name: <metadata.name>-<node>
  file: string;
  hash: string;
  apiserver: boolean;
  pid?: number;
  running: boolean;
  ready: boolean;
  restartCount: number;
  startedAt?: string;
  waitingReason?: string;
  lastExitCode?: number | null;
}

interface ParsedPod {
  file: string;
  content: Buffer;
  pod: any;
  fullName: string; // namespace/name-node, the kubelet's key
  hash: string;
}

/** What the kubelet would run for a container: executable + arguments (command then args). */
export function containerArgv(c: any): string[] {
  const command: string[] = Array.isArray(c?.command) ? c.command.map(String) : [];
  const args: string[] = Array.isArray(c?.args) ? c.args.map(String) : [];
  return [...command, ...args];
}

/** An apiserver container: `kube-apiserver` is the executable (or the image's entrypoint). */
export function isApiserverContainer(c: any): boolean {
  if (Array.isArray(c?.command) && c.command.length > 0) return basename(String(c.command[0])) === 'kube-apiserver';
  return /\/kube-apiserver(-[a-z0-9]+)?:/.test(String(c?.image ?? ''));
}

/** `registry.k8s.io/kube-apiserver:v1.32.6` -> '1.32.6'. */
export function versionFromImage(image: string): string | undefined {
  const m = /:v?(\d+\.\d+\.\d+)[^/]*$/.exec(image);
  return m?.[1];
}

/** BED_MOUNTS: each volumeMount joined with its hostPath volume (other volume kinds are skipped). */
export function podMounts(pod: any, c: any): { hostPath: string; mountPath: string; readOnly: boolean }[] {
  const volumes = new Map<string, any>((pod?.spec?.volumes ?? []).map((v: any) => [v.name, v]));
  const out: { hostPath: string; mountPath: string; readOnly: boolean }[] = [];
  for (const m of c?.volumeMounts ?? []) {
    const v = volumes.get(m.name);
    if (v?.hostPath?.path) out.push({ hostPath: String(v.hostPath.path), mountPath: String(m.mountPath), readOnly: !!m.readOnly });
  }
  return out;
}

/**
 * The kubelet's file source: every regular, non-hidden file of the directory, in name order, is
 * decoded as a Pod (kubelet pkg/kubelet/config/file.go globs "[^.]*"; there is no extension
 * filter). Pods are keyed by namespace/name-node; a later file with the same key replaces an
 * earlier one, as in the kubelet's store. Files that are not a Pod are skipped.
 */
export async function readStaticPods(dir: string, nodeName: string): Promise<{ pods: Map<string, ParsedPod>; errors: string[] }> {
  const pods = new Map<string, ParsedPod>();
  const errors: string[] = [];
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => !n.startsWith('.')).sort();
  } catch (err) {
    return { pods, errors: [`cannot read ${dir}: ${(err as Error).message}`] };
  }
  for (const name of names) {
    const file = join(dir, name);
    try {
      if (!(await stat(file)).isFile()) continue;
      const content = await readFile(file);
      const pod = parse(content.toString('utf8'));
      if (pod?.kind !== 'Pod' || !pod?.metadata?.name || !Array.isArray(pod?.spec?.containers)) {
        errors.push(`${file}: not a Pod manifest`);
        continue;
      }
      const ns = pod.metadata.namespace ?? 'default';
      const fullName = `${ns}/${pod.metadata.name}-${nodeName}`;
      // Like the kubelet's generated UID: the pod content, the node and the source file.
      const hash = createHash('md5').update(content).update(`host:${nodeName}`).update(`file:${file}`).digest('hex');
      pods.set(fullName, { file, content, pod, fullName, hash });
    } catch (err) {
      errors.push(`${file}: ${(err as Error).message}`);
    }
  }
  return { pods, errors };
}

function probeOnce(url: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    // Like the kubelet's HTTPS probes: no certificate verification.
    const req = httpsRequest(url, { rejectUnauthorized: false, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 400);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

class StaticPod {
  proc?: ChildProcess;
  running = false;
  ready = false;
  started = false;
  restartCount = 0;
  startedAt?: string;
  waitingReason?: string;
  lastExitCode?: number | null;
  lastExitAt?: string;
  startIndex = 0; // node-wide apiserver start number of the current run
  private crashes = 0;
  private stopping?: Promise<void>;
  private restartTimer?: NodeJS.Timeout;
  private probeTimer?: NodeJS.Timeout;
  private probeFailures = 0;
  private removed = false;
  private reportedReady?: boolean;
  private readyChangedAt = new Date().toISOString();

  constructor(
    readonly spec: ParsedPod,
    private readonly k: Kubelet,
  ) {}

  get container(): any {
    return this.spec.pod.spec.containers[0];
  }
  get apiserver(): boolean {
    return isApiserverContainer(this.container);
  }
  get podName(): string {
    return `${this.spec.pod.metadata.name}-${this.k.opts.nodeName}`;
  }

  async start(): Promise<void> {
    if (this.removed) return;
    this.restartTimer = undefined;
    this.waitingReason = undefined;
    if (!this.apiserver) {
      // Not something the bed can run: shown as a running pod, nothing more.
      this.running = this.started = this.ready = true;
      this.startedAt = new Date().toISOString();
      this.k.changed();
      return;
    }
    const c = this.container;
    const [, ...args] = containerArgv(c);
    const argv = Array.isArray(c.command) && c.command.length ? args : containerArgv(c);
    const knobs = await this.k.readKnobs();
    // A container's environment: its own env entries, not the kubelet's.
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      ...Object.fromEntries((c.env ?? []).filter((e: any) => e?.name && e.value !== undefined).map((e: any) => [e.name, String(e.value)])),
      BED_KUBE_VERSION: versionFromImage(String(c.image ?? '')) ?? '',
      BED_MOUNTS: JSON.stringify(podMounts(this.spec.pod, c)),
      BED_NODE_NAME: this.k.opts.nodeName,
      ...knobsEnv(knobs, argv),
      // Not the container's: the test run's compile cache (vitest.config.ts), so that the many
      // restarts of a stand-in do not compile its modules again each time.
      ...(process.env.NODE_COMPILE_CACHE ? { NODE_COMPILE_CACHE: process.env.NODE_COMPILE_CACHE } : {}),
    };
    mkdirSync(this.k.opts.podLogDir, { recursive: true });
    const logFd = openSync(join(this.k.opts.podLogDir, `${this.spec.pod.metadata.name}.log`), 'a');
    let proc: ChildProcess;
    try {
      proc = spawn(process.execPath, [this.k.opts.apiserverScript, ...argv], {
        env,
        stdio: ['ignore', logFd, logFd],
      });
    } finally {
      closeSync(logFd);
    }
    this.proc = proc;
    this.running = true;
    this.started = true;
    this.ready = false;
    this.probeFailures = 0;
    this.startedAt = new Date().toISOString();
    this.startIndex = this.k.noteApiserverStart(this);
    const startedMs = Date.now();
    proc.on('exit', (code, signal) => {
      if (this.proc !== proc) return;
      this.proc = undefined;
      this.running = false;
      this.ready = false;
      this.lastExitCode = code ?? (signal ? 128 : null);
      this.lastExitAt = new Date().toISOString();
      clearTimeout(this.probeTimer);
      this.k.untrack(proc);
      if (this.stopping || this.removed) return;
      // CrashLoopBackOff: doubling delay, reset after a long enough run.
      if (Date.now() - startedMs > 4 * this.k.backoffMaxMs) this.crashes = 0;
      this.crashes++;
      this.restartCount++;
      this.waitingReason = 'CrashLoopBackOff';
      const delay = Math.min(this.k.backoffInitialMs * 2 ** (this.crashes - 1), this.k.backoffMaxMs);
      this.restartTimer = setTimeout(() => void this.start().catch((e) => this.k.log(`start failed: ${e}`)), delay);
      this.k.changed();
    });
    this.k.track(proc);
    this.k.changed();
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    const probe = this.container.readinessProbe?.httpGet;
    if (!probe) {
      this.ready = true;
      this.k.noteReady(this);
      return;
    }
    const scheme = String(probe.scheme ?? 'HTTP').toLowerCase();
    const url = `${scheme}://${probe.host ?? '127.0.0.1'}:${probe.port}${probe.path ?? '/'}`;
    const threshold = Number(this.container.readinessProbe.failureThreshold ?? 3);
    const proc = this.proc;
    const tick = async () => {
      if (this.proc !== proc || !proc) return;
      const ok = await probeOnce(url, 2000);
      if (this.proc !== proc) return;
      if (ok) {
        this.probeFailures = 0;
        if (!this.ready) {
          this.ready = true;
          this.k.noteReady(this);
          this.k.changed();
        }
      } else if (++this.probeFailures >= threshold && this.ready) {
        this.ready = false;
        this.k.changed();
      }
      this.probeTimer = setTimeout(() => void tick(), this.k.probeIntervalMs);
    };
    this.probeTimer = setTimeout(() => void tick(), this.k.probeIntervalMs);
  }

  /** Kills the container: SIGTERM, SIGKILL after the grace period. */
  stop(remove: boolean): Promise<void> {
    if (remove) this.removed = true;
    clearTimeout(this.restartTimer);
    clearTimeout(this.probeTimer);
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) {
      this.running = this.ready = false;
      return Promise.resolve();
    }
    this.stopping ??= new Promise<void>((resolve) => {
      const kill = setTimeout(() => proc.kill('SIGKILL'), this.k.graceMs);
      proc.once('exit', () => {
        clearTimeout(kill);
        this.stopping = undefined;
        resolve();
      });
      proc.kill('SIGTERM');
    });
    return this.stopping;
  }

  view(): ContainerView {
    return {
      pod: this.podName,
      file: this.spec.file,
      hash: this.spec.hash,
      apiserver: this.apiserver,
      pid: this.proc?.pid,
      running: this.running,
      ready: this.ready,
      restartCount: this.restartCount,
      startedAt: this.startedAt,
      waitingReason: this.waitingReason,
      lastExitCode: this.lastExitCode,
    };
  }

  /** The mirror pod: the static pod as the kubelet reports it to the apiserver. */
  mirror(nodeUid?: string): any {
    const meta = this.spec.pod.metadata;
    const c = this.container;
    const now = new Date().toISOString();
    const state = this.running
      ? { running: { startedAt: this.startedAt } }
      : this.waitingReason
        ? { waiting: { reason: this.waitingReason } }
        : { terminated: { exitCode: this.lastExitCode ?? 0, finishedAt: this.lastExitAt } };
    if (this.reportedReady !== this.ready) {
      this.reportedReady = this.ready;
      this.readyChangedAt = now;
    }
    const since = (ok: boolean) => (ok === this.ready ? this.readyChangedAt : this.startedAt ?? now);
    const cond = (type: string, ok: boolean) => ({ type, status: ok ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: since(ok) });
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: this.podName,
        namespace: meta.namespace ?? 'default',
        labels: meta.labels ?? {},
        annotations: {
          ...(meta.annotations ?? {}),
          'kubernetes.io/config.hash': this.spec.hash,
          'kubernetes.io/config.mirror': this.spec.hash,
          'kubernetes.io/config.seen': now,
          'kubernetes.io/config.source': 'file',
        },
        ownerReferences: [
          { apiVersion: 'v1', kind: 'Node', name: this.k.opts.nodeName, controller: true, ...(nodeUid ? { uid: nodeUid } : {}) },
        ],
      },
      spec: { ...this.spec.pod.spec, nodeName: this.k.opts.nodeName },
      status: {
        phase: this.running || this.waitingReason ? 'Running' : 'Failed',
        conditions: [cond('Initialized', true), cond('Ready', this.ready), cond('ContainersReady', this.ready), cond('PodScheduled', true)],
        hostIP: '127.0.0.1',
        podIP: '127.0.0.1',
        startTime: this.startedAt,
        containerStatuses: [
          {
            name: c.name,
            image: c.image,
            ready: this.ready,
            started: this.running,
            restartCount: this.restartCount,
            state,
          },
        ],
      },
    };
  }
}

export class Kubelet {
  readonly opts: KubeletOptions;
  readonly backoffInitialMs: number;
  readonly backoffMaxMs: number;
  readonly graceMs: number;
  readonly probeIntervalMs: number;
  private pods = new Map<string, StaticPod>();
  private watcher?: FSWatcher;
  private rescanTimer?: NodeJS.Timeout;
  private syncing?: Promise<void>;
  private resync = false;
  private stopped = false;
  private apiserverStarts = 0;
  private readyWaiters: { n: number; resolve: () => void }[] = [];
  private procs = new Set<ChildProcess>();
  private mirrorDirty = true;
  private mirrorTimer?: NodeJS.Timeout;
  private mirrorLoop?: Promise<void>;
  private pushed = new Map<string, string>(); // pod full name -> config.hash last pushed
  private nodeRegistered = false;
  /** Messages about the kubelet's own work (not pod logs); tests may print them on failure. */
  readonly events: string[] = [];

  constructor(opts: KubeletOptions) {
    this.opts = opts;
    this.backoffInitialMs = opts.backoffInitialMs ?? 500;
    this.backoffMaxMs = opts.backoffMaxMs ?? 4000;
    this.graceMs = opts.graceMs ?? 3000;
    this.probeIntervalMs = opts.probeIntervalMs ?? 150;
  }

  log(msg: string): void {
    this.events.push(`${new Date().toISOString()} ${msg}`);
    if (this.events.length > 500) this.events.shift();
  }

  async start(): Promise<void> {
    mkdirSync(this.opts.manifestsDir, { recursive: true });
    this.watcher = watch(this.opts.manifestsDir, () => this.requestSync());
    this.watcher.on('error', (err) => this.log(`watch: ${err.message}`));
    const rescan = () => {
      this.rescanTimer = setTimeout(() => {
        this.requestSync();
        rescan();
      }, this.opts.rescanMs ?? 1000);
    };
    rescan();
    this.requestSync();
    await this.syncing;
    if (this.opts.mirrorPods !== false && this.opts.api) this.mirrorLoop = this.runMirrorLoop();
  }

  requestSync(): void {
    if (this.stopped) return;
    if (this.syncing) {
      this.resync = true;
      return;
    }
    this.syncing = this.sync()
      .catch((err) => this.log(`sync: ${(err as Error).message}`))
      .finally(() => {
      this.syncing = undefined;
      if (this.resync) {
        this.resync = false;
        this.requestSync();
      }
    });
  }

  /**
   * Resolves once the pods are in line with the manifests directory as it is now: a sync that
   * began after this call has finished (one in progress may have read the directory before the
   * last change, so another follows it).
   */
  async synced(): Promise<void> {
    this.requestSync();
    while (this.syncing) await this.syncing;
  }

  /** Brings the running pods in line with the manifests directory. */
  private async sync(): Promise<void> {
    const { pods: desired, errors } = await readStaticPods(this.opts.manifestsDir, this.opts.nodeName);
    for (const e of errors) this.log(e);
    if (this.stopped) return;
    const work: Promise<void>[] = [];
    const replacing = new Set<string>();
    for (const [key, pod] of this.pods) {
      const want = desired.get(key);
      if (want && want.hash === pod.spec.hash) continue;
      // Changed or gone: kill the old pod; a changed one starts again as a new pod.
      this.pods.delete(key);
      replacing.add(key);
      this.log(`${want ? 'manifest changed' : 'manifest removed'}: ${key}`);
      work.push(
        pod.stop(true).then(async () => {
          this.changed();
          if (want) await this.add(key, want);
        }),
      );
    }
    for (const [key, want] of desired) {
      if (!this.pods.has(key) && !replacing.has(key)) work.push(this.add(key, want));
    }
    await Promise.all(work);
  }

  private async add(key: string, spec: ParsedPod): Promise<void> {
    if (this.stopped || this.pods.has(key)) return;
    const pod = new StaticPod(spec, this);
    this.pods.set(key, pod);
    this.log(`starting ${key} from ${spec.file}`);
    await pod.start();
  }

  async readKnobs(): Promise<ApiserverKnobs> {
    try {
      return JSON.parse(await readFile(this.opts.knobsFile, 'utf8')) as ApiserverKnobs;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw err;
    }
  }

  noteApiserverStart(_pod: StaticPod): number {
    return ++this.apiserverStarts;
  }

  noteReady(pod: StaticPod): void {
    if (!pod.apiserver) return;
    const n = pod.startIndex;
    const left: typeof this.readyWaiters = [];
    for (const w of this.readyWaiters) (w.n <= n ? w.resolve() : left.push(w));
    this.readyWaiters = left;
  }

  track(p: ChildProcess): void {
    this.procs.add(p);
  }
  untrack(p: ChildProcess): void {
    this.procs.delete(p);
  }
  /** Pids of every process this kubelet runs (for last-resort cleanup at process exit). */
  pids(): number[] {
    return [...this.procs].map((p) => p.pid).filter((p): p is number => p !== undefined);
  }

  /** How many times an apiserver container was started on this node. */
  starts(): number {
    return this.apiserverStarts;
  }

  /** The apiserver pod that serves the node: the one from kube-apiserver.yaml's key. */
  private mainPod(): StaticPod | undefined {
    return this.pods.get(`kube-system/kube-apiserver-${this.opts.nodeName}`) ?? [...this.pods.values()].find((p) => p.apiserver);
  }

  pid(): number | undefined {
    return this.mainPod()?.proc?.pid;
  }

  isReady(): boolean {
    return !!this.mainPod()?.ready;
  }

  /** Resolves once an apiserver started as start number `n` or later has passed its readiness probe. */
  readyAfterStart(n: number): Promise<void> {
    const main = this.mainPod();
    if (main?.ready && main.startIndex >= n) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push({ n, resolve }));
  }

  /** Every pod the kubelet runs now. */
  podViews(): ContainerView[] {
    return [...this.pods.values()].map((p) => p.view());
  }

  changed(): void {
    this.mirrorDirty = true;
    if (this.mirrorTimer) {
      clearTimeout(this.mirrorTimer);
      this.mirrorTimer = undefined;
      this.wakeMirror?.();
    }
  }

  private wakeMirror?: () => void;

  private sleepMirror(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wakeMirror = resolve;
      this.mirrorTimer = setTimeout(resolve, ms);
    });
  }

  /** Keeps the Node object and the mirror pods current; retries while the apiserver is down. */
  private async runMirrorLoop(): Promise<void> {
    while (!this.stopped) {
      if (this.mirrorDirty) {
        this.mirrorDirty = false;
        try {
          await this.pushMirrors();
        } catch (err) {
          this.mirrorDirty = true;
          this.log(`mirror sync: ${(err as Error).message}`);
        }
      }
      if (this.stopped) break;
      await this.sleepMirror(this.mirrorDirty ? 250 : 1000);
    }
  }

  private async pushMirrors(): Promise<void> {
    const api = this.opts.api!;
    const node = this.opts.nodeName;
    let nodeUid: string | undefined;
    if (!this.nodeRegistered) {
      const r = await api.create('/api/v1/nodes', {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: {
          name: node,
          labels: {
            'kubernetes.io/hostname': node,
            'kubernetes.io/os': 'linux',
            'node-role.kubernetes.io/control-plane': '',
          },
        },
        status: {
          addresses: [{ type: 'InternalIP', address: '127.0.0.1' }, { type: 'Hostname', address: node }],
          conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }],
          nodeInfo: { kubeletVersion: `v${this.opts.kubeletVersion ?? ''}` },
        },
      });
      if (r.status !== 201 && r.status !== 409) throw new Error(`register node ${node}: HTTP ${r.status}`);
      this.nodeRegistered = true;
      nodeUid = r.body?.metadata?.uid;
    }
    const live = new Map([...this.pods.values()].map((p) => [`${p.spec.pod.metadata.namespace ?? 'default'}/${p.podName}`, p]));
    // Mirror pods whose static pod is gone.
    for (const key of [...this.pushed.keys()]) {
      if (live.has(key)) continue;
      const [ns, name] = key.split('/');
      const r = await api.delete(`/api/v1/namespaces/${ns}/pods/${name}`);
      if (r.status >= 300 && r.status !== 404) throw new Error(`delete mirror pod ${key}: HTTP ${r.status}`);
      this.pushed.delete(key);
    }
    for (const [key, pod] of live) {
      const [ns, name] = key.split('/');
      const path = `/api/v1/namespaces/${ns}/pods`;
      const cur = await api.get(`${path}/${name}`);
      if (cur.status !== 200 && cur.status !== 404) throw new Error(`get mirror pod ${key}: HTTP ${cur.status}`);
      const body = pod.mirror(nodeUid);
      if (cur.status === 200 && cur.body?.metadata?.annotations?.['kubernetes.io/config.mirror'] !== pod.spec.hash) {
        // The static pod changed: the kubelet replaces the mirror pod (new uid).
        const d = await api.delete(`${path}/${name}`);
        if (d.status >= 300 && d.status !== 404) throw new Error(`replace mirror pod ${key}: HTTP ${d.status}`);
        cur.status = 404;
      }
      let r;
      if (cur.status === 404) {
        r = await api.create(path, body);
      } else {
        body.metadata.resourceVersion = cur.body.metadata.resourceVersion;
        body.metadata.uid = cur.body.metadata.uid;
        r = await api.put(`${path}/${name}`, body);
      }
      if (r.status >= 300) throw new Error(`write mirror pod ${key}: HTTP ${r.status} ${r.body?.message ?? ''}`);
      this.pushed.set(key, pod.spec.hash);
    }
  }

  /** Stops every pod (SIGTERM, then SIGKILL) and the watchers. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    clearTimeout(this.rescanTimer);
    clearTimeout(this.mirrorTimer);
    this.wakeMirror?.();
    await this.syncing?.catch(() => {});
    await Promise.all([...this.pods.values()].map((p) => p.stop(true)));
    await this.mirrorLoop?.catch(() => {});
  }
}
