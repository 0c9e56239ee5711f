import { createTwoFilesPatch } from 'diff';
import { posix } from 'node:path';
import { CliError, ExitCode } from '../ui/errors';
import { applyEdits, type Edit } from './edit';
import { FlagEditor } from './flag-editor';
import { CONFIG_FLAG, flagListOf, flagOccurrences, KUBEADM_APISERVER_VOLUMES, normPath, parseManifest, RELOAD_FLAG, type ParsedManifest } from './manifest';
import { DEFAULT_CONFIG_VOLUME, DEFAULT_SOCKET_VOLUME, MountEditor, type PlannedMount } from './mount-editor';

/**
 * Pure planners for the kube-apiserver static pod: the encryption flag plus a read-only hostPath
 * mount of the config's directory (and of a KMS plugin's socket directory). They return the new
 * text and a diff; the executor in apply.ts does the I/O.
 */

export { CONFIG_FLAG, RELOAD_FLAG } from './manifest';

interface ExtraMount {
  /** Host directory, mounted at the same path in the container. */
  dir: string;
  /** `Directory` for a KMS socket dir: a missing plugin directory then shows up as a pod error. */
  type: 'Directory' | 'DirectoryOrCreate';
  name?: string;
  /**
   * Default true. A KMS socket needs no writable mount: connect(2) on a unix socket checks write
   * permission on the socket inode, and Linux refuses writes on read-only mounts only for regular
   * files, directories and symlinks (checked with a read-only bind mount), so least privilege works.
   */
  readOnly?: boolean;
}

export interface PatchOptions {
  /** Absolute host path of the EncryptionConfiguration. */
  configPath: string;
  /** Point an existing --encryption-provider-config at configPath instead of refusing. */
  replace?: boolean;
  extraMounts?: ExtraMount[];
  /** Also set --encryption-provider-config-automatic-reload=true (1.26+; callers check the version). */
  reloadFlag?: boolean;
}

interface UnpatchOptions {
  configPath: string;
  /** Further directories this tool mounted (a KMS socket dir) whose volume and mount go too. */
  extraMountDirs?: string[];
  /** Volume names given to extraMounts beyond the defaults (encryption-config*, kms-socket*). */
  volumeNames?: string[];
}

export interface ManifestPlan {
  changed: boolean;
  newText: string;
  /** Unified diff, empty when nothing changes. */
  diff: string;
  /** What the plan changes, one line each (empty when nothing changes). */
  actions: string[];
  /** Facts worth telling that change nothing (e.g. "config dir already mounted by k8s-certs"). */
  notes: string[];
  /** The dedicated volume serving the config dir (for kubeadm-config extraVolumes); undefined when
   * the config lies under one of kubeadm's own mounts. */
  volumeName?: string;
  /** The value of --encryption-provider-config as the apiserver sees it (inside the container). */
  configPathInPod?: string;
  /** Mounts that serve the config dir and the extra dirs after the plan. */
  mounts: PlannedMount[];
}

function requireAbsolute(p: string, what: string): string {
  if (typeof p !== 'string' || !posix.isAbsolute(p)) {
    throw new CliError(`${what} must be an absolute path, got "${p}"`, {
      exitCode: ExitCode.Usage,
      hint: 'the kubelet resolves hostPath volumes on the node; give the full path, e.g. /etc/kubernetes/encryption/config.yaml',
    });
  }
  return normPath(p);
}

export function unifiedDiff(oldText: string, newText: string, path: string): string {
  if (oldText === newText) return '';
  const p = path.replace(/^\/+/, '');
  return createTwoFilesPatch(`a/${p}`, `b/${p}`, oldText, newText, '', '', { context: 3 }).replace(/^=+\n/, '');
}

// ---------------------------------------------------------------- planners

interface Computed {
  edits: Edit[];
  actions: string[];
  notes: string[];
  volumeName?: string;
  configPathInPod?: string;
  mounts: PlannedMount[];
}

