import { convergence, notConvergedError, stagesOfAll, type Convergence } from '../cluster/nodes';
import { parseEncryptionConfig, sha256Hex } from '../config/parse';
import type { EncryptionConfiguration } from '../config/schema';
import { CliError, ExitCode } from '../ui/errors';
import { checkAbort, type StageOutcome, type StepJournal, type TransitionDeps, type TransitionResult } from './engine';
import { assertNothingUnder, scanLabels, type LabelCounts } from './etcd-check';
import { installConfig } from './install';
import { stepsOf, type PlannedStage, type StageName, type TransitionPlan } from './plan';
import { planToRun } from './recorded';
import { once } from './steps';
import { unpatchStage } from './unpatch';

/**
 * The executor: applies a TransitionPlan stage by stage on this control plane. Every step is
 * journaled before it counts as done; the config write is the commit point, with a journal entry
 * before (`begin`: the backup) and after (`write`), so kill -9 anywhere leaves either the old or
 * the new file and a re-run finds out which from the file's sha256. The plan carries each stage's
 * exact file texts and manifest change; install.ts writes them only while their inputs hash as
 * planned.
 */


/** A stage advances only when every control plane reports it. */
async function gate(deps: TransitionDeps, j: StepJournal, step: string, stage: string, sha256: string, expected: number): Promise<Convergence | undefined> {
  if (j.done(step)) return undefined;
  // Never advance on fewer control planes than the transition was planned for.
  const c = convergence(await stagesOfAll(deps.api, { name: deps.nodeName, hasNode: deps.hasNode }, expected, (m) => deps.out.warn(m)), { stage, sha256 });
  if (c.agreed || deps.force) {
    if (!c.agreed) deps.out.warn(`--force: advancing although ${c.lagging.map((l) => `${l.node} reports ${l.reports}`).join(', ')}`);
    await once(j, 'gate', step, async () => ({ forced: !c.agreed }));
    if (j.status === 'waiting') await j.setStatus('running');
    return undefined;
  }
  if (j.status === 'waiting' && j.message === step) throw notConvergedError({ stage, sha256 }, c, deps.followCommand);
  await j.setStatus('waiting', step);
  return c;
}


export interface RunOptions {
  /** Run only this stage (the ones before it must be done); stop after it, before its gate. */
  only?: StageName;
}

export async function runTransition(deps: TransitionDeps, planned: TransitionPlan, j: StepJournal, o: RunOptions = {}): Promise<TransitionResult> {
  // A resumed run executes the changes its journal recorded, not a plan made from what it changed.
  const plan: TransitionPlan = { ...planned, stages: await planToRun(j, deps.out, planned.stages) };
  const result: TransitionResult = { state: 'done', stage: null, sha256: null, stages: [], lagging: [], next: null };
  let current: { cfg: EncryptionConfiguration; sha256: string } = { cfg: parseEncryptionConfig(plan.base.text, deps.configPath), sha256: plan.base.sha256 };
  if (o.only) {
    const idx = plan.stages.findIndex((st) => st.name === o.only);
    if (idx < 0) throw new CliError(`this ${plan.kind} has no stage "${o.only}"`, { exitCode: ExitCode.Usage, hint: `its stages: ${plan.stages.map((x) => x.name).join(', ')}` });
    // Gates are checked below, where --force applies to them.
    const missing = plan.stages.slice(0, idx).find((st) => stepsOf(st, plan.controlPlanes).some((x) => !x.endsWith(':gate') && !j.done(x)));
    if (missing) {
      throw new CliError(`stage "${o.only}" comes after "${missing.name}", which is not done yet`, {
        exitCode: ExitCode.Refused,
        hint: `run "--stage ${missing.name}" first (or run without --stage to do every stage in turn)`,
      });
    }
  }

  for (const stage of plan.stages) {
    const steps = stepsOf(stage, plan.controlPlanes);
    if (o.only && stage.name !== o.only) {
      if (stage.config) current = { cfg: parseEncryptionConfig(stage.config.text, deps.configPath), sha256: stage.config.sha256 };
      if (steps.every((x) => x.endsWith(':gate') || j.done(x))) {
        result.stage = stage.name;
        result.sha256 = stage.config?.sha256 ?? result.sha256;
      }
      continue;
    }
    checkAbort(deps);
    if (o.only) {
      const prev = plan.stages[plan.stages.indexOf(stage) - 1];
      const prevGate = prev && stepsOf(prev, plan.controlPlanes).find((x) => x.endsWith(':gate'));
      if (prev && prevGate) {
        const c = await gate(deps, j, prevGate, prev.name, prev.unpatch ? sha256Hex('') : current.sha256, plan.controlPlanes);
        if (c) return { ...result, state: 'waiting', lagging: c.lagging, next: `run ${deps.followCommand} (stage ${prev.name}) on ${c.lagging.map((l) => l.node).join(', ')}, then re-run this command here` };
      }
    }
    const outcome = await runStage(deps, plan, j, stage, current);
    result.stages.push(outcome);
    if (stage.config) current = { cfg: parseEncryptionConfig(stage.config.text, deps.configPath), sha256: stage.config.sha256 };
    result.stage = stage.name;
    result.sha256 = stage.unpatch ? sha256Hex('') : current.sha256;

    if (o.only) {
      result.state = 'stopped';
      result.next = plan.controlPlanes > 1 && stage.name !== 'rewrite' ? `run ${deps.followCommand} (stage ${stage.name}) on every other control plane` : null;
      return result;
    }
    const gateStep = steps.find((x) => x.endsWith(':gate'));
    if (gateStep) {
      const c = await gate(deps, j, gateStep, stage.name, result.sha256, plan.controlPlanes);
      if (c) {
        result.state = 'waiting';
        result.lagging = c.lagging;
        result.next = stage.unpatch
          ? `run "k8s-encrypt ${plan.kind} --stage prune" on each of them (${c.lagging.map((l) => l.node).join(', ')}), then re-run this command here`
          : `copy ${deps.configPath} to ${c.lagging.map((l) => l.node).join(', ')} and run ${deps.followCommand} there, then re-run this command here`;
        return result;
      }
    }
  }
  await j.setStatus('done');
  return result;
}

