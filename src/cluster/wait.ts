import { CliError, ExitCode } from '../ui/errors';
import type { ApiClient } from './api';
import { ApiError, describeError } from './errors';

/**
 * Waiting until THIS node's apiserver runs a new configuration. `/readyz` alone proves nothing
 * (the old process may still be serving), so a wait ends only on evidence that a process started
 * (or reloaded) after the change, and says which evidence it used, strongest first:
 *
 * - `config-info-metric`: apiserver_encryption_config_controller_last_config_info carries the
 *   sha256 of the file (1.34+): the running process loaded exactly these bytes;
 * - `reload-metric`: with automatic reload on, the last reload after the change succeeded;
 * - `mirror-pod`: kube-system/kube-apiserver-NODE has a new kubernetes.io/config.hash and its
 *   container started after the change and is ready (only where the kubelet keeps mirror pods);
 * - `process-start-time`: process_start_time_seconds in /metrics is later than the change.
 *
 * Connection refused while the kubelet restarts the pod is expected: poll with back-off, and only
 * the timeout is an error.
 */

type WaitEvidence = 'mirror-pod' | 'process-start-time' | 'config-info-metric' | 'reload-metric';

interface WaitOptions {
  /** When the change was made (taken just before writing it). */
  since: Date;
  /** sha256 (hex) of the config file bytes, for the 1.34+ config-info metric. */
  configSha256?: string;
  /** restart: the manifest changed (kubelet restarts the pod); reload: automatic reload is on. */
  mode: 'restart' | 'reload';
  timeoutMs: number;
  /** This node's name, for its mirror pod kube-apiserver-<node>. */
  nodeName?: string;
  /** The mirror pod's config.hash before the change (known: mirror pods exist here). */
  expectMirrorPodHashChange?: string;
}

interface WaitResult {
  evidence: WaitEvidence;
  detail: string;
}

type Api = Pick<ApiClient, 'get' | 'getText' | 'probe'>;

interface WaitDeps {
  /** A client for this node's own apiserver (see `localApiserverTarget`). */
  api: Api;
  now?: () => Date;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  signal?: AbortSignal;
  /** Progress lines (what is being waited for, what was last seen). */
  onProgress?: (msg: string) => void;
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format (the subset /metrics uses).

export interface MetricSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Parses Prometheus text exposition into samples (comments and malformed lines skipped). Pure. */
export function parseMetrics(text: string): MetricSample[] {
  const out: MetricSample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = SAMPLE.exec(line.trim());
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? '').matchAll(LABEL)) {
      labels[l[1]!] = l[2]!.replace(/\\"/g, '"').replace(/\\n/g, '\n').replace(/\\\\/g, '\\');
    }
    const value = Number(m[4]);
    if (!Number.isNaN(value)) out.push({ name: m[1]!, labels, value });
  }
  return out;
}

export const metric = (samples: readonly MetricSample[], name: string) => samples.filter((s) => s.name === name);

export const CONFIG_INFO_METRIC = 'apiserver_encryption_config_controller_last_config_info';
export const RELOAD_TIMESTAMP_METRIC = 'apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds';
export const PROCESS_START_METRIC = 'process_start_time_seconds';

// ---------------------------------------------------------------------------------------------
// One observation of the apiserver, and what it proves. Pure, so the rules are unit-tested.

interface MirrorPodView {
  configHash?: string;
  /** Container kube-apiserver: running since (ms), and its ready flag. */
  startedAtMs?: number;
  ready: boolean;
}

export interface Observation {
  ready: boolean;
  readyDetail?: string;
  metrics?: MetricSample[];
  /** undefined: not looked at / not reachable; null: there is no such mirror pod. */
  mirrorPod?: MirrorPodView | null;
}

type Verdict =
  | { kind: 'proven'; evidence: WaitEvidence; detail: string; weak?: boolean }
  | { kind: 'failed'; message: string }
  | { kind: 'pending'; seen: string };

