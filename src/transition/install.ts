import { stat } from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import { sha256Hex } from '../config/parse';
import { applyKubeadmChange } from '../cluster/kubeadm-config';
import { recordStage } from '../cluster/nodes';
import { CANARY_PREFIX, proveEncryption, provePlaintext, removeLeftoverCanaries } from '../cluster/proof';
import { mirrorPodHash, waitForApiserver } from '../cluster/wait';
import { writeManifestPlan } from '../manifest/apply';
import type { KubeadmChange, KubeadmConfigPatchOptions } from '../manifest/kubeadm-config';
import { readApiserverFlags } from '../manifest/manifest';
import { CONFIG_FLAG } from '../manifest/patch';
import { backupConfig, newestBackupSince } from '../state/backups';
import { fileExists, readText, SECRET_FILE_MODE, writeFileAtomic } from '../state/atomic';
import { CliError, ExitCode } from '../ui/errors';
import { checkAbort, progressOf, type StageOutcome, type StepJournal, type TransitionDeps } from './engine';
import { checkPlanned, planInstallChange, replannedLine, type ManifestChange } from './manifest-change';
import type { StageConfig } from './plan';
import { restorePrevious } from './rollback';
import { once, type StepOutput } from './steps';

/**
 * Installing one config on this node: backup, write, the planned manifest change (restart or
 * reload), wait, prove, record. Idempotent by sha256: a file that already holds the planned bytes
 * is not written again, a manifest that already is what the change makes is not written again
 * (the wait then dates the change by the manifest's mtime). A wait that fails puts the previous
 * config back.
 */

interface InstallOptions {
  stage: string;
  config: StageConfig;
  /** The manifest change planned with the config (from the manifest as read then). Without one,
   * or when the manifest changed since, it is planned here from the manifest as it is. */
  manifest?: ManifestChange;
  /** The kubeadm-config change planned with it (enable), applied while the ConfigMap is as read. */
  kubeadm?: KubeadmChange;
  /** Record the stage for this node in the cluster (default true). */
  record?: boolean;
  /** The stage may turn encryption on: a manifest without the flag gets it and the mount (and
   * kubeadm-config records them after the proof) instead of being refused. */
  enable?: boolean;
}

