import { access, constants, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Opts } from '../commands/init';
import type { Context } from '../context';
import type { ApiClient } from '../cluster/api';
import { describeError } from '../cluster/errors';
import { discoverControlPlanes, identifyThisNode, type ControlPlane } from '../cluster/nodes';
import { readClusterConfiguration } from '../cluster/kubeadm-config';
import { localApiserverClient } from '../cluster/wait';
import { checkKeyName, isLocalProvider, parseProvider, type LocalProvider, type Provider } from '../config/keys';
import { sha256Hex } from '../config/parse';
import { newKeyName } from '../config/render';
import { parseGoDuration, parseKubeVersion } from '../config/validate';
import { assertBackupDirOutside } from '../manifest/apply';
import { readApiserverFlags } from '../manifest/manifest';
import { CONFIG_FLAG } from '../manifest/patch';
import { fileExists, readText } from '../state/atomic';
import { Journal, isFinished } from '../state/journal';
import { acquireLock, type Lock } from '../state/lock';
import { CliError, ExitCode, fsError, usageError } from '../ui/errors';
import { confirm } from '../ui/prompt';
import { planInit, printablePlan, type InitInput, type InitPlan, type KmsOptions } from './plan';
import { runInit, type InitJournalInputs, type InitResult } from './run';
import { engineDeps, newKey, parseTimeoutMs } from '../transition/command';
import type { TransitionReporter } from '../transition/run';
import type { Output } from '../ui/output';
import { checkSafetyOptions, runSafetyNet, safetyNetLines, safetyNetPreview, SNAPSHOT_STEP } from '../snapshot/guard';
import { ESCROW_STEP } from '../escrow/export';

export const INIT_OPERATION = 'init';
export const DEFAULT_TIMEOUT = '5m';

export { parseTimeoutMs };

/** Writes would fail half-way without permission: find out before changing anything. */
async function assertWritable(paths: string[]): Promise<void> {
  for (const p of paths) {
    let d = p;
    for (;;) {
      try {
        await stat(d);
        break;
      } catch {
        const up = dirname(d);
        if (up === d) break;
        d = up;
      }
    }
    try {
      await access(d, constants.W_OK);
    } catch (err) {
      throw fsError('write to', d, err);
    }
  }
}

async function kubeVersionOf(api: ApiClient | undefined, imageVersion: string | undefined): Promise<{ version: string; source: string; reachable: boolean; why?: string }> {
  if (api) {
    try {
      const v = await api.get<{ gitVersion?: string }>('/version', { timeoutMs: 10_000 });
      const m = /^v?(\d+\.\d+\.\d+)/.exec(v.gitVersion ?? '');
      if (m) return { version: m[1]!, source: '/version', reachable: true };
    } catch (err) {
      if (imageVersion) return { version: imageVersion, source: "the manifest's image tag (apiserver unreachable)", reachable: false, why: describeError(err) };
      return { version: '', source: '', reachable: false, why: describeError(err) };
    }
  }
  if (imageVersion) return { version: imageVersion, source: "the manifest's image tag", reachable: api !== undefined };
  return { version: '', source: '', reachable: false };
}

function checkOptions(opts: Opts): void {
  if (opts.fromConfig) {
    const stray = (['keyFile', 'keyStdin', 'keyName', 'kmsName', 'kmsEndpoint', 'kmsTimeout'] as const).find((k) => opts[k] !== undefined);
    if (stray) throw usageError(`--from-config installs the given file as is; --${stray.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} does not apply`);
  }
  if (opts.keyFile && opts.keyStdin) throw usageError('give the key with --key-file or --key-stdin, not both');
  checkKeyName(opts.keyName);
}

async function freshKey(
  ctx: Context,
  opts: Opts,
  provider: Provider,
  fromConfig: boolean,
): Promise<{ key: string | undefined; keySource: InitJournalInputs['keySource'] }> {
  if (fromConfig) return { key: undefined, keySource: 'from-config' };
  if (!isLocalProvider(provider)) return { key: undefined, keySource: 'kms' };
  const k = await newKey(ctx, provider, opts);
  return { key: k.key, keySource: k.source as InitJournalInputs['keySource'] };
}

