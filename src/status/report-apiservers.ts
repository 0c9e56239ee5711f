/**
 * The Apiservers section of the status report: whether each control plane runs the current
 * config, from the strongest evidence it shows. Pure, like the rest of the report.
 */
import type { ApiserverFacts, ApiserverStatus, ApiserversSection, ConfigFacts, ControlPlaneFacts, Finding, ManifestFacts, RunsCurrent, StatusInput, Unavailable } from './types';
import { short, unavailable } from './types';

const iso = (sec: number) => new Date(sec * 1000).toISOString();

/**
 * Whether one control plane runs this node's current config, and on what evidence: the 1.34+
 * config-info metric, an automatic reload after the file changed, a process started after it
 * changed (this node only: only its file's mtime is known here), the pod annotation or the stage
 * record naming the same sha256 (other nodes).
 */
export function judgeApiserver(
  cp: ControlPlaneFacts,
  ctx: { config?: ConfigFacts; manifest?: ManifestFacts },
): { runs: RunsCurrent; evidence: string[]; sha: string | null } {
  const evidence: string[] = [];
  const local = ctx.config?.sha256;
  const metrics = cp.metrics.ok ? cp.metrics.data : undefined;
  const flagWanted = ctx.manifest?.configFlag !== undefined;

  if (!flagWanted && ctx.manifest) {
    if (cp.flagInPod === false) return { runs: 'yes', evidence: ['runs without --encryption-provider-config, as the manifest says'], sha: null };
    if (cp.flagInPod === true && cp.thisNode) {
      return { runs: 'no', evidence: ['its mirror pod still runs with --encryption-provider-config, which the manifest no longer has'], sha: null };
    }
  }
  if (cp.flagInPod === false && flagWanted) {
    return {
      runs: 'no',
      evidence: [`its mirror pod runs kube-apiserver without --encryption-provider-config`],
      sha: null,
    };
  }
  const infoSha = metrics?.configInfoHash?.replace(/^sha256:/, '');
  if (infoSha) {
    const same = local !== undefined && infoSha === local;
    evidence.push(`config-info metric: sha256 ${short(infoSha)}${local ? (same ? ' (this config)' : ` (this config: ${short(local)})`) : ''}`);
    return { runs: local === undefined ? 'unknown' : same ? 'yes' : 'no', evidence, sha: infoSha };
  }
  if (cp.thisNode && ctx.config) {
    const changed = Date.parse(ctx.config.modifiedAt) / 1000;
    const changedSec = Math.floor(changed);
    const reload = ctx.manifest?.reloadFlag === 'true' || ctx.manifest?.reloadFlag === '';
    if (reload && metrics) {
      const ok = metrics.lastReloadSuccess;
      const bad = metrics.lastReloadFailure;
      if (bad !== undefined && bad >= changed && (ok === undefined || bad > ok)) {
        return { runs: 'no', evidence: [`automatic reload failed at ${iso(bad)}, after the config changed at ${iso(changed)}`], sha: null };
      }
      if (ok !== undefined && ok >= changed) {
        return { runs: 'yes', evidence: [`automatic reload succeeded at ${iso(ok)}, after the config changed at ${iso(changed)}`], sha: local ?? null };
      }
    }
    const starts: { at: number; what: string }[] = [];
    if (metrics?.processStart !== undefined) starts.push({ at: metrics.processStart, what: 'process_start_time_seconds' });
    if (cp.startedAt) starts.push({ at: Date.parse(cp.startedAt) / 1000, what: 'mirror pod container startedAt' });
    const start = starts[0];
    if (start) {
      if (start.at >= changedSec) {
        const annotated = cp.podConfigSha256 && local && cp.podConfigSha256 !== local ? `; but its pod annotation names sha256 ${short(cp.podConfigSha256)}` : '';
        evidence.push(`started ${iso(start.at)} (${start.what}), after the config changed at ${iso(changed)}${annotated}`);
        return { runs: annotated ? 'unknown' : 'yes', evidence, sha: annotated ? null : local ?? null };
      }
      if (reload) {
        evidence.push(`started ${iso(start.at)}, before the config changed at ${iso(changed)}; no automatic reload since`);
        return { runs: 'unknown', evidence, sha: null };
      }
      evidence.push(`started ${iso(start.at)} (${start.what}), before the config changed at ${iso(changed)}: a restart is due`);
      return { runs: 'no', evidence, sha: null };
    }
  }
  const claimed = cp.podConfigSha256 ?? cp.stage?.sha256;
  if (claimed) {
    const source = cp.podConfigSha256 ? 'pod annotation k8s-encrypt.io/config-sha256' : `stage record "${cp.stage!.stage}"`;
    evidence.push(`${source}: sha256 ${short(claimed)}`);
    return { runs: local === undefined ? 'unknown' : claimed === local ? 'yes' : 'no', evidence, sha: claimed };
  }
  if (!cp.metrics.ok) evidence.push(`metrics not readable: ${cp.metrics.reason}`);
  evidence.push('no evidence of which config it runs');
  return { runs: 'unknown', evidence, sha: null };
}

