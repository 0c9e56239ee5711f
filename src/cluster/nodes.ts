import { hostname } from 'node:os';
import { CliError, ExitCode } from '../ui/errors';
import type { ApiClient } from './api';
import { ApiError, toCliError } from './errors';

/**
 * Control planes of the cluster and where each one stands in an encryption transition.
 *
 * Discovery: mirror pods `kube-system/kube-apiserver-<node>` and Nodes labelled
 * `node-role.kubernetes.io/control-plane` (either may be missing: no mirror pods where the kubelet
 * does not keep them, no Node object for a control plane that does not register itself).
 *
 * Stage records: `STAGE:sha256:HEX` (the stage of the transition and the sha256 of the config file
 * bytes the node runs) in the annotation `k8s-encrypt.io/stage` of the node's Node object, or, for a
 * control plane without a Node object, under the node's name in the ConfigMap
 * kube-system/k8s-encrypt-state. A stage advances only when every control plane reports the same
 * stage and hash.
 */

const STAGE_ANNOTATION = 'k8s-encrypt.io/stage';
const STATE_CONFIGMAP = 'k8s-encrypt-state';
const CONTROL_PLANE_LABEL = 'node-role.kubernetes.io/control-plane';
const MIRROR_PREFIX = 'kube-apiserver-';

export interface ControlPlane {
  name: string;
  hasNode: boolean;
  hasMirrorPod: boolean;
  /** The mirror pod's kube-apiserver command line (to recognise this node by its manifest). */
  command?: string[];
  /** The mirror pod's kubernetes.io/config.hash. */
  configHash?: string;
}

interface StageRecord {
  stage: string;
  sha256: string;
}

export interface NodeStage {
  node: string;
  record?: StageRecord;
  /** Where the record lives (or would live). */
  where: 'node-annotation' | 'state-configmap';
  /** A record that is there but not in the STAGE:sha256:HEX form. */
  malformed?: string;
}

type Api = Pick<ApiClient, 'get' | 'list' | 'patch' | 'post'>;

export function formatStage(r: StageRecord): string {
  return `${r.stage}:sha256:${r.sha256}`;
}

export function parseStage(v: string | undefined): StageRecord | undefined {
  if (!v) return undefined;
  const m = /^([a-z][a-z0-9-]*):sha256:([0-9a-f]{64})$/.exec(v.trim());
  return m ? { stage: m[1]!, sha256: m[2]! } : undefined;
}

/** `warn` is told of evidence discovery could not read but went on without. */
export async function discoverControlPlanes(api: Api, opts: { warn?: (msg: string) => void } = {}): Promise<ControlPlane[]> {
  const byName = new Map<string, ControlPlane>();
  const entry = (name: string) => {
    let e = byName.get(name);
    if (!e) byName.set(name, (e = { name, hasNode: false, hasMirrorPod: false }));
    return e;
  };
  try {
    const pods = await api.list<any>('/api/v1/namespaces/kube-system/pods');
    for (const p of pods?.items ?? []) {
      const name: string = p?.metadata?.name ?? '';
      if (!name.startsWith(MIRROR_PREFIX)) continue;
      // A mirror pod names its node in spec.nodeName; its name is kube-apiserver-<node>.
      const node: string = p?.spec?.nodeName || name.slice(MIRROR_PREFIX.length);
      const e = entry(node);
      e.hasMirrorPod = true;
      const c = (p?.spec?.containers ?? []).find((x: any) => x?.name === 'kube-apiserver') ?? p?.spec?.containers?.[0];
      const cmd = [...(c?.command ?? []), ...(c?.args ?? [])];
      if (cmd.length) e.command = cmd.map(String);
      const h = p?.metadata?.annotations?.['kubernetes.io/config.hash'];
      if (h) e.configHash = h;
    }
  } catch (err) {
    throw toCliError(err, 'list the kube-apiserver mirror pods in kube-system');
  }
  try {
    const nodes = await api.list<any>('/api/v1/nodes', { query: { labelSelector: CONTROL_PLANE_LABEL } });
    for (const n of nodes?.items ?? []) {
      const name = n?.metadata?.name;
      if (typeof name === 'string' && name) entry(name).hasNode = true;
    }
  } catch (err) {
    throw toCliError(err, 'list the control-plane nodes');
  }
  if (byName.size === 0) {
    // No mirror pods and no control-plane Nodes: the apiservers' identity leases (1.26+) still
    // name every apiserver's host, so several control planes are not mistaken for one.
    try {
      const leases = await api.list<any>('/apis/coordination.k8s.io/v1/namespaces/kube-system/leases', {
        query: { labelSelector: `${APISERVER_IDENTITY_LABEL}=kube-apiserver` },
      });
      for (const l of leases?.items ?? []) {
        const host = l?.metadata?.labels?.['kubernetes.io/hostname'];
        if (typeof host === 'string' && host) entry(host);
      }
    } catch (err) {
      // No Lease API (404, older apiservers): nothing to find. Anything else (403, a timeout) is
      // evidence that was there but could not be read: say so instead of finding nothing.
      if (!(err instanceof ApiError && err.status === 404)) {
        const e = toCliError(err, 'list the apiserver identity leases in kube-system');
        opts.warn?.(e.hint ? `${e.message} (${e.hint})` : e.message);
      }
    }
  }
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}

