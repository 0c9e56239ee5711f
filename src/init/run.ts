import { convergence, stagesOfAll } from '../cluster/nodes';
import type { Journal, JsonObject } from '../state/journal';
import type { StepJournal, TransitionDeps } from '../transition/engine';
import { runTransition } from '../transition/executor';
import { installConfig } from '../transition/install';
import { planToRun, recordedStages } from '../transition/recorded';
import { outputOf, type StepOutput } from '../transition/steps';
import { shownInstall, type InitMode, type InitPlan } from './plan';

/**
 * Runs an InitPlan on the transition engine: the first control plane runs the enable transition
 * (add-reader with several control planes, promote, rewrite + verify), a further one installs the
 * first node's file at its stage. Every step is journaled by the engine; the result is read back
 * from the journal, so a resumed run reports what the interrupted one did too.
 */

/** What the journal keeps as the plan's inputs. Never key material. */
export interface InitJournalInputs extends JsonObject {
  mode: InitMode;
  provider: string;
  keyName: string;
  expectedPrefix: string;
  resources: string[];
  configPath: string;
  manifestPath: string;
  timeoutMs: number;
  kubeadmConfig: boolean;
  /** sha256 of the config this run installs first (a resumed run recognises its own file by it). */
  configSha256: string;
  /** staged: sha256 of the key-first (promote) config. */
  writeConfigSha256: string | null;
  nodeName: string;
  hasNode: boolean;
  /** How many control planes must agree before a stage advances (discovered, or --control-planes). */
  controlPlanes: number;
  keySource: 'generated' | 'file' | 'stdin' | 'kms' | 'from-config';
  keyFile: string | null;
  fromConfig: string | null;
  kms: { name: string; endpoint: string; apiVersion: 'v1' | 'v2'; timeout: string | null } | null;
}

export interface InitResult {
  /** done: encrypted and rewritten; waiting: paused until the other control planes catch up. */
  state: 'done' | 'waiting';
  mode: InitMode;
  provider: string;
  keyName: string;
  config: string;
  configSha256: string;
  manifestBackup: string | null;
  evidence: { evidence: string; detail: string } | null;
  proof: { method: string; weaker: boolean; observed: string; detail: string } | null;
  kubeadmConfig: { status: string; reason?: string; apiVersion?: string } | null;
  rewrite: StepOutput<'rewrite'> | null;
  /** What etcd showed after the rewrite (every object under the new key). */
  verified: string | null;
  multiNode: {
    controlPlanes: number;
    stage: string | null;
    nodes: { node: string; reports: string }[];
    next: string | null;
  };
}

/** A from-config install as the one stage the engine records and runs. */
const fromConfigStages = (plan: InitPlan) => [{ name: plan.config.stage, config: plan.config, manifest: plan.install, ...(plan.kubeadmChange ? { kubeadm: plan.kubeadmChange } : {}) }];

/**
 * What a resumed init will execute, for its --dry-run: the plan with the changes its journal
 * recorded (each checked against the manifest as it is, as the run checks it; `say` gets the
 * "would re-plan: ..." lines), not the changes planned again from files it already changed.
 */
export function recordedInitPlan(j: Pick<StepJournal, 'done' | 'output'>, plan: InitPlan, manifest: { path: string; text: string; say: (msg: string) => void }): InitPlan {
  const stages = plan.transition ? recordedStages(j, plan.transition.stages, manifest) : recordedStages(j, fromConfigStages(plan), manifest);
  const install = stages.find((st) => st.manifest)?.manifest ?? plan.install;
  const shown = shownInstall(install, { manifestText: manifest.text, notes: plan.manifest.notes, restartShown: plan.mode === 'from-config' || plan.replacesConfig, kubeadmConfig: plan.kubeadmConfig });
  return {
    ...plan,
    ...(plan.transition ? { transition: { ...plan.transition, stages: stages as typeof plan.transition.stages } } : {}),
    install,
    manifest: shown.manifest,
    restart: shown.restart,
    kubeadmSkipped: shown.kubeadmSkipped,
    kubeadmChange: stages.find((st) => st.kubeadm)?.kubeadm,
  };
}

export async function runInit(deps: TransitionDeps, plan: InitPlan, journal: Journal<InitJournalInputs>): Promise<InitResult> {
  const j = journal;
  let state: InitResult['state'] = 'done';
  let stage: string | null;
  let sha: string;
  let nodes: InitResult['multiNode']['nodes'];
  let next: string | null;
  if (plan.mode === 'from-config') {
    stage = plan.config.stage;
    sha = plan.config.sha256;
    // As a transition's stages: the recorded change runs on a resumed run, not one planned again.
    const [st] = await planToRun(j, deps.out, fromConfigStages(plan));
    await installConfig(deps, j, { stage, config: plan.config, ...(st!.manifest ? { manifest: st!.manifest } : {}), ...(st!.kubeadm ? { kubeadm: st!.kubeadm } : {}), enable: true });
    const all = await stagesOfAll(deps.api, { name: deps.nodeName, hasNode: deps.hasNode }, journal.inputs.controlPlanes, (m) => deps.out.warn(m));
    nodes = convergence(all, { stage, sha256: sha }).lagging;
    next =
      stage === 'add-reader'
        ? 'once every control plane reports "add-reader", re-run "k8s-encrypt init" on the first node'
        : 'once every control plane reports "promote", re-run "k8s-encrypt init" on the first node: it rewrites every Secret';
    await journal.setStatus('done');
  } else {
    const r = await runTransition(deps, plan.transition!, j);
    if (r.state === 'waiting') state = 'waiting';
    stage = plan.controlPlanes > 1 ? r.stage : null;
    sha = r.sha256 ?? plan.config.sha256;
    nodes = r.lagging;
    next = r.next;
  }

  // What the installs did, from the journal (this run's or an interrupted one's).
  const installs = plan.transition ? plan.transition.stages.filter((s) => s.config).map((s) => s.name) : [plan.config.stage];
  const last = [...installs].reverse().find((s) => journal.done(`${s}:wait`));
  const waited = last ? outputOf(journal, 'wait', `${last}:wait`) : undefined;
  const proved = last ? outputOf(journal, 'prove', `${last}:prove`) : undefined;
  const kubeadm = outputOf(journal, 'kubeadmConfig', `${installs[0]}:kubeadm-config`);
  const rewrite = outputOf(journal, 'rewrite', 'rewrite:run');
  return {
    state,
    mode: plan.mode,
    provider: plan.provider,
    keyName: plan.keyName,
    config: plan.configPath,
    configSha256: sha,
    manifestBackup: outputOf(journal, 'apply', `${installs[0]}:apply`)?.backup ?? null,
    evidence: waited ?? null,
    proof: proved ?? null,
    kubeadmConfig: kubeadm ?? null,
    rewrite: rewrite ?? null,
    verified: outputOf(journal, 'verify', 'rewrite:verify')?.detail ?? null,
    multiNode: { controlPlanes: plan.controlPlanes, stage, nodes, next },
  };
}
