import { stat, unlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { parseEncryptionConfig, sha256Hex } from '../config/parse';
import { waitForApiserver, waitForReady, WaitTimeoutError } from '../cluster/wait';
import { writeManifestPlan } from '../manifest/apply';
import { readApiserverFlags } from '../manifest/manifest';
import { CONFIG_FLAG } from '../manifest/patch';
import { planRestartAnnotation } from '../manifest/restart';
import { backupConfig, listBackups } from '../state/backups';
import { fileExists, readText, SECRET_FILE_MODE, writeFileAtomic } from '../state/atomic';
import { CliError, ExitCode } from '../ui/errors';
import type { StepJournal, TransitionDeps } from './engine';
import { planUnpatchChange } from './manifest-change';
import { outputOf } from './steps';

/**
 * When a stage's apiserver does not come back: put back what the stage changed, wait for the
 * previous apiserver, and say exactly what was restored (exit 5, RolledBack).
 */

/**
 * The apiserver did not come up with the stage config: put back what the stage changed (the
 * manifest from its backup; the config from its backup, or removed and kept as a 0600 backup when
 * the stage created it), wait until the previous apiserver is healthy, and return the RolledBack
 * error. A stage that turned encryption on leaves the journal rolled back (a re-run starts over);
 * any later stage is forgotten, so the node stays at the previous stage and a re-run retries it.
 */
export async function restorePrevious(deps: TransitionDeps, j: StepJournal, s: string, cause: CliError): Promise<CliError> {
  const begun = outputOf(j, 'begin', `${s}:begin`);
  const applied = outputOf(j, 'apply', `${s}:apply`);
  const restored: string[] = [];
  const problems: string[] = [];
  deps.out.warn(`${cause.message}: rolling back stage ${s}`);
  const restoredAt = deps.now();
  let restarts = false;

  const manifestBackup = applied?.backup ?? undefined;
  if (manifestBackup) {
    try {
      const mode = (await stat(deps.manifestPath)).mode & 0o7777;
      await writeFileAtomic(deps.manifestPath, await readText(manifestBackup, 'read backup'), { mode });
      restored.push(`${deps.manifestPath} from ${manifestBackup}`);
      restarts = true;
    } catch (err) {
      problems.push(`could not restore ${deps.manifestPath} from ${manifestBackup}: ${(err as Error).message}`);
    }
  }

  const configBackup = begun?.backup ?? undefined;
  let restoredSha: string | undefined;
  try {
    if (configBackup) {
      const text = await readText(configBackup, 'read backup');
      await writeFileAtomic(deps.configPath, text, { mode: SECRET_FILE_MODE });
      restored.push(`${deps.configPath} from ${configBackup}`);
      restoredSha = sha256Hex(text);
      // Annotated before an interruption (no manifest backup of this run): point the annotation back.
      if (!manifestBackup && applied?.mode !== 'reload') {
        const manifest = await readText(deps.manifestPath, 'read manifest');
        const plan = planRestartAnnotation(manifest, deps.manifestPath, restoredSha);
        if (plan.changed) {
          await writeManifestPlan({ now: deps.now }, { manifest: deps.manifestPath, backupDir: deps.backupDir, manifestsDir: deps.manifestsDir }, manifest, {
            changed: true, newText: plan.newText, diff: plan.diff, actions: [], notes: [], mounts: [],
          });
          restarts = true;
        }
      }
    } else if (begun?.from === null && (await fileExists(deps.configPath))) {
      // A key that may have encrypted something must not vanish: keep a 0600 copy.
      const kept = await backupConfig(deps);
      await unlink(deps.configPath);
      restored.push(`removed ${deps.configPath} (kept as ${kept})`);
    }
  } catch (err) {
    problems.push(`could not put back ${deps.configPath}: ${(err as Error).message}`);
  }

  const healthy = problems.length === 0 && (await waitForPrevious(deps, restarts ? { since: restoredAt, ...(restoredSha ? { configSha256: restoredSha } : {}) } : undefined, problems));
  const tried = cause instanceof WaitTimeoutError ? `the apiserver did not run the ${s} config within ${Math.round(cause.waitedMs / 1000)} s` : cause.message;
  const message = rolledBackMessage(tried, restored, 'nothing to restore (the file was already in place)', healthy, problems);
  if (begun?.flag === false) {
    await j.setStatus('rolled-back', message);
  } else {
    await j.forget([`${s}:begin`, `${s}:write`, `${s}:apply`, `${s}:wait`]);
    await j.setStatus('waiting', `stage ${s} rolled back`);
  }
  return rolledBackError(message, cause, { restored, problems, healthy });
}

/**
 * After a rollback: waits until the previous apiserver is healthy. A restored manifest restarts
 * the pod (`restart`: wait for that new process); otherwise (a failed reload) the previous
 * configuration is still running and only readiness matters. A failure is added to `problems`.
 */
async function waitForPrevious(deps: TransitionDeps, restart: { since: Date; configSha256?: string } | undefined, problems: string[]): Promise<boolean> {
  deps.out.step('waiting for the previous apiserver to be healthy again');
  const waitDeps = { api: deps.api, now: deps.now, ...(deps.signal ? { signal: deps.signal } : {}), ...(deps.sleep ? { sleep: deps.sleep } : {}) };
  try {
    if (restart) await waitForApiserver(waitDeps, { ...restart, mode: 'restart', timeoutMs: deps.timeoutMs, nodeName: deps.nodeName });
    else await waitForReady(waitDeps, deps.timeoutMs);
    return true;
  } catch (err) {
    if (deps.signal?.aborted) throw err;
    problems.push(`the previous apiserver is not healthy yet either (${(err as Error).message})`);
    return false;
  }
}

const rolledBackMessage = (tried: string, restored: string[], nothing: string, healthy: boolean, problems: string[]) =>
  `${tried}; rolled back: ${restored.join('; ') || nothing}${healthy ? '; the previous apiserver is healthy again' : ''}${problems.length ? `; ${problems.join('; ')}` : ''}`;

function rolledBackError(message: string, cause: CliError, details: { restored: string[]; problems: string[]; healthy: boolean }): CliError {
  return new CliError(message, {
    exitCode: ExitCode.RolledBack,
    hint: 'see why in the apiserver log: crictl logs $(crictl ps -a --name kube-apiserver -q | head -1) (containerd), or the pod logs under /var/log/pods/; then re-run to retry',
    cause,
    details: { ...details, lastSeen: cause instanceof WaitTimeoutError ? cause.lastSeen : cause.message },
  });
}

/**
 * disable's last stage did not come up without the flag: put the manifest with the flag and mount
 * back (the config file is still in place: it is removed only after the wait), wait for the
 * previous apiserver, and forget the unpatch so that a re-run retries it.
 */
export async function restoreEncryptedManifest(deps: TransitionDeps, j: StepJournal, backup: string | undefined, cause: CliError): Promise<CliError> {
  deps.out.warn(`${cause.message}: rolling back stage prune`);
  const restored: string[] = [];
  const problems: string[] = [];
  const restoredAt = deps.now();
  try {
    const current = await readText(deps.manifestPath, 'read manifest');
    // Unpatched before an interruption, the journal has no backup: the one to restore is the
    // newest whose unpatch gives exactly the manifest that is there now.
    const source = backup ?? (await findUnpatchedFrom(deps, current));
    if (!source) {
      problems.push(`no backup in ${deps.backupDir} holds the manifest as it was before the unpatch: put --${CONFIG_FLAG} and its mount back by hand`);
    } else {
      const mode = (await stat(deps.manifestPath)).mode & 0o7777;
      await writeFileAtomic(deps.manifestPath, await readText(source, 'read backup'), { mode });
      restored.push(`${deps.manifestPath} from ${source}`);
    }
  } catch (err) {
    problems.push(`could not restore ${deps.manifestPath}: ${(err as Error).message}`);
  }
  const configSha = (await fileExists(deps.configPath)) ? sha256Hex(await readText(deps.configPath, 'read config')) : undefined;
  if (configSha) restored.push(`${deps.configPath} left in place`);
  const healthy = problems.length === 0 && (await waitForPrevious(deps, { since: restoredAt, ...(configSha ? { configSha256: configSha } : {}) }, problems));
  const tried = cause instanceof WaitTimeoutError ? `the apiserver did not come back without --${CONFIG_FLAG} within ${Math.round(cause.waitedMs / 1000)} s` : cause.message;
  const message = rolledBackMessage(tried, restored, 'nothing restored', healthy, problems);
  await j.forget(['prune:unpatch', 'prune:wait']);
  await j.setStatus('waiting', 'stage prune rolled back');
  return rolledBackError(message, cause, { restored, problems, healthy });
}

async function findUnpatchedFrom(deps: TransitionDeps, current: string): Promise<string | undefined> {
  for (const b of await listBackups(deps.backupDir, basename(deps.manifestPath))) {
    const text = await readText(b, 'read backup');
    const flag = readApiserverFlags(text, b).flags.get(CONFIG_FLAG);
    if (flag === undefined) continue;
    const cfg = (await fileExists(deps.configPath)) ? parseEncryptionConfig(await readText(deps.configPath, 'read config'), deps.configPath) : undefined;
    const plan = planUnpatchChange(text, deps.manifestPath, deps.configPath, cfg);
    if (plan.changed && plan.newText === current) return b;
  }
  return undefined;
}