export async function installConfig(deps: TransitionDeps, j: StepJournal, o: InstallOptions): Promise<StageOutcome> {
  const s = o.stage;
  const cfg = o.config;
  const begun = await once(j, 'begin', `${s}:begin`, async () => {
    const manifest = await readText(deps.manifestPath, 'read manifest');
    // Whether this stage turns encryption on (the flag comes with it): decided once, before the
    // config is written, so a re-run after kill -9 still knows.
    const flag = readApiserverFlags(manifest, deps.manifestPath).flags.get(CONFIG_FLAG) !== undefined;
    if (!flag && !o.enable) {
      throw new CliError(`${deps.manifestPath} has no --${CONFIG_FLAG}: encryption at rest is not on here`, {
        exitCode: ExitCode.Refused,
        hint: 'turn it on with "k8s-encrypt init" (or "init --from-config FILE" on further control planes)',
      });
    }
    const exists = await fileExists(deps.configPath);
    const current = exists ? sha256Hex(await readText(deps.configPath, 'read config')) : null;
    const at = deps.now().toISOString();
    if (current === cfg.sha256) return { from: current, backup: null, flag, at };
    const backup = exists ? await backupConfig(deps) : null;
    return { from: current, backup, flag, at };
  });
  checkAbort(deps);
  const written = await once(j, 'write', `${s}:write`, async () => {
    const at = deps.now();
    const exists = await fileExists(deps.configPath);
    if (exists && sha256Hex(await readText(deps.configPath, 'read config')) === cfg.sha256) {
      return { at: (await stat(deps.configPath)).mtime.toISOString(), changed: false };
    }
    await writeFileAtomic(deps.configPath, cfg.text, { mode: SECRET_FILE_MODE });
    deps.out.step(`wrote ${deps.configPath} (0600, sha256 ${cfg.sha256.slice(0, 12)}…) for stage ${s}`);
    return { at: at.toISOString(), changed: true };
  });
  checkAbort(deps);
  const applied = await once(j, 'apply', `${s}:apply`, () => applyManifest(deps, o, begun, written));
  checkAbort(deps);
  const waited = await once(j, 'wait', `${s}:wait`, async () => {
    const mode = applied.mode;
    deps.out.step(`waiting for this node's apiserver to ${mode === 'reload' ? 'reload' : 'restart with'} the ${s} config (up to ${Math.round(deps.timeoutMs / 1000)} s)`);
    try {
      const r = await waitForApiserver(
        { api: deps.api, now: deps.now, ...(deps.signal ? { signal: deps.signal } : {}), ...(deps.sleep ? { sleep: deps.sleep } : {}), onProgress: progressOf(deps) },
        {
          since: new Date(applied.since),
          configSha256: cfg.sha256,
          mode,
          timeoutMs: deps.timeoutMs,
          nodeName: deps.nodeName,
          ...(applied.mirrorHashBefore ? { expectMirrorPodHashChange: applied.mirrorHashBefore } : {}),
        },
      );
      deps.out.success(`the apiserver runs the ${s} config (${r.evidence}: ${r.detail})`);
      return { evidence: r.evidence, detail: r.detail };
    } catch (err) {
      if (deps.signal?.aborted) throw err;
      if (!(err instanceof CliError) || err.exitCode !== ExitCode.Cluster) throw err;
      throw await restorePrevious(deps, j, s, err);
    }
  });
  checkAbort(deps);
  const proof = await once(j, 'prove', `${s}:prove`, async () => {
    for (const name of await removeLeftoverCanaries(deps.api, { now: deps.now() })) {
      deps.out.info(`deleted the canary kube-system/${name} an interrupted run left behind`);
    }
    return proveWrites(deps, cfg);
  });
  if (o.enable) {
    // kubeadm upgrade must keep the flag and mount: recorded once the apiserver is proven to run them.
    await once(j, 'kubeadmConfig', `${s}:kubeadm-config`, async () => {
      if (begun.flag !== false || !applied.kubeadm) return { status: 'skipped', reason: 'the flag was already there' };
      if (!deps.kubeadmConfig) return { status: 'skipped', reason: '--no-kubeadm-config' };
      return kubeadmConfigStep(deps, o.kubeadm, applied.kubeadm);
    });
  }
  if (o.record !== false) {
    await once(j, 'record', `${s}:record`, async () => {
      const where = await recordStage(deps.api, deps.nodeName, deps.hasNode, { stage: s, sha256: cfg.sha256 });
      deps.out.step(`recorded stage "${s}" (sha256 ${cfg.sha256.slice(0, 12)}…) for ${deps.nodeName} (${where})`);
      return { where };
    });
  }
  return { stage: s, evidence: `${waited.evidence}: ${waited.detail}`, proof: proof.detail };
}

/**
 * The manifest step: the planned change while the manifest still hashes as planned (otherwise
 * planned again from what is there, and said so), written with a backup.
 */
