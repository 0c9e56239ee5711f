import { randomBytes } from 'node:crypto';
import { stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { ApiClient } from '../cluster/api';
import { updateKubeadmConfig } from '../cluster/kubeadm-config';
import { convergence, notConvergedError, recordStage, stagesOfAll, type Convergence } from '../cluster/nodes';
import { describeError } from '../cluster/errors';
import { CANARY_PREFIX, MANAGED_BY, observedPrefix, proveEncryption, removeLeftoverCanaries, TRANSFORMATION_METRIC } from '../cluster/proof';
import type { RewriteSummary } from '../cluster/rewrite';
import { mirrorPodHash, parseMetrics, waitForApiserver, waitForReady, WaitTimeoutError, type MetricSample } from '../cluster/wait';
import { parseEncryptionConfig, sha256Hex } from '../config/parse';
import type { EncryptionConfiguration } from '../config/schema';
import type { EtcdConnection, EtcdReader } from '../etcd/client';
import { planRestartAnnotation } from '../init/restart';
import { writeManifestPlan } from '../manifest/apply';
import { readApiserverFlags } from '../manifest/manifest';
import { CONFIG_FLAG, planManifestPatch, planManifestUnpatch, RELOAD_FLAG, unifiedDiff } from '../manifest/patch';
import type { KubeadmConfigPatchOptions } from '../manifest/kubeadm-config';
import { listBackups } from '../state/backups';
import { backupFile, fileExists, readText, SECRET_FILE_MODE, writeFileAtomic } from '../state/atomic';
import type { Journal, JsonObject } from '../state/journal';
import { CliError, ExitCode } from '../ui/errors';
import { kubeadmOptions, stepsOf, unreadableLabels, type PlannedStage, type StageConfig, type StageName, type TransitionPlan } from './plan';

/**
 * Applies a TransitionPlan stage by stage on this control plane. Every step is journaled before it
 * is considered done; the config write is the commit point, with a journal entry before (`begin`:
 * the backup) and after (`write`), so kill -9 anywhere leaves either the old or the new file and a
 * re-run that finds out which from the file's sha256. Everything outside the process is passed in.
 */

export interface TransitionReporter {
  step(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  success(msg: string): void;
  /** What a long wait currently sees (a spinner line on a terminal); default: info lines. */
  progress?(msg: string): void;
}

export interface TransitionDeps {
  /** A client for THIS node's apiserver. */
  api: ApiClient;
  now: () => Date;
  out: TransitionReporter;
  signal?: AbortSignal;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  manifestPath: string;
  manifestsDir: string;
  configPath: string;
  backupDir: string;
  /** Previous configs kept in backupDir (the oldest go first). */
  keepBackups: number;
  nodeName: string;
  hasNode: boolean;
  timeoutMs: number;
  force: boolean;
  kubeadmConfig: boolean;
  etcd: EtcdConnection;
  openEtcd: (conn: EtcdConnection) => Promise<EtcdReader>;
  /** Rewrites every object of the resources (the re-encrypt-all engine, resumable). */
  rewrite: (resources: string[]) => Promise<RewriteSummary>;
  /** The command the other control planes run, e.g. `k8s-encrypt rotate-key --from-config FILE`. */
  followCommand: string;
}

/** What the executor needs of a journal: the persistent one, or an in-memory one for a follower. */
export type StepJournal = Pick<Journal<JsonObject>, 'done' | 'output' | 'complete' | 'forget' | 'setStatus' | 'status' | 'message'>;

export interface StageOutcome {
  stage: StageName;
  evidence?: string;
  proof?: string;
  rewrite?: { rewritten: number; unchanged: number; deleted: number; failed: number };
  verified?: string;
}

export interface TransitionResult {
  state: 'done' | 'waiting' | 'stopped';
  /** The last stage this node completed. */
  stage: StageName | null;
  sha256: string | null;
  stages: StageOutcome[];
  lagging: { node: string; reports: string }[];
  next: string | null;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** A journal kept in memory: followers are idempotent by the file's sha256 instead. */
export class MemoryJournal implements StepJournal {
  private steps = new Map<string, JsonObject>();
  status: 'running' | 'waiting' | 'done' | 'rolled-back' = 'running';
  message: string | undefined;
  done(step: string): boolean {
    return this.steps.has(step);
  }
  output<T extends JsonObject = JsonObject>(step: string): T | undefined {
    return this.steps.get(step) as T | undefined;
  }
  async complete(step: string, output: JsonObject = {}): Promise<void> {
    this.steps.set(step, output);
  }
  async forget(steps: readonly string[]): Promise<void> {
    for (const s of steps) this.steps.delete(s);
  }
  async setStatus(status: MemoryJournal['status'], message?: string): Promise<void> {
    this.status = status;
    this.message = message;
  }
}

async function once(j: StepJournal, name: string, fn: () => Promise<JsonObject>): Promise<JsonObject> {
  if (j.done(name)) return j.output(name)!;
  const out = await fn();
  await j.complete(name, out);
  return out;
}

const checkAbort = (deps: TransitionDeps) => {
  if (deps.signal?.aborted) throw deps.signal.reason;
};

// ---------------------------------------------------------------------------------------------
// Backups with a retention limit.

/** Backs up the config (0600) and keeps only the newest `keep` copies of it. */
export async function backupConfig(deps: Pick<TransitionDeps, 'configPath' | 'backupDir' | 'now' | 'keepBackups'>): Promise<string> {
  const path = await backupFile(deps.configPath, deps.backupDir, deps.now());
  await pruneBackups(deps.backupDir, basename(deps.configPath), deps.keepBackups);
  return path;
}

export { listBackups };

export async function pruneBackups(backupDir: string, fileName: string, keep: number): Promise<string[]> {
  const all = await listBackups(backupDir, fileName);
  const gone = all.slice(Math.max(1, keep));
  for (const p of gone) await unlink(p).catch(() => {});
  return gone;
}

// ---------------------------------------------------------------------------------------------
// etcd: what is stored under which label.

export interface LabelCounts {
  resource: string;
  counts: Record<string, number>;
  /** A few objects per label, `ns/name`. */
  examples: Record<string, string[]>;
  writeLabel: string;
  stale: number;
}

export async function scanLabels(
  deps: Pick<TransitionDeps, 'etcd' | 'openEtcd' | 'signal'>,
  cfg: EncryptionConfiguration,
  resources: readonly string[],
): Promise<LabelCounts[]> {
  const [{ scanEncryptionState, etcdPrefixFor }, { transformersForResource }, { etcdError }] = await Promise.all([
    import('../etcd/scan'),
    import('../etcd/codec'),
    import('../etcd/client'),
  ]);
  if (resources.length === 0) return [];
  const reader = await deps.openEtcd(deps.etcd);
  try {
    const report = await scanEncryptionState(reader, {
      prefix: deps.etcd.prefix,
      resources: resources.map((r) => ({ resource: r, etcdPrefix: etcdPrefixFor(r, deps.etcd.prefix) })),
      transformersFor: (r) => transformersForResource(cfg, r),
      listLimit: 20,
      ...(deps.signal ? { signal: deps.signal } : {}),
    });
    return report.resources.map((r) => {
      const examples: Record<string, string[]> = {};
      for (const o of r.stale.items) (examples[o.label] ??= []).length < 5 && examples[o.label]!.push(o.namespace ? `${o.namespace}/${o.name}` : o.name);
      return { resource: r.resource, counts: r.counts, examples, writeLabel: r.writeLabel, stale: r.stale.count };
    });
  } catch (err) {
    throw etcdError(deps.etcd, 'scan', err);
  } finally {
    reader.close();
  }
}

/** What to do about objects a target config could not read, for callers that take --force. */
export const REWRITE_OR_FORCE_HINT = 'rewrite them first ("k8s-encrypt re-encrypt-all --verify", or re-run this command), or pass --force if they may be lost';

/**
 * The refusal to remove what etcd still holds objects under (unless `force`). The hint is the
 * caller's: only a command that has --force may suggest it.
 */
export function assertNothingUnder(
  scan: LabelCounts[],
  target: EncryptionConfiguration,
  what: string,
  force: boolean,
  out: TransitionReporter,
  hint: string = REWRITE_OR_FORCE_HINT,
): JsonObject {
  const bad = unreadableLabels(target, scan);
  if (bad.length === 0) return { unreadable: [] };
  const list = bad.map((b) => {
    const ex = scan.find((s) => s.resource === b.resource)?.examples[b.label] ?? [];
    return `${b.count} ${b.resource} under ${b.label}${ex.length ? ` (e.g. ${ex.join(', ')})` : ''}`;
  });
  if (force) {
    out.warn(`--force: ${what} although etcd still holds ${list.join('; ')}: those objects become unreadable`);
    return { unreadable: bad as unknown as JsonObject[], forced: true };
  }
  throw new CliError(`refusing to ${what}: etcd still holds ${list.join('; ')}`, {
    exitCode: ExitCode.Refused,
    hint,
    details: { unreadable: bad },
  });
}

/** Host directories of the KMS plugins' unix sockets a config dials, once each. */
export function kmsSocketDirs(cfg: EncryptionConfiguration): string[] {
  const socks = cfg.resources.flatMap((r) => r.providers.flatMap((p) => (p.kms ? [p.kms.endpoint.replace(/^unix:\/\//, '')] : [])));
  return [...new Set(socks.map((p) => dirname(p)))];
}

// ---------------------------------------------------------------------------------------------
// Installing one config on this node: backup, write, restart (or reload), wait, prove, record.

export interface InstallOptions {
  stage: StageName | string;
  config: StageConfig;
  /** Record the stage for this node in the cluster (default true). */
  record?: boolean;
  /** The stage may turn encryption on: a manifest without the flag gets it and the mount (and
   * kubeadm-config records them after the proof) instead of being refused. */
  enable?: boolean;
}

/**
 * The first install: the flag and a read-only mount of the config dir (and any KMS socket dir), in
 * one manifest write; no restart annotation (the new flag restarts the pod by itself).
 */
async function turnOn(deps: TransitionDeps, text: string, socketDirs: string[], begunAt: string | undefined): Promise<JsonObject> {
  const plan = planManifestPatch(text, deps.manifestPath, { configPath: deps.configPath, extraMounts: socketDirs.map((dir) => ({ dir, type: 'Directory' as const })) });
  const kubeadm = kubeadmOptions(deps.configPath, plan) as unknown as JsonObject;
  if (!plan.changed) {
    // Patched before an interruption: the change happened when the manifest was written, and its
    // backup (what a rollback restores) is the newest one made since the stage began.
    const backup = begunAt ? await newestBackupSince(deps.backupDir, deps.manifestPath, begunAt) : null;
    return { mode: 'restart', since: (await stat(deps.manifestPath)).mtime.toISOString(), mirrorHashBefore: null, backup, kubeadm };
  }
  const mirrorHashBefore = (await mirrorPodHash(deps.api, deps.nodeName)) ?? null;
  const since = deps.now().toISOString();
  const w = await writeManifestPlan({ now: deps.now }, { manifest: deps.manifestPath, backupDir: deps.backupDir, manifestsDir: deps.manifestsDir }, text, plan);
  deps.out.step(`patched ${deps.manifestPath}: ${plan.actions.join('; ')} (backup ${w.backup})`);
  return { mode: 'restart', since, mirrorHashBefore, backup: w.backup ?? null, kubeadm };
}

async function newestBackupSince(backupDir: string, file: string, since: string): Promise<string | null> {
  const newest = (await listBackups(backupDir, basename(file)))[0];
  // Backup names carry whole seconds: compare at that precision.
  return newest && (await stat(newest)).mtimeMs >= Math.floor(Date.parse(since) / 1000) * 1000 ? newest : null;
}

const progressOf = (deps: TransitionDeps) => (m: string) => (deps.out.progress ? deps.out.progress(m) : deps.out.info(`  … ${m}`));

/**
 * The per-node half of a stage. Idempotent by sha256: a file that already holds the planned bytes
 * is not written again, an annotation already there is not changed (the wait then dates the
 * change by the manifest's mtime). A wait that fails puts the previous config back.
 */
export async function installConfig(deps: TransitionDeps, j: StepJournal, o: InstallOptions): Promise<StageOutcome> {
  const s = o.stage;
  const cfg = o.config;
  const begun = await once(j, `${s}:begin`, async () => {
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
  const written = await once(j, `${s}:write`, async () => {
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
  const applied = await once(j, `${s}:apply`, async () => {
    const text = await readText(deps.manifestPath, 'read manifest');
    const flags = readApiserverFlags(text, deps.manifestPath).flags;
    // A KMS plugin's socket directory must be mounted before the apiserver can dial it.
    const socketDirs = kmsSocketDirs(parseEncryptionConfig(cfg.text, deps.configPath));
    if (begun.flag === false) return turnOn(deps, text, socketDirs, str(begun.at));
    const mounts = socketDirs.length
      ? planManifestPatch(text, deps.manifestPath, { configPath: flags.get(CONFIG_FLAG)!, extraMounts: socketDirs.map((dir) => ({ dir, type: 'Directory' as const })) })
      : undefined;
    if (flags.get(RELOAD_FLAG) === 'true' && !mounts?.changed) {
      return { mode: 'reload', since: str(written.at)!, mirrorHashBefore: null, backup: null };
    }
    const annotated = planRestartAnnotation(mounts?.newText ?? text, deps.manifestPath, cfg.sha256);
    const plan = { ...annotated, changed: annotated.newText !== text, diff: unifiedDiff(text, annotated.newText, deps.manifestPath) };
    if (!plan.changed) {
      // Annotated before an interruption: the change happened when the manifest was written.
      return { mode: 'restart', since: (await stat(deps.manifestPath)).mtime.toISOString(), mirrorHashBefore: null, backup: null };
    }
    const mirrorHashBefore = (await mirrorPodHash(deps.api, deps.nodeName)) ?? null;
    const since = deps.now().toISOString();
    const w = await writeManifestPlan(
      { now: deps.now },
      { manifest: deps.manifestPath, backupDir: deps.backupDir, manifestsDir: deps.manifestsDir },
      text,
      { changed: true, newText: plan.newText, diff: plan.diff, actions: [...(mounts?.actions ?? []), 'annotate the pod with the config sha256 (restarts it)'], notes: [], mounts: [] },
    );
    deps.out.step(`${deps.manifestPath}: ${[...(mounts?.actions ?? []), 'annotated with the config sha256'].join('; ')}: the kubelet restarts the apiserver`);
    return { mode: 'restart', since, mirrorHashBefore, backup: w.backup ?? null };
  });
  checkAbort(deps);
  const waited = await once(j, `${s}:wait`, async () => {
    const mode = applied.mode === 'reload' ? 'reload' : 'restart';
    deps.out.step(`waiting for this node's apiserver to ${mode === 'reload' ? 'reload' : 'restart with'} the ${s} config (up to ${Math.round(deps.timeoutMs / 1000)} s)`);
    try {
      const r = await waitForApiserver(
        { api: deps.api, now: deps.now, ...(deps.signal ? { signal: deps.signal } : {}), ...(deps.sleep ? { sleep: deps.sleep } : {}), onProgress: progressOf(deps) },
        {
          since: new Date(str(applied.since)!),
          configSha256: cfg.sha256,
          mode,
          timeoutMs: deps.timeoutMs,
          nodeName: deps.nodeName,
          ...(str(applied.mirrorHashBefore) ? { expectMirrorPodHashChange: str(applied.mirrorHashBefore)! } : {}),
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
  const proof = await once(j, `${s}:prove`, async () => {
    for (const name of await removeLeftoverCanaries(deps.api, { now: deps.now() })) {
      deps.out.info(`deleted the canary kube-system/${name} an interrupted run left behind`);
    }
    return proveWrites(deps, cfg);
  });
  if (o.enable) {
    // kubeadm upgrade must keep the flag and mount: recorded once the apiserver is proven to run them.
    await once(j, `${s}:kubeadm-config`, async () => {
      if (begun.flag !== false) return { status: 'skipped', reason: 'the flag was already there' };
      if (!deps.kubeadmConfig) return { status: 'skipped', reason: '--no-kubeadm-config' };
      const r = await updateKubeadmConfig(deps.api, applied.kubeadm as unknown as KubeadmConfigPatchOptions);
      if (r.status === 'skipped') deps.out.info(`kubeadm-config: skipped (${r.reason})`);
      else deps.out.step(`kube-system/kubeadm-config ${r.status}${r.actions.length ? `: ${r.actions.join('; ')}` : ''}`);
      return { status: r.status, ...(r.reason ? { reason: r.reason } : {}), ...(r.apiVersion ? { apiVersion: r.apiVersion } : {}) };
    });
  }
  if (o.record !== false) {
    await once(j, `${s}:record`, async () => {
      const where = await recordStage(deps.api, deps.nodeName, deps.hasNode, { stage: String(s), sha256: cfg.sha256 });
      deps.out.step(`recorded stage "${s}" (sha256 ${cfg.sha256.slice(0, 12)}…) for ${deps.nodeName} (${where})`);
      return { where };
    });
  }
  return { stage: s as StageName, evidence: `${String(waited.evidence)}: ${String(waited.detail)}`, proof: String(proof.detail) };
}

/**
 * Canaries are named after this node and config: a re-run after kill -9 mid-proof removes its own
 * canary, however young (removeLeftoverCanaries spares young ones: they may be another node's).
 */
function canaryNameFor(deps: TransitionDeps, cfg: StageConfig): string {
  return `${CANARY_PREFIX}${sha256Hex(`${deps.nodeName}\0${cfg.sha256}`).slice(0, 10)}`;
}

/** A canary Secret must land in etcd the way the config writes (encrypted prefix, or plaintext). */
async function proveWrites(deps: TransitionDeps, cfg: StageConfig): Promise<JsonObject> {
  if (!cfg.writePrefix) return provePlaintext(deps, cfg);
  const p = await proveEncryption(
    { api: deps.api, openEtcd: deps.openEtcd, onProgress: (m) => deps.out.warn(m) },
    { expectedPrefix: cfg.writePrefix, etcd: deps.etcd, name: canaryNameFor(deps, cfg), ...(deps.etcd.prefix ? { etcdKeyPrefix: deps.etcd.prefix } : {}) },
  );
  deps.out.success(p.detail);
  return { method: p.method, weaker: p.weaker, observed: p.observed, detail: p.detail };
}

/** to_storage transformations the apiserver counted: under `k8s:enc:` prefixes, and under any other (identity). */
export function toStorageCounts(samples: readonly MetricSample[]): { encrypted: number; identity: number } {
  const counts = { encrypted: 0, identity: 0 };
  for (const s of samples) {
    if (s.name !== TRANSFORMATION_METRIC) continue;
    if (s.labels.transformation_type && s.labels.transformation_type !== 'to_storage') continue;
    if (s.labels.status && s.labels.status !== 'OK') continue;
    // Upstream labels identity with its empty prefix (transformer_prefix="").
    if ((s.labels.transformer_prefix ?? '').startsWith('k8s:enc:')) counts.encrypted += s.value;
    else counts.identity += s.value;
  }
  return counts;
}

/**
 * The weaker proof of plaintext writes, from the counts before and after the canary write: the
 * identity transformer counted a write and no encrypting one did. Every stage that writes
 * plaintext puts identity first for every resource it covers, so any encrypted write here means
 * this apiserver does not run that config; an apiserver without any config counts nothing.
 */
export function plaintextByMetrics(before: { encrypted: number; identity: number }, after: { encrypted: number; identity: number }): 'plaintext' | 'encrypted' | 'unproven' {
  if (after.encrypted > before.encrypted) return 'encrypted';
  return after.identity > before.identity ? 'plaintext' : 'unproven';
}

/**
 * identity writes: a canary must be stored without any `k8s:enc:` prefix. When etcd cannot be
 * read, the apiserver's transformation counts stand in (weaker, and said so): the canary write
 * must be counted under identity and nothing under an encrypting prefix.
 */
async function provePlaintext(deps: TransitionDeps, cfg: StageConfig): Promise<JsonObject> {
  const ns = 'kube-system';
  const name = canaryNameFor(deps, cfg);
  await deps.api.delete(`/api/v1/namespaces/${ns}/secrets/${name}`).catch(() => undefined);
  const key = `${(deps.etcd.prefix ?? '/registry').replace(/\/+$/, '')}/secrets/${ns}/${name}`;
  const counts = () => deps.api.getText('/metrics').then((t) => toStorageCounts(parseMetrics(t)), () => undefined);
  const before = await counts();
  await deps.api.post(`/api/v1/namespaces/${ns}/secrets`, {
    apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace: ns, labels: { ...MANAGED_BY } }, data: { canary: randomBytes(16).toString('base64') },
  });
  try {
    let raw: Uint8Array | undefined;
    let etcdProblem: string | undefined;
    try {
      const reader = await deps.openEtcd(deps.etcd);
      try {
        raw = await reader.get(key);
      } finally {
        reader.close();
      }
    } catch (err) {
      if (deps.signal?.aborted) throw err;
      etcdProblem = `etcd could not be read: ${err instanceof CliError ? err.message : describeError(err)}`;
    }
    if (etcdProblem === undefined) {
      const observed = raw ? observedPrefix(raw) : 'missing';
      if (!observed.startsWith('plaintext')) {
        throw new CliError(`a Secret written now is stored as "${observed}", not as plaintext`, {
          exitCode: ExitCode.Verification,
          hint: 'the apiserver does not run the identity-first config: check "k8s-encrypt status"',
        });
      }
      const detail = `canary ${ns}/${name} is stored in etcd as ${observed}`;
      deps.out.success(detail);
      return { method: 'etcd', weaker: false, observed, detail };
    }

    deps.out.warn(`${etcdProblem}; falling back to the apiserver's metrics (weaker evidence)`);
    const after = await counts();
    const verdict = before && after ? plaintextByMetrics(before, after) : 'unproven';
    if (verdict === 'plaintext') {
      const detail = `${etcdProblem}; ${TRANSFORMATION_METRIC} counted the canary ${ns}/${name} under identity (${before!.identity} -> ${after!.identity}) and no encrypted write (weaker: the apiserver's count, not etcd's bytes)`;
      deps.out.success(detail);
      return { method: 'metrics', weaker: true, observed: 'plaintext (metrics)', detail };
    }
    throw new CliError(
      verdict === 'encrypted'
        ? `${etcdProblem}, and the apiserver's metrics count an encrypted write with the canary: new writes are not plaintext`
        : `plaintext writes could not be proven: ${etcdProblem}, and the apiserver's metrics ${before && after ? 'count no identity write with the canary' : 'could not be read'}`,
      {
        exitCode: ExitCode.Verification,
        hint: verdict === 'encrypted'
          ? 'the apiserver does not run the identity-first config: check "k8s-encrypt status"'
          : 'check the etcd client certificates named by the manifest (--etcd-certfile/--etcd-keyfile/--etcd-cafile), then re-run',
        details: { canary: `${ns}/${name}`, before: before ?? null, after: after ?? null },
      },
    );
  } finally {
    await deps.api.delete(`/api/v1/namespaces/${ns}/secrets/${name}`).catch(() => deps.out.warn(`could not delete the canary ${ns}/${name}; delete it by hand`));
  }
}

/**
 * The apiserver did not come up with the stage config: put back what the stage changed (the
 * manifest from its backup; the config from its backup, or removed and kept as a 0600 backup when
 * the stage created it), wait until the previous apiserver is healthy, and return the RolledBack
 * error. A stage that turned encryption on leaves the journal rolled back (a re-run starts over);
 * any later stage is forgotten, so the node stays at the previous stage and a re-run retries it.
 */
async function restorePrevious(deps: TransitionDeps, j: StepJournal, s: string, cause: CliError): Promise<CliError> {
  const begun = j.output(`${s}:begin`) ?? {};
  const applied = j.output(`${s}:apply`) ?? {};
  const restored: string[] = [];
  const problems: string[] = [];
  deps.out.warn(`${cause.message}: rolling back stage ${s}`);
  const restoredAt = deps.now();
  let restarts = false;

  const manifestBackup = str(applied.backup);
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

  const configBackup = str(begun.backup);
  let restoredSha: string | undefined;
  try {
    if (configBackup) {
      const text = await readText(configBackup, 'read backup');
      await writeFileAtomic(deps.configPath, text, { mode: SECRET_FILE_MODE });
      restored.push(`${deps.configPath} from ${configBackup}`);
      restoredSha = sha256Hex(text);
      // Annotated before an interruption (no manifest backup of this run): point the annotation back.
      if (!manifestBackup && applied.mode !== 'reload') {
        const manifest = await readText(deps.manifestPath, 'read manifest');
        const plan = planRestartAnnotation(manifest, deps.manifestPath, restoredSha);
        if (plan.changed) {
          await writeManifestPlan({ now: deps.now }, { manifest: deps.manifestPath, backupDir: deps.backupDir, manifestsDir: deps.manifestsDir }, manifest, {
            changed: true, newText: plan.newText, diff: plan.diff, actions: [], notes: [], mounts: [],
          });
          restarts = true;
        }
      }
    } else if (begun.from === null && (await fileExists(deps.configPath))) {
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
  if (begun.flag === false) {
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

// ---------------------------------------------------------------------------------------------
// Gates: a stage advances only when every control plane reports it.

async function gate(deps: TransitionDeps, j: StepJournal, step: string, stage: string, sha256: string, expected: number): Promise<Convergence | undefined> {
  if (j.done(step)) return undefined;
  // Never advance on fewer control planes than the transition was planned for.
  const c = convergence(await stagesOfAll(deps.api, { name: deps.nodeName, hasNode: deps.hasNode }, expected), { stage, sha256 });
  if (c.agreed || deps.force) {
    if (!c.agreed) deps.out.warn(`--force: advancing although ${c.lagging.map((l) => `${l.node} reports ${l.reports}`).join(', ')}`);
    await j.complete(step, { forced: !c.agreed });
    if (j.status === 'waiting') await j.setStatus('running');
    return undefined;
  }
  if (j.status === 'waiting' && j.message === step) throw notConvergedError({ stage, sha256 }, c, deps.followCommand);
  await j.setStatus('waiting', step);
  return c;
}

// ---------------------------------------------------------------------------------------------

export interface RunOptions {
  /** Run only this stage (the ones before it must be done); stop after it, before its gate. */
  only?: StageName;
}

export async function runTransition(deps: TransitionDeps, plan: TransitionPlan, j: StepJournal, o: RunOptions = {}): Promise<TransitionResult> {
  const result: TransitionResult = { state: 'done', stage: null, sha256: null, stages: [], lagging: [], next: null };
  let current: { cfg: EncryptionConfiguration; sha256: string } = { cfg: parseEncryptionConfig(plan.base.text, deps.configPath), sha256: plan.base.sha256 };
  if (o.only) {
    const idx = plan.stages.findIndex((st) => st.name === o.only);
    if (idx < 0) throw new CliError(`this ${plan.kind} has no stage "${o.only}"`, { exitCode: ExitCode.Usage, hint: `its stages: ${plan.stages.map((x) => x.name).join(', ')}` });
    // Gates are checked below, where --force applies to them.
    const missing = plan.stages.slice(0, idx).find((st) => stepsOf(st, plan.controlPlanes).some((x) => !x.endsWith(':gate') && !j.done(x)));
    if (missing) {
      throw new CliError(`stage "${o.only}" comes after "${missing.name}", which is not done yet`, {
        exitCode: ExitCode.Refused,
        hint: `run "--stage ${missing.name}" first (or run without --stage to do every stage in turn)`,
      });
    }
  }

  for (const stage of plan.stages) {
    const steps = stepsOf(stage, plan.controlPlanes);
    if (o.only && stage.name !== o.only) {
      if (stage.config) current = { cfg: parseEncryptionConfig(stage.config.text, deps.configPath), sha256: stage.config.sha256 };
      if (steps.every((x) => x.endsWith(':gate') || j.done(x))) {
        result.stage = stage.name;
        result.sha256 = stage.config?.sha256 ?? result.sha256;
      }
      continue;
    }
    checkAbort(deps);
    if (o.only) {
      const prev = plan.stages[plan.stages.indexOf(stage) - 1];
      const prevGate = prev && stepsOf(prev, plan.controlPlanes).find((x) => x.endsWith(':gate'));
      if (prev && prevGate) {
        const c = await gate(deps, j, prevGate, prev.name, prev.unpatch ? sha256Hex('') : current.sha256, plan.controlPlanes);
        if (c) return { ...result, state: 'waiting', lagging: c.lagging, next: `run ${deps.followCommand} (stage ${prev.name}) on ${c.lagging.map((l) => l.node).join(', ')}, then re-run this command here` };
      }
    }
    const outcome = await runStage(deps, plan, j, stage, current);
    result.stages.push(outcome);
    if (stage.config) current = { cfg: parseEncryptionConfig(stage.config.text, deps.configPath), sha256: stage.config.sha256 };
    result.stage = stage.name;
    result.sha256 = stage.unpatch ? sha256Hex('') : current.sha256;

    if (o.only) {
      result.state = 'stopped';
      result.next = plan.controlPlanes > 1 && stage.name !== 'rewrite' ? `run ${deps.followCommand} (stage ${stage.name}) on every other control plane` : null;
      return result;
    }
    const gateStep = steps.find((x) => x.endsWith(':gate'));
    if (gateStep) {
      const c = await gate(deps, j, gateStep, stage.name, result.sha256, plan.controlPlanes);
      if (c) {
        result.state = 'waiting';
        result.lagging = c.lagging;
        result.next = stage.unpatch
          ? `run "k8s-encrypt ${plan.kind} --stage prune" on each of them (${c.lagging.map((l) => l.node).join(', ')}), then re-run this command here`
          : `copy ${deps.configPath} to ${c.lagging.map((l) => l.node).join(', ')} and run ${deps.followCommand} there, then re-run this command here`;
        return result;
      }
    }
  }
  await j.setStatus('done');
  return result;
}

async function runStage(
  deps: TransitionDeps,
  plan: TransitionPlan,
  j: StepJournal,
  stage: PlannedStage,
  current: { cfg: EncryptionConfiguration; sha256: string },
): Promise<StageOutcome> {
  const s = stage.name;
  if (s === 'rewrite') return rewriteStage(deps, plan, j, current.cfg);
  if ((stage.removes.length || stage.unpatch) && !j.done(`${s}:check`)) {
    deps.out.step(`checking etcd: nothing may remain under ${stage.removes.join(', ')} before stage ${s}`);
    const scan = await scanLabels(deps, current.cfg, plan.resources);
    const target = stage.config ? parseEncryptionConfig(stage.config.text, deps.configPath) : ({ ...current.cfg, resources: [] } as EncryptionConfiguration);
    const checked = assertNothingUnder(scan, target, stage.unpatch ? 'turn encryption off' : `remove ${stage.removes.join(', ')}`, deps.force, deps.out);
    await j.complete(`${s}:check`, checked);
  }
  if (stage.unpatch) return unpatchStage(deps, j, current.cfg);
  return installConfig(deps, j, { stage: s, config: stage.config!, ...(stage.patch ? { enable: true } : {}) });
}

async function rewriteStage(deps: TransitionDeps, plan: TransitionPlan, j: StepJournal, cfg: EncryptionConfiguration): Promise<StageOutcome> {
  const run = await once(j, 'rewrite:run', async () => {
    deps.out.step(`rewriting every object of ${plan.resources.join(', ')} with the new writer`);
    const summary = await deps.rewrite(plan.resources);
    if (summary.failed > 0) {
      throw new CliError(`${summary.failed} object(s) could not be rewritten (${summary.rewritten} were)`, {
        exitCode: ExitCode.Verification,
        hint: 're-run the command: it continues where it stopped',
        details: { failures: summary.failures.slice(0, 20) },
      });
    }
    deps.out.success(`rewrote ${summary.rewritten} object(s) (${summary.unchanged} already current, ${summary.deleted} deleted meanwhile)`);
    return { rewritten: summary.rewritten, unchanged: summary.unchanged, deleted: summary.deleted, failed: summary.failed };
  });
  const verify = await once(j, 'rewrite:verify', async () => {
    let scan: LabelCounts[];
    try {
      scan = await scanLabels(deps, cfg, plan.resources);
    } catch (err) {
      // Without etcd the rewrite's own counts are the evidence; a later stage that removes a key
      // still refuses without a scan, so nothing can become unreadable on this path.
      if (!(err instanceof CliError) || err.exitCode !== ExitCode.Cluster) throw err;
      const line = `not verified from etcd (${err.message}); run "k8s-encrypt status" where etcd is reachable`;
      deps.out.warn(line);
      return { detail: line, weaker: true } as JsonObject;
    }
    const stale = scan.filter((r) => r.stale > 0);
    if (stale.length) {
      const list = stale.map((r) => `${r.resource}: ${r.stale} not under ${r.writeLabel} (${Object.entries(r.examples).map(([l, ex]) => `${l}: ${ex.join(', ')}`).join('; ')})`);
      await j.forget(['rewrite:run']);
      throw new CliError(`after the rewrite, etcd still holds objects under other labels: ${list.join('; ')}`, {
        exitCode: ExitCode.Verification,
        hint: 'an apiserver may still write with an older config ("k8s-encrypt status"); re-run the command to rewrite again',
        details: { stale: scan as unknown as JsonObject[] },
      });
    }
    const total = scan.reduce((n, r) => n + Object.values(r.counts).reduce((a, b) => a + b, 0), 0);
    const line = `etcd: all ${total} object(s) of ${plan.resources.join(', ')} are under ${plan.target.label}`;
    deps.out.success(line);
    return { detail: line };
  });
  return { stage: 'rewrite', rewrite: run as unknown as StageOutcome['rewrite'], verified: String(verify.detail) };
}

/**
 * disable's last stage did not come up without the flag: put the manifest with the flag and mount
 * back (the config file is still in place: it is removed only after the wait), wait for the
 * previous apiserver, and forget the unpatch so that a re-run retries it.
 */
async function restoreEncryptedManifest(deps: TransitionDeps, j: StepJournal, backup: string | undefined, cause: CliError): Promise<CliError> {
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
    const plan = planManifestUnpatch(text, deps.manifestPath, { configPath: flag, extraMountDirs: cfg ? kmsSocketDirs(cfg) : [] });
    if (plan.changed && plan.newText === current) return b;
  }
  return undefined;
}

/** disable's last stage on this node: flag and mount out, wait, kubeadm-config, the file to a backup. */
export async function unpatchStage(deps: TransitionDeps, j: StepJournal, cfg: EncryptionConfiguration | undefined): Promise<StageOutcome> {
  const kmsDirs = cfg ? kmsSocketDirs(cfg) : [];
  const unpatched = await once(j, 'prune:unpatch', async () => {
    const text = await readText(deps.manifestPath, 'read manifest');
    const inPod = readApiserverFlags(text, deps.manifestPath).flags.get(CONFIG_FLAG) ?? deps.configPath;
    const plan = planManifestUnpatch(text, deps.manifestPath, { configPath: inPod, extraMountDirs: kmsDirs });
    if (!plan.changed) return { since: (await stat(deps.manifestPath)).mtime.toISOString(), mirrorHashBefore: null, configPathInPod: inPod, volumeName: null, changed: false, backup: null };
    const mirrorHashBefore = (await mirrorPodHash(deps.api, deps.nodeName)) ?? null;
    const since = deps.now().toISOString();
    const w = await writeManifestPlan({ now: deps.now }, { manifest: deps.manifestPath, backupDir: deps.backupDir, manifestsDir: deps.manifestsDir }, text, plan);
    deps.out.step(`${deps.manifestPath}: ${plan.actions.join('; ')} (backup ${w.backup})`);
    return { since, mirrorHashBefore, configPathInPod: inPod, volumeName: plan.volumeName ?? null, changed: true, backup: w.backup ?? null };
  });
  const waited = await once(j, 'prune:wait', async () => {
    deps.out.step(`waiting for this node's apiserver to restart without encryption (up to ${Math.round(deps.timeoutMs / 1000)} s)`);
    try {
      const r = await waitForApiserver(
        { api: deps.api, now: deps.now, ...(deps.signal ? { signal: deps.signal } : {}), ...(deps.sleep ? { sleep: deps.sleep } : {}), onProgress: progressOf(deps) },
        {
          since: new Date(str(unpatched.since)!),
          mode: 'restart',
          timeoutMs: deps.timeoutMs,
          nodeName: deps.nodeName,
          ...(str(unpatched.mirrorHashBefore) ? { expectMirrorPodHashChange: str(unpatched.mirrorHashBefore)! } : {}),
        },
      );
      deps.out.success(`the apiserver runs without --${CONFIG_FLAG} (${r.evidence}: ${r.detail})`);
      return { evidence: r.evidence, detail: r.detail };
    } catch (err) {
      if (deps.signal?.aborted) throw err;
      if (!(err instanceof CliError) || err.exitCode !== ExitCode.Cluster) throw err;
      throw await restoreEncryptedManifest(deps, j, str(unpatched.backup), err);
    }
  });
  await once(j, 'prune:kubeadm-config', async () => {
    if (!deps.kubeadmConfig) return { status: 'skipped', reason: '--no-kubeadm-config' };
    const r = await updateKubeadmConfig(deps.api, {
      configPath: str(unpatched.configPathInPod) ?? deps.configPath,
      mountDir: dirname(deps.configPath),
      volumeName: str(unpatched.volumeName) ?? 'encryption-config',
      ...(kmsDirs.length ? { extraVolumes: kmsDirs.map((d, i) => ({ name: i === 0 ? 'kms-socket' : `kms-socket-${i + 1}`, dir: d, pathType: 'Directory' as const })) } : {}),
      remove: true,
    });
    deps.out.step(`kube-system/kubeadm-config ${r.status}${r.reason ? ` (${r.reason})` : ''}${r.actions.length ? `: ${r.actions.join('; ')}` : ''}`);
    return { status: r.status, ...(r.reason ? { reason: r.reason } : {}) };
  });
  const removed = await once(j, 'prune:remove-config', async () => {
    if (!(await fileExists(deps.configPath))) return { backup: null };
    const backup = await backupConfig(deps);
    await unlink(deps.configPath);
    deps.out.step(`removed ${deps.configPath} (kept as ${backup}, 0600)`);
    return { backup };
  });
  await once(j, 'prune:record', async () => {
    const where = await recordStage(deps.api, deps.nodeName, deps.hasNode, { stage: 'prune', sha256: sha256Hex('') });
    return { where };
  });
  return { stage: 'prune', evidence: `${String(waited.evidence)}: ${String(waited.detail)}`, proof: `config kept as ${String(removed.backup)}` };
}
