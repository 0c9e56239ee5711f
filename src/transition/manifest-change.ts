import { dirname } from 'node:path/posix';
import { parseEncryptionConfig, sha256Hex } from '../config/parse';
import type { EncryptionConfiguration } from '../config/schema';
import type { KubeadmConfigPatchOptions } from '../manifest/kubeadm-config';
import { readApiserverFlags } from '../manifest/manifest';
import { CONFIG_FLAG, planManifestPatch, planManifestUnpatch, RELOAD_FLAG, unifiedDiff, type ManifestPlan } from '../manifest/patch';
import { planRestartAnnotation } from '../manifest/restart';
import type { StageConfig } from './plan';

/**
 * What installing one config (or disable's unpatch) does to the static pod manifest, planned as
 * data from the manifest text it was read as: the exact new text, the diff, reload or restart,
 * and what kubeadm-config must record. The executor writes `newText` only while the manifest still
 * hashes to `inputSha256`; otherwise it plans again from what is there and says so. Pure.
 */
export interface ManifestChange {
  /** sha256 of the manifest text this change was planned from. */
  inputSha256: string;
  /** sha256 of the manifest after the change (equal to the input when nothing is written). */
  outputSha256: string;
  /** reload: --encryption-provider-config-automatic-reload and no new mount (nothing written). */
  mode: 'restart' | 'reload';
  /** The manifest is written (with a backup). */
  changed: boolean;
  newText: string;
  diff: string;
  actions: string[];
  /** The flag and mount come with this change (encryption turns on here). */
  turnsOn: boolean;
  /** The flag and mount go (disable's prune). */
  turnsOff: boolean;
  /** What kubeadm-config records (turnsOn) or forgets (turnsOff). */
  kubeadm?: KubeadmConfigPatchOptions;
  notes: string[];
}