async function applyManifest(deps: TransitionDeps, o: InstallOptions, begun: StepOutput<'begin'>, written: StepOutput<'write'>): Promise<StepOutput<'apply'>> {
  const text = await readText(deps.manifestPath, 'read manifest');
  const turnOn = begun.flag === false;
  const { change, replanned, alreadyApplied } = checkPlanned(o.manifest, text, (t) => planInstallChange(t, { manifestPath: deps.manifestPath, configPath: deps.configPath, config: o.config, turnOn }));
  if (replanned) deps.out.info(replannedLine(deps.manifestPath, o.manifest!, change.inputSha256));
  const kubeadm = change.turnsOn && change.kubeadm ? { kubeadm: change.kubeadm } : {};
  if (change.mode === 'reload') return { mode: 'reload', since: written.at, mirrorHashBefore: null, backup: null, manifestSha256: change.inputSha256 };
  if (!change.changed) {
    // Written before an interruption: the change happened when the manifest was written; a turn-on
    // backup (what a rollback restores) is the newest one made since the stage began.
    const backup = turnOn ? await newestBackupSince(deps.backupDir, deps.manifestPath, begun.at) : null;
    if (alreadyApplied) deps.out.info(`${deps.manifestPath} already holds the planned change`);
    return { mode: 'restart', since: (await stat(deps.manifestPath)).mtime.toISOString(), mirrorHashBefore: null, backup, manifestSha256: change.outputSha256, ...kubeadm };
  }
  const mirrorHashBefore = (await mirrorPodHash(deps.api, deps.nodeName)) ?? null;
  const since = deps.now().toISOString();
  const w = await writeManifestPlan({ now: deps.now }, { manifest: deps.manifestPath, backupDir: deps.backupDir, manifestsDir: deps.manifestsDir }, text, {
    changed: true, newText: change.newText, diff: change.diff, actions: change.actions, notes: [], mounts: [],
  });
  deps.out.step(`${turnOn ? 'patched ' : ''}${deps.manifestPath}: ${change.actions.join('; ')}${turnOn ? '' : ': the kubelet restarts the apiserver'} (backup ${w.backup})`);
  return { mode: 'restart', since, mirrorHashBefore, backup: w.backup ?? null, manifestSha256: change.outputSha256, ...kubeadm };
}

/**
 * The kubeadm-config step: the planned change while the ConfigMap is what the plan read, else
 * planned again (said in one line). A manifest change planned again may mount other volumes: its
 * kubeadm-config change is then planned again too.
 */
export async function kubeadmConfigStep(deps: TransitionDeps, planned: KubeadmChange | undefined, options: KubeadmConfigPatchOptions): Promise<StepOutput<'kubeadmConfig'>> {
  const json = (v: KubeadmConfigPatchOptions): unknown => JSON.parse(JSON.stringify(v));
  const usable = planned && isDeepStrictEqual(json(planned.options), json(options)) ? planned : undefined;
  if (planned && !usable) deps.out.info('kube-system/kubeadm-config: the manifest change was planned again, and so is its kubeadm-config change');
  const r = await applyKubeadmChange(deps.api, usable, options, (line) => deps.out.info(line));
  if (r.status === 'skipped') deps.out.info(`kubeadm-config: skipped (${r.reason})`);
  else deps.out.step(`kube-system/kubeadm-config ${r.status === 'update' ? 'updated' : 'unchanged'}${r.actions.length ? `: ${r.actions.join('; ')}` : ''}`);
  return {
    status: r.status === 'update' ? 'updated' : r.status,
    ...(r.reason ? { reason: r.reason } : {}),
    ...(r.apiVersion ? { apiVersion: r.apiVersion } : {}),
    ...(r.outputSha256 ? { sha256: r.outputSha256 } : {}),
    replanned: r.replanned,
  };
}

/**
 * Canaries are named after this node and config: a re-run after kill -9 mid-proof removes its own
 * canary, however young (removeLeftoverCanaries spares young ones: they may be another node's).
 */
function canaryNameFor(deps: TransitionDeps, cfg: StageConfig): string {
  return `${CANARY_PREFIX}${sha256Hex(`${deps.nodeName}\0${cfg.sha256}`).slice(0, 10)}`;
}

/** A canary Secret must land in etcd the way the config writes (encrypted prefix, or plaintext). */
async function proveWrites(deps: TransitionDeps, cfg: StageConfig): Promise<StepOutput<'prove'>> {
  const proofDeps = { api: deps.api, openEtcd: deps.openEtcd, onProgress: (m: string) => deps.out.warn(m) };
  const where = { etcd: deps.etcd, name: canaryNameFor(deps, cfg), ...(deps.etcd.prefix ? { etcdKeyPrefix: deps.etcd.prefix } : {}) };
  const p = cfg.writePrefix
    ? await proveEncryption(proofDeps, { ...where, expectedPrefix: cfg.writePrefix })
    : await provePlaintext(proofDeps, { ...where, ...(deps.signal ? { signal: deps.signal } : {}) });
  deps.out.success(p.detail);
  return { method: p.method, weaker: p.weaker, observed: p.observed, detail: p.detail };
}

