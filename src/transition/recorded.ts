import { sha256Hex } from '../config/parse';
import type { KubeadmChange } from '../manifest/kubeadm-config';
import type { StepJournal, TransitionReporter } from './engine';
import { checkPlanned, replannedLine, type ManifestChange } from './manifest-change';
import { outputOf, record, type StepOutput } from './steps';

/**
 * The plan is what runs, also after an interruption: the changes a run planned (each stage's
 * manifest change and kubeadm-config change, with the sha256 of what they were planned from) are
 * journaled before its first step, and a resumed run executes those, not a plan made again from
 * files it has already changed. The executor still applies each one only while its input hashes as
 * recorded (or skips it when the output hash shows it applied), else plans it again and says so.
 */

export const PLAN_STEP = 'plan';

/** What a stage must have for its changes to be recorded; the configs hold keys and are not. */
interface StageChanges {
  name: string;
  config?: { sha256: string };
  manifest?: ManifestChange;
  kubeadm?: KubeadmChange;
}

function changesOf(stages: readonly StageChanges[]): StepOutput<'plan'> {
  return {
    stages: stages.map((s) => ({ name: s.name, configSha256: s.config?.sha256 ?? null, ...(s.manifest ? { manifest: s.manifest } : {}), ...(s.kubeadm ? { kubeadm: s.kubeadm } : {}) })),
  };
}

/** The journal's recorded changes, when it has them for these stage configs. */
function recordedFor(j: Pick<StepJournal, 'done' | 'output'>, fresh: StepOutput<'plan'>): StepOutput<'plan'> | undefined {
  const recorded = j.done(PLAN_STEP) ? outputOf(j, 'plan', PLAN_STEP) : undefined;
  const same =
    recorded !== undefined &&
    recorded.stages.length === fresh.stages.length &&
    recorded.stages.every((r, i) => r.name === fresh.stages[i]!.name && r.configSha256 === fresh.stages[i]!.configSha256);
  return same ? recorded : undefined;
}

const withChanges = <S extends StageChanges>(stages: readonly S[], recorded: StepOutput<'plan'>): S[] =>
  stages.map((st, i) => ({ ...st, manifest: recorded.stages[i]!.manifest, kubeadm: recorded.stages[i]!.kubeadm }));

/**
 * What a resumed run will execute, read-only (for its --dry-run): the recorded changes, else
 * `stages`. Given the manifest as it is, each recorded manifest change still to apply is checked
 * as the executor checks it: one whose input the file (as the stages before leave it) no longer
 * is, nor already its output, is shown as `stages` plans it from the file, and `say` is told
 * "would re-plan: " and what the run would say.
 */
export function recordedStages<S extends StageChanges>(j: Pick<StepJournal, 'done' | 'output'>, stages: readonly S[], manifest?: { path: string; text: string; say: (msg: string) => void }): S[] {
  const recorded = recordedFor(j, changesOf(stages));
  if (!recorded) return [...stages];
  const run = withChanges(stages, recorded);
  if (!manifest) return run;
  let text = manifest.text;
  return run.map((st, i) => {
    const planned = st.manifest;
    // A manifest step the journal has done is not checked again.
    if (!planned || j.done(`${st.name}:apply`) || j.done(`${st.name}:unpatch`)) return st;
    const { change, replanned } = checkPlanned(planned, text, () => stages[i]!.manifest ?? planned);
    if (replanned) manifest.say(`would re-plan: ${replannedLine(manifest.path, planned, sha256Hex(text))}`);
    if (change.changed) text = change.newText;
    return replanned ? { ...st, manifest: change } : st;
  });
}

/**
 * The stages to execute: on a fresh run `stages` as planned, recorded in the journal first; on a
 * resumed one the journal's changes in place of the new plan's. A recorded plan whose stage
 * configs differ from these (they were planned anew before any was written) is recorded again.
 */
export async function planToRun<S extends StageChanges>(j: StepJournal, out: Pick<TransitionReporter, 'info'>, stages: readonly S[]): Promise<S[]> {
  const fresh = changesOf(stages);
  const recorded = recordedFor(j, fresh);
  if (!recorded) {
    if (j.done(PLAN_STEP)) out.info("the stage configs were planned anew (none of the journal's was written): their changes are recorded again");
    await record(j, 'plan', PLAN_STEP, fresh);
    return [...stages];
  }
  out.info('resumed from the plan recorded in the journal: each change is applied only while what it changes still has the recorded sha256');
  return withChanges(stages, recorded);
}