const APISERVER_IDENTITY_LABEL = 'apiserver.kubernetes.io/identity';

/**
 * Which control plane this is: the --node-name given, else the one whose mirror pod runs exactly
 * this manifest's command line, else the host name (kubeadm's default node name).
 */
export function identifyThisNode(
  controlPlanes: readonly ControlPlane[],
  manifestArgs: readonly string[],
  given?: string,
  host: string = hostname(),
): { name: string; how: string } {
  if (given) return { name: given, how: '--node-name' };
  const same = controlPlanes.filter((c) => c.command && sameArgs(c.command, manifestArgs));
  if (same.length === 1) return { name: same[0]!.name, how: 'its mirror pod runs this manifest' };
  const h = host.toLowerCase();
  const byHost = controlPlanes.find((c) => c.name === h) ?? controlPlanes.find((c) => c.name === h.split('.')[0]);
  if (byHost) return { name: byHost.name, how: 'the host name' };
  if (controlPlanes.length === 1 && controlPlanes[0]!.hasMirrorPod) {
    return { name: controlPlanes[0]!.name, how: 'the only control plane' };
  }
  return { name: h, how: 'the host name (no control plane matched; pass --node-name if it differs)' };
}

function sameArgs(a: readonly string[], b: readonly string[]): boolean {
  // The kubelet runs `kube-apiserver` by any path; compare flags only.
  const flags = (x: readonly string[]) => x.filter((s) => s.startsWith('--'));
  const fa = flags(a);
  const fb = flags(b);
  return fa.length > 0 && fa.length === fb.length && fa.every((s, i) => s === fb[i]);
}

/** Every control plane's stage record (nodes without one have `record` undefined). */
export async function readStages(api: Api, controlPlanes: readonly ControlPlane[]): Promise<NodeStage[]> {
  let cm: Record<string, string> | undefined;
  const fromConfigMap = async () => {
    if (cm) return cm;
    try {
      const obj = await api.get<any>(`/api/v1/namespaces/kube-system/configmaps/${STATE_CONFIGMAP}`);
      cm = obj?.data ?? {};
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) cm = {};
      else throw toCliError(err, `read kube-system/${STATE_CONFIGMAP}`);
    }
    return cm!;
  };
  const out: NodeStage[] = [];
  for (const cp of controlPlanes) {
    let raw: string | undefined;
    if (cp.hasNode) {
      try {
        const n = await api.get<any>(`/api/v1/nodes/${encodeURIComponent(cp.name)}`);
        raw = n?.metadata?.annotations?.[STAGE_ANNOTATION];
      } catch (err) {
        throw toCliError(err, `read node ${cp.name}`);
      }
    } else {
      raw = (await fromConfigMap())[cp.name];
    }
    const record = parseStage(raw);
    out.push({
      node: cp.name,
      where: cp.hasNode ? 'node-annotation' : 'state-configmap',
      ...(record ? { record } : {}),
      ...(raw && !record ? { malformed: raw } : {}),
    });
  }
  return out;
}