export async function runInitCommand(ctx: Context, opts: Opts): Promise<void> {
  checkOptions(opts);
  checkSafetyOptions(opts);
  const timeoutMs = parseTimeoutMs(opts.timeout ?? DEFAULT_TIMEOUT);
  const paths = ctx.paths;
  const manifestPath = paths.manifest;
  const configPath = paths.config;
  const provider: Provider = parseProvider(opts.provider);
  const resources = opts.resources.split(',').map((r) => r.trim()).filter(Boolean);
  if (resources.length === 0) throw usageError('--resources names no resource', 'e.g. --resources secrets,configmaps');
  if (provider === 'kms' && !opts.fromConfig && (!opts.kmsName || !opts.kmsEndpoint)) {
    throw usageError('--provider kms needs --kms-name and --kms-endpoint', 'e.g. --kms-name mykms --kms-endpoint unix:///var/run/kmsplugin/socket.sock');
  }

  // Preflight, read-only: the manifest must be there and parse.
  const manifestText = await readText(manifestPath, 'read manifest');
  const flags = readApiserverFlags(manifestText, manifestPath);
  await assertBackupDirOutside(paths.backupDir, paths.manifestsDir);
  const fromConfigText = opts.fromConfig ? await readText(resolve(opts.fromConfig), 'read --from-config file') : undefined;

  let lock: Lock | undefined;
  let api: ApiClient | undefined;
  try {
    // Everything up to the lock only reads; bad input leaves the disk exactly as it was.
    if (!opts.dryRun) await assertWritable([manifestPath, configPath, paths.stateDir, paths.backupDir]);

    let journal = await Journal.load<InitJournalInputs>(paths.stateDir, INIT_OPERATION, { now: ctx.now });
    if (journal && journal.status === 'done') {
      const newFromConfig = fromConfigText !== undefined && sha256Hex(fromConfigText) !== journal.inputs.configSha256;
      // Encryption turned off since (disable removed the flag): a new init starts afresh.
      const stillOn = flags.flags.has(CONFIG_FLAG);
      if (!newFromConfig && stillOn) {
        ctx.out.result(
          { nothingToDo: true, journal: journal.id, config: journal.inputs.configPath, provider: journal.inputs.provider, keyName: journal.inputs.keyName },
          () => `nothing to do: init ${journal!.id} finished; encryption is on (${journal!.inputs.provider}, key ${journal!.inputs.keyName}). See "k8s-encrypt status"; "k8s-encrypt rotate-key" changes the key.`,
        );
        return;
      }
    }
    const resuming = journal !== undefined && !isFinished(journal.status);
    if (resuming) {
      ctx.out.info(resumeNotice(journal!.id, journal!.status, journal!.message));
      const j = journal!.inputs;
      const ignored = [
        opts.provider !== 'aescbc' && opts.provider !== j.provider ? '--provider' : '',
        opts.resources !== 'secrets' && opts.resources !== j.resources.join(',') ? '--resources' : '',
        opts.keyName && opts.keyName !== j.keyName ? '--key-name' : '',
        opts.keyFile && !j.keyFile ? '--key-file' : '',
        opts.fromConfig && resolve(opts.fromConfig) !== j.fromConfig ? '--from-config' : '',
      ].filter(Boolean);
      if (ignored.length) ctx.out.warn(`${ignored.join(', ')} ignored: the interrupted run's plan is continued (move ${journal!.path} away to start over)`);
    }

    // A fresh run's key is read (and checked) before anything reaches out to the cluster.
    const fresh = resuming ? undefined : await freshKey(ctx, opts, provider, fromConfigText !== undefined);

    api = await localApiserverClient(paths.kubeconfig, manifestText, manifestPath);
    const kv = await kubeVersionOf(api, flags.kubeVersionFromImage);
    // A resumed run may find the apiserver restarting (killed while waiting for it): its wait step
    // copes with that; a fresh run changes nothing while the apiserver is down.
    if (!kv.reachable && !opts.dryRun && !resuming) {
      throw new CliError(`this node's apiserver (${api.server}) is not reachable${kv.why ? `: ${kv.why}` : ''}`, {
        exitCode: ExitCode.Cluster,
        hint: 'init changes nothing while the apiserver is down: fix it first (crictl ps -a --name kube-apiserver)',
      });
    }
    if (!kv.version) throw usageError('cannot tell the Kubernetes version: the apiserver is unreachable and the manifest image has no version tag');
    parseKubeVersion(kv.version);
    if (!kv.reachable) ctx.out.warn(`the apiserver is not reachable (${kv.why}); planning with version ${kv.version} from ${kv.source}`);

    let controlPlanes: ControlPlane[] = [];
    if (kv.reachable) controlPlanes = await discoverControlPlanes(api);
    if (kv.reachable && controlPlanes.length === 0 && !resuming && !fromConfigText && !opts.controlPlanes) {
      ctx.out.warn(
        'no control plane found (no kube-apiserver mirror pods, control-plane Nodes or apiserver identity leases): treating this node as the only one. With several control planes, pass --control-planes N (and --node-name on each)',
      );
    }
    const me = resuming
      ? { name: journal!.inputs.nodeName, how: 'the journal' }
      : identifyThisNode(controlPlanes, flags.args, opts.nodeName);
    const hasNode = controlPlanes.find((c) => c.name === me.name)?.hasNode ?? false;
    ctx.out.debug(`this node: ${me.name} (${me.how}); control planes: ${controlPlanes.map((c) => c.name).join(', ') || 'none found'}`);

    const existingConfigText = (await fileExists(configPath)) ? await readText(configPath, 'read config') : undefined;
    const kubeadmOn = resuming ? journal!.inputs.kubeadmConfig : opts.kubeadmConfig;
    const clusterConfiguration = kv.reachable && kubeadmOn ? ((await readClusterConfiguration(api)) ?? null) : undefined;

    // The inputs of the plan: a resumed run takes them from the journal and its key from the file.
    let input: InitInput;
    let key: string | undefined;
    let keySource: InitJournalInputs['keySource'];
    if (resuming) {
      const j = journal!.inputs;
      const ours = existingConfigText !== undefined && [j.configSha256, j.writeConfigSha256].includes(sha256Hex(existingConfigText));
      if (existingConfigText !== undefined && !ours && journal!.steps.length > 0) {
        throw new CliError(`${configPath} changed since the interrupted ${journal!.id} wrote it`, {
          exitCode: ExitCode.Refused,
          hint: `check the file; move ${journal!.path} away to start over`,
        });
      }
      keySource = j.keySource;
      if (!ours) {
        if (j.fromConfig) {
          // The --from-config file is the key source: read it again.
        } else if (j.keySource === 'stdin' && !opts.keyStdin) {
          throw usageError('the interrupted init read its key from stdin and had not written it yet', 're-run with --key-stdin and the same key');
        } else if (j.keySource !== 'kms') {
          key = (await newKey(ctx, j.provider as LocalProvider, j.keySource === 'file' && j.keyFile ? { keyFile: j.keyFile } : j.keySource === 'stdin' ? { keyStdin: true } : {})).key;
        }
      }
      const fromText = j.fromConfig ? await readText(j.fromConfig, 'read --from-config file') : undefined;
      input = {
        options: {
          provider: j.provider as Provider,
          resources: j.resources,
          configPath: j.configPath,
          manifestPath: j.manifestPath,
          // A resumed run keeps the first run's timeout unless this run gives one.
          timeoutMs: opts.timeout !== undefined ? timeoutMs : j.timeoutMs,
          kubeadmConfig: j.kubeadmConfig,
          force: Boolean(opts.force),
          ...(j.kms ? { kms: { name: j.kms.name, endpoint: j.kms.endpoint, apiVersion: j.kms.apiVersion, ...(j.kms.timeout ? { timeout: j.kms.timeout } : {}) } } : {}),
        },
        manifestText,
        kubeVersion: kv.version,
        kubeVersionSource: kv.source,
        controlPlanes: j.mode === 'staged' ? Math.max(2, j.controlPlanes ?? 2, controlPlanes.length) : 1,
        keyName: j.keyName,
        ...(key ? { key } : {}),
        ...(fromText !== undefined ? { configText: fromText, configSource: 'from-config' as const } : ours ? { configText: existingConfigText, configSource: 'resume' as const } : {}),
        ...(existingConfigText !== undefined ? { existingConfigText } : {}),
        ...(clusterConfiguration !== undefined ? { clusterConfiguration } : {}),
        resuming: true,
      };
    } else {
      const kms: KmsOptions | undefined =
        provider === 'kms' && !fromConfigText
          ? { name: opts.kmsName!, endpoint: opts.kmsEndpoint!, apiVersion: opts.kmsApiVersion, ...(opts.kmsTimeout ? { timeout: opts.kmsTimeout } : {}) }
          : undefined;
      ({ key, keySource } = fresh!);
      input = {
        options: {
          provider,
          resources,
          configPath,
          manifestPath,
          timeoutMs,
          kubeadmConfig: opts.kubeadmConfig,
          force: Boolean(opts.force),
          ...(kms ? { kms } : {}),
        },
        manifestText,
        kubeVersion: kv.version,
        kubeVersionSource: kv.source,
        controlPlanes: Math.max(1, controlPlanes.length, opts.controlPlanes ?? 0),
        keyName: opts.keyName ?? newKeyName(ctx.now()),
        ...(key ? { key } : {}),
        ...(fromConfigText !== undefined ? { configText: fromConfigText, configSource: 'from-config' as const } : {}),
        ...(existingConfigText !== undefined ? { existingConfigText } : {}),
        ...(clusterConfiguration !== undefined ? { clusterConfiguration } : {}),
      };
    }

    const plan = planInit(input);
    const secrets = key ? [key] : [];

    if (opts.dryRun) {
      if (plan.mode !== 'from-config') for (const l of safetyNetPreview(ctx, opts, plan.keyName)) ctx.out.info(l);
      await printDryRun(ctx, plan);
      return;
    }

    if (plan.provider === 'kms' && !resuming) {
      const { assertKmsHealthy } = await import('../kms/health');
      const k = plan.kms;
      if (k) {
        ctx.out.step(`checking the KMS plugin at ${k.endpoint}`);
        await assertKmsHealthy(k.endpoint, { apiVersion: k.apiVersion, ...(k.timeout ? { timeoutMs: Math.round((parseGoDuration(k.timeout) ?? 3e9) / 1e6) } : {}) });
      }
    }

    for (const w of plan.warnings) ctx.out.warn(w);
    if (!resuming) {
      await confirm(ctx, `turn on encryption at rest on ${me.name} (${plan.mode}; ${plan.provider}, ${plan.config.stage === 'add-reader' ? 'add-reader stage first' : `key ${plan.keyName}`})? The apiserver restarts.`);
    }
    lock = await acquireLock(paths.stateDir, INIT_OPERATION, { now: ctx.now, warn: (m) => ctx.out.warn(m), sweepDirs: [ctx.paths.configDir, ctx.paths.manifestsDir, ctx.paths.backupDir] });
    // The plan was made from the journal as read before the lock: it must still be what is there.
    const seen = journal?.record.updatedAt;
    const now = await Journal.load<InitJournalInputs>(paths.stateDir, INIT_OPERATION, { now: ctx.now });
    if (now?.record.updatedAt !== seen) {
      throw new CliError('another k8s-encrypt run changed the init journal meanwhile', {
        exitCode: ExitCode.Refused,
        hint: 're-run init: it plans again from the journal as it is now',
      });
    }
    if (!resuming) {
      journal = await Journal.start<InitJournalInputs>(paths.stateDir, INIT_OPERATION, journalInputs(plan, input, me.name, hasNode, keySource!, opts), {
        now: ctx.now,
        forbidden: secrets,
      });
    } else {
      journal = await Journal.load<InitJournalInputs>(paths.stateDir, INIT_OPERATION, { now: ctx.now, forbidden: secrets });
      if (!journal!.steps.some((s) => s.name.endsWith(':write'))) await journal!.updateInputs({ configSha256: plan.config.sha256, writeConfigSha256: plan.writeConfig?.sha256 ?? null });
      if (input.options.timeoutMs !== journal!.inputs.timeoutMs) await journal!.updateInputs({ timeoutMs: input.options.timeoutMs });
    }

    const reporter = initReporter(ctx.out);
    let result: InitResult;
    try {
      const j = journal!.inputs;
      // Snapshot before the first change; the new key escrowed before its config is written.
      if (plan.mode !== 'from-config') await runSafetyNet(ctx, journal!, flags.flags, opts, { operation: INIT_OPERATION, newKey: { keyName: plan.keyName, configText: plan.config.text, configPath: plan.configPath } });
      const deps = await engineDeps(ctx, { api, configPath: j.configPath, nodeName: j.nodeName, hasNode: j.hasNode, flags: flags.flags }, {
        timeoutMs: j.timeoutMs,
        force: Boolean(opts.force),
        kubeadmConfig: j.kubeadmConfig,
        keepBackups: 10,
        followCommand: `"k8s-encrypt init --from-config FILE" (FILE: a copy of ${j.configPath} from ${j.nodeName})`,
        out: reporter,
      });
      result = await runInit(deps, plan, journal!);
    } finally {
      reporter.close();
    }
    printResult(ctx, result, journal!.id, plan.kept, journal!);
  } finally {
    api?.close();
    await lock?.release();
  }
}

