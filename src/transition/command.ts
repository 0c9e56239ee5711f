import { randomBytes } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Context } from '../context';
import { readKubeadmConfig } from '../cluster/kubeadm-config';
import { readStages } from '../cluster/nodes';
import { firstProvider, writeResourceOf } from '../config/model';
import { checkKeyName, checkKmsName, isLocalProvider, parseProvider, type LocalProvider } from '../config/keys';
import { parseEncryptionConfig, sha256Hex } from '../config/parse';
import { assertReadable, readConfigSource, readKey } from '../config/input';
import { buildProviderElement, keyCreatedAt, newKeyName } from '../config/render';
import { providerKinds, type ProviderConfig } from '../config/schema';
import { parseGoDuration } from '../config/validate';
import { CONFIG_FLAG } from '../manifest/patch';
import { ensurePrivateDir, fileExists, readText, SECRET_FILE_MODE, writeFileAtomic } from '../state/atomic';
import { Journal, isFinished, type JsonObject } from '../state/journal';
import { CliError, ExitCode, usageError } from '../ui/errors';
import { confirm } from '../ui/prompt';
import { checkSafetyOptions, runSafetyNet, safetyNetPreview } from '../snapshot/guard';
import { planTransition, resumePoint, STAGES, type StageName, type TransitionKind, type TransitionPlan } from './plan';
import { runTransition } from './executor';
import { recordedStages } from './recorded';
import { checkKmsPlugin, keyHolders, readNode, refused, removeBaseCopy, transitionDeps, parseTimeoutMs, underLock, type NodeView } from './front';
import { findElement, localKindOf, takenNames } from '../config/elements';
import { printDryRun, printResult } from './print';
import { follow, followDisablePrune, type GivenConfig } from './follow';

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
  snapshotStallTimeout?: string;
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

function parseAge(v: string): number {
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
  // What the command line hands in is read before the lock; the lock comes before any decision.
  await assertReadable([['read key file', opts.keyFile]]);
  const source = opts.fromConfig ? await readConfigSource(ctx, opts.fromConfig, opts.keyStdin) : undefined;
  const given = source ? { ...source, cfg: parseEncryptionConfig(source.text, source.label) } : undefined;
  await underLock(ctx, spec.operation, opts.dryRun, () => transition(ctx, spec, opts, { only, ageLimit, given }));
}

