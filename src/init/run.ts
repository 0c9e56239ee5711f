import { readdir, stat, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { ApiClient } from '../cluster/api';
import { updateKubeadmConfig } from '../cluster/kubeadm-config';
import { convergence, notConvergedError, recordStage, stagesOfAll, type Convergence } from '../cluster/nodes';
import { proveEncryption, removeLeftoverCanaries, type RawReader } from '../cluster/proof';
import type { RewriteSummary } from '../cluster/rewrite';
import { mirrorPodHash, waitForApiserver, waitForReady, WaitTimeoutError, type WaitResult } from '../cluster/wait';
import { sha256Hex } from '../config/parse';
import type { EtcdConnection } from '../etcd/client';
import { writeManifestPlan } from '../manifest/apply';
import type { ManifestPlan } from '../manifest/patch';
import { backupFile, fileExists, readText, SECRET_FILE_MODE, writeFileAtomic } from '../state/atomic';
import type { Journal, JsonObject } from '../state/journal';
import { CliError, ExitCode, fsError } from '../ui/errors';
import { kubeadmOptions, STEP, type ConfigFilePlan, type InitMode, type InitPlan } from './plan';
import { planRestartAnnotation } from './restart';

/**
 * Applies an InitPlan step by step, each step journaled so that a re-run continues at the first
 * unfinished one. Everything outside this process is passed in (apiserver client, etcd, clock,
 * the rewrite engine), so the executor runs against the test bed as it does on a node.
 */

/** What the journal keeps as the plan's inputs. Never key material. */
export interface InitJournalInputs extends JsonObject {
  mode: InitMode;
  provider: string;
  keyName: string;
  expectedPrefix: string;
  resources: string[];
  configPath: string;
  manifestPath: string;
  timeoutMs: number;
  kubeadmConfig: boolean;
  /** sha256 of the config this run installs first (a resumed run recognises its own file by it). */
  configSha256: string;
  /** staged: sha256 of the key-first config. */
  writeConfigSha256: string | null;
  nodeName: string;
  hasNode: boolean;
  /** How many control planes must agree before a stage advances (discovered, or --control-planes). */
  controlPlanes: number;
  keySource: 'generated' | 'file' | 'stdin' | 'kms' | 'from-config';
  keyFile: string | null;
  fromConfig: string | null;
  kms: { name: string; endpoint: string; apiVersion: 'v1' | 'v2'; timeout: string | null } | null;
}

export interface InitReporter {
  step(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  success(msg: string): void;
  /** What a long wait currently sees (a spinner line on a terminal, plain lines otherwise). */
  progress?(msg: string): void;
}

export interface InitDeps {
  /** A client for THIS node's apiserver (address from the manifest). */
  api: ApiClient;
  now: () => Date;
  out: InitReporter;
  signal?: AbortSignal;
  backupDir: string;
  manifestsDir: string;
  etcd: EtcdConnection;
  openEtcd: (conn: EtcdConnection) => Promise<RawReader>;
  /** Rewrites every object of the resources (re-encrypt-all engine, resumable). */
  rewrite: (resources: string[]) => Promise<RewriteSummary>;
  /** Injectable for tests. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Advance past a disagreeing control plane (--force). */
  force?: boolean;
}

export interface InitResult {
  /** done: encrypted and rewritten; waiting: paused until the other control planes catch up. */
  state: 'done' | 'waiting';
  mode: InitMode;
  provider: string;
  keyName: string;
  config: string;
  configSha256: string;
  manifestBackup: string | null;
  evidence: { evidence: string; detail: string } | null;
  proof: { method: string; weaker: boolean; observed: string; detail: string } | null;
  kubeadmConfig: { status: string; reason?: string; apiVersion?: string } | null;
  rewrite: RewriteSummary | null;
  multiNode: {
    controlPlanes: number;
    stage: string | null;
    nodes: { node: string; reports: string }[];
    next: string | null;
  };
}

type StepOut = JsonObject;

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

export async function runInit(deps: InitDeps, plan: InitPlan, journal: Journal<InitJournalInputs>): Promise<InitResult> {
  const inputs = journal.inputs;
  const manifest = inputs.manifestPath;
  const result: InitResult = {
    state: 'done',
    mode: plan.mode,
    provider: plan.provider,
    keyName: plan.keyName,
    config: plan.configPath,
    configSha256: plan.config.sha256,
    manifestBackup: null,
    evidence: null,
    proof: null,
    kubeadmConfig: null,
    rewrite: null,
    multiNode: { controlPlanes: plan.controlPlanes, stage: null, nodes: [], next: null },
  };
  const checkAbort = () => {
    if (deps.signal?.aborted) throw deps.signal.reason;
  };

  // ---- the first config + the manifest patch + the wait (rolled back when it does not come up)
  await configStep(deps, journal, STEP.writeConfig, plan.configPath, plan.config);
  checkAbort();

  const patchPlan = combinedManifestPlan(plan);
  const patched = await manifestStep(deps, journal, STEP.patchManifest, manifest, patchPlan, inputs.nodeName);
  result.manifestBackup = str(patched.backup) ?? null;
  checkAbort();

  const firstWait = await waitStep(deps, journal, STEP.wait, plan.config, patched, {
    rollback: [STEP.writeConfig, STEP.patchManifest],
    configStep: STEP.writeConfig,
    staged: false,
    reload: plan.reload,
  });
  result.evidence = firstWait;
  checkAbort();

  const expectedPrefixFor = (c: ConfigFilePlan) => c.writesPrefix;

  if (plan.mode === 'single' || (plan.mode === 'from-config' && plan.config.stage === 'write')) {
    result.proof = await proveStep(deps, journal, plan, expectedPrefixFor(plan.config)!);
  }

  if (plan.mode === 'from-config') {
    result.kubeadmConfig = await kubeadmStep(deps, journal, plan, patchPlan);
    await stageStep(deps, journal, STEP.recordStage, plan.config.stage, plan.config.sha256);
    result.multiNode.stage = plan.config.stage;
    const c = await currentConvergence(deps, journal, plan.config.stage, plan.config.sha256);
    result.multiNode.nodes = c.lagging;
    result.multiNode.next =
      plan.config.stage === 'reader'
        ? 'once every control plane reports "reader", re-run "k8s-encrypt init" on the first node'
        : 'once every control plane reports "write", re-run "k8s-encrypt init" on the first node: it rewrites every Secret';
    await journal.setStatus('done');
    return result;
  }

  if (plan.mode === 'staged') {
    const writeConfig = plan.writeConfig!;
    result.multiNode.stage = 'reader';
    await stageStep(deps, journal, STEP.recordReader, 'reader', plan.config.sha256);
    const gate1 = await gateStep(deps, journal, STEP.gateReader, 'reader', plan.config.sha256, plan.configPath);
    if (gate1) {
      result.state = 'waiting';
      result.multiNode.nodes = gate1.lagging;
      result.multiNode.next = `copy ${plan.configPath} to the other control planes and run "k8s-encrypt init --from-config FILE" on each, then re-run "k8s-encrypt init" here`;
      return result;
    }
    await configStep(deps, journal, STEP.writeConfigWrite, plan.configPath, writeConfig);
    checkAbort();
    const current = await readText(manifest, 'read manifest');
    const restartPlan = plan.reload ? unchangedManifest(current) : restartManifestPlan(current, manifest, writeConfig.sha256);
    const restarted = await manifestStep(deps, journal, STEP.restartWrite, manifest, restartPlan, inputs.nodeName);
    result.evidence = await waitStep(deps, journal, STEP.waitWrite, writeConfig, restarted, {
      rollback: [STEP.writeConfigWrite, STEP.restartWrite],
      configStep: STEP.writeConfigWrite,
      staged: true,
      reload: plan.reload,
    });
    result.configSha256 = writeConfig.sha256;
    result.proof = await proveStep(deps, journal, plan, writeConfig.writesPrefix!);
    result.multiNode.stage = 'write';
    await stageStep(deps, journal, STEP.recordWrite, 'write', writeConfig.sha256);
    const gate2 = await gateStep(deps, journal, STEP.gateWrite, 'write', writeConfig.sha256, plan.configPath);
    if (gate2) {
      result.state = 'waiting';
      result.multiNode.nodes = gate2.lagging;
      result.multiNode.next = `copy the new ${plan.configPath} to the other control planes and run "k8s-encrypt init --from-config FILE" on each, then re-run "k8s-encrypt init" here for the rewrite`;
      return result;
    }
  }

  result.kubeadmConfig = await kubeadmStep(deps, journal, plan, patchPlan);
  checkAbort();
  result.rewrite = await rewriteStep(deps, journal, plan);
  await journal.setStatus('done');
  return result;
}

// ---------------------------------------------------------------------------------------------

/** The manifest change of the first step: flag + mount, and the restart annotation when needed. */
function combinedManifestPlan(plan: InitPlan): ManifestPlan {
  if (!plan.restart) return plan.manifest;
  return {
    ...plan.manifest,
    changed: plan.manifest.changed || plan.restart.changed,
    newText: plan.restart.newText,
    diff: plan.manifest.changed ? plan.manifest.diff + plan.restart.diff : plan.restart.diff,
    actions: [...plan.manifest.actions, ...(plan.restart.changed ? ['annotate the pod with the config sha256 (restarts it)'] : [])],
  };
}

function unchangedManifest(text: string): ManifestPlan {
  return { changed: false, newText: text, diff: '', actions: [], notes: [], mounts: [] };
}

function restartManifestPlan(text: string, path: string, sha: string): ManifestPlan {
  const r = planRestartAnnotation(text, path, sha);
  return { changed: r.changed, newText: r.newText, diff: r.diff, actions: r.changed ? ['annotate the pod with the config sha256 (restarts it)'] : [], notes: [], mounts: [] };
}

async function configStep(deps: InitDeps, journal: Journal<InitJournalInputs>, name: string, path: string, cfg: ConfigFilePlan): Promise<StepOut> {
  return journal.step(name, async () => {
    const exists = await fileExists(path);
    if (exists) {
      const current = await readText(path, 'read config');
      if (sha256Hex(current) === cfg.sha256) {
        // Written by this run before an interruption: nothing to do, and no second key.
        deps.out.step(`${path} already holds the planned config (sha256 ${cfg.sha256.slice(0, 12)}…)`);
        const prior = journal.output(STEP.writeConfig);
        const mtime = (await stat(path)).mtime.toISOString();
        return { sha256: cfg.sha256, created: prior ? prior.created ?? false : false, backup: prior?.backup ?? null, writtenAt: mtime };
      }
    }
    const backup = exists ? await backupFile(path, deps.backupDir, deps.now()) : null;
    const writtenAt = deps.now().toISOString();
    await writeFileAtomic(path, cfg.text, { mode: SECRET_FILE_MODE });
    deps.out.step(`wrote ${path} (0600, sha256 ${cfg.sha256.slice(0, 12)}…)${backup ? `; the previous file is kept in ${backup}` : ''}`);
    return { sha256: cfg.sha256, created: !exists, backup, writtenAt };
  });
}

/** The newest backup of `file` made since `since` (by this run), or null. */
async function latestBackup(backupDir: string, file: string, since: string): Promise<string | null> {
  const base = `${basename(file)}.`;
  try {
    const names = (await readdir(backupDir)).filter((n) => n.startsWith(base) && n.endsWith('.bak')).sort();
    const newest = names.length ? join(backupDir, names[names.length - 1]!) : null;
    if (!newest) return null;
    // Backup names carry whole seconds: compare at that precision.
    return (await stat(newest)).mtimeMs >= Math.floor(Date.parse(since) / 1000) * 1000 ? newest : null;
  } catch {
    return null;
  }
}

async function manifestStep(
  deps: InitDeps,
  journal: Journal<InitJournalInputs>,
  name: string,
  manifest: string,
  plan: ManifestPlan,
  nodeName: string,
): Promise<StepOut> {
  return journal.step(name, async () => {
    const current = await readText(manifest, 'read manifest');
    if (!plan.changed || current === plan.newText) {
      // Patched by this run before an interruption (or nothing to patch): the change time is the
      // file's mtime, the backup the newest one.
      const mtime = (await stat(manifest)).mtime;
      return { changed: false, changedAt: mtime.toISOString(), backup: await latestBackup(deps.backupDir, manifest, journal.record.createdAt), mirrorHashBefore: null };
    }
    const mirrorHashBefore = (await mirrorPodHash(deps.api, nodeName)) ?? null;
    const changedAt = deps.now();
    const written = await writeManifestPlan({ now: deps.now }, { manifest, backupDir: deps.backupDir, manifestsDir: deps.manifestsDir }, current, plan);
    deps.out.step(`patched ${manifest}: ${plan.actions.join('; ')} (backup ${written.backup})`);
    return { changed: true, changedAt: changedAt.toISOString(), backup: written.backup ?? null, mirrorHashBefore };
  });
}

async function waitStep(
  deps: InitDeps,
  journal: Journal<InitJournalInputs>,
  name: string,
  cfg: ConfigFilePlan,
  manifestOut: StepOut,
  rb: { rollback: string[]; configStep: string; staged: boolean; reload: boolean },
): Promise<WaitResult> {
  const out = await journal.step(name, async () => {
    // An unchanged manifest with automatic reload on: the apiserver reloads the file, no restart.
    const reload = rb.reload && manifestOut.changed !== true;
    const configOut = journal.output(rb.configStep) ?? {};
    const since = new Date((reload ? str(configOut.writtenAt) : str(manifestOut.changedAt)) ?? deps.now().toISOString());
    deps.out.step(
      `waiting for this node's apiserver to ${reload ? 'reload' : 'run'} the new config (up to ${Math.round(journal.inputs.timeoutMs / 1000)} s)`,
    );
    try {
      const r = await waitForApiserver(
        { api: deps.api, now: deps.now, signal: deps.signal, ...(deps.sleep ? { sleep: deps.sleep } : {}), onProgress: (m) => (deps.out.progress ? deps.out.progress(m) : deps.out.info(`  … ${m}`)) },
        {
          since,
          configSha256: cfg.sha256,
          mode: reload ? 'reload' : 'restart',
          timeoutMs: journal.inputs.timeoutMs,
          nodeName: journal.inputs.nodeName,
          ...(str(manifestOut.mirrorHashBefore) ? { expectMirrorPodHashChange: str(manifestOut.mirrorHashBefore)! } : {}),
        },
      );
      deps.out.success(`the apiserver runs the new config (evidence: ${r.evidence}: ${r.detail})`);
      return { evidence: r.evidence, detail: r.detail };
    } catch (err) {
      if (deps.signal?.aborted) throw err;
      if (!(err instanceof CliError) || err.exitCode !== ExitCode.Cluster) throw err;
      throw await rollBack(deps, journal, err, rb);
    }
  });
  return { evidence: out.evidence as WaitResult['evidence'], detail: String(out.detail) };
}

/**
 * Puts back what this run changed (manifest from its backup; the config removed, kept as a 0600
 * backup, or its previous content restored), waits until the previous apiserver is healthy, and
 * returns the RolledBack error to throw.
 */
async function rollBack(
  deps: InitDeps,
  journal: Journal<InitJournalInputs>,
  cause: CliError,
  rb: { rollback: string[]; configStep: string; staged: boolean; reload: boolean },
): Promise<CliError> {
  const inputs = journal.inputs;
  const manifestOut = journal.output(rb.rollback[1]!) ?? {};
  const configOut = journal.output(rb.configStep) ?? {};
  const restored: string[] = [];
  const problems: string[] = [];
  deps.out.warn(`${cause.message}: rolling back`);

  const manifestChanged = manifestOut.changed === true;
  const manifestBackup = str(manifestOut.backup);
  const restoredAt = deps.now();
  if (!manifestChanged) {
    // Nothing to put back in the manifest: the config was reloaded (or a resumed run had
    // already patched it and its backup is the newest one).
    if (manifestBackup && !rb.reload) {
      await writeFileAtomic(inputs.manifestPath, await readText(manifestBackup, 'read backup'), { mode: (await stat(inputs.manifestPath)).mode & 0o7777 });
      restored.push(`${inputs.manifestPath} from ${manifestBackup}`);
    }
  } else if (manifestBackup) {
    try {
      const mode = (await stat(inputs.manifestPath)).mode & 0o7777;
      await writeFileAtomic(inputs.manifestPath, await readText(manifestBackup, 'read backup'), { mode });
      restored.push(`${inputs.manifestPath} from ${manifestBackup}`);
    } catch (err) {
      problems.push(`could not restore ${inputs.manifestPath} from ${manifestBackup}: ${(err as Error).message}`);
    }
  } else {
    problems.push(`no backup of ${inputs.manifestPath} was recorded: restore it by hand`);
  }

  const configBackup = str(configOut.backup);
  try {
    if (configOut.created === true) {
      // A key that may have encrypted something must not vanish: keep a 0600 copy.
      const kept = await backupFile(inputs.configPath, deps.backupDir, deps.now());
      await unlink(inputs.configPath);
      restored.push(`removed ${inputs.configPath} (kept as ${kept})`);
    } else if (configBackup) {
      await writeFileAtomic(inputs.configPath, await readText(configBackup, 'read backup'), { mode: SECRET_FILE_MODE });
      restored.push(`${inputs.configPath} from ${configBackup}`);
    }
  } catch (err) {
    problems.push(`could not put back ${inputs.configPath}: ${err instanceof CliError ? err.message : fsError('restore', inputs.configPath, err).message}`);
  }

  let healthy = false;
  const manifestRestored = restored.some((r) => r.startsWith(inputs.manifestPath));
  if (problems.length === 0) {
    deps.out.step('waiting for the previous apiserver to be healthy again');
    const waitDeps = { api: deps.api, now: deps.now, signal: deps.signal, ...(deps.sleep ? { sleep: deps.sleep } : {}) };
    try {
      // A restored manifest restarts the pod: wait for that new process. Otherwise (a failed
      // reload) the previous configuration is still running and only readiness matters.
      if (manifestRestored) {
        await waitForApiserver(waitDeps, { since: restoredAt, mode: 'restart', timeoutMs: inputs.timeoutMs, nodeName: inputs.nodeName });
      } else {
        await waitForReady(waitDeps, inputs.timeoutMs);
      }
      healthy = true;
    } catch (err) {
      if (deps.signal?.aborted) throw err;
      problems.push(`the previous apiserver is not healthy yet either (${(err as Error).message})`);
    }
  }

  const where = 'see why in the apiserver log: crictl logs $(crictl ps -a --name kube-apiserver -q | head -1) (containerd), or the pod logs under /var/log/pods/';
  const tried = cause instanceof WaitTimeoutError ? `waited ${Math.round(cause.waitedMs / 1000)} s for the apiserver to run the new config` : cause.message;
  const message = `${tried}; rolled back: ${restored.join('; ') || 'nothing could be restored'}${healthy ? '; the previous apiserver is healthy again' : ''}${problems.length ? `; ${problems.join('; ')}` : ''}`;

  if (rb.staged) {
    // Only the stage change is undone: the node stays at the previous stage and a re-run retries it.
    await journal.forget(rb.rollback);
    await journal.setStatus('waiting', message);
  } else {
    await journal.setStatus('rolled-back', message);
  }
  return new CliError(message, {
    exitCode: ExitCode.RolledBack,
    hint: where,
    cause,
    details: { restored, problems, healthy, lastSeen: cause instanceof WaitTimeoutError ? cause.lastSeen : cause.message },
  });
}

async function proveStep(deps: InitDeps, journal: Journal<InitJournalInputs>, plan: InitPlan, prefix: string): Promise<InitResult['proof']> {
  const out = await journal.step(STEP.prove, async () => {
    for (const name of await removeLeftoverCanaries(deps.api, { now: deps.now() })) {
      deps.out.info(`deleted the canary kube-system/${name} an interrupted run left behind`);
    }
    deps.out.step(`proving it: writing a canary Secret and reading it back from etcd (expecting ${prefix})`);
    const p = await proveEncryption(
      { api: deps.api, openEtcd: deps.openEtcd, onProgress: (m) => deps.out.warn(m) },
      { expectedPrefix: prefix, etcd: deps.etcd, ...(deps.etcd.prefix ? { etcdKeyPrefix: deps.etcd.prefix } : {}) },
    );
    deps.out.success(p.detail);
    return { method: p.method, weaker: p.weaker, observed: p.observed, detail: p.detail };
  });
  return { method: String(out.method), weaker: out.weaker === true, observed: String(out.observed), detail: String(out.detail) };
}

async function kubeadmStep(deps: InitDeps, journal: Journal<InitJournalInputs>, plan: InitPlan, patch: ManifestPlan): Promise<InitResult['kubeadmConfig']> {
  if (!plan.kubeadmConfig) return null;
  const out = await journal.step(STEP.kubeadmConfig, async () => {
    const r = await updateKubeadmConfig(deps.api, kubeadmOptions(plan.configPath, patch));
    if (r.status === 'skipped') deps.out.info(`kubeadm-config: skipped (${r.reason})`);
    else deps.out.step(`kube-system/kubeadm-config ${r.status}${r.actions.length ? `: ${r.actions.join('; ')}` : ''}`);
    return { status: r.status, ...(r.reason ? { reason: r.reason } : {}), ...(r.apiVersion ? { apiVersion: r.apiVersion } : {}) };
  });
  return { status: String(out.status), ...(str(out.reason) ? { reason: str(out.reason) } : {}), ...(str(out.apiVersion) ? { apiVersion: str(out.apiVersion) } : {}) };
}

async function stageStep(deps: InitDeps, journal: Journal<InitJournalInputs>, name: string, stage: string, sha256: string): Promise<void> {
  await journal.step(name, async () => {
    const where = await recordStage(deps.api, journal.inputs.nodeName, journal.inputs.hasNode, { stage, sha256 });
    deps.out.step(`recorded stage "${stage}" (config sha256 ${sha256.slice(0, 12)}…) for ${journal.inputs.nodeName} (${where})`);
    return { stage, sha256, where };
  });
}

async function currentConvergence(deps: InitDeps, journal: Journal<InitJournalInputs>, stage: string, sha256: string): Promise<Convergence> {
  const i = journal.inputs;
  const stages = await stagesOfAll(deps.api, { name: i.nodeName, hasNode: i.hasNode }, i.controlPlanes ?? 1);
  return convergence(stages, { stage, sha256 });
}

/**
 * Passes when every control plane reports the stage and hash (or with --force). Otherwise: the
 * first time, pause (journal status waiting, the result says what to do); when a re-run finds them
 * still disagreeing, refuse.
 */
async function gateStep(
  deps: InitDeps,
  journal: Journal<InitJournalInputs>,
  name: string,
  stage: string,
  sha256: string,
  configPath: string,
): Promise<Convergence | undefined> {
  if (journal.done(name)) return undefined;
  const c = await currentConvergence(deps, journal, stage, sha256);
  if (c.agreed || deps.force) {
    if (!c.agreed) deps.out.warn(`--force: advancing although ${c.lagging.map((l) => `${l.node} reports ${l.reports}`).join(', ')}`);
    await journal.complete(name, { forced: !c.agreed });
    if (journal.status === 'waiting') await journal.setStatus('running');
    return undefined;
  }
  if (journal.status === 'waiting' && journal.message === name) {
    throw notConvergedError({ stage, sha256 }, c, `"k8s-encrypt init --from-config FILE" (FILE: a copy of ${configPath} from this node)`);
  }
  await journal.setStatus('waiting', name);
  return c;
}

async function rewriteStep(deps: InitDeps, journal: Journal<InitJournalInputs>, plan: InitPlan): Promise<RewriteSummary> {
  const done = journal.output(STEP.rewrite);
  if (done) return done.summary as unknown as RewriteSummary;
  deps.out.step(`rewriting every object of ${plan.resources.join(', ')} so that it is stored encrypted`);
  const summary = await deps.rewrite(plan.resources);
  if (summary.failed > 0) {
    throw new CliError(`${summary.failed} object(s) could not be rewritten; the rest (${summary.rewritten}) are encrypted now`, {
      exitCode: ExitCode.Verification,
      hint: 're-run "k8s-encrypt init" to retry them (it continues where it stopped)',
      details: { failures: summary.failures.slice(0, 20) as unknown as JsonObject[] },
    });
  }
  deps.out.success(`rewrote ${summary.rewritten} object(s) (${summary.unchanged} already current, ${summary.deleted} deleted meanwhile) in ${summary.seconds.toFixed(1)} s`);
  await journal.complete(STEP.rewrite, { summary: summary as unknown as JsonObject });
  return summary;
}
