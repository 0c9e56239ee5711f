import { isMap, isScalar, isSeq, parseDocument, YAMLMap, YAMLSeq, type Document } from 'yaml';
import { sha256Hex } from '../config/parse';
import { CliError, ExitCode } from '../ui/errors';
import { CONFIG_FLAG, RELOAD_FLAG, unifiedDiff } from './patch';

/**
 * The same flag and mounts, recorded in kubeadm's ClusterConfiguration (ConfigMap
 * kube-system/kubeadm-config, data key `ClusterConfiguration`) so that `kubeadm upgrade`, which
 * regenerates the static pod from it, keeps encryption on. Shapes (kubeadm's types.go):
 * - v1beta3: apiServer.extraArgs is a map flag -> value;
 * - v1beta4: apiServer.extraArgs is a list of {name, value} (duplicates allowed);
 * - both: apiServer.extraVolumes is a list of {name, hostPath, mountPath, readOnly, pathType}.
 */

export const KUBEADM_CONFIGMAP = { namespace: 'kube-system', name: 'kubeadm-config', key: 'ClusterConfiguration' } as const;

const SUPPORTED = ['kubeadm.k8s.io/v1beta3', 'kubeadm.k8s.io/v1beta4'] as const;
type KubeadmApiVersion = (typeof SUPPORTED)[number];

interface KubeadmExtraVolume {
  name: string;
  /** Host directory, mounted at the same path. */
  dir: string;
  pathType: 'Directory' | 'DirectoryOrCreate';
  readOnly?: boolean;
}

export interface KubeadmConfigPatchOptions {
  /** The value of --encryption-provider-config (as the apiserver sees it). */
  configPath: string;
  /** The config's directory, mounted at the same path; with volumeName. */
  mountDir?: string;
  /** The manifest patch's volume for mountDir; omitted when the config lies under kubeadm's own mounts. */
  volumeName?: string;
  /** Further mounts (a KMS socket directory). */
  extraVolumes?: KubeadmExtraVolume[];
  reloadFlag?: boolean;
  /** Take the flag(s) and these volumes out again (for `disable`). */
  remove?: boolean;
}

interface KubeadmConfigPlan {
  changed: boolean;
  newText: string;
  apiVersion: KubeadmApiVersion;
  actions: string[];
}

const kubeadmError = (message: string, hint: string) => new CliError(message, { exitCode: ExitCode.Usage, hint });

/**
 * The mapping or list at `path` in block style (an empty `{}`/`[]` would otherwise stay flow),
 * created when missing and `create` is set.
 */
function blockCollection<T extends YAMLMap | YAMLSeq>(doc: Document.Parsed, path: string[], make: () => T, create = true): T | undefined {
  const node = doc.getIn(path, true);
  const fresh = make();
  if ((isMap(node) && isMap(fresh)) || (isSeq(node) && isSeq(fresh))) {
    if (node.items.length === 0) node.flow = false;
    return node as T;
  }
  if (node !== undefined && !(isScalar(node) && node.value === null)) {
    throw kubeadmError(
      `ClusterConfiguration ${path.join('.')} is not a ${isMap(fresh) ? 'mapping' : 'list'}`,
      'fix the kubeadm-config ConfigMap, or skip it with --no-kubeadm-config',
    );
  }
  if (!create) return undefined;
  doc.setIn(path, fresh);
  return fresh;
}
const blockMap = (doc: Document.Parsed, path: string[]) => blockCollection(doc, path, () => new YAMLMap())!;
const blockSeq = (doc: Document.Parsed, path: string[], create: boolean) => blockCollection(doc, path, () => new YAMLSeq(), create);

const field = (item: unknown, key: string): unknown => (isMap(item) ? item.get(key) : undefined);