/** Records this node's stage (annotation on its Node, else its entry in the state ConfigMap). */
export async function recordStage(api: Api, node: string, hasNode: boolean, r: StageRecord): Promise<NodeStage['where']> {
  const value = formatStage(r);
  if (hasNode) {
    try {
      await api.patch(`/api/v1/nodes/${encodeURIComponent(node)}`, { metadata: { annotations: { [STAGE_ANNOTATION]: value } } });
      return 'node-annotation';
    } catch (err) {
      throw toCliError(err, `annotate node ${node} with ${STAGE_ANNOTATION}`);
    }
  }
  const path = `/api/v1/namespaces/kube-system/configmaps/${STATE_CONFIGMAP}`;
  try {
    await api.patch(path, { data: { [node]: value } });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw toCliError(err, `update kube-system/${STATE_CONFIGMAP}`);
    try {
      await api.post('/api/v1/namespaces/kube-system/configmaps', {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: STATE_CONFIGMAP, namespace: 'kube-system', labels: { 'app.kubernetes.io/managed-by': 'k8s-encrypt' } },
        data: { [node]: value },
      });
    } catch (err2) {
      throw toCliError(err2, `create kube-system/${STATE_CONFIGMAP}`);
    }
  }
  return 'state-configmap';
}

export interface Convergence {
  agreed: boolean;
  /** Nodes not at the wanted stage+hash, each with what it reports. */
  lagging: { node: string; reports: string }[];
}

/** Whether every control plane reports `want`. Pure. */
export function convergence(stages: readonly NodeStage[], want: StageRecord): Convergence {
  const lagging = stages
    .filter((s) => !s.record || s.record.stage !== want.stage || s.record.sha256 !== want.sha256)
    .map((s) => ({
      node: s.node,
      reports: s.record ? `${s.record.stage} (sha256 ${s.record.sha256.slice(0, 12)}…)` : s.malformed ? `unreadable "${s.malformed}"` : 'nothing yet',
    }));
  return { agreed: lagging.length === 0, lagging };
}

/** The refusal when control planes disagree (shared by init, rotate-key and disable). */
export function notConvergedError(want: StageRecord, c: Convergence, nextCommand: string): CliError {
  const list = c.lagging.map((l) => `${l.node}: ${l.reports}`).join('; ');
  return new CliError(
    `not every control plane runs stage "${want.stage}" with config sha256 ${want.sha256.slice(0, 12)}… yet (${list})`,
    {
      exitCode: ExitCode.Refused,
      hint: `run ${nextCommand} on each of them, then re-run this command (or pass --force if you are sure)`,
      details: { want: formatStage(want), lagging: c.lagging },
    },
  );
}

/**
 * Every control plane's stage, also where discovery falls short of the number the operator said
 * there are (`expected`, e.g. no mirror pods, Nodes or identity leases): nodes that recorded
 * themselves in the state ConfigMap and this node count too, and any still unaccounted for are
 * reported as lagging, so a stage never advances on fewer control planes than there are.
 * `warn` as discoverControlPlanes's.
 */
export async function stagesOfAll(
  api: Api,
  self: { name: string; hasNode: boolean },
  expected = 1,
  warn?: (msg: string) => void,
): Promise<NodeStage[]> {
  const cps = await discoverControlPlanes(api, warn ? { warn } : {});
  if (cps.length < expected || !cps.some((c) => c.name === self.name)) {
    const known = new Set(cps.map((c) => c.name));
    const extra = [self.name, ...(await stateConfigMapNodes(api))].filter((n) => !known.has(n) && (known.add(n), true));
    cps.push(...extra.map((name) => ({ name, hasNode: name === self.name ? self.hasNode : false, hasMirrorPod: false })));
  }
  const stages = await readStages(api, cps);
  for (let i = stages.length; i < expected; i++) {
    stages.push({ node: `(control plane ${i + 1} of ${expected}, not reporting yet)`, where: 'state-configmap' });
  }
  return stages;
}

/** Node names with a record in kube-system/k8s-encrypt-state. */
async function stateConfigMapNodes(api: Pick<ApiClient, 'get'>): Promise<string[]> {
  try {
    const cm = await api.get<any>(`/api/v1/namespaces/kube-system/configmaps/${STATE_CONFIGMAP}`);
    return Object.keys(cm?.data ?? {}).sort();
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return [];
    throw toCliError(err, `read kube-system/${STATE_CONFIGMAP}`);
  }
}
