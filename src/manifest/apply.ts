import { realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, isAbsolute } from 'node:path';
import { backupFile, readText, writeFileAtomic } from '../state/atomic';
import { CliError, ExitCode, fsError } from '../ui/errors';
import { planManifestPatch, type ManifestPlan, type PatchOptions } from './patch';

/** The executor half of the manifest patch: read, plan (pure), back up, write atomically. */

interface ManifestDeps {
  now: () => Date;
}

interface ManifestWriteOptions {
  manifest: string;
  /** Where the original goes before a write; never inside the manifests directory. */
  backupDir: string;
  /** Default: the manifest's own directory (the kubelet runs every file there). */
  manifestsDir?: string;
  dryRun?: boolean;
}

interface ManifestWriteResult {
  manifest: string;
  changed: boolean;
  dryRun: boolean;
  actions: string[];
  notes: string[];
  /** Copy of the original (only when something was written). */
  backup?: string;
  diff: string;
  volumeName?: string;
  configPathInPod?: string;
  /** The manifest's text before this call (for callers that roll back). */
  previousText: string;
}

/** Resolves symlinks of the longest existing prefix, so /etc/kubernetes/manifests/../x compares right. */
async function canonical(p: string): Promise<string> {
  const abs = resolve(p);
  try {
    return await realpath(abs);
  } catch {
    const parent = dirname(abs);
    return parent === abs ? abs : join(await canonical(parent), basename(abs));
  }
}

const isInside = (child: string, parent: string) => {
  const rel = relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
};

export async function assertBackupDirOutside(backupDir: string, manifestsDir: string): Promise<void> {
  if (isInside(await canonical(backupDir), await canonical(manifestsDir))) {
    throw new CliError(`backup dir ${backupDir} lies inside the kubelet's manifests directory ${manifestsDir}`, {
      exitCode: ExitCode.Usage,
      hint: 'the kubelet would run a backup copy as a second apiserver; pass --backup-dir outside it (default: STATE_DIR/backups)',
    });
  }
}

/** Applies a plan computed from `original`: backup (0600), then an atomic write keeping the file mode. */
export async function writeManifestPlan(
  deps: ManifestDeps,
  opts: ManifestWriteOptions,
  original: string,
  plan: ManifestPlan,
): Promise<ManifestWriteResult> {
  const base = {
    manifest: opts.manifest,
    changed: plan.changed,
    dryRun: Boolean(opts.dryRun),
    actions: plan.actions,
    notes: plan.notes,
    diff: plan.diff,
    previousText: original,
    ...(plan.volumeName ? { volumeName: plan.volumeName } : {}),
    ...(plan.configPathInPod ? { configPathInPod: plan.configPathInPod } : {}),
  };
  if (!plan.changed || opts.dryRun) return base;
  // Every manifest write backs up first: the engine's callers too, not only applyManifestChange.
  await assertBackupDirOutside(opts.backupDir, opts.manifestsDir ?? dirname(opts.manifest));
  let mode: number;
  try {
    mode = (await stat(opts.manifest)).mode & 0o7777;
  } catch (err) {
    throw fsError('read manifest', opts.manifest, err);
  }
  const backup = await backupFile(opts.manifest, opts.backupDir, deps.now());
  // Someone (kubeadm, an operator) may have written the file since we read it: never clobber that.
  if ((await readText(opts.manifest, 'read manifest')) !== original) {
    throw new CliError(`${opts.manifest} changed while it was being patched`, {
      exitCode: ExitCode.Refused,
      hint: 'nothing was written; re-run to plan against the new content',
    });
  }
  await writeFileAtomic(opts.manifest, plan.newText, { mode });
  return { ...base, backup };
}

/** Reads the manifest, plans with `planner` (pure) and writes the result. */
async function applyManifestChange(
  deps: ManifestDeps,
  opts: ManifestWriteOptions,
  planner: (text: string) => ManifestPlan,
): Promise<ManifestWriteResult> {
  await assertBackupDirOutside(opts.backupDir, opts.manifestsDir ?? dirname(opts.manifest));
  const original = await readText(opts.manifest, 'read manifest');
  return writeManifestPlan(deps, opts, original, planner(original));
}

/** `patch-manifest` and `init`: add the encryption flag and mounts. Safe to re-run. */
export const applyManifestPatch = (deps: ManifestDeps, opts: ManifestWriteOptions & PatchOptions) =>
  applyManifestChange(deps, opts, (text) => planManifestPatch(text, opts.manifest, opts));