/** What one observation proves about a change made at `o.since`. */
export function judge(obs: Observation, o: Omit<WaitOptions, 'timeoutMs'>): Verdict {
  const sinceSec = o.since.getTime() / 1000;
  const samples = obs.metrics ?? [];
  const seen: string[] = [];

  // A failed automatic reload after the change: the apiserver keeps the old config; say so now.
  if (o.mode === 'reload') {
    const failed = metric(samples, RELOAD_TIMESTAMP_METRIC).find(
      (s) => s.labels.status === 'failure' && s.value >= sinceSec,
    );
    const succeeded = metric(samples, RELOAD_TIMESTAMP_METRIC).find(
      (s) => s.labels.status === 'success' && s.value >= sinceSec,
    );
    if (failed && (!succeeded || failed.value > succeeded.value)) {
      return {
        kind: 'failed',
        message: `the apiserver tried to reload the new config at ${new Date(failed.value * 1000).toISOString()} and failed; it keeps running the previous one`,
      };
    }
  }

  if (!obs.ready) return { kind: 'pending', seen: obs.readyDetail ?? '/readyz is not ok yet' };

  const info = metric(samples, CONFIG_INFO_METRIC);
  if (o.configSha256 && info.length) {
    const want = `sha256:${o.configSha256}`;
    if (info.some((s) => s.labels.hash === want)) {
      return { kind: 'proven', evidence: 'config-info-metric', detail: `${CONFIG_INFO_METRIC}{hash="${want}"}, /readyz ok` };
    }
    seen.push(`config hash ${info.map((s) => s.labels.hash).join(',')}`);
  }

  if (o.mode === 'reload') {
    const ok = metric(samples, RELOAD_TIMESTAMP_METRIC).find((s) => s.labels.status === 'success' && s.value >= sinceSec);
    if (ok) {
      return {
        kind: 'proven',
        evidence: 'reload-metric',
        detail: `automatic reload succeeded at ${new Date(ok.value * 1000).toISOString()}, /readyz ok`,
      };
    }
    seen.push('no successful reload since the change yet');
    return { kind: 'pending', seen: seen.join('; ') };
  }

  const mp = obs.mirrorPod;
  if (mp) {
    const hashChanged = o.expectMirrorPodHashChange === undefined || mp.configHash !== o.expectMirrorPodHashChange;
    // startedAt has one-second precision: compare against the start of the change's second.
    const startedAfter = mp.startedAtMs !== undefined && mp.startedAtMs >= Math.floor(sinceSec) * 1000;
    if (hashChanged && startedAfter && mp.ready) {
      return {
        kind: 'proven',
        evidence: 'mirror-pod',
        detail: `mirror pod kube-apiserver-${o.nodeName} has config.hash ${mp.configHash ?? '?'} and started ${new Date(mp.startedAtMs!).toISOString()}, ready; /readyz ok`,
      };
    }
    seen.push(
      `mirror pod: ${hashChanged ? 'new' : 'old'} config.hash, ${startedAfter ? 'started after the change' : 'started before the change'}, ${mp.ready ? 'ready' : 'not ready'}`,
    );
  }

  const start = metric(samples, PROCESS_START_METRIC)[0];
  if (start) {
    if (start.value >= sinceSec) {
      return {
        kind: 'proven',
        evidence: 'process-start-time',
        detail: `process_start_time_seconds ${new Date(start.value * 1000).toISOString()} is after the change, /readyz ok`,
        // Where mirror pods exist, the kubelet's own view is the stronger signal: worth a short wait.
        // That includes a node whose mirror pod was there before the change and is missing now:
        // the kubelet deletes it when the static pod changes and creates the new one shortly after.
        weak: (mp !== undefined && mp !== null) || (mp === null && o.expectMirrorPodHashChange !== undefined),
      };
    }
    seen.push(`process started ${new Date(start.value * 1000).toISOString()}, before the change`);
  } else if (!obs.metrics) {
    seen.push('/metrics not readable');
  }
  return { kind: 'pending', seen: seen.join('; ') || 'no evidence of a restart yet' };
}

// ---------------------------------------------------------------------------------------------

function abortable(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function mirrorPodView(pod: any): MirrorPodView {
  const statuses: any[] = Array.isArray(pod?.status?.containerStatuses) ? pod.status.containerStatuses : [];
  const c = statuses.find((s) => s?.name === 'kube-apiserver') ?? statuses[0];
  const started = c?.state?.running?.startedAt;
  const ms = typeof started === 'string' ? Date.parse(started) : NaN;
  return {
    configHash: pod?.metadata?.annotations?.['kubernetes.io/config.hash'],
    ...(Number.isNaN(ms) ? {} : { startedAtMs: ms }),
    ready: c?.ready === true,
  };
}

/** The mirror pod's current config.hash (undefined: no mirror pod, or the apiserver is down). */
export async function mirrorPodHash(api: Pick<ApiClient, 'get'>, nodeName: string): Promise<string | undefined> {
  try {
    const pod = await api.get<any>(`/api/v1/namespaces/kube-system/pods/kube-apiserver-${nodeName}`, { timeoutMs: 5000 });
    return pod?.metadata?.annotations?.['kubernetes.io/config.hash'];
  } catch {
    return undefined;
  }
}

async function observe(api: Api, nodeName: string | undefined, signal?: AbortSignal): Promise<Observation> {
  const obs: Observation = { ready: false };
  const rq = { timeoutMs: 5000, signal };
  const r = await api.probe('/readyz', rq);
  obs.ready = r.status === 200;
  if (!obs.ready) obs.readyDetail = `/readyz answered ${r.status}`;
  try {
    obs.metrics = parseMetrics(await api.getText('/metrics', rq));
  } catch {
    // Not readable (RBAC, or still starting): the other signals may still do.
  }
  if (nodeName) {
    try {
      obs.mirrorPod = mirrorPodView(await api.get(`/api/v1/namespaces/kube-system/pods/kube-apiserver-${nodeName}`, rq));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) obs.mirrorPod = null;
    }
  }
  return obs;
}

