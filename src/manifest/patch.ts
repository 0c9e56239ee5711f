import { createTwoFilesPatch } from 'diff';
import { posix } from 'node:path';
import { CliError, ExitCode } from '../ui/errors';
import { applyEdits, type DocPath, type Edit } from './edit';
import {
  containerPathVia,
  flagListOf,
  flagOccurrences,
  hostPathMountsOf,
  KUBEADM_APISERVER_VOLUMES,
  listOf,
  normPath,
  parseManifest,
  scanFlags,
  type Container,
  type FlagList,
  type ParsedManifest,
  type Volume,
} from './manifest';

/**
 * Pure planners for the kube-apiserver static pod: the encryption flag plus a read-only hostPath
 * mount of the config's directory (and of a KMS plugin's socket directory). They return the new
 * text and a diff; the executor in apply.ts does the I/O.
 */

export const CONFIG_FLAG = 'encryption-provider-config';
export const RELOAD_FLAG = 'encryption-provider-config-automatic-reload';
export const DEFAULT_CONFIG_VOLUME = 'encryption-config';
export const DEFAULT_SOCKET_VOLUME = 'kms-socket';

export interface ExtraMount {
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

export interface UnpatchOptions {
  configPath: string;
  /** Further directories this tool mounted (a KMS socket dir) whose volume and mount go too. */
  extraMountDirs?: string[];
  /** Volume names given to extraMounts beyond the defaults (encryption-config*, kms-socket*). */
  volumeNames?: string[];
}

/** Names this tool gives its volumes (a collision adds -2, -3, ...). */
function isOwnVolumeName(name: string, extra: string[] = []): boolean {
  return [DEFAULT_CONFIG_VOLUME, DEFAULT_SOCKET_VOLUME, ...extra].some(
    (n) => name === n || (name.startsWith(`${n}-`) && /^\d+$/.test(name.slice(n.length + 1))),
  );
}

export interface PlannedMount {
  volumeName: string;
  hostPath: string;
  mountPath: string;
  readOnly: boolean;
  type?: string;
  /** Already in the manifest (false: this plan adds it). */
  existing: boolean;
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

// ---------------------------------------------------------------- helpers

const containerPath = (m: ParsedManifest): DocPath => ['spec', 'containers', m.containerIndex];

function requireAbsolute(p: string, what: string): string {
  if (typeof p !== 'string' || !posix.isAbsolute(p)) {
    throw new CliError(`${what} must be an absolute path, got "${p}"`, {
      exitCode: ExitCode.Usage,
      hint: 'the kubelet resolves hostPath volumes on the node; give the full path, e.g. /etc/kubernetes/encryption/config.yaml',
    });
  }
  return normPath(p);
}

/** pflag accepts `--name=value` for every flag; the split form only when the manifest uses it
 * throughout, and never for booleans (`--flag true` would be a stray positional argument). */
function usesSplitForm(c: Container, list: FlagList): boolean {
  const items = listOf(c, list);
  const occ = scanFlags(items, list);
  return occ.some((f) => f.split) && occ.every((f) => f.split || !items[f.index]!.includes('='));
}

const isSortedBy = (names: string[]) => names.every((n, i) => i === 0 || names[i - 1]! <= n);

/** Inserts at the alphabetical position when the list is sorted (as kubeadm writes it), else last. */
function sortedIndex(names: string[], name: string): number {
  if (!isSortedBy(names)) return names.length;
  const i = names.findIndex((n) => n > name);
  return i === -1 ? names.length : i;
}

/** Orders an object's keys like its sibling's (so a new item reads like its neighbours). */
function orderLike(obj: Record<string, unknown>, sibling: unknown): Record<string, unknown> {
  if (!sibling || typeof sibling !== 'object' || Array.isArray(sibling)) return obj;
  const sib = sibling as Record<string, unknown>;
  const keys = [...Object.keys(sib).filter((k) => k in obj), ...Object.keys(obj).filter((k) => !(k in sib))];
  return Object.fromEntries(
    keys.map((k) => {
      const v = obj[k];
      return [k, v && typeof v === 'object' && !Array.isArray(v) ? orderLike(v as Record<string, unknown>, sib[k]) : v];
    }),
  );
}

export function unifiedDiff(oldText: string, newText: string, path: string): string {
  if (oldText === newText) return '';
  const p = path.replace(/^\/+/, '');
  return createTwoFilesPatch(`a/${p}`, `b/${p}`, oldText, newText, '', '', { context: 3 }).replace(/^=+\n/, '');
}

// ---------------------------------------------------------------- flag edits

/** Working state of the container's flag lists while a plan accumulates inserts. */
class FlagEditor {
  readonly edits: Edit[] = [];
  readonly sets: Edit[] = [];
  private readonly lists: Record<FlagList, string[]>;

