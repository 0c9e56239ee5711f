/**
 * The control planes for `status`: which there are, each one's mirror pod and /metrics, and the
 * version the apiserver reports. Read-only, through `GatherDeps` like the other gatherers.
 */
import type { ApiClient } from '../cluster/api';
import type { ControlPlane, NodeStage } from '../cluster/nodes';
import { CONFIG_INFO_METRIC, PROCESS_START_METRIC, RELOAD_TIMESTAMP_METRIC, parseMetrics } from '../cluster/wait';
import { CONFIG_FLAG, CONFIG_HASH_ANNOTATION, flagsOfArgs } from '../manifest/manifest';
import type { GatherDeps } from './gather';
import { gathered, missing, reasonOf, type ApiserverFacts, type ApiserverMetrics, type ControlPlaneFacts, type Gathered, type ManifestFacts } from './types';

/** `init` stamps it into the static pod (and so its mirror pod): the config it restarted for. */
const CONFIG_SHA_ANNOTATION = CONFIG_HASH_ANNOTATION;
/** kubeadm records each apiserver's own address on its static pod. */
const KUBEADM_ENDPOINT_ANNOTATION = 'kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint';


/** What status reads from an apiserver's /metrics text. Pure. */
export function metricsFacts(text: string): ApiserverMetrics {
  const out: ApiserverMetrics = {};
  for (const s of parseMetrics(text)) {
    if (s.name === PROCESS_START_METRIC) out.processStart = s.value;
    else if (s.name === CONFIG_INFO_METRIC && s.labels.hash && s.value === 1) out.configInfoHash = s.labels.hash;
    else if (s.name === RELOAD_TIMESTAMP_METRIC) {
      if (s.labels.status === 'success') out.lastReloadSuccess = Math.max(out.lastReloadSuccess ?? 0, s.value);
      if (s.labels.status === 'failure') out.lastReloadFailure = Math.max(out.lastReloadFailure ?? 0, s.value);
    }
  }
  return out;
}