/** Step lines; on a terminal the waits show a spinner with what they currently see. */
function initReporter(out: Output): TransitionReporter & { close(): void } {
  const plain = { step: (m: string) => out.step(m), info: (m: string) => out.info(m), warn: (m: string) => out.warn(m), success: (m: string) => out.success(m) };
  if (!out.interactive) return { ...plain, progress: (m: string) => out.info(`  … ${m}`), close() {} };
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  let text = '';
  let frame = 0;
  let timer: NodeJS.Timeout | undefined;
  const draw = () => void out.stderr.write(`\r\x1b[K${out.c.cyan(frames[frame++ % frames.length]!)} ${text}`);
  const close = () => {
    if (!timer) return;
    clearInterval(timer);
    timer = undefined;
    out.stderr.write('\r\x1b[K');
  };
  const cleared = (f: (m: string) => void) => (m: string) => {
    close();
    f(m);
  };
  return {
    step: cleared(plain.step),
    info: cleared(plain.info),
    warn: cleared(plain.warn),
    success: cleared(plain.success),
    progress(m: string) {
      text = m;
      if (!timer) {
        timer = setInterval(draw, 100);
        timer.unref();
      }
      draw();
    },
    close,
  };
}

function journalInputs(plan: InitPlan, input: InitInput, nodeName: string, hasNode: boolean, keySource: InitJournalInputs['keySource'], opts: Opts): InitJournalInputs {
  const k = input.options.kms;
  return {
    mode: plan.mode,
    provider: plan.provider,
    keyName: plan.keyName,
    expectedPrefix: plan.expectedPrefix,
    resources: plan.resources,
    configPath: plan.configPath,
    manifestPath: input.options.manifestPath,
    timeoutMs: input.options.timeoutMs,
    kubeadmConfig: input.options.kubeadmConfig,
    configSha256: plan.config.sha256,
    writeConfigSha256: plan.writeConfig?.sha256 ?? null,
    nodeName,
    hasNode,
    controlPlanes: plan.controlPlanes,
    keySource,
    keyFile: opts.keyFile ? resolve(opts.keyFile) : null,
    fromConfig: opts.fromConfig ? resolve(opts.fromConfig) : null,
    kms: k ? { name: k.name, endpoint: k.endpoint, apiVersion: k.apiVersion, timeout: k.timeout ?? null } : null,
  };
}

