import { access, constants, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Opts } from '../commands/init';
import type { Context } from '../context';
import { readKubeadmConfig } from '../cluster/kubeadm-config';
import { checkKeyName, checkKmsName, isLocalProvider, parseProvider, type LocalProvider, type Provider } from '../config/keys';
import { parseEncryptionConfig, sha256Hex } from '../config/parse';
import { newKeyName } from '../config/render';
import { CONFIG_FLAG } from '../manifest/patch';
import { fileExists, readText } from '../state/atomic';
import { Journal, isFinished } from '../state/journal';
import { CliError, ExitCode, fsError, usageError } from '../ui/errors';
import { confirm } from '../ui/prompt';
import { planInit, type InitInput, type InitPlan, type KmsOptions } from './plan';
import { initReporter, printDryRun, printResult, resumeNotice } from './print';
import { checkSafetyOptions, runSafetyNet, safetyNetPreview } from '../snapshot/guard';
import { recordedInitPlan, runInit, type InitJournalInputs, type InitResult } from './run';
import { assertFollowerReads, checkKmsPlugin, engineDeps, keyHolders, parseTimeoutMs, readManifest, readNode, underLock, type NodeView } from '../transition/front';
import { parseResources } from '../config/model';
import { assertReadable, configSourcePath, readConfigSource, readKey, STDIN, type ConfigSource } from '../config/input';

const INIT_OPERATION = 'init';
const DEFAULT_TIMEOUT = '5m';

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
  const k = await readKey(ctx, provider, opts);
  return { key: k.key, keySource: k.source };
}

/**
 * The --from-config text a resumed init installs: the file again, or (it came on stdin) what this
 * run got on stdin, else the copy the interrupted run already wrote.
 */
async function resumedFromConfig(path: string | null, given: ConfigSource | undefined, written: string | undefined): Promise<string | undefined> {
  if (path === null) return undefined;
  if (path !== STDIN) return readText(path, 'read --from-config file');
  if (given?.path === STDIN) return given.text;
  if (written !== undefined) return written;
  throw usageError('the interrupted init read its config from stdin and had not written it yet', 're-run with --from-config - and the same file on stdin');
}

export async function runInitCommand(ctx: Context, opts: Opts): Promise<void> {
  checkOptions(opts);
  checkSafetyOptions(opts);
  const timeoutMs = parseTimeoutMs(opts.timeout ?? DEFAULT_TIMEOUT);
  const provider: Provider = parseProvider(opts.provider);
  const resources = parseResources(opts.resources);
  if (provider === 'kms' && !opts.fromConfig && (!opts.kmsName || !opts.kmsEndpoint)) {
    throw usageError('--provider kms needs --kms-name and --kms-endpoint', 'e.g. --kms-name mykms --kms-endpoint unix:///var/run/kmsplugin/socket.sock');
  }
  checkKmsName(opts.kmsName);
  // What the command line hands in is read before the lock; the lock comes before any decision.
  await assertReadable([['read key file', opts.keyFile]]);
  const fromSource: ConfigSource | undefined = opts.fromConfig ? await readConfigSource(ctx, opts.fromConfig, opts.keyStdin) : undefined;
  if (fromSource) parseEncryptionConfig(fromSource.text, fromSource.label);
  await underLock(ctx, INIT_OPERATION, opts.dryRun, () => init(ctx, opts, { timeoutMs, provider, resources, fromSource }));
}