  constructor(private readonly m: ParsedManifest) {
    this.lists = { command: listOf(m.container, 'command'), args: listOf(m.container, 'args') };
  }

  /** Sets --name=value: rewrites the winning occurrence in place, or inserts a new one. */
  set(name: string, value: string): 'added' | 'set' | 'unchanged' {
    const occ = flagOccurrences(this.m.container).filter((f) => f.name === name);
    const last = occ[occ.length - 1];
    if (last) {
      if (last.value === value) return 'unchanged';
      const base = [...containerPath(this.m), last.list];
      this.sets.push(
        last.split
          ? { op: 'set', path: [...base, last.index + 1], value }
          : { op: 'set', path: [...base, last.index], value: `--${name}=${value}` },
      );
      return 'set';
    }
    const list = flagListOf(this.m.container);
    const items = this.lists[list];
    const flags = scanFlags(items, list);
    const pos = sortedIndex(flags.map((f) => f.name), name);
    const index = pos < flags.length ? flags[pos]!.index : items.length;
    const split = usesSplitForm(this.m.container, list) && value !== 'true' && value !== 'false';
    const seq = [...containerPath(this.m), list];
    const added = split ? [`--${name}`, value] : [`--${name}=${value}`];
    added.forEach((v, i) => this.edits.push({ op: 'insert', seq, index: index + i, value: v }));
    items.splice(index, 0, ...added);
    return 'added';
  }

  /** Removes every occurrence (and a split value), last first so indices stay valid. */
  remove(name: string): number {
    const occ = flagOccurrences(this.m.container).filter((f) => f.name === name);
    const removals: Array<{ list: FlagList; index: number }> = [];
    for (const f of occ) {
      removals.push({ list: f.list, index: f.index });
      if (f.split) removals.push({ list: f.list, index: f.index + 1 });
    }
    removals.sort((a, b) => (a.list === b.list ? b.index - a.index : a.list < b.list ? -1 : 1));
    for (const r of removals) this.edits.push({ op: 'remove', seq: [...containerPath(this.m), r.list], index: r.index });
    return occ.length;
  }

  all(): Edit[] {
    return [...this.sets, ...this.edits];
  }
}

// ---------------------------------------------------------------- mount edits

class MountEditor {
  readonly edits: Edit[] = [];
  readonly actions: string[] = [];
  readonly notes: string[] = [];
  private readonly volumes: Volume[];
  private readonly volumeNames: string[];
  private readonly mountNames: string[];
  private readonly mounts;

  constructor(private readonly m: ParsedManifest) {
    this.volumes = Array.isArray(m.pod.spec?.volumes) ? m.pod.spec!.volumes! : [];
    this.volumeNames = this.volumes.map((v) => String(v?.name ?? ''));
    const vms = Array.isArray(m.container.volumeMounts) ? m.container.volumeMounts : [];
    this.mountNames = vms.map((v) => String(v?.name ?? ''));
    this.mounts = hostPathMountsOf(m);
  }

  /** The existing mount through which the container sees `hostFile`, with its in-container path. */
  covering(hostFile: string): { mount: PlannedMount; inPod: string } | undefined {
    for (const mt of this.mounts) {
      const inPod = containerPathVia(mt, hostFile);
      if (inPod !== undefined) return { mount: { ...mt, existing: true }, inPod };
    }
    return undefined;
  }