function computePatch(m: ParsedManifest, opts: PatchOptions): Computed {
  const configPath = requireAbsolute(opts.configPath, '--config-path');
  const configDir = posix.dirname(configPath);
  const flags = new FlagEditor(m);
  const mounts = new MountEditor(m);
  const actions: string[] = [];
  const planned: PlannedMount[] = [];

  // The config as the apiserver sees it: through an existing mount (maybe at another path) or ours.
  const cover = mounts.covering(configPath);
  let inPod: string;
  let volumeName: string | undefined;
  if (cover) {
    inPod = cover.inPod;
    planned.push(cover.mount);
    if (cover.mount.hostPath === configDir && !KUBEADM_APISERVER_VOLUMES.has(cover.mount.volumeName)) volumeName = cover.mount.volumeName;
    else mounts.notes.push(`the config lies under ${cover.mount.hostPath}, already mounted (volume ${cover.mount.volumeName}): no new volume`);
  } else {
    inPod = configPath;
  }

  const current = flagOccurrences(m.container).filter((f) => f.name === CONFIG_FLAG).pop()?.value;
  if (current !== undefined && normPath(current.trim()) !== inPod && !opts.replace) {
    throw new CliError(`${m.path} already sets --${CONFIG_FLAG}=${current}, not ${inPod}`, {
      exitCode: ExitCode.Refused,
      hint: 'to change keys in that config use rotate-key; to point the apiserver at the new file pass --replace',
      details: { current, wanted: inPod },
    });
  }
  const r = current !== undefined && normPath(current.trim()) === inPod ? 'unchanged' : flags.set(CONFIG_FLAG, inPod);
  if (r === 'added') actions.push(`add flag --${CONFIG_FLAG}=${inPod} (${flagListOf(m.container)})`);
  if (r === 'set') actions.push(`replace --${CONFIG_FLAG}=${current} with ${inPod}`);

  if (!cover) {
    const mt = mounts.ensure(configDir, 'DirectoryOrCreate', true, DEFAULT_CONFIG_VOLUME, 'config directory');
    planned.push(mt);
    volumeName = mt.volumeName;
  }
  for (const extra of opts.extraMounts ?? []) {
    const dir = requireAbsolute(extra.dir, 'mount directory');
    planned.push(mounts.ensure(dir, extra.type, extra.readOnly ?? true, extra.name ?? DEFAULT_SOCKET_VOLUME, 'directory'));
  }
  if (opts.reloadFlag) {
    const r2 = flags.set(RELOAD_FLAG, 'true');
    if (r2 !== 'unchanged') actions.push(`${r2 === 'added' ? 'add' : 'set'} flag --${RELOAD_FLAG}=true`);
  }
  return {
    edits: [...flags.all(), ...mounts.edits],
    actions: [...actions, ...mounts.actions],
    notes: mounts.notes,
    volumeName,
    configPathInPod: inPod,
    mounts: planned,
  };
}

/** Removals from one sequence must run last index first, whichever step planned them. */
function descendingRemovals(edits: Edit[]): Edit[] {
  const key = (e: Edit) => JSON.stringify(e.op === 'set' ? e.path : e.seq);
  return [...edits].sort((a, b) => {
    if (a.op !== 'remove' || b.op !== 'remove') return 0;
    const ka = key(a);
    const kb = key(b);
    return ka === kb ? b.index - a.index : ka < kb ? -1 : 1;
  });
}