export function planKubeadmConfigPatch(clusterConfigurationYaml: string, opts: KubeadmConfigPatchOptions): KubeadmConfigPlan {
  const doc = parseDocument(clusterConfigurationYaml);
  const err = doc.errors[0];
  if (err) {
    throw kubeadmError(
      `kubeadm-config ClusterConfiguration does not parse${err.linePos ? ` at line ${err.linePos[0].line}` : ''}`,
      'fix the kubeadm-config ConfigMap, or skip it with --no-kubeadm-config',
    );
  }
  const apiVersion = doc.get('apiVersion');
  const kind = doc.get('kind');
  if (kind !== 'ClusterConfiguration') {
    throw kubeadmError(`kubeadm-config holds kind ${String(kind ?? 'none')}, not ClusterConfiguration`, 'skip it with --no-kubeadm-config');
  }
  if (!SUPPORTED.includes(apiVersion as KubeadmApiVersion)) {
    throw kubeadmError(
      `kubeadm-config ClusterConfiguration has apiVersion ${String(apiVersion ?? 'none')}; k8s-encrypt knows ${SUPPORTED.join(' and ')}`,
      'record the flag and volume there by hand (kubeadm upgrade regenerates the manifest from it), or skip it with --no-kubeadm-config',
    );
  }
  const v = apiVersion as KubeadmApiVersion;
  const actions: string[] = [];

  const args: Array<[string, string]> = [[CONFIG_FLAG, opts.configPath]];
  if (opts.reloadFlag || opts.remove) args.push([RELOAD_FLAG, 'true']);
  const volumes: KubeadmExtraVolume[] = [
    ...(opts.volumeName && opts.mountDir
      ? [{ name: opts.volumeName, dir: opts.mountDir, pathType: 'DirectoryOrCreate' as const, readOnly: true }]
      : []),
    ...(opts.extraVolumes ?? []),
  ];

  if (v === 'kubeadm.k8s.io/v1beta3') {
    const path = ['apiServer', 'extraArgs'];
    for (const [name, value] of args) {
      const current = doc.getIn([...path, name]);
      if (opts.remove) {
        if (current !== undefined) {
          doc.deleteIn([...path, name]);
          actions.push(`remove apiServer.extraArgs.${name}`);
        }
      } else if (current !== value) {
        blockMap(doc, ['apiServer']);
        blockMap(doc, path).set(name, value);
        actions.push(`set apiServer.extraArgs.${name}: ${value}`);
      }
    }
    const m = doc.getIn(path, true);
    if (opts.remove && isMap(m) && m.items.length === 0) doc.deleteIn(path);
  } else {
    const path = ['apiServer', 'extraArgs'];
    for (const [name, value] of args) {
      const seq = blockSeq(doc, path, !opts.remove);
      if (!seq) continue;
      const idx = seq.items.map((it, i) => (field(it, 'name') === name ? i : -1)).filter((i) => i >= 0);
      if (opts.remove) {
        for (const i of idx.reverse()) seq.items.splice(i, 1);
        if (idx.length) actions.push(`remove apiServer.extraArgs ${name}`);
        continue;
      }
      // Duplicates are allowed in v1beta4 and the last one wins on the command line: keep one.
      const last = idx[idx.length - 1];
      if (last !== undefined && field(seq.items[last], 'value') === value && idx.length === 1) continue;
      for (const i of idx.reverse()) seq.items.splice(i, 1);
      seq.items.push(doc.createNode({ name, value }));
      actions.push(`set apiServer.extraArgs ${name}=${value}`);
    }
    const s = doc.getIn(path, true);
    if (opts.remove && isSeq(s) && s.items.length === 0) doc.deleteIn(path);
  }

  const volPath = ['apiServer', 'extraVolumes'];
  for (const vol of volumes) {
    const want = { name: vol.name, hostPath: vol.dir, mountPath: vol.dir, readOnly: vol.readOnly ?? true, pathType: vol.pathType };
    const seq = blockSeq(doc, volPath, !opts.remove);
    if (!seq) continue;
    const i = seq.items.findIndex((it) => field(it, 'name') === vol.name);
    const same =
      i >= 0 &&
      field(seq.items[i], 'hostPath') === want.hostPath &&
      field(seq.items[i], 'mountPath') === want.mountPath &&
      Boolean(field(seq.items[i], 'readOnly')) === want.readOnly &&
      field(seq.items[i], 'pathType') === want.pathType;
    if (opts.remove) {
      // Only our own entry: same name and the same directory.
      if (i >= 0 && field(seq.items[i], 'hostPath') === want.hostPath) {
        seq.items.splice(i, 1);
        actions.push(`remove apiServer.extraVolumes ${vol.name}`);
      }
      continue;
    }
    if (same) continue;
    const other = seq.items.findIndex((it) => field(it, 'mountPath') === want.mountPath && field(it, 'name') !== vol.name);
    if (other >= 0) {
      throw new CliError(`kubeadm-config already mounts ${String(field(seq.items[other], 'name'))} at ${want.mountPath}`, {
        exitCode: ExitCode.Refused,
        hint: 'two extraVolumes at one mountPath make kubeadm upgrade fail; reconcile them by hand, or skip with --no-kubeadm-config',
      });
    }
    if (i >= 0) seq.items[i] = doc.createNode(want);
    else seq.items.push(doc.createNode(want));
    actions.push(`${i >= 0 ? 'update' : 'add'} apiServer.extraVolumes ${vol.name}: ${vol.dir}`);
  }
  const vs = doc.getIn(volPath, true);
  if (opts.remove && isSeq(vs) && vs.items.length === 0) doc.deleteIn(volPath);

  if (actions.length === 0) return { changed: false, newText: clusterConfigurationYaml, apiVersion: v, actions };
  return { changed: true, newText: doc.toString({ lineWidth: 0 }), apiVersion: v, actions };
}