  /** Makes `dir` visible at the same path in the container, reusing what is there. */
  ensure(dir: string, type: string, readOnly: boolean, preferredName: string, purpose: string): PlannedMount {
    const cover = this.covering(dir);
    if (cover && cover.inPod === dir) {
      const by = cover.mount.hostPath === dir ? `volume ${cover.mount.volumeName}` : `${cover.mount.hostPath} (volume ${cover.mount.volumeName})`;
      this.notes.push(`${purpose} ${dir} is already mounted through ${by}`);
      return cover.mount;
    }
    const clash = this.mounts.find((mt) => mt.mountPath === dir);
    const vms = Array.isArray(this.m.container.volumeMounts) ? this.m.container.volumeMounts : [];
    if (clash || vms.some((v) => typeof v?.mountPath === 'string' && normPath(v.mountPath) === dir)) {
      throw new CliError(`${this.m.path}: the kube-apiserver container already mounts something else at ${dir}`, {
        exitCode: ExitCode.Refused,
        hint: `put the ${purpose} in another directory, or fix that volume by hand`,
      });
    }
    const reuse = this.volumes.find((v) => typeof v?.hostPath?.path === 'string' && normPath(v.hostPath.path) === dir);
    let name: string;
    if (reuse) {
      name = String(reuse.name);
      this.notes.push(`reusing the pod's volume ${name} for ${dir}`);
    } else {
      name = preferredName;
      for (let i = 2; this.volumeNames.includes(name); i++) name = `${preferredName}-${i}`;
      if (name !== preferredName) this.notes.push(`volume name ${preferredName} is taken; using ${name}`);
      const sibling = this.volumes.find((v) => v?.hostPath) ?? this.volumes[0];
      const value = orderLike({ hostPath: { path: dir, type }, name }, sibling);
      const index = sortedIndex(this.volumeNames, name);
      this.volumeNames.splice(index, 0, name);
      this.edits.push({ op: 'insert', seq: ['spec', 'volumes'], index, value });
      this.actions.push(`add volume ${name}: hostPath ${dir} (${type})`);
    }
    const vmSibling = vms[0];
    const mountValue = orderLike({ mountPath: dir, name, ...(readOnly ? { readOnly: true } : {}) }, vmSibling);
    const index = sortedIndex(this.mountNames, name);
    this.mountNames.splice(index, 0, name);
    this.edits.push({ op: 'insert', seq: [...containerPath(this.m), 'volumeMounts'], index, value: mountValue });
    this.actions.push(`mount ${dir} into kube-apiserver${readOnly ? ' read-only' : ''} (volume ${name})`);
    const planned: PlannedMount = { volumeName: name, hostPath: dir, mountPath: dir, readOnly, type, existing: false };
    this.mounts.push(planned);
    return planned;
  }

  /**
   * Removes this tool's mount of `dir` and its volume when nothing else uses it. Only volumes that
   * carry this tool's names and map `dir` to itself: never kubeadm's own, never a hand-made mount.
   */
  removeOwn(dir: string, ownNamesExtra: string[] = []): void {
    const vms = Array.isArray(this.m.container.volumeMounts) ? this.m.container.volumeMounts : [];
    const own = this.mounts.filter(
      (mt) =>
        mt.hostPath === dir &&
        mt.mountPath === dir &&
        !KUBEADM_APISERVER_VOLUMES.has(mt.volumeName) &&
        isOwnVolumeName(mt.volumeName, ownNamesExtra),
    );
    const ownNames = new Set(own.map((mt) => mt.volumeName));
    const mountIdx = vms
      .map((v, i) => ({ v, i }))
      .filter(({ v }) => typeof v?.name === 'string' && ownNames.has(v.name) && typeof v.mountPath === 'string' && normPath(v.mountPath) === dir)
      .map(({ i }) => i)
      .sort((a, b) => b - a);
    for (const index of mountIdx) {
      this.edits.push({ op: 'remove', seq: [...containerPath(this.m), 'volumeMounts'], index });
      this.actions.push(`unmount ${dir} from kube-apiserver (volume ${String(vms[index]!.name)})`);
    }
    const users = new Set<string>();
    const spec = this.m.pod.spec ?? {};
    [...(spec.containers ?? []), ...(spec.initContainers ?? [])].forEach((c, ci) => {
      (Array.isArray(c?.volumeMounts) ? c.volumeMounts : []).forEach((v, vi) => {
        const removed = ci === this.m.containerIndex && c === this.m.container && mountIdx.includes(vi);
        if (!removed && typeof v?.name === 'string') users.add(v.name);
      });
    });
    const volIdx = this.volumes
      .map((v, i) => ({ v, i }))
      .filter(({ v }) => typeof v?.name === 'string' && ownNames.has(v.name) && !users.has(v.name))
      .map(({ i }) => i)
      .sort((a, b) => b - a);
    for (const index of volIdx) {
      this.edits.push({ op: 'remove', seq: ['spec', 'volumes'], index });
      this.actions.push(`remove volume ${String(this.volumes[index]!.name)} (hostPath ${dir})`);
    }
  }
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