/** Host directories of the KMS plugins' unix sockets a config dials, once each. Pure. */
export function kmsSocketDirs(cfg: EncryptionConfiguration): string[] {
  const socks = cfg.resources.flatMap((r) => r.providers.flatMap((p) => (p.kms ? [p.kms.endpoint.replace(/^unix:\/\//, '')] : [])));
  return [...new Set(socks.map((p) => dirname(p)))];
}

/**
 * What kubeadm-config must record for a manifest patch: the flag as the apiserver sees it, the
 * config dir's volume (unless it lies under kubeadm's own mounts) and any KMS socket dir added. Pure.
 */
function kubeadmOptions(configPath: string, patch: ManifestPlan): KubeadmConfigPatchOptions {
  const configDir = configPath.slice(0, configPath.lastIndexOf('/')) || '/';
  const extra = patch.mounts.filter((m) => !m.existing && m.volumeName !== patch.volumeName && m.hostPath !== configDir);
  return {
    configPath: patch.configPathInPod ?? configPath,
    ...(patch.volumeName ? { mountDir: configDir, volumeName: patch.volumeName } : {}),
    ...(extra.length ? { extraVolumes: extra.map((m) => ({ name: m.volumeName, dir: m.hostPath, pathType: 'Directory' as const, readOnly: m.readOnly })) } : {}),
  };
}

interface InstallChangeOptions {
  manifestPath: string;
  /** The config's host path (the flag's value on a fresh manifest). */
  configPath: string;
  config: StageConfig;
  /** The stage turns encryption on (decided before the config write, from the manifest then):
   * the flag and mounts are patched in, never an annotation. Default: the manifest lacks the flag. */
  turnOn?: boolean;
}

/** The manifest change that makes this node's apiserver run `config`. Pure. */
export function planInstallChange(manifestText: string, o: InstallChangeOptions): ManifestChange {
  const inputSha256 = sha256Hex(manifestText);
  const flags = readApiserverFlags(manifestText, o.manifestPath).flags;
  // A KMS plugin's socket directory must be mounted before the apiserver can dial it.
  const socketDirs = kmsSocketDirs(parseEncryptionConfig(o.config.text, o.configPath));
  const extraMounts = socketDirs.map((dir) => ({ dir, type: 'Directory' as const }));
  const base = { inputSha256, turnsOff: false, notes: [] as string[] };
  if (o.turnOn ?? flags.get(CONFIG_FLAG) === undefined) {
    // The first install: the flag and the mounts in one write; the new flag restarts the pod by
    // itself, so no annotation.
    const p = planManifestPatch(manifestText, o.manifestPath, { configPath: o.configPath, extraMounts });
    return { ...base, outputSha256: sha256Hex(p.newText), mode: 'restart', changed: p.changed, newText: p.newText, diff: p.diff, actions: p.actions, turnsOn: true, kubeadm: kubeadmOptions(o.configPath, p), notes: p.notes };
  }
  const mounts = socketDirs.length ? planManifestPatch(manifestText, o.manifestPath, { configPath: flags.get(CONFIG_FLAG)!, extraMounts }) : undefined;
  if (flags.get(RELOAD_FLAG) === 'true' && !mounts?.changed) {
    return { ...base, outputSha256: inputSha256, mode: 'reload', changed: false, newText: manifestText, diff: '', actions: [], turnsOn: false };
  }
  // The kubelet restarts a static pod only when its manifest changes: the config's sha256 in an
  // annotation changes it exactly when the config changes.
  const annotated = planRestartAnnotation(mounts?.newText ?? manifestText, o.manifestPath, o.config.sha256);
  const changed = annotated.newText !== manifestText;
  const actions = changed ? [...(mounts?.actions ?? []), 'annotate the pod with the config sha256 (restarts it)'] : [];
  return { ...base, outputSha256: sha256Hex(annotated.newText), mode: 'restart', changed, newText: annotated.newText, diff: unifiedDiff(manifestText, annotated.newText, o.manifestPath), actions, turnsOn: false };
}

/** What kubeadm-config forgets when encryption goes: the flag, the config volume, the KMS socket volumes. Pure. */
export function unpatchKubeadmOptions(configPathInPod: string, configPath: string, volumeName: string | undefined, cfg: EncryptionConfiguration | undefined): KubeadmConfigPatchOptions {
  const kmsDirs = cfg ? kmsSocketDirs(cfg) : [];
  return {
    configPath: configPathInPod,
    mountDir: dirname(configPath),
    volumeName: volumeName ?? 'encryption-config',
    ...(kmsDirs.length ? { extraVolumes: kmsDirs.map((d, i) => ({ name: i === 0 ? 'kms-socket' : `kms-socket-${i + 1}`, dir: d, pathType: 'Directory' as const })) } : {}),
    remove: true,
  };
}

/** disable's last stage: the flag, the config mount and the KMS socket mounts out. Pure. */
export function planUnpatchChange(manifestText: string, manifestPath: string, configPath: string, cfg: EncryptionConfiguration | undefined): ManifestChange {
  const inPod = readApiserverFlags(manifestText, manifestPath).flags.get(CONFIG_FLAG) ?? configPath;
  const kmsDirs = cfg ? kmsSocketDirs(cfg) : [];
  const p = planManifestUnpatch(manifestText, manifestPath, { configPath: inPod, extraMountDirs: kmsDirs });
  return {
    inputSha256: sha256Hex(manifestText),
    outputSha256: sha256Hex(p.newText),
    mode: 'restart',
    changed: p.changed,
    newText: p.newText,
    diff: p.diff,
    actions: p.actions,
    turnsOn: false,
    turnsOff: true,
    kubeadm: unpatchKubeadmOptions(inPod, configPath, p.volumeName, cfg),
    notes: p.notes,
  };
}


/**
 * The planned change if the manifest is still what it was planned from; if it already is what
 * the change makes (written before an interruption), nothing to write; otherwise `replan`'s
 * answer, flagged so the executor can say so.
 */
export function checkPlanned(planned: ManifestChange | undefined, text: string, replan: (text: string) => ManifestChange): { change: ManifestChange; replanned: boolean; alreadyApplied: boolean } {
  const sha = sha256Hex(text);
  if (planned && sha === planned.inputSha256) return { change: planned, replanned: false, alreadyApplied: false };
  if (planned && planned.changed && sha === planned.outputSha256) return { change: { ...planned, inputSha256: sha, changed: false, newText: text, diff: '' }, replanned: false, alreadyApplied: true };
  return { change: replan(text), replanned: planned !== undefined, alreadyApplied: false };
}

/** What a run says when `planned` met a manifest that changed since (now hashing `nowSha256`). */
export function replannedLine(path: string, planned: ManifestChange, nowSha256: string): string {
  if (planned.turnsOff) return `${path} changed since the plan: the unpatch is planned again from the file as it is`;
  return `${path} changed since the plan (sha256 ${planned.inputSha256.slice(0, 12)}… is now ${nowSha256.slice(0, 12)}…): its change is planned again from the file as it is`;
}

/** One line (and the diff) for a dry run: what the manifest step will do. Pure. */
export function manifestLine(c: ManifestChange, path: string): string {
  if (c.mode === 'reload') return `${path}: unchanged (the apiserver reloads the file by itself)`;
  if (!c.changed) return `${path}: unchanged`;
  return `${path}: ${c.actions.join('; ')}\n${c.diff.trimEnd()}`;
}