async function runStage(
  deps: TransitionDeps,
  plan: TransitionPlan,
  j: StepJournal,
  stage: PlannedStage,
  current: { cfg: EncryptionConfiguration; sha256: string },
): Promise<StageOutcome> {
  const s = stage.name;
  if (s === 'rewrite') return rewriteStage(deps, plan, j, current.cfg);
  if ((stage.removes.length || stage.unpatch) && !j.done(`${s}:check`)) {
    deps.out.step(`checking etcd: nothing may remain under ${stage.removes.join(', ')} before stage ${s}`);
    const scan = await scanLabels(deps, current.cfg, plan.resources);
    const target = stage.config ? parseEncryptionConfig(stage.config.text, deps.configPath) : ({ ...current.cfg, resources: [] } as EncryptionConfiguration);
    await once(j, 'check', `${s}:check`, async () => assertNothingUnder(scan, target, stage.unpatch ? 'turn encryption off' : `remove ${stage.removes.join(', ')}`, deps.force, deps.out));
  }
  if (stage.unpatch) return unpatchStage(deps, j, current.cfg, stage.manifest, stage.kubeadm);
  return installConfig(deps, j, { stage: s, config: stage.config!, ...(stage.manifest ? { manifest: stage.manifest } : {}), ...(stage.kubeadm ? { kubeadm: stage.kubeadm } : {}), ...(stage.patch ? { enable: true } : {}) });
}

async function rewriteStage(deps: TransitionDeps, plan: TransitionPlan, j: StepJournal, cfg: EncryptionConfiguration): Promise<StageOutcome> {
  const run = await once(j, 'rewrite', 'rewrite:run', async () => {
    deps.out.step(`rewriting every object of ${plan.resources.join(', ')} with the new writer`);
    const summary = await deps.rewrite(plan.resources);
    if (summary.failed > 0) {
      throw new CliError(`${summary.failed} object(s) could not be rewritten (${summary.rewritten} were)`, {
        exitCode: ExitCode.Verification,
        hint: 're-run the command: it continues where it stopped',
        details: { failures: summary.failures.slice(0, 20) },
      });
    }
    deps.out.success(`rewrote ${summary.rewritten} object(s) (${summary.unchanged} already current, ${summary.deleted} deleted meanwhile)`);
    const { mode, settled, peak, max, cuts } = summary.concurrency;
    return { rewritten: summary.rewritten, unchanged: summary.unchanged, deleted: summary.deleted, failed: summary.failed, seconds: summary.seconds, objectsPerSecond: summary.objectsPerSecond, concurrency: { mode, settled, peak, max, cuts } };
  });
  const verify = await once(j, 'verify', 'rewrite:verify', async () => {
    let scan: LabelCounts[];
    try {
      scan = await scanLabels(deps, cfg, plan.resources);
    } catch (err) {
      // Without etcd the rewrite's own counts are the evidence; a later stage that removes a key
      // still refuses without a scan, so nothing can become unreadable on this path.
      if (!(err instanceof CliError) || err.exitCode !== ExitCode.Cluster) throw err;
      const line = `not verified from etcd (${err.message}); run "k8s-encrypt status" where etcd is reachable`;
      deps.out.warn(line);
      return { detail: line, weaker: true };
    }
    const stale = scan.filter((r) => r.stale > 0);
    if (stale.length) {
      const list = stale.map((r) => `${r.resource}: ${r.stale} not under ${r.writeLabel} (${Object.entries(r.examples).map(([l, ex]) => `${l}: ${ex.join(', ')}`).join('; ')})`);
      await j.forget(['rewrite:run']);
      throw new CliError(`after the rewrite, etcd still holds objects under other labels: ${list.join('; ')}`, {
        exitCode: ExitCode.Verification,
        hint: 'an apiserver may still write with an older config ("k8s-encrypt status"); re-run the command to rewrite again',
        details: { stale: scan },
      });
    }
    const total = scan.reduce((n, r) => n + Object.values(r.counts).reduce((a, b) => a + b, 0), 0);
    const line = `etcd: all ${total} object(s) of ${plan.resources.join(', ')} are under ${plan.target.label}`;
    deps.out.success(line);
    return { detail: line };
  });
  return { stage: 'rewrite', rewrite: run, verified: verify.detail };
}