async function printDryRun(ctx: Context, plan: InitPlan): Promise<void> {
  const kubeadm = plan.kubeadmChange;
  const printable = { dryRun: true, ...printablePlan(plan) };
  for (const w of plan.warnings) ctx.out.warn(w);
  ctx.out.result(printable, (c) => {
    const lines = [
      c.bold(`init plan (${plan.mode}) for kube-apiserver ${plan.kubeVersion} (${plan.kubeVersionSource}), ${plan.controlPlanes} control plane(s) — dry run, nothing is written`),
      '',
      c.bold(`${plan.configPath} (mode 0600, key redacted):`),
      plan.config.redacted.trimEnd(),
      '',
      c.bold(`${plan.manifest.changed ? 'manifest diff' : 'manifest: no change'}:`),
      plan.manifest.diff.trimEnd() || '(none)',
      ...(plan.restart?.changed ? ['', c.bold('restart annotation:'), plan.restart.diff.trimEnd()] : []),
      '',
      c.bold('kube-system/kubeadm-config:'),
      !kubeadm
        ? 'not checked (apiserver unreachable)'
        : kubeadm.status === 'skipped'
          ? `skipped (${kubeadm.reason})`
          : `${kubeadm.status === 'update' ? 'would update' : 'unchanged'}${kubeadm.diff ? `\n${kubeadm.diff.trimEnd()}` : ''}`,
      '',
      c.bold('steps:'),
      ...plan.steps.map((s, i) => `  ${i + 1}. ${s.name}: ${s.title}`),
      ...(plan.kept.length ? ['', c.bold('kept:'), ...plan.kept.map((k) => `  ${k}`)] : []),
    ];
    if (plan.writeConfig) lines.splice(5, 0, '', c.bold('then, once every control plane reads the key (key redacted):'), plan.writeConfig.redacted.trimEnd());
    return lines.join('\n');
  });
}