/** init under the lock: the journal, this node, the plan, then the run. */
async function init(ctx: Context, opts: Opts, given: { timeoutMs: number; provider: Provider; resources: string[]; fromSource: ConfigSource | undefined }): Promise<void> {
  const { timeoutMs, provider, resources, fromSource } = given;
  const paths = ctx.paths;
  const manifestPath = paths.manifest;
  const configPath = paths.config;
  const fromConfigText = fromSource?.text;
  const manifest = await readManifest(ctx);
  const flags = manifest.parsed;

  let node: NodeView | undefined;
  try {
    // Up to the journal's start, nothing is written: bad input leaves the disk exactly as it was.
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
        opts.fromConfig && configSourcePath(opts.fromConfig) !== j.fromConfig ? '--from-config' : '',
      ].filter(Boolean);
      if (ignored.length) ctx.out.warn(`${ignored.join(', ')} ignored: the interrupted run's plan is continued (move ${journal!.path} away to start over)`);
    }

    // A fresh run's key is read (and checked) before anything reaches out to the cluster.
    const fresh = resuming ? undefined : await freshKey(ctx, opts, provider, fromConfigText !== undefined);

    // A resumed run may find the apiserver restarting (killed while waiting for it): its wait step
    // copes with that, and a dry run plans from the image tag; a fresh run changes nothing while
    // the apiserver is down.
    node = await readNode(ctx, { ...opts, timeout: opts.timeout ?? DEFAULT_TIMEOUT }, { manifest, configPath, offline: Boolean(opts.dryRun) || resuming, nodeName: resuming ? journal!.inputs.nodeName : undefined });
    const api = node.api;
    const controlPlanes = node.found;
    if (node.reachable && controlPlanes.length === 0 && !resuming && !fromConfigText && !opts.controlPlanes) {
      ctx.out.warn(
        'no control plane found (no kube-apiserver mirror pods, control-plane Nodes or apiserver identity leases): treating this node as the only one. With several control planes, pass --control-planes N (and --node-name on each)',
      );
    }

    const existingConfigText = (await fileExists(configPath)) ? await readText(configPath, 'read config') : undefined;
    const kubeadmOn = resuming ? journal!.inputs.kubeadmConfig : opts.kubeadmConfig;
    const kubeadm = node.reachable && kubeadmOn ? await readKubeadmConfig(api) : undefined;

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
          key = (await readKey(ctx, j.provider as LocalProvider, j.keySource === 'file' && j.keyFile ? { keyFile: j.keyFile } : j.keySource === 'stdin' ? { keyStdin: true } : {})).key;
        }
      }
      const fromText = await resumedFromConfig(j.fromConfig, fromSource, ours ? existingConfigText : undefined);
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
        manifestText: manifest.manifestText,
        kubeVersion: node.kubeVersion,
        kubeVersionSource: node.kubeVersionSource,
        controlPlanes: j.mode === 'staged' ? Math.max(2, j.controlPlanes ?? 2, controlPlanes.length) : 1,
        keyName: j.keyName,
        ...(key ? { key } : {}),
        ...(fromText !== undefined ? { configText: fromText, configSource: 'from-config' as const } : ours ? { configText: existingConfigText, configSource: 'resume' as const } : {}),
        ...(existingConfigText !== undefined ? { existingConfigText } : {}),
        ...(kubeadm ? { kubeadm } : {}),
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
        manifestText: manifest.manifestText,
        kubeVersion: node.kubeVersion,
        kubeVersionSource: node.kubeVersionSource,
        controlPlanes: node.controlPlanes,
        keyName: opts.keyName ?? newKeyName(ctx.now()),
        ...(key ? { key } : {}),
        ...(fromConfigText !== undefined ? { configText: fromConfigText, configSource: 'from-config' as const } : {}),
        ...(existingConfigText !== undefined ? { existingConfigText } : {}),
        ...(kubeadm ? { kubeadm } : {}),
      };
    }

    const plan = planInit(input);
    const secrets = key ? [key] : [];
    // A further control plane that already runs a config: the file must write with a key it reads
    // (as the rotate-key and disable followers check), else it is a stale or skipped stage.
    if (fromSource && !resuming && flags.flags.has(CONFIG_FLAG) && existingConfigText !== undefined && existingConfigText !== fromSource.text) {
      const given = parseEncryptionConfig(fromSource.text, fromSource.label);
      assertFollowerReads({ label: fromSource.label, text: fromSource.text, cfg: given, current: parseEncryptionConfig(existingConfigText, configPath), configPath, force: Boolean(opts.force), warn: (m) => ctx.out.warn(m) });
    }

    if (opts.dryRun) {
      if (plan.mode !== 'from-config') for (const l of safetyNetPreview(ctx, opts, plan.keyName)) ctx.out.info(l);
      // A resumed run executes the changes its journal recorded: its dry run shows those.
      const notes: string[] = [];
      const shown = resuming ? recordedInitPlan(journal!, plan, { path: manifestPath, text: manifest.manifestText, say: (m) => notes.push(m) }) : plan;
      await printDryRun(ctx, { ...shown, notes: [...shown.notes, ...notes] });
      return;
    }

    if (plan.kms && !resuming) await checkKmsPlugin(ctx, plan.kms);

    for (const w of plan.warnings) ctx.out.warn(w);
    if (!resuming) {
      await confirm(ctx, `turn on encryption at rest on ${node.nodeName} (${plan.mode}; ${plan.provider}, ${plan.config.stage === 'add-reader' ? 'add-reader stage first' : `key ${plan.keyName}`})? The apiserver restarts.`);
    }
    if (!resuming) {
      journal = await Journal.start<InitJournalInputs>(paths.stateDir, INIT_OPERATION, journalInputs(plan, input, node.nodeName, node.hasNode, keySource!, opts), {
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
        keepBackups: opts.keepBackups,
        followCommand: `"k8s-encrypt init --from-config FILE" (FILE: a copy of ${j.configPath} from ${j.nodeName})`,
        out: reporter,
      });
      result = await runInit(deps, plan, journal!);
    } finally {
      reporter.close();
    }
    const holders = result.state === 'done' ? await keyHolders(configPath, paths.backupDir, paths.stateDir) : undefined;
    printResult(ctx, result, journal!, plan, holders);
  } finally {
    node?.api.close();
  }
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
    fromConfig: opts.fromConfig ? configSourcePath(opts.fromConfig) : null,
    kms: k ? { name: k.name, endpoint: k.endpoint, apiVersion: k.apiVersion, timeout: k.timeout ?? null } : null,
  };
}