/** rotate-key and disable (and their followers) under the lock: the journal, this node, the plan, the run. */
async function transition(ctx: Context, spec: CommandSpec, opts: TransitionOptions, run: { only: StageName | undefined; ageLimit: number | undefined; given: GivenConfig | undefined }): Promise<void> {
  const { only, ageLimit } = run;
  const stateDir = ctx.paths.stateDir;
  let journal = await Journal.load<TransitionJournalInputs>(stateDir, spec.operation, { now: ctx.now });
  const resuming = journal !== undefined && !isFinished(journal.status);

  if (run.given) return follow(ctx, spec, opts, only, run.given);
  if (!resuming && spec.kind === 'disable' && only === 'prune') {
    return followDisablePrune(ctx, opts);
  }

  const node = await readNode(ctx, opts, { nodeName: resuming ? journal!.inputs.nodeName : undefined });
  try {
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
          checkKmsName(opts.kmsName);
          element = buildProviderElement({ provider: 'kms', keyName: opts.kmsName, kms: { name: opts.kmsName, endpoint: opts.kmsEndpoint, apiVersion: opts.kmsApiVersion ?? 'v2', ...(opts.kmsTimeout ? { timeout: opts.kmsTimeout } : {}) } });
          keySource = 'kms';
        } else {
          if (!isLocalProvider(provider)) throw usageError(`unknown provider "${provider}"`);
          const k = await readKey(ctx, provider, opts);
          keySource = k.source;
          secrets = [k.key];
          element = buildProviderElement({ provider, keyName: opts.keyName ?? newKeyName(ctx.now(), takenNames(base)), key: k.key });
        }
      }
      plan = planTransition({ kind: spec.kind, baseText, configPath: node.configPath, ...(element ? { element } : {}), controlPlanes: node.controlPlanes, kubeVersion: node.kubeVersion, featureGates: node.featureGates, manifest: { text: node.manifestText, path: ctx.paths.manifest }, ...(await kubeadmRead(node, spec.kind, opts)) });
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
      if (element?.kms && !resuming) await checkKmsPlugin(ctx, element.kms);
      for (const w of plan.warnings) ctx.out.warn(w);
      await confirm(
        ctx,
        spec.kind === 'rotate'
          ? `rotate to ${plan.target.provider} "${plan.target.name}" on ${node.nodeName} (${plan.stages.map((s) => s.name).join(' → ')})? The apiserver restarts at each stage.`
          : `turn encryption at rest OFF on ${node.nodeName} (${plan.stages.map((s) => s.name).join(' → ')}): every object is rewritten in plaintext?`,
      );
      // The base copy comes first: a journal always points at a complete one.
      const basePath = join(stateDir, 'transitions', `${spec.operation}-${randomBytes(4).toString('hex')}.base.yaml`);
      await ensurePrivateDir(join(stateDir, 'transitions'), 'transitions directory');
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
    // A resumed run executes the changes its journal recorded: its dry run shows those.
    if (opts.dryRun) {
      const notes: string[] = [];
      const stages = recordedStages(journal!, plan.stages, { path: ctx.paths.manifest, text: node.manifestText, say: (m) => notes.push(m) });
      return printDryRun(ctx, { ...plan, stages, notes: [...plan.notes, ...notes] });
    }
    const j = (await Journal.load<TransitionJournalInputs>(stateDir, spec.operation, { now: ctx.now, forbidden: secrets }))!;
    const deps = await transitionDeps(ctx, { ...node, configPath: j.inputs.configPath, nodeName: j.inputs.nodeName, hasNode: j.inputs.hasNode }, opts, follow);
    // Snapshot before the first change; a rotation's new key escrowed before its config is written.
    const firstConfig = plan.stages.find((s) => s.config)?.config;
    await runSafetyNet(ctx, j, node.flags, opts, { operation: spec.operation, ...(spec.kind === 'rotate' && firstConfig ? { newKey: { keyName: plan.target.name, configText: firstConfig.text, configPath: j.inputs.configPath } } : {}) });
    const result = await runTransition(deps, plan, j, only ? { only } : {});
    // The base copy holds the old keys: it goes with the transition it was kept for.
    if (result.state === 'done') await removeBaseCopy(j.inputs.basePath);
    const holders = result.state === 'done' ? await keyHolders(node.configPath, ctx.paths.backupDir, stateDir) : undefined;
    printResult(ctx, spec, plan, result, j, holders);
  } finally {
    node.api.close();
  }
}

/**
 * Another control plane mid-way through a transition (at add-reader or promote with a config this
 * node does not run) was started elsewhere: a second one started here would fork the keys.
 */
async function assertNoTransitionElsewhere(node: NodeView, mySha: string, operation: string): Promise<void> {
  const records = await readStages(node.api, node.found);
  const busy = records.filter((r) => r.node !== node.nodeName && r.record && ['add-reader', 'promote'].includes(r.record.stage) && r.record.sha256 !== mySha);
  if (busy.length) {
    throw refused(
      `a transition is under way on ${busy.map((b) => `${b.node} (stage ${b.record!.stage})`).join(', ')}: starting another one here would fork the keys`,
      `follow it on this node with "k8s-encrypt ${operation} --from-config FILE" (FILE: that node's config), or pass --force if it was abandoned`,
      { nodes: busy },
    );
  }
}

/** disable forgets the flag in kube-system/kubeadm-config: its plan carries that exact change. */
const kubeadmRead = async (node: NodeView, kind: TransitionKind, opts: TransitionOptions) => (kind === 'disable' && opts.kubeadmConfig ? { kubeadm: await readKubeadmConfig(node.api) } : {});

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
        const k = await readKey(ctx, i.provider as LocalProvider, i.keySource === 'file' ? { keyFile: i.keyFile! } : i.keySource === 'stdin' ? { keyStdin: true } : {});
        element = buildProviderElement({ provider: i.provider as LocalProvider, keyName: i.targetName, key: k.key });
      }
    }
    const local = localKindOf(element);
    if (local) secrets = element[local]!.keys.map((k) => k.secret);
  }
  const plan = planTransition({ kind: i.kind, baseText, configPath: i.configPath, ...(element ? { element } : {}), controlPlanes: i.controlPlanes, kubeVersion: node.kubeVersion, featureGates: node.featureGates, manifest: { text: node.manifestText, path: i.manifestPath }, ...(await kubeadmRead(node, i.kind, opts)) });
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