function printResult(ctx: Context, r: InitResult, journalId: string, kept: string[], journal: Journal<InitJournalInputs>): void {
  const body = {
    state: r.state,
    journal: journalId,
    mode: r.mode,
    provider: r.provider,
    keyName: r.keyName,
    config: r.config,
    configSha256: r.configSha256,
    manifestBackup: r.manifestBackup,
    evidence: r.evidence,
    proof: r.proof,
    kubeadmConfig: r.kubeadmConfig,
    rewrite: r.rewrite,
    verified: r.verified,
    multiNode: r.multiNode,
    kept,
    snapshot: journal.output(SNAPSHOT_STEP) ?? null,
    escrow: journal.output(ESCROW_STEP) ?? null,
  };
  ctx.out.result(body, (c) => {
    if (r.state === 'waiting') {
      return [
        `${c.yellow('…')} this control plane is at stage "${r.multiNode.stage}" (config sha256 ${r.configSha256.slice(0, 12)}…)`,
        ...r.multiNode.nodes.map((n) => `  ${n.node}: ${n.reports}`),
        ...(r.proof?.weaker ? [`  proof: ${r.proof.detail} [weaker: metrics only]`] : []),
        `next: ${r.multiNode.next}`,
      ].join('\n');
    }
    const lines = [`${c.green('✓')} ${doneHeadline(r)}`];
    if (r.evidence) lines.push(`  apiserver: ${r.evidence.evidence} (${r.evidence.detail})`);
    if (r.proof) lines.push(`  proof: ${r.proof.detail}${r.proof.weaker ? ' [weaker: metrics only]' : ''}`);
    if (r.kubeadmConfig) lines.push(`  kubeadm-config: ${r.kubeadmConfig.status}${r.kubeadmConfig.reason ? ` (${r.kubeadmConfig.reason})` : ''}`);
    if (r.rewrite) lines.push(`  rewrite: ${r.rewrite.rewritten} rewritten, ${r.rewrite.unchanged} unchanged, ${r.rewrite.deleted} deleted meanwhile, ${r.rewrite.failed} failed`);
    if (r.verified) lines.push(`  verified: ${r.verified}`);
    if (r.manifestBackup) lines.push(`  manifest backup: ${r.manifestBackup}`);
    if (r.multiNode.next) lines.push(`  next: ${r.multiNode.next}`);
    for (const k of kept) lines.push(`  kept: ${k}`);
    lines.push(...safetyNetLines(journal));
    if (r.mode === 'single') lines.push(`  keep a copy of ${r.config} somewhere safe: without its key the Secrets cannot be read`);
    return lines.join('\n');
  });
}

/**
 * What a re-run continues: a planned pause (this control plane waited at a stage gate for the
 * others), a stage that was rolled back, or a run that was interrupted.
 */
export function resumeNotice(id: string, status: string, message: string | undefined): string {
  if (status === 'waiting' && message?.endsWith(':gate')) {
    const stage = message.slice(0, -':gate'.length);
    return `${id} paused after stage "${stage}" to wait for the other control planes: checking whether they all run it`;
  }
  if (status === 'waiting' && message) return `continuing ${id} (${message}): retrying`;
  return `continuing the interrupted ${id} (${status}) where it stopped`;
}

/** The first line of a finished init: at the add-reader stage nothing is encrypted yet. */
export function doneHeadline(r: Pick<InitResult, 'mode' | 'provider' | 'keyName' | 'config' | 'multiNode'>): string {
  if (r.mode === 'from-config' && r.multiNode.stage === 'add-reader') {
    return `stage "add-reader": this apiserver can read ${r.provider} key ${r.keyName} (config ${r.config}); new writes are still plaintext until stage "promote"`;
  }
  return `encryption at rest is on${r.mode === 'from-config' ? ` at stage "${r.multiNode.stage}"` : ''}: ${r.provider}, key ${r.keyName}, config ${r.config}`;
}