export function buildApiservers(input: StatusInput, findings: Finding[]): ApiserversSection | Unavailable {
  const add = (id: string, level: Finding['level'], message: string) =>
    findings.push({ id: `apiservers.${id}`, level, section: 'apiservers', message });
  if (!input.apiservers.ok) {
    if (!input.apiservers.skipped) add('unavailable', 'warn', `cannot see the control planes through the apiserver: ${input.apiservers.reason}`);
    return unavailable(input.apiservers);
  }
  const a: ApiserverFacts = input.apiservers.data;
  for (const w of a.discoveryWarnings ?? []) add('discovery', 'warn', `control planes may be missing: ${w}`);
  const ctx = {
    config: input.config.ok ? input.config.data : undefined,
    manifest: input.manifest.ok ? input.manifest.data : undefined,
  };
  const nodes: ApiserverStatus[] = a.controlPlanes.map((cp) => {
    const j = judgeApiserver(cp, ctx);
    if (cp.podUnreadable) {
      j.evidence.push(`mirror pod not readable: ${cp.podUnreadable}`);
      add('pod-unreadable', 'warn', `cannot read ${cp.name}'s mirror pod: ${cp.podUnreadable}`);
    }
    return {
      name: cp.name,
      thisNode: cp.thisNode,
      runsCurrentConfig: j.runs,
      evidence: j.evidence,
      configSha256: j.sha,
      stage: cp.stage ? cp.stage.stage : cp.stageMalformed ? `unreadable: ${cp.stageMalformed}` : null,
      flagSet: cp.flagInPod ?? null,
      ready: cp.ready ?? null,
      startedAt: cp.startedAt ?? null,
      metrics: cp.metrics.ok ? { available: true, endpoint: cp.endpoint ?? null } : unavailable(cp.metrics),
    };
  });

  const disagreement: string[] = [];
  const bySha = new Map<string, string[]>();
  for (const n of nodes) if (n.configSha256) bySha.set(n.configSha256, [...(bySha.get(n.configSha256) ?? []), n.name]);
  if (bySha.size > 1) {
    disagreement.push(`configs differ: ${[...bySha].map(([sha, names]) => `${names.join(', ')} on sha256 ${short(sha)}`).join('; ')}`);
  }
  const withFlag = nodes.filter((n) => n.flagSet === true).map((n) => n.name);
  const withoutFlag = nodes.filter((n) => n.flagSet === false).map((n) => n.name);
  if (withFlag.length && withoutFlag.length) {
    const verb = (l: string[]) => (l.length === 1 ? 'runs' : 'run');
    disagreement.push(`${withFlag.join(', ')} ${verb(withFlag)} with --encryption-provider-config, ${withoutFlag.join(', ')} without`);
  }
  const stages = new Map<string, string[]>();
  for (const n of nodes) if (n.stage) stages.set(n.stage, [...(stages.get(n.stage) ?? []), n.name]);
  const unstaged = nodes.filter((n) => !n.stage).map((n) => n.name);
  if (stages.size > 1 || (stages.size === 1 && unstaged.length)) {
    disagreement.push(
      `transition stages differ: ${[...stages].map(([s, names]) => `${names.join(', ')} at "${s}"`).join('; ')}${unstaged.length ? `; ${unstaged.join(', ')} without a stage record` : ''}`,
    );
  }
  for (const d of disagreement) add('disagree', 'fail', `control planes disagree: ${d}`);
  const me = nodes.find((n) => n.thisNode);
  if (me?.runsCurrentConfig === 'no') add('not-current', 'fail', `${me.name}'s kube-apiserver does not run ${ctx.config?.path ?? 'the current config'}: ${me.evidence[0]}`);
  if (me?.runsCurrentConfig === 'unknown' && ctx.manifest?.configFlag !== undefined) {
    add('unproven', 'warn', `cannot tell whether ${me.name}'s kube-apiserver runs the current config (${me.evidence.join('; ')})`);
  }
  if (!me && ctx.manifest) add('this-node', 'warn', `this node (${a.thisNode.name}) is not among the control planes the apiserver knows`);
  return { available: true, thisNode: a.thisNode, nodes, agree: disagreement.length === 0, disagreement };
}