/** kube-system/kubeadm-config as it was read: its ClusterConfiguration text and resourceVersion. */
export type KubeadmConfigRead = { found: true; text: string; resourceVersion: string } | { found: false; reason: string };

/**
 * A stage's kubeadm-config change as data: planned from the ClusterConfiguration as read (its
 * sha256 and the ConfigMap's resourceVersion), with the exact text written. The executor writes
 * `newText` only while the ConfigMap still is what was read, with that resourceVersion (so a write
 * in between is a 409, never a lost update); otherwise it plans again and says so. Paths and flags
 * only: no key.
 */
export interface KubeadmChange {
  status: 'update' | 'unchanged' | 'skipped';
  /** Why it is skipped (no ConfigMap, no ClusterConfiguration key). */
  reason?: string;
  /** sha256 of the ClusterConfiguration planned from; null: none was there. */
  inputSha256: string | null;
  /** sha256 of the ClusterConfiguration written (the input's when nothing is written). */
  outputSha256: string | null;
  /** The ConfigMap's resourceVersion when it was read: the write is conditional on it. */
  resourceVersion: string | null;
  apiVersion?: string;
  /** The ClusterConfiguration text written (status update), else null. */
  newText: string | null;
  diff: string;
  actions: string[];
  /** What it records or forgets: to plan it again from the ConfigMap as it is. */
  options: KubeadmConfigPatchOptions;
}

const KUBEADM_DIFF_PATH = `${KUBEADM_CONFIGMAP.namespace}/${KUBEADM_CONFIGMAP.name}/${KUBEADM_CONFIGMAP.key}`;

/** The change recording (or, with `remove`, forgetting) `options` in the ConfigMap as read. Pure. */
export function planKubeadmChange(read: KubeadmConfigRead, options: KubeadmConfigPatchOptions): KubeadmChange {
  if (!read.found) return { status: 'skipped', reason: read.reason, inputSha256: null, outputSha256: null, resourceVersion: null, newText: null, diff: '', actions: [], options };
  const p = planKubeadmConfigPatch(read.text, options);
  const inputSha256 = sha256Hex(read.text);
  return {
    status: p.changed ? 'update' : 'unchanged',
    inputSha256,
    outputSha256: p.changed ? sha256Hex(p.newText) : inputSha256,
    resourceVersion: read.resourceVersion,
    apiVersion: p.apiVersion,
    newText: p.changed ? p.newText : null,
    diff: p.changed ? unifiedDiff(read.text, p.newText, KUBEADM_DIFF_PATH) : '',
    actions: p.actions,
    options,
  };
}

/** The change as --dry-run and --json show it (everything but the text, which the diff shows). */
export function printableKubeadmChange(c: KubeadmChange): Record<string, unknown> {
  const { newText: _text, options: _options, ...shown } = c;
  return shown;
}

/** What a dry run says of the change: whether it writes, tied to the sha256 it was planned from, and the diff. */
export function kubeadmLine(c: KubeadmChange): string {
  if (c.status === 'skipped') return `skipped (${c.reason})`;
  const from = `ClusterConfiguration sha256 ${c.inputSha256?.slice(0, 12)}…, resourceVersion ${c.resourceVersion}`;
  if (c.status === 'unchanged') return `unchanged (${from})`;
  return `would update (${from} -> sha256 ${c.outputSha256?.slice(0, 12)}…): ${c.actions.join('; ')}\n${c.diff.trimEnd()}`;
}