/** host:port of an apiserver from its flags (specific --bind-address, else --advertise-address). */
export function endpointFromArgs(args: readonly string[]): string | undefined {
  const flags = flagsOfArgs(args);
  const wild = new Set(['', '0.0.0.0', '::', '[::]']);
  const bind = flags.get('bind-address') ?? '';
  const adv = flags.get('advertise-address') ?? '';
  const host = !wild.has(bind) ? bind : !wild.has(adv) ? adv : undefined;
  if (!host) return undefined;
  const port = flags.get('secure-port') ?? '6443';
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

async function readMetrics(deps: GatherDeps, endpoint: string | undefined, signal?: AbortSignal): Promise<Gathered<ApiserverMetrics>> {
  if (!endpoint) return missing('its address is unknown (no kubeadm endpoint annotation, no --advertise-address)');
  let api: ApiClient | undefined;
  try {
    const original = new URL(await deps.kubeconfigServer()).hostname;
    const isIp = /^[\d.]+$/.test(original) || original.includes(':') || original.startsWith('[');
    const host = endpoint.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    api = await deps.apiClient({ url: `https://${endpoint}`, ...(!isIp && original !== host ? { tlsServerName: original } : {}) });
    return gathered(metricsFacts(await api.getText('/metrics', { timeoutMs: 5000, signal })));
  } catch (err) {
    const { toCliError } = await import('../cluster/errors');
    return missing(reasonOf(toCliError(err, `read /metrics of https://${endpoint}`)));
  } finally {
    api?.close();
  }
}

export async function gatherApiservers(
  deps: GatherDeps,
  api: ApiClient,
  manifest: (ManifestFacts & { text: string }) | undefined,
  opts: { nodeName?: string; signal?: AbortSignal },
): Promise<Gathered<ApiserverFacts>> {
  const nodes = await import('../cluster/nodes');
  let cps: ControlPlane[];
  let stages: NodeStage[];
  const discoveryWarnings: string[] = [];
  try {
    cps = await nodes.discoverControlPlanes(api, { warn: (m) => discoveryWarnings.push(m) });
    stages = await nodes.readStages(api, cps);
  } catch (err) {
    return missing(reasonOf(err));
  }
  const me = nodes.identifyThisNode(cps, manifest?.args ?? [], opts.nodeName);
  const list = cps.some((c) => c.name === me.name) || !manifest ? cps : [...cps, { name: me.name, hasNode: false, hasMirrorPod: false }];
  const out: ControlPlaneFacts[] = [];
  for (const cp of list) {
    const facts: ControlPlaneFacts = {
      name: cp.name,
      thisNode: cp.name === me.name,
      hasNode: cp.hasNode,
      hasMirrorPod: cp.hasMirrorPod,
      metrics: missing('not read'),
    };
    let podEndpoint: string | undefined;
    if (cp.hasMirrorPod) {
      try {
        const pod = await api.get<any>(`/api/v1/namespaces/kube-system/pods/kube-apiserver-${encodeURIComponent(cp.name)}`, { timeoutMs: 5000 });
        const ann = pod?.metadata?.annotations ?? {};
        if (typeof ann[CONFIG_SHA_ANNOTATION] === 'string') facts.podConfigSha256 = ann[CONFIG_SHA_ANNOTATION];
        if (typeof ann[KUBEADM_ENDPOINT_ANNOTATION] === 'string') podEndpoint = ann[KUBEADM_ENDPOINT_ANNOTATION];
        const c = (pod?.spec?.containers ?? []).find((x: any) => x?.name === 'kube-apiserver') ?? pod?.spec?.containers?.[0];
        const args: string[] = [...(c?.command ?? []), ...(c?.args ?? [])].map(String);
        const inPod = flagsOfArgs(args).get(CONFIG_FLAG);
        facts.flagInPod = inPod !== undefined;
        if (inPod !== undefined) facts.configFlag = inPod;
        podEndpoint ??= endpointFromArgs(args);
        const statuses: any[] = pod?.status?.containerStatuses ?? [];
        const st = statuses.find((s) => s?.name === 'kube-apiserver') ?? statuses[0];
        if (typeof st?.state?.running?.startedAt === 'string') facts.startedAt = st.state.running.startedAt;
        if (typeof st?.ready === 'boolean') facts.ready = st.ready;
      } catch (err) {
        // 404: the mirror pod vanished between the list and the get (a restart), the other
        // evidence stays. Anything else (403, a timeout) is reported, not taken for a restart.
        const { ApiError, toCliError } = await import('../cluster/errors');
        if (!(err instanceof ApiError && err.status === 404)) {
          facts.podUnreadable = reasonOf(toCliError(err, `read mirror pod kube-system/kube-apiserver-${cp.name}`));
        }
      }
    }
    const stage = stages.find((s) => s.node === cp.name);
    if (stage?.record) facts.stage = stage.record;
    if (stage?.malformed) facts.stageMalformed = stage.malformed;
    const endpoint = facts.thisNode && manifest ? endpointFromArgs(manifest.args) ?? podEndpoint : podEndpoint;
    if (endpoint) facts.endpoint = `https://${endpoint}`;
    facts.metrics = await readMetrics(deps, endpoint, opts.signal);
    out.push(facts);
  }
  return gathered({ thisNode: me, controlPlanes: out, ...(discoveryWarnings.length ? { discoveryWarnings } : {}) });
}


/** The apiserver's own version (/version gitVersion, e.g. v1.32.6). */
export async function readServerVersion(api: ApiClient): Promise<Gathered<string>> {
  try {
    const v = await api.get<{ gitVersion?: unknown }>('/version', { timeoutMs: 5000 });
    if (typeof v?.gitVersion !== 'string' || !/^v\d+\.\d+/.test(v.gitVersion)) return missing(`/version answered without a gitVersion`);
    return gathered(v.gitVersion);
  } catch (err) {
    const { toCliError } = await import('../cluster/errors');
    return missing(reasonOf(toCliError(err, 'read /version')));
  }
}