function computeUnpatch(m: ParsedManifest, opts: UnpatchOptions): Computed {
  const configPath = requireAbsolute(opts.configPath, '--config-path');
  const configDir = posix.dirname(configPath);
  const flags = new FlagEditor(m);
  const mounts = new MountEditor(m);
  const actions: string[] = [];
  const cover = mounts.covering(configPath);
  const accepted = new Set([configPath, cover?.inPod].filter((p): p is string => Boolean(p)));
  const current = flagOccurrences(m.container).filter((f) => f.name === CONFIG_FLAG);
  const other = current.find((f) => !accepted.has(normPath(f.value.trim())));
  if (other) {
    throw new CliError(`${m.path} sets --${CONFIG_FLAG}=${other.value}, not ${configPath}`, {
      exitCode: ExitCode.Refused,
      hint: 'pass the config the apiserver actually uses (see status)',
      details: { current: other.value, given: configPath },
    });
  }
  if (flags.remove(CONFIG_FLAG)) actions.push(`remove flag --${CONFIG_FLAG}`);
  // Automatic reload without a config is meaningless and the apiserver rejects it.
  if (flags.remove(RELOAD_FLAG)) actions.push(`remove flag --${RELOAD_FLAG}`);
  mounts.removeOwn(configDir, opts.volumeNames);
  for (const d of opts.extraMountDirs ?? []) mounts.removeOwn(requireAbsolute(d, 'mount directory'), opts.volumeNames);
  return { edits: descendingRemovals([...flags.all(), ...mounts.edits]), actions: [...actions, ...mounts.actions], notes: mounts.notes, mounts: [] };
}

function finish(m: ParsedManifest, c: Computed, recheck: (m2: ParsedManifest) => Computed): ManifestPlan {
  const base = { notes: c.notes, volumeName: c.volumeName, configPathInPod: c.configPathInPod, mounts: c.mounts };
  if (c.edits.length === 0) return { changed: false, newText: m.text, diff: '', actions: [], ...base };
  const newText = applyEdits(m, c.edits);
  // The splice must yield a manifest that needs nothing more; anything else is a bug here, and
  // writing it could take the control plane down.
  let again: Computed;
  try {
    again = recheck(parseManifest(newText, m.path));
  } catch (err) {
    throw new CliError(`internal error: the patched ${m.path} does not check out (${(err as Error).message})`, {
      exitCode: ExitCode.Internal,
      hint: 'nothing was written; please report this manifest layout',
      cause: err,
    });
  }
  if (again.edits.length > 0) {
    throw new CliError(`internal error: patching ${m.path} did not converge`, {
      exitCode: ExitCode.Internal,
      hint: 'nothing was written; please report this manifest layout',
      details: { remaining: again.actions },
    });
  }
  return { changed: true, newText, diff: unifiedDiff(m.text, newText, m.path), actions: c.actions, ...base };
}

/** Adds --encryption-provider-config and the mounts it needs. Pure; idempotent. */
export function planManifestPatch(text: string, path: string, opts: PatchOptions): ManifestPlan {
  const m = parseManifest(text, path);
  const c = computePatch(m, opts);
  return finish(m, c, (m2) => computePatch(m2, { ...opts, replace: false }));
}

/** Removes the flag, the reload flag and this tool's own mounts (for `disable`). Pure; idempotent. */
export function planManifestUnpatch(text: string, path: string, opts: UnpatchOptions): ManifestPlan {
  const m = parseManifest(text, path);
  return finish(m, computeUnpatch(m, opts), (m2) => computeUnpatch(m2, opts));
}

/** Sets one apiserver flag (`--name=value`, or the manifest's split style for non-booleans). */
export function planSetFlag(text: string, path: string, name: string, value: string): ManifestPlan {
  const m = parseManifest(text, path);
  const compute = (mm: ParsedManifest): Computed => {
    const f = new FlagEditor(mm);
    const r = f.set(name.replace(/^--/, ''), value);
    return { edits: f.all(), actions: r === 'unchanged' ? [] : [`${r === 'added' ? 'add' : 'set'} flag --${name.replace(/^--/, '')}=${value}`], notes: [], mounts: [] };
  };
  return finish(m, compute(m), compute);
}

/** Removes every occurrence of one apiserver flag. */
export function planRemoveFlag(text: string, path: string, name: string): ManifestPlan {
  const m = parseManifest(text, path);
  const compute = (mm: ParsedManifest): Computed => {
    const f = new FlagEditor(mm);
    const n = f.remove(name.replace(/^--/, ''));
    return { edits: f.all(), actions: n ? [`remove flag --${name.replace(/^--/, '')}`] : [], notes: [], mounts: [] };
  };
  return finish(m, compute(m), compute);
}
