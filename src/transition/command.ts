import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { Context } from '../context';
import type { ApiClient } from '../cluster/api';
import { describeError } from '../cluster/errors';
import { discoverControlPlanes, identifyThisNode, readStages } from '../cluster/nodes';
import { localApiserverClient } from '../cluster/wait';
import { firstProvider, writeResourceOf } from '../config/model';
import { checkKeyName, decodeKey, generateKey, isLocalProvider, LOCAL_PROVIDERS, parseProvider, type LocalProvider } from '../config/keys';
import { parseEncryptionConfig, sha256Hex } from '../config/parse';
import { buildProviderElement, keyCreatedAt, newKeyName } from '../config/render';
import { providerKinds, type EncryptionConfiguration, type ProviderConfig } from '../config/schema';
import { errorsOf, parseFeatureGates, parseGoDuration, validateEncryptionConfig, type FeatureGates } from '../config/validate';
import { etcdConnectionFromFlags } from '../etcd/client';
import { assertBackupDirOutside } from '../manifest/apply';
import { readApiserverFlags } from '../manifest/manifest';
import { CONFIG_FLAG, unifiedDiff } from '../manifest/patch';
import { ensureDir, fileExists, PRIVATE_DIR_MODE, readText, SECRET_FILE_MODE, writeFileAtomic } from '../state/atomic';
import { Journal, isFinished, type JsonObject } from '../state/journal';
import { acquireLock, type Lock } from '../state/lock';
import { CliError, ExitCode, usageError } from '../ui/errors';
import { confirm } from '../ui/prompt';
import { checkSafetyOptions, runSafetyNet, safetyNetLines, safetyNetPreview, SNAPSHOT_STEP } from '../snapshot/guard';
import { ESCROW_STEP } from '../escrow/export';
import {
  describeConfigText,
  planTransition,
  printableTransition,
  readersOf,
  resumePoint,
  STAGES,
  type StageName,
  type TransitionKind,
  type TransitionPlan,
} from './plan';
import {
  assertNothingUnder,
  installConfig,
  listBackups,
  MemoryJournal,
  runTransition,
  scanLabels,
  unpatchStage,
  type TransitionDeps,
  type TransitionResult,
} from './run';

/**
 * The command side of rotate-key, disable and rollback: read the node (manifest, config, this
 * apiserver, the control planes), plan or resume, confirm, run. Kept apart from the thin command
 * modules so that the heavy imports load only when a command runs.
 */

export interface TransitionOptions {
  provider?: string;
  keyFile?: string;
  keyStdin?: boolean;
  keyName?: string;
  kmsName?: string;
  kmsEndpoint?: string;
  kmsApiVersion?: 'v1' | 'v2';
  kmsTimeout?: string;
  ifOlderThan?: string;
  stage?: string;
  fromConfig?: string;
  force?: boolean;
  dryRun?: boolean;
  timeout: string;
  config?: string;
  nodeName?: string;
  keepBackups: number;
  kubeadmConfig: boolean;
  /** How many control planes there are, where discovery cannot see them all. */
  controlPlanes?: number;
  snapshot?: boolean;
  snapshotDir?: string;
  keepSnapshots?: number;
  escrowRecipient?: string[];
  escrowDir?: string;
}

/** What a transition journal keeps (never key material: the key lives in the config file). */
export interface TransitionJournalInputs extends JsonObject {
  kind: TransitionKind;
  provider: string;
  /** The new key / KMS name (rotate); 'identity' for disable. */
  targetName: string;
  keySource: 'generated' | 'file' | 'stdin' | 'kms' | 'none';
  keyFile: string | null;
  kms: { name: string; endpoint: string; apiVersion: 'v1' | 'v2'; timeout: string | null } | null;
  /** A 0600 copy of the config the transition started from (the plan is derived from it). */
  basePath: string;
  baseSha256: string;
  stageSha256: { [stage: string]: string };
  controlPlanes: number;
  nodeName: string;
  hasNode: boolean;
  configPath: string;
  manifestPath: string;
  timeoutMs: number;
}

const refused = (message: string, hint?: string, details?: Record<string, unknown>) =>
  new CliError(message, { exitCode: ExitCode.Refused, ...(hint ? { hint } : {}), ...(details ? { details } : {}) });

export function parseTimeoutMs(v: string, flag = '--timeout'): number {
  const ns = parseGoDuration(/^\d+$/.test(v) ? `${v}s` : v);
  if (ns === undefined || ns <= 0) throw usageError(`${flag} "${v}" is not a positive duration`, 'use e.g. 90s, 5m or 1h');
  return Math.round(ns / 1e6);
}

/** `90d`, `2w`, `36h`, or any Go duration (`90m`, `1h30m`): milliseconds. */
export function parseAge(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(d|w)$/.exec(v.trim());
  if (m) return Number(m[1]) * (m[2] === 'w' ? 7 : 1) * 86_400_000;
  const ns = parseGoDuration(v.trim());
  if (ns === undefined || ns <= 0) throw usageError(`--if-older-than "${v}" is not a duration`, 'use e.g. 90d, 2w, 36h');
  return ns / 1e6;
}

function parseStageName(v: string | undefined): StageName | undefined {
  if (v === undefined) return undefined;
  if (!(STAGES as readonly string[]).includes(v)) throw usageError(`unknown stage "${v}"`, `use one of: ${STAGES.join(', ')}`);
  return v as StageName;
}