export class WaitTimeoutError extends CliError {
  constructor(
    readonly waitedMs: number,
    readonly lastSeen: string,
  ) {
    super(`the apiserver did not come back with the new configuration within ${Math.round(waitedMs / 1000)} s (last seen: ${lastSeen})`, {
      exitCode: ExitCode.Cluster,
      hint: 'look at the apiserver log (crictl logs $(crictl ps -a --name kube-apiserver -q | head -1)); a longer --timeout may help on slow nodes',
      details: { lastSeen },
    });
    this.name = 'WaitTimeoutError';
  }
}

/** Grace for the mirror pod to confirm what process_start_time_seconds already shows. */
const MIRROR_POD_GRACE_MS = 15_000;

export async function waitForApiserver(deps: WaitDeps, o: WaitOptions): Promise<WaitResult> {
  const now = deps.now ?? (() => new Date());
  const sleep = deps.sleep ?? abortable;
  const start = now().getTime();
  const deadline = start + o.timeoutMs;
  let delay = 250;
  let lastSeen = 'nothing yet';
  let weakSince: number | undefined;
  let lastReported = '';

  for (;;) {
    if (deps.signal?.aborted) throw deps.signal.reason;
    let verdict: Verdict;
    try {
      verdict = judge(await observe(deps.api, o.nodeName, deps.signal), o);
    } catch (err) {
      if (deps.signal?.aborted) throw deps.signal.reason;
      // The client's own refusal (credentials that do not load): no wait mends it.
      if (err instanceof CliError) throw err;
      verdict = { kind: 'pending', seen: `not reachable (${describeError(err)})` };
    }
    const t = now().getTime();
    if (verdict.kind === 'failed') {
      throw new CliError(verdict.message, {
        exitCode: ExitCode.Cluster,
        hint: 'the apiserver log says why it rejected the file; fix the config and run again',
      });
    }
    if (verdict.kind === 'proven') {
      if (!verdict.weak) return { evidence: verdict.evidence, detail: verdict.detail };
      weakSince ??= t;
      if (t - weakSince >= MIRROR_POD_GRACE_MS || t >= deadline) {
        return { evidence: verdict.evidence, detail: `${verdict.detail} (the mirror pod did not confirm it in time)` };
      }
      lastSeen = `${verdict.detail}; waiting for the mirror pod to confirm`;
    } else {
      lastSeen = verdict.seen;
    }
    if (t >= deadline) throw new WaitTimeoutError(t - start, lastSeen);
    if (lastSeen !== lastReported) {
      deps.onProgress?.(lastSeen);
      lastReported = lastSeen;
    }
    await sleep(Math.min(delay, Math.max(0, deadline - t)), deps.signal);
    delay = Math.min(delay * 1.5, 2000);
  }
}

/**
 * Only /readyz (and liveness of the process), for waiting until a RESTORED previous apiserver is
 * healthy again after a rollback: there is nothing new to prove there.
 */
export async function waitForReady(deps: WaitDeps, timeoutMs: number): Promise<void> {
  const now = deps.now ?? (() => new Date());
  const sleep = deps.sleep ?? abortable;
  const deadline = now().getTime() + timeoutMs;
  let delay = 250;
  let last = 'nothing yet';
  for (;;) {
    try {
      const r = await deps.api.probe('/readyz', { timeoutMs: 5000, signal: deps.signal });
      if (r.status === 200) return;
      last = `/readyz answered ${r.status}`;
    } catch (err) {
      if (deps.signal?.aborted) throw deps.signal.reason;
      last = `not reachable (${describeError(err)})`;
    }
    const t = now().getTime();
    if (t >= deadline) throw new WaitTimeoutError(timeoutMs, last);
    await sleep(Math.min(delay, Math.max(0, deadline - t)), deps.signal);
    delay = Math.min(delay * 1.5, 2000);
  }
}

/**
 * A client for THIS node's apiserver: the address and port from its manifest (not the kubeconfig's
 * server, which may be a load balancer), the kubeconfig's credentials. When the kubeconfig names
 * the server by a DNS name, that name is still used to verify the serving certificate.
 */
export async function localApiserverClient(kubeconfigPath: string, manifestText: string, manifestPath: string): Promise<ApiClient> {
  const { apiserverEndpoint } = await import('../manifest/manifest');
  const { loadKubeconfig, createApiClient } = await import('./api');
  const { host, port } = apiserverEndpoint(manifestText, manifestPath);
  const server = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  // One load: the kubeconfig's credentials, this node's address.
  const plain = await loadKubeconfig(kubeconfigPath);
  const target = { ...plain, server };
  const original = new URL(plain.server).hostname;
  const isIp = /^[\d.]+$/.test(original) || original.includes(':') || original.startsWith('[');
  if (!isIp && original !== host) target.tlsServerName = original;
  return createApiClient(target, { timeoutMs: 10_000 });
}
