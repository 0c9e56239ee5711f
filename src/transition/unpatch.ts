import { stat, unlink } from 'node:fs/promises';
import { sha256Hex } from '../config/parse';
import type { EncryptionConfiguration } from '../config/schema';
import { recordStage } from '../cluster/nodes';
import { mirrorPodHash, waitForApiserver } from '../cluster/wait';
import { writeManifestPlan } from '../manifest/apply';
import { CONFIG_FLAG } from '../manifest/patch';
import { backupConfig } from '../state/backups';
import { fileExists, readText } from '../state/atomic';
import type { KubeadmChange } from '../manifest/kubeadm-config';
import { CliError, ExitCode } from '../ui/errors';
import { progressOf, type StageOutcome, type StepJournal, type TransitionDeps } from './engine';
import { checkPlanned, planUnpatchChange, replannedLine, unpatchKubeadmOptions, type ManifestChange } from './manifest-change';
import { kubeadmConfigStep } from './install';
import { restoreEncryptedManifest } from './rollback';
import { once } from './steps';

/**
 * disable's last stage on this node: the planned unpatch (flag and mounts out) while the manifest
 * hashes as planned, wait, kubeadm-config, then the file to a 0600 backup.
 */
export async function unpatchStage(deps: TransitionDeps, j: StepJournal, cfg: EncryptionConfiguration | undefined, planned?: ManifestChange, kubeadm?: KubeadmChange): Promise<StageOutcome> {
  const unpatched = await once(j, 'unpatch', 'prune:unpatch', async () => {
    const text = await readText(deps.manifestPath, 'read manifest');
    const { change, replanned, alreadyApplied } = checkPlanned(planned, text, (t) => planUnpatchChange(t, deps.manifestPath, deps.configPath, cfg));
    if (replanned) deps.out.info(replannedLine(deps.manifestPath, planned!, change.inputSha256));
    if (alreadyApplied) deps.out.info(`${deps.manifestPath} already holds the planned unpatch`);
    const inPod = change.kubeadm?.configPath ?? deps.configPath;
    if (!change.changed) return { since: (await stat(deps.manifestPath)).mtime.toISOString(), mirrorHashBefore: null, configPathInPod: inPod, volumeName: change.kubeadm?.volumeName ?? null, changed: false, backup: null };
    const mirrorHashBefore = (await mirrorPodHash(deps.api, deps.nodeName)) ?? null;
    const since = deps.now().toISOString();
    const w = await writeManifestPlan({ now: deps.now }, { manifest: deps.manifestPath, backupDir: deps.backupDir, manifestsDir: deps.manifestsDir }, text, {
      changed: true, newText: change.newText, diff: change.diff, actions: change.actions, notes: [], mounts: [],
    });
    deps.out.step(`${deps.manifestPath}: ${change.actions.join('; ')} (backup ${w.backup})`);
    return { since, mirrorHashBefore, configPathInPod: inPod, volumeName: change.kubeadm?.volumeName ?? null, changed: true, backup: w.backup ?? null };
  });
  const waited = await once(j, 'wait', 'prune:wait', async () => {
    deps.out.step(`waiting for this node's apiserver to restart without encryption (up to ${Math.round(deps.timeoutMs / 1000)} s)`);
    try {
      const r = await waitForApiserver(
        { api: deps.api, now: deps.now, ...(deps.signal ? { signal: deps.signal } : {}), ...(deps.sleep ? { sleep: deps.sleep } : {}), onProgress: progressOf(deps) },
        {
          since: new Date(unpatched.since),
          mode: 'restart',
          timeoutMs: deps.timeoutMs,
          nodeName: deps.nodeName,
          ...(unpatched.mirrorHashBefore ? { expectMirrorPodHashChange: unpatched.mirrorHashBefore } : {}),
        },
      );
      deps.out.success(`the apiserver runs without --${CONFIG_FLAG} (${r.evidence}: ${r.detail})`);
      return { evidence: r.evidence, detail: r.detail };
    } catch (err) {
      if (deps.signal?.aborted) throw err;
      if (!(err instanceof CliError) || err.exitCode !== ExitCode.Cluster) throw err;
      throw await restoreEncryptedManifest(deps, j, unpatched.backup ?? undefined, err);
    }
  });
  await once(j, 'kubeadmConfig', 'prune:kubeadm-config', async () => {
    if (!deps.kubeadmConfig) return { status: 'skipped', reason: '--no-kubeadm-config' };
    // What the unpatch step recorded (this run's or an interrupted one's) names the flag's value and the volume.
    return kubeadmConfigStep(deps, kubeadm, unpatchKubeadmOptions(unpatched.configPathInPod, deps.configPath, unpatched.volumeName ?? undefined, cfg));
  });
  const removed = await once(j, 'removeConfig', 'prune:remove-config', async () => {
    if (!(await fileExists(deps.configPath))) return { backup: null };
    const backup = await backupConfig(deps);
    await unlink(deps.configPath);
    deps.out.step(`removed ${deps.configPath} (kept as ${backup}, 0600)`);
    return { backup };
  });
  await once(j, 'record', 'prune:record', async () => {
    const where = await recordStage(deps.api, deps.nodeName, deps.hasNode, { stage: 'prune', sha256: sha256Hex('') });
    return { where };
  });
  return { stage: 'prune', evidence: `${waited.evidence}: ${waited.detail}`, proof: `config kept as ${removed.backup}` };
}