async function readStdin(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

// ---------------------------------------------------------------------------------------------
// The node: manifest, config path, this apiserver, the control planes.

export interface NodeView {
  manifestText: string;
  flags: Map<string, string>;
  args: string[];
  configPath: string;
  api: ApiClient;
  kubeVersion: string;
  /** The apiserver's --feature-gates: KMSv1/KMSv2 change which configs it accepts. */
  featureGates: FeatureGates;
  controlPlanes: number;
  nodeName: string;
  hasNode: boolean;
}

async function readNode(ctx: Context, opts: TransitionOptions, nodeName?: string): Promise<NodeView> {
  const manifestPath = ctx.paths.manifest;
  const manifestText = await readText(manifestPath, 'read manifest');
  const parsed = readApiserverFlags(manifestText, manifestPath);
  await assertBackupDirOutside(ctx.paths.backupDir, ctx.paths.manifestsDir);
  // The config the apiserver reads: the flag's value (kubeadm mounts it at the same path), unless given.
  const configPath = opts.config ? resolve(opts.config) : parsed.flags.get(CONFIG_FLAG) ?? ctx.paths.config;
  const api = await localApiserverClient(ctx.paths.kubeconfig, manifestText, manifestPath);
  try {
    let version: string | undefined;
    // A run interrupted mid-restart leaves the kubelet restarting the apiserver: give it a while.
    const deadline = ctx.now().getTime() + Math.min(parseTimeoutMs(opts.timeout), 60_000);
    for (let delay = 250; ; delay = Math.min(delay * 2, 2000)) {
      try {
        const v = await api.get<{ gitVersion?: string }>('/version', { timeoutMs: 10_000 });
        version = /^v?(\d+\.\d+\.\d+)/.exec(v.gitVersion ?? '')?.[1];
        break;
      } catch (err) {
        if (ctx.signal.aborted) throw ctx.signal.reason;
        if (ctx.now().getTime() >= deadline) {
          throw new CliError(`this node's apiserver (${api.server}) is not reachable: ${describeError(err)}`, {
            exitCode: ExitCode.Cluster,
            hint: 'nothing was changed; fix the apiserver first (crictl ps -a --name kube-apiserver)',
          });
        }
        if (delay === 250) ctx.out.info(`waiting for this node's apiserver (${api.server}) to answer: ${describeError(err)}`);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    const cps = await discoverControlPlanes(api);
    const me = nodeName ? { name: nodeName } : identifyThisNode(cps, parsed.args, opts.nodeName);
    return {
      manifestText,
      flags: parsed.flags,
      args: parsed.args,
      configPath,
      api,
      kubeVersion: version ?? parsed.kubeVersionFromImage ?? '',
      featureGates: parseFeatureGates(parsed.flags.get('feature-gates')),
      controlPlanes: Math.max(1, cps.length, opts.controlPlanes ?? 0),
      nodeName: me.name,
      hasNode: cps.find((c) => c.name === me.name)?.hasNode ?? false,
    };
  } catch (err) {
    api.close();
    throw err;
  }
}

/**
 * The re-encrypt-all engine as init and the transitions run it: resources resolved by discovery, a
 * checkpoint keyed by the config's sha256 (a re-run after kill -9 continues), progress on stderr.
 */
export async function rewriteWithCheckpoint(ctx: Context, api: ApiClient, configPath: string, resources: string[]) {
  const [{ resolveResources }, { rewriteAll }, cp, progress] = await Promise.all([
    import('../cluster/discovery'),
    import('../cluster/rewrite'),
    import('../state/checkpoint'),
    import('../ui/progress'),
  ]);
  const resolved = await resolveResources(api, resources, undefined, (s) => ctx.out.warn(`skipping ${s.resource}: ${s.why}`));
  const store = new cp.FileCheckpointStore({
    stateDir: ctx.paths.stateDir,
    runId: cp.rewriteRunId(resolved.map((r) => r.resource), `sha256:${sha256Hex(await readFile(configPath))}`),
    warn: (m) => ctx.out.warn(m),
  });
  const reporter = progress.createProgressReporter(ctx.out);
  try {
    return await rewriteAll(
      { api, checkpoint: store, now: ctx.now, onProgress: (p) => reporter.update(p), onNotice: (m) => ctx.out.info(m), signal: ctx.signal },
      { resources: resolved, resume: true },
    );
  } finally {
    reporter.stop();
  }
}

/** How the engine runs on this node, beyond what the node itself says. */
export interface EngineSettings {
  timeoutMs: number;
  force: boolean;
  kubeadmConfig: boolean;
  keepBackups: number;
  /** The command the other control planes run. */
  followCommand: string;
  out?: TransitionDeps['out'];
}

/** The engine's dependencies for this node (init and every transition command build them here). */
export async function engineDeps(ctx: Context, node: Pick<NodeView, 'api' | 'configPath' | 'nodeName' | 'hasNode' | 'flags'>, s: EngineSettings): Promise<TransitionDeps> {
  const { openEtcd } = await import('../etcd/client');
  return {
    api: node.api,
    now: ctx.now,
    out: s.out ?? ctx.out,
    signal: ctx.signal,
    manifestPath: ctx.paths.manifest,
    manifestsDir: ctx.paths.manifestsDir,
    configPath: node.configPath,
    backupDir: ctx.paths.backupDir,
    keepBackups: s.keepBackups,
    nodeName: node.nodeName,
    hasNode: node.hasNode,
    timeoutMs: s.timeoutMs,
    force: s.force,
    kubeadmConfig: s.kubeadmConfig,
    etcd: etcdConnectionFromFlags(node.flags),
    openEtcd: (c) => openEtcd(c),
    followCommand: s.followCommand,
    rewrite: (resources) => rewriteWithCheckpoint(ctx, node.api, node.configPath, resources),
  };
}

const transitionDeps = (ctx: Context, node: NodeView, opts: TransitionOptions, follow: string) =>
  engineDeps(ctx, node, { timeoutMs: parseTimeoutMs(opts.timeout), force: Boolean(opts.force), kubeadmConfig: opts.kubeadmConfig, keepBackups: opts.keepBackups, followCommand: follow });

// ---------------------------------------------------------------------------------------------
// The new element of a rotation.

const localKindOf = (el: ProviderConfig) => LOCAL_PROVIDERS.find((k) => el[k] !== undefined);

/** The element named `name` in a config (the key, alone in its provider kind; or the KMS provider). */
export function findElement(cfg: EncryptionConfiguration, provider: string, name: string): ProviderConfig | undefined {
  for (const rule of cfg.resources) {
    for (const p of rule.providers) {
      if (provider === 'kms' && p.kms?.name === name) return structuredClone(p);
      const local = localKindOf(p);
      if (local && local === provider) {
        const k = p[local]!.keys.find((x) => x.name === name);
        if (k) return { [local]: { keys: [{ ...k }] } };
      }
    }
  }
  return undefined;
}

function takenNames(cfg: EncryptionConfiguration): string[] {
  return cfg.resources.flatMap((r) => r.providers.flatMap((p) => {
    const l = localKindOf(p);
    return l ? p[l]!.keys.map((k) => k.name) : p.kms ? [p.kms.name] : [];
  }));
}

/** A new local key: from --key-file, --key-stdin, or generated. */
export async function newKey(ctx: Context, provider: LocalProvider, opts: Pick<TransitionOptions, 'keyFile' | 'keyStdin'>): Promise<{ key: string; source: TransitionJournalInputs['keySource'] }> {
  if (opts.keyFile && opts.keyStdin) throw usageError('give the key with --key-file or --key-stdin, not both');
  if (opts.keyFile) return { key: decodeKey(provider, await readText(opts.keyFile, 'read key file'), `the key in ${opts.keyFile}`).toString('base64'), source: 'file' };
  if (opts.keyStdin) return { key: decodeKey(provider, await readStdin(ctx.stdin), 'the key on stdin').toString('base64'), source: 'stdin' };
  return { key: generateKey(provider), source: 'generated' };
}

// ---------------------------------------------------------------------------------------------

export interface CommandSpec {
  kind: TransitionKind;
  operation: 'rotate-key' | 'disable';
}

export async function runTransitionCommand(ctx: Context, spec: CommandSpec, opts: TransitionOptions): Promise<void> {
  const only = parseStageName(opts.stage);
  if (opts.keepBackups < 1) throw usageError('--keep-backups must be at least 1');
  parseTimeoutMs(opts.timeout);
  const ageLimit = opts.ifOlderThan !== undefined ? parseAge(opts.ifOlderThan) : undefined;
  if (spec.kind === 'rotate' && opts.provider !== undefined) parseProvider(opts.provider);
  checkKeyName(opts.keyName);
  checkSafetyOptions(opts);

  const stateDir = ctx.paths.stateDir;
  let journal = await Journal.load<TransitionJournalInputs>(stateDir, spec.operation, { now: ctx.now });
  const resuming = journal !== undefined && !isFinished(journal.status);

  if (opts.fromConfig) return follow(ctx, spec, opts, only);
  if (!resuming && spec.kind === 'disable' && only === 'prune') {
    return followDisablePrune(ctx, opts);
  }

  let lock: Lock | undefined;
  const node = await readNode(ctx, opts, resuming ? journal!.inputs.nodeName : undefined);
  try {
    if (!opts.dryRun) lock = await acquireLock(stateDir, spec.operation, { now: ctx.now, warn: (m) => ctx.out.warn(m), sweepDirs: [ctx.paths.configDir, ctx.paths.manifestsDir, ctx.paths.backupDir] });
    const follow = `"k8s-encrypt ${spec.operation} --from-config FILE" (FILE: a copy of ${node.configPath} from ${node.nodeName})`;
    let plan: TransitionPlan;
    let secrets: string[] = [];

    if (resuming) {
      const j = journal!;
      ctx.out.info(`continuing ${j.id} (${j.status}${j.message ? `: ${j.message}` : ''})`);
      if (opts.provider || opts.keyFile || opts.keyName || opts.kmsName) ctx.out.warn(`${j.id} is unfinished: it continues as planned and ignores the new key options`);
      ({ plan, secrets } = await resumePlan(ctx, j, node, opts));
    } else {
      if (node.flags.get(CONFIG_FLAG) === undefined) {
        if (spec.kind === 'disable') {
          ctx.out.result({ state: 'done', nothingToDo: true }, () => `nothing to do: ${ctx.paths.manifest} has no --${CONFIG_FLAG} (encryption at rest is off here)`);
          return;
        }
        throw refused(`${ctx.paths.manifest} has no --${CONFIG_FLAG}: encryption at rest is not on here`, 'turn it on with "k8s-encrypt init"');
      }
      if (!(await fileExists(node.configPath))) {
        throw new CliError(`the config ${node.configPath} named by --${CONFIG_FLAG} does not exist`, { exitCode: ExitCode.Usage, hint: 'pass --config with the host path of the file' });
      }
      const baseText = await readText(node.configPath, 'read config');
      const base = parseEncryptionConfig(baseText, node.configPath);
      if (node.controlPlanes > 1 && !opts.force) await assertNoTransitionElsewhere(node, sha256Hex(baseText), spec.operation);
      let element: ProviderConfig | undefined;
      let keySource: TransitionJournalInputs['keySource'] = 'none';
      if (spec.kind === 'rotate') {
        const writer = firstProvider(base, writeResourceOf(base));
        if (ageLimit !== undefined) {
          const age = await writeKeyAge(ctx, writer, node.configPath);
          if (age.ms < ageLimit) {
            ctx.out.result(
              { rotated: false, reason: 'younger', writeKey: age.name, ageDays: Math.floor(age.ms / 86_400_000), ageSource: age.source, ifOlderThan: opts.ifOlderThan },
              () => `nothing to do: the write key ${age.name} is ${formatAge(age.ms)} old (${age.source}), younger than ${opts.ifOlderThan}`,
            );
            return;
          }
          ctx.out.info(`the write key ${age.name} is ${formatAge(age.ms)} old (${age.source}): rotating`);
        }
        const provider = opts.provider ?? (writer ? providerKinds(writer)[0] : undefined) ?? 'aescbc';
        if (provider === 'identity') throw refused('new writes are not encrypted: there is no write key to rotate', 'turn encryption on with "k8s-encrypt init"');
        if (provider === 'kms') {
          if (!opts.kmsName || !opts.kmsEndpoint) throw usageError('a rotation to KMS needs --kms-name and --kms-endpoint', 'e.g. --kms-name kms-2 --kms-endpoint unix:///var/run/kmsplugin/socket.sock');
          element = buildProviderElement({ provider: 'kms', keyName: opts.kmsName, kms: { name: opts.kmsName, endpoint: opts.kmsEndpoint, apiVersion: opts.kmsApiVersion ?? 'v2', ...(opts.kmsTimeout ? { timeout: opts.kmsTimeout } : {}) } });
          keySource = 'kms';
        } else {
          if (!isLocalProvider(provider)) throw usageError(`unknown provider "${provider}"`);
          const k = await newKey(ctx, provider, opts);
          keySource = k.source;
          secrets = [k.key];
          element = buildProviderElement({ provider, keyName: opts.keyName ?? newKeyName(ctx.now(), takenNames(base)), key: k.key });
        }
      }
      plan = planTransition({ kind: spec.kind, baseText, configPath: node.configPath, ...(element ? { element } : {}), controlPlanes: node.controlPlanes, kubeVersion: node.kubeVersion, featureGates: node.featureGates });
      // A new transition can only begin at its first stage: check before anything is journaled.
      if (only && plan.stages[0]!.name !== only) {
        const known = plan.stages.some((st) => st.name === only);
        throw new CliError(
          known ? `stage "${only}" comes after "${plan.stages[0]!.name}", which is not done yet` : `this ${spec.operation} has no stage "${only}" on ${node.controlPlanes} control plane(s)`,
          { exitCode: known ? ExitCode.Refused : ExitCode.Usage, hint: `its stages: ${plan.stages.map((st) => st.name).join(', ')}` },
        );
      }

      if (opts.dryRun) {
        for (const l of safetyNetPreview(ctx, opts, spec.kind === 'rotate' ? plan.target.name : undefined)) ctx.out.info(l);
        return printDryRun(ctx, plan);
      }
      if (element?.kms && !resuming) {
        const { assertKmsHealthy } = await import('../kms/health');
        ctx.out.step(`checking the KMS plugin at ${element.kms.endpoint}`);
        await assertKmsHealthy(element.kms.endpoint, { apiVersion: element.kms.apiVersion === 'v1' ? 'v1' : 'v2', ...(element.kms.timeout ? { timeoutMs: Math.round((parseGoDuration(element.kms.timeout) ?? 3e9) / 1e6) } : {}) });
      }
      for (const w of plan.warnings) ctx.out.warn(w);
      await confirm(
        ctx,
        spec.kind === 'rotate'
          ? `rotate to ${plan.target.provider} "${plan.target.name}" on ${node.nodeName} (${plan.stages.map((s) => s.name).join(' → ')})? The apiserver restarts at each stage.`
          : `turn encryption at rest OFF on ${node.nodeName} (${plan.stages.map((s) => s.name).join(' → ')}): every object is rewritten in plaintext?`,
      );
      // The base copy comes first: a journal always points at a complete one.
      const basePath = join(stateDir, 'transitions', `${spec.operation}-${randomBytes(4).toString('hex')}.base.yaml`);
      await ensureDir(join(stateDir, 'transitions'), PRIVATE_DIR_MODE);
      await writeFileAtomic(basePath, baseText, { mode: SECRET_FILE_MODE });
      journal = await Journal.start<TransitionJournalInputs>(
        stateDir,
        spec.operation,
        {
          kind: spec.kind,
          provider: plan.target.provider,
          targetName: plan.target.name,
          keySource,
          keyFile: opts.keyFile ? resolve(opts.keyFile) : null,
          kms: element?.kms ? { name: element.kms.name, endpoint: element.kms.endpoint, apiVersion: element.kms.apiVersion === 'v1' ? 'v1' : 'v2', timeout: element.kms.timeout ?? null } : null,
          basePath,
          baseSha256: plan.base.sha256,
          stageSha256: stageShas(plan),
          controlPlanes: plan.controlPlanes,
          nodeName: node.nodeName,
          hasNode: node.hasNode,
          configPath: node.configPath,
          manifestPath: ctx.paths.manifest,
          timeoutMs: parseTimeoutMs(opts.timeout),
        },
        { now: ctx.now, forbidden: secrets },
      );
    }
    if (opts.dryRun) return printDryRun(ctx, plan);
    const j = (await Journal.load<TransitionJournalInputs>(stateDir, spec.operation, { now: ctx.now, forbidden: secrets }))!;
    const deps = await transitionDeps(ctx, { ...node, configPath: j.inputs.configPath, nodeName: j.inputs.nodeName, hasNode: j.inputs.hasNode }, opts, follow);
    // Snapshot before the first change; a rotation's new key escrowed before its config is written.
    const firstConfig = plan.stages.find((s) => s.config)?.config;
    await runSafetyNet(ctx, j, node.flags, opts, { operation: spec.operation, ...(spec.kind === 'rotate' && firstConfig ? { newKey: { keyName: plan.target.name, configText: firstConfig.text, configPath: j.inputs.configPath } } : {}) });
    const result = await runTransition(deps, plan, j as never, only ? { only } : {});
    printResult(ctx, spec, plan, result, j);
  } finally {
    node.api.close();
    await lock?.release();
  }
}

/**
 * Another control plane mid-way through a transition (at add-reader or promote with a config this
 * node does not run) was started elsewhere: a second one started here would fork the keys.
 */
async function assertNoTransitionElsewhere(node: NodeView, mySha: string, operation: string): Promise<void> {
  const records = await readStages(node.api, await discoverControlPlanes(node.api));
  const busy = records.filter((r) => r.node !== node.nodeName && r.record && ['add-reader', 'promote'].includes(r.record.stage) && r.record.sha256 !== mySha);
  if (busy.length) {
    throw refused(
      `a transition is under way on ${busy.map((b) => `${b.node} (stage ${b.record!.stage})`).join(', ')}: starting another one here would fork the keys`,
      `follow it on this node with "k8s-encrypt ${operation} --from-config FILE" (FILE: that node's config), or pass --force if it was abandoned`,
      { nodes: busy },
    );
  }
}

function stageShas(plan: TransitionPlan): { [stage: string]: string } {
  return Object.fromEntries(plan.stages.filter((s) => s.config).map((s) => [s.name, s.config!.sha256]));
}

/** Rebuilds the plan of an unfinished transition from its base copy and the key in the config file. */
async function resumePlan(ctx: Context, j: Journal<TransitionJournalInputs>, node: NodeView, opts: TransitionOptions): Promise<{ plan: TransitionPlan; secrets: string[] }> {
  const i = j.inputs;
  const baseText = await readText(i.basePath, 'read the base copy of the transition');
  if (sha256Hex(baseText) !== i.baseSha256) throw refused(`${i.basePath} changed since ${j.id} began`, `move ${j.path} away to start over`);
  const anyWritten = j.steps.some((s) => s.name.endsWith(':write'));
  let element: ProviderConfig | undefined;
  let secrets: string[] = [];
  if (i.kind === 'rotate') {
    const currentText = (await fileExists(i.configPath)) ? await readText(i.configPath, 'read config') : undefined;
    element = currentText !== undefined ? findElement(parseEncryptionConfig(currentText, i.configPath), i.provider, i.targetName) : undefined;
    if (!element) {
      if (anyWritten) throw refused(`${i.configPath} no longer holds "${i.targetName}", which ${j.id} wrote`, `check the file (rollback restores a backup); move ${j.path} away to start over`);
      // Interrupted before the key reached the file: nothing holds it, so a new one is as good.
      if (i.provider === 'kms') element = buildProviderElement({ provider: 'kms', keyName: i.targetName, kms: { name: i.kms!.name, endpoint: i.kms!.endpoint, apiVersion: i.kms!.apiVersion, ...(i.kms!.timeout ? { timeout: i.kms!.timeout } : {}) } });
      else {
        const k = await newKey(ctx, i.provider as LocalProvider, i.keySource === 'file' ? { keyFile: i.keyFile! } : i.keySource === 'stdin' ? { keyStdin: true } : {});
        element = buildProviderElement({ provider: i.provider as LocalProvider, keyName: i.targetName, key: k.key });
      }
    }
    const local = localKindOf(element);
    if (local) secrets = element[local]!.keys.map((k) => k.secret);
  }
  const plan = planTransition({ kind: i.kind, baseText, configPath: i.configPath, ...(element ? { element } : {}), controlPlanes: i.controlPlanes, kubeVersion: node.kubeVersion, featureGates: node.featureGates });
  const shas = stageShas(plan);
  if (JSON.stringify(shas) !== JSON.stringify(i.stageSha256)) {
    if (anyWritten) throw refused(`the stages of ${j.id} no longer match what it wrote`, `move ${j.path} away to start over`);
    if (!opts.dryRun) await j.updateInputs({ stageSha256: shas });
  }
  const at = resumePoint(plan, j.steps.map((s) => s.name));
  if (at.step) ctx.out.info(`resuming at ${at.step}`);
  return { plan, secrets };
}

async function writeKeyAge(ctx: Context, writer: ProviderConfig | undefined, configPath: string): Promise<{ name: string; ms: number; source: string }> {
  const local = writer ? localKindOf(writer) : undefined;
  const name = local ? writer![local]!.keys[0]?.name ?? '?' : writer?.kms?.name ?? 'identity';
  const created = keyCreatedAt(name);
  if (created) return { name, ms: ctx.now().getTime() - created.getTime(), source: 'from its name' };
  const mtime = (await stat(configPath)).mtime;
  ctx.out.warn(`the write key "${name}" was not named by k8s-encrypt: its age is taken from ${configPath}'s modification time (${mtime.toISOString()})`);
  return { name, ms: ctx.now().getTime() - mtime.getTime(), source: "the config file's mtime" };
}

const formatAge = (ms: number) => (ms >= 86_400_000 ? `${Math.floor(ms / 86_400_000)} day(s)` : `${Math.floor(ms / 3_600_000)} hour(s)`);

function printDryRun(ctx: Context, plan: TransitionPlan): void {
  for (const w of plan.warnings) ctx.out.warn(w);
  ctx.out.result({ dryRun: true, ...printableTransition(plan) }, (c) =>
    [
      c.bold(`${plan.kind} plan for ${plan.configPath}, ${plan.controlPlanes} control plane(s) — dry run, nothing is written (keys redacted)`),
      ...plan.stages.flatMap((s, i) => [
        '',
        c.bold(`${i + 1}. ${s.name}: ${s.title}`),
        ...(s.removes.length ? [`   refused while etcd holds objects under: ${s.removes.join(', ')}`] : []),
        ...(s.diff ? [s.diff.trimEnd()] : []),
      ]),
      ...(plan.kept.length ? ['', c.bold('kept:'), ...plan.kept.map((k) => `  ${k}`)] : []),
    ].join('\n'),
  );
}

function printResult(ctx: Context, spec: CommandSpec, plan: TransitionPlan, r: TransitionResult, j: Journal<TransitionJournalInputs>): void {
  const id = j.id;
  const body = { state: r.state, journal: id, snapshot: j.output(SNAPSHOT_STEP) ?? null, escrow: j.output(ESCROW_STEP) ?? null, kind: plan.kind, target: plan.target, stage: r.stage, sha256: r.sha256, stages: r.stages, lagging: r.lagging, next: r.next, kept: plan.kept };
  ctx.out.result(body, (c) => {
    const lines: string[] = [];
    if (r.state === 'done') {
      lines.push(spec.kind === 'rotate' ? `${c.green('✓')} rotated: ${plan.target.provider} "${plan.target.name}" writes, every object rewritten, old keys removed` : `${c.green('✓')} encryption at rest is off: every object is plaintext, the flag, mount and config are gone`);
      for (const k of plan.kept) lines.push(`  kept: ${k}`);
    } else {
      lines.push(`${c.yellow('…')} this control plane finished stage "${r.stage}" (sha256 ${r.sha256?.slice(0, 12)}…)`);
      for (const l of r.lagging) lines.push(`  ${l.node}: ${l.reports}`);
    }
    for (const s of r.stages) lines.push(`  ${s.stage}: ${s.verified ?? s.proof ?? s.evidence ?? ''}`);
    lines.push(...safetyNetLines(j));
    if (r.next) lines.push(`next: ${r.next}`);
    return lines.join('\n');
  });
}

// ---------------------------------------------------------------------------------------------
// Further control planes: install the first node's file for a stage.

async function follow(ctx: Context, spec: CommandSpec, opts: TransitionOptions, only: StageName | undefined): Promise<void> {
  const file = resolve(opts.fromConfig!);
  const text = await readText(file, 'read --from-config file');
  const cfg = parseEncryptionConfig(text, file);
  const sha = sha256Hex(text);
  const node = await readNode(ctx, opts);
  let lock: Lock | undefined;
  try {
    const errors = errorsOf(validateEncryptionConfig(cfg, { kubeVersion: node.kubeVersion, featureGates: node.featureGates }));
    if (errors.length) throw usageError(`${file} would not be accepted by kube-apiserver ${node.kubeVersion}: ${errors[0]!.path}: ${errors[0]!.message}`);
    if (node.flags.get(CONFIG_FLAG) === undefined) throw refused(`${ctx.paths.manifest} has no --${CONFIG_FLAG}`, 'turn encryption on here first ("k8s-encrypt init --from-config FILE")');
    let stage: string | undefined = only;
    if (!stage) {
      const records = await readStages(node.api, await discoverControlPlanes(node.api));
      stage = records.find((r) => r.record?.sha256 === sha && (STAGES as readonly string[]).includes(r.record.stage))?.record?.stage;
      if (!stage) throw usageError(`no control plane reports a stage for ${file} (sha256 ${sha.slice(0, 12)}…)`, `say which stage it is with --stage ${STAGES.join('|')}`);
    }
    const current = (await fileExists(node.configPath)) ? await readText(node.configPath, 'read config') : undefined;
    const currentCfg = current !== undefined ? parseEncryptionConfig(current, node.configPath) : undefined;
    const deps = await transitionDeps(ctx, node, opts, `"k8s-encrypt ${spec.operation} --from-config FILE"`);
    const diff = unifiedDiff(describeConfigText(current ?? '', currentCfg ?? cfg).redacted, describeConfigText(text, cfg).redacted, node.configPath);
    if (opts.dryRun) {
      ctx.out.result({ dryRun: true, stage, sha256: sha, diff }, () => `stage ${stage}: install ${file} as ${node.configPath} (dry run, keys redacted)\n${diff || '(no change)'}`);
      return;
    }
    // A follower restarts this node's apiserver as the first node's run does: it asks the same way.
    await confirm(ctx, `install ${file} as ${node.configPath} on ${node.nodeName} (${spec.operation}, stage ${stage})? The apiserver restarts.`);
    lock = await acquireLock(ctx.paths.stateDir, spec.operation, { now: ctx.now, warn: (m) => ctx.out.warn(m), sweepDirs: [ctx.paths.configDir, ctx.paths.manifestsDir, ctx.paths.backupDir] });
    if (current !== text) {
      const { assertKmsHealthy } = await import('../kms/health');
      for (const k of cfg.resources.flatMap((r) => r.providers.flatMap((p) => (p.kms ? [p.kms] : [])))) {
        ctx.out.step(`checking the KMS plugin at ${k.endpoint}`);
        await assertKmsHealthy(k.endpoint, { apiVersion: k.apiVersion === 'v1' ? 'v1' : 'v2' });
      }
    }
    if (currentCfg && current !== text) {
      // The other control planes run what this one ran (or one stage on): a writer this node could
      // not read before may be one they cannot read either (a stale or skipped file).
      const newWriter = describeConfigText(text, cfg).writeLabel;
      const readers = readersOfAll(currentCfg);
      if (!readers.has(newWriter)) {
        const msg = `${file} writes with ${newWriter}, which ${node.configPath} does not read yet: the other control planes may not read it either`;
        if (!deps.force) throw refused(msg, 'install the stages in order (add-reader first), or pass --force if every control plane already reads it');
        ctx.out.warn(`--force: ${msg}`);
      }
      const scan = await scanLabels(deps, currentCfg, resourcesOfBoth(currentCfg, cfg));
      assertNothingUnder(scan, cfg, `install ${file}`, deps.force, ctx.out);
    }
    const outcome = await installConfig(deps, new MemoryJournal(), { stage, config: describeConfigText(text, cfg) });
    ctx.out.result({ ...outcome, state: 'done', stage, sha256: sha, node: node.nodeName }, (c) => `${c.green('✓')} ${node.nodeName} runs stage "${stage}" (sha256 ${sha.slice(0, 12)}…): ${outcome.proof}\nnext: re-run the command on the first control plane`);
  } finally {
    node.api.close();
    await lock?.release();
  }
}

function readersOfAll(cfg: EncryptionConfiguration): Set<string> {
  const resources = [...new Set(cfg.resources.flatMap((r) => r.resources))];
  return new Set(resources.flatMap((r) => readersOf(cfg, r)));
}

function resourcesOfBoth(a: EncryptionConfiguration, b: EncryptionConfiguration): string[] {
  const all = [...a.resources, ...b.resources].flatMap((r) => r.resources);
  return [...new Set(all)].filter((r) => !r.startsWith('*'));
}

/** `disable --stage prune` on a further control plane: nothing may be encrypted, then unpatch here. */
async function followDisablePrune(ctx: Context, opts: TransitionOptions): Promise<void> {
  const node = await readNode(ctx, opts);
  let lock: Lock | undefined;
  try {
    if (node.flags.get(CONFIG_FLAG) === undefined) {
      ctx.out.result({ state: 'done', nothingToDo: true }, () => `nothing to do: ${ctx.paths.manifest} has no --${CONFIG_FLAG}`);
      return;
    }
    const text = (await fileExists(node.configPath)) ? await readText(node.configPath, 'read config') : undefined;
    const cfg = text !== undefined ? parseEncryptionConfig(text, node.configPath) : undefined;
    if (opts.dryRun) {
      ctx.out.result({ dryRun: true, stage: 'prune' }, () => `would remove --${CONFIG_FLAG}, its mount, the kubeadm-config entries and ${node.configPath} (dry run)`);
      return;
    }
    await confirm(ctx, `turn encryption at rest OFF on ${node.nodeName} (remove the flag, the mount and the config)?`);
    lock = await acquireLock(ctx.paths.stateDir, 'disable', { now: ctx.now, warn: (m) => ctx.out.warn(m), sweepDirs: [ctx.paths.configDir, ctx.paths.manifestsDir, ctx.paths.backupDir] });
    const deps = await transitionDeps(ctx, node, opts, '"k8s-encrypt disable --stage prune"');
    if (cfg) {
      const scan = await scanLabels(deps, cfg, resourcesOfBoth(cfg, cfg));
      assertNothingUnder(scan, { ...cfg, resources: [] }, 'turn encryption off', deps.force, ctx.out);
    }
    const outcome = await unpatchStage(deps, new MemoryJournal(), cfg);
    ctx.out.result({ ...outcome, state: 'done', stage: 'prune', node: node.nodeName }, (c) => `${c.green('✓')} encryption at rest is off on ${node.nodeName}; ${outcome.proof}`);
  } finally {
    node.api.close();
    await lock?.release();
  }
}

// ---------------------------------------------------------------------------------------------
// rollback

export interface RollbackOptions {
  to?: string;
  dryRun?: boolean;
  timeout: string;
  config?: string;
  nodeName?: string;
  keepBackups: number;
}

/**
 * Puts the previous config back on this node, but only one that can read every object etcd holds
 * (everything written since was written with a key the restored config must still have).
 */
export async function runRollbackCommand(ctx: Context, opts: RollbackOptions): Promise<void> {
  const topts: TransitionOptions = { timeout: opts.timeout, keepBackups: opts.keepBackups, kubeadmConfig: true, ...(opts.config ? { config: opts.config } : {}), ...(opts.nodeName ? { nodeName: opts.nodeName } : {}) };
  parseTimeoutMs(opts.timeout);
  const node = await readNode(ctx, topts);
  let lock: Lock | undefined;
  try {
    if (!(await fileExists(node.configPath))) {
      throw refused(`there is no config at ${node.configPath} to roll back`, 'after "disable", turn encryption on again with "k8s-encrypt init --from-config BACKUP"');
    }
    const currentText = await readText(node.configPath, 'read config');
    const current = parseEncryptionConfig(currentText, node.configPath);
    const currentSha = sha256Hex(currentText);
    let source: string | undefined;
    if (opts.to) source = resolve(opts.to);
    else {
      for (const b of await listBackups(ctx.paths.backupDir, basename(node.configPath))) {
        if (sha256Hex(await readFile(b)) !== currentSha) {
          source = b;
          break;
        }
      }
    }
    if (!source) throw refused(`no earlier config of ${node.configPath} is kept in ${ctx.paths.backupDir}`, 'pass --to FILE to restore a specific copy');
    const text = await readText(source, 'read backup');
    const cfg = parseEncryptionConfig(text, source);
    const errors = errorsOf(validateEncryptionConfig(cfg, { kubeVersion: node.kubeVersion, featureGates: node.featureGates }));
    if (errors.length) throw usageError(`${source} would not be accepted by kube-apiserver ${node.kubeVersion}: ${errors[0]!.path}: ${errors[0]!.message}`);
    const deps = await transitionDeps(ctx, node, topts, '"k8s-encrypt rollback"');
    const scan = await scanLabels(deps, current, resourcesOfBoth(current, cfg));
    // rollback has no --force: it never makes an object unreadable.
    assertNothingUnder(scan, cfg, `restore ${source}`, false, ctx.out, `restore a copy that still reads them (--to FILE, e.g. a newer backup in ${ctx.paths.backupDir}), or keep the current config: rollback never makes objects unreadable`);
    const restored = describeConfigText(text, cfg);
    const diff = unifiedDiff(describeConfigText(currentText, current).redacted, restored.redacted, node.configPath);

    // Which stage of an unfinished transition the restored file is, to journal the step back.
    const journals = (await Promise.all((['rotate-key', 'disable'] as const).map((op) => Journal.load<TransitionJournalInputs>(ctx.paths.stateDir, op, { now: ctx.now })))).filter(
      (x): x is Journal<TransitionJournalInputs> => x !== undefined && !isFinished(x.status),
    );
    let stage = 'rollback';
    let owner: { j: Journal<TransitionJournalInputs>; at: StageName | 'base' } | undefined;
    for (const jj of journals) {
      const at = jj.inputs.baseSha256 === restored.sha256 ? 'base' : (Object.entries(jj.inputs.stageSha256).find(([, v]) => v === restored.sha256)?.[0] as StageName | undefined);
      if (at) {
        owner = { j: jj, at };
        if (at !== 'base') stage = at;
      }
    }
    if (opts.dryRun) {
      ctx.out.result({ dryRun: true, from: source, stage, diff }, () => `would restore ${source} as ${node.configPath} (stage ${stage}; keys redacted):\n${diff || '(no change)'}`);
      return;
    }
    await confirm(ctx, `restore ${source} as ${node.configPath} on ${node.nodeName}? The apiserver restarts.`);
    lock = await acquireLock(ctx.paths.stateDir, 'rollback', { now: ctx.now, warn: (m) => ctx.out.warn(m), sweepDirs: [ctx.paths.configDir, ctx.paths.manifestsDir, ctx.paths.backupDir] });
    const outcome = await installConfig(deps, new MemoryJournal(), { stage, config: restored, record: stage !== 'rollback' || node.controlPlanes > 1 });
    if (owner) {
      if (owner.at === 'base') await owner.j.setStatus('rolled-back', `rollback restored the config ${owner.j.id} started from`);
      else {
        const later = STAGES.slice(STAGES.indexOf(owner.at) + 1);
        await owner.j.forget(owner.j.steps.map((s) => s.name).filter((n) => later.some((st) => n.startsWith(`${st}:`))));
        await owner.j.setStatus('running');
      }
    }
    ctx.out.result({ ...outcome, state: 'done', restored: source, stage, sha256: restored.sha256, journal: owner?.j.id ?? null }, (c) =>
      `${c.green('✓')} restored ${source} on ${node.nodeName} (stage ${stage}, sha256 ${restored.sha256.slice(0, 12)}…): ${outcome.proof}${owner ? `\n  ${owner.j.id}: ${owner.at === 'base' ? 'marked rolled back' : `continues after stage ${owner.at} on the next run`}` : ''}`,
    );
  } finally {
    node.api.close();
    await lock?.release();
  }
}
