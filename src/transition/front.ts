import { readFile, unlink } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { Context } from '../context';
import type { ApiClient } from '../cluster/api';
import { describeError } from '../cluster/errors';
import { discoverControlPlanes, identifyThisNode, type ControlPlane } from '../cluster/nodes';
import { localApiserverClient } from '../cluster/wait';
import { keyNamesOf } from '../config/elements';
import { parseEncryptionConfig, sha256Hex } from '../config/parse';
import type { EncryptionConfiguration } from '../config/schema';
import { parseFeatureGates, parseGoDuration, parseKubeVersion, type FeatureGates } from '../config/validate';
import { etcdConnectionFromFlags } from '../etcd/client';
import { assertBackupDirOutside } from '../manifest/apply';
import { readApiserverFlags } from '../manifest/manifest';
import { CONFIG_FLAG } from '../manifest/patch';
import { fileExists, listDir, readText } from '../state/atomic';
import { listBackups } from '../state/backups';
import { assertLockFree, withLock } from '../state/lock';
import { CliError, ExitCode, fsError, usageError } from '../ui/errors';
import type { TransitionOptions } from './command';
import type { TransitionDeps } from './engine';
import { describeConfigText, readersOf } from './plan';

/**
 * The one front-end of every transition command (init, rotate-key, disable, rollback and their
 * followers): this node as the commands see it (manifest, config path, this apiserver and its
 * version, the control planes), and the engine's dependencies built from it.
 */

export const refused = (message: string, hint?: string, details?: Record<string, unknown>) =>
  new CliError(message, { exitCode: ExitCode.Refused, ...(hint ? { hint } : {}), ...(details ? { details } : {}) });

export function parseTimeoutMs(v: string, flag = '--timeout'): number {
  const ns = parseGoDuration(/^\d+$/.test(v) ? `${v}s` : v);
  if (ns === undefined || ns <= 0) throw usageError(`${flag} "${v}" is not a positive duration`, 'use e.g. 90s, 5m or 1h');
  return Math.round(ns / 1e6);
}

/** What the node view needs from a command's options. */
export interface NodeQuery {
  config?: string | undefined;
  timeout: string;
  nodeName?: string | undefined;
  controlPlanes?: number | undefined;
}

/** This node's manifest, read and parsed (the first half of the node view). */
export interface ManifestView {
  manifestText: string;
  parsed: ReturnType<typeof readApiserverFlags>;
}

/** Reads the manifest (and refuses a backup dir inside the manifests dir): nothing reaches out yet. */
export async function readManifest(ctx: Context): Promise<ManifestView> {
  const manifestText = await readText(ctx.paths.manifest, 'read manifest');
  const parsed = readApiserverFlags(manifestText, ctx.paths.manifest);
  await assertBackupDirOutside(ctx.paths.backupDir, ctx.paths.manifestsDir);
  return { manifestText, parsed };
}

export interface ReadNodeOptions {
  /** The manifest as the command already read it. */
  manifest?: ManifestView;
  /** This node's name as a journal recorded it (a resumed run keeps it). */
  nodeName?: string | undefined;
  /** The config path the command writes (init: ROOT's config), instead of the manifest flag's. */
  configPath?: string;
  /**
   * The command can plan without the apiserver (init's dry run and its resume, whose wait step
   * copes with a restarting apiserver): once the wait is over, the manifest's image tag gives the
   * version, with a warning, and no control plane is discovered.
   */
  offline?: boolean;
}

export interface NodeView {
  manifestText: string;
  flags: Map<string, string>;
  args: string[];
  configPath: string;
  api: ApiClient;
  /** Whether this node's apiserver answered /version. */
  reachable: boolean;
  kubeVersion: string;
  /** Where kubeVersion comes from, for the plan. */
  kubeVersionSource: string;
  /** The apiserver's --feature-gates: KMSv1/KMSv2 change which configs it accepts. */
  featureGates: FeatureGates;
  /** The control planes discovery found (none when the apiserver did not answer). */
  found: ControlPlane[];
  /** How many there are: those found, at least one, at least --control-planes. */
  controlPlanes: number;
  nodeName: string;
  hasNode: boolean;
}

/**
 * This node as every transition command sees it, read once per run: the manifest, one kubeconfig
 * load, one version probe (waiting a while for an apiserver the kubelet is restarting), one
 * discovery (what it could not read is a warning) and one answer to "which control plane is this".
 */
export async function readNode(ctx: Context, opts: NodeQuery, how: ReadNodeOptions = {}): Promise<NodeView> {
  const { manifestText, parsed } = how.manifest ?? (await readManifest(ctx));
  // The config the apiserver reads: the flag's value (kubeadm mounts it at the same path), unless given.
  const configPath = how.configPath ?? (opts.config ? resolve(opts.config) : parsed.flags.get(CONFIG_FLAG) ?? ctx.paths.config);
  const api = await localApiserverClient(ctx.paths.kubeconfig, manifestText, ctx.paths.manifest);
  try {
    const probe = await probeVersion(ctx, api, parseTimeoutMs(opts.timeout), how.offline === true);
    const image = parsed.kubeVersionFromImage;
    const kubeVersion = probe.version ?? image;
    if (!kubeVersion) throw usageError('cannot tell the Kubernetes version: the apiserver is unreachable and the manifest image has no version tag');
    parseKubeVersion(kubeVersion);
    const kubeVersionSource = probe.version ? '/version' : probe.why === undefined ? "the manifest's image tag" : "the manifest's image tag (apiserver unreachable)";
    if (probe.why !== undefined) ctx.out.warn(`the apiserver is not reachable (${probe.why}); planning with version ${kubeVersion} from ${kubeVersionSource}`);
    const found = probe.why === undefined ? await discoverControlPlanes(api, { warn: (m) => ctx.out.warn(m) }) : [];
    const me = how.nodeName ? { name: how.nodeName, how: 'the journal' } : identifyThisNode(found, parsed.args, opts.nodeName);
    ctx.out.debug(`this node: ${me.name} (${me.how}); control planes: ${found.map((c) => c.name).join(', ') || 'none found'}`);
    return {
      manifestText,
      flags: parsed.flags,
      args: parsed.args,
      configPath,
      api,
      reachable: probe.why === undefined,
      kubeVersion,
      kubeVersionSource,
      featureGates: parseFeatureGates(parsed.flags.get('feature-gates')),
      found,
      controlPlanes: Math.max(1, found.length, opts.controlPlanes ?? 0),
      nodeName: me.name,
      hasNode: found.find((c) => c.name === me.name)?.hasNode ?? false,
    };
  } catch (err) {
    api.close();
    throw err;
  }
}

/**
 * GET /version until it answers: a run interrupted mid-restart leaves the kubelet restarting the
 * apiserver, so it is given a while (the command's timeout, at most a minute). Then it is exit 3,
 * or, `offline`, the reason it did not answer.
 */
async function probeVersion(ctx: Context, api: ApiClient, timeoutMs: number, offline: boolean): Promise<{ version?: string; why?: string }> {
  const deadline = ctx.now().getTime() + Math.min(timeoutMs, 60_000);
  for (let delay = 250; ; delay = Math.min(delay * 2, 2000)) {
    try {
      const v = await api.get<{ gitVersion?: string }>('/version', { timeoutMs: 10_000 });
      const version = /^v?(\d+\.\d+\.\d+)/.exec(v.gitVersion ?? '')?.[1];
      return version ? { version } : {};
    } catch (err) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      // The client's own refusal (credentials that do not load): no wait mends it.
      const final = err instanceof CliError;
      if (final || ctx.now().getTime() >= deadline) {
        if (offline) return { why: describeError(err) };
        if (final) throw err;
        throw new CliError(`this node's apiserver (${api.server}) is not reachable: ${describeError(err)}`, {
          exitCode: ExitCode.Cluster,
          hint: 'nothing was changed; fix the apiserver first (crictl ps -a --name kube-apiserver)',
        });
      }
      if (delay === 250) ctx.out.info(`waiting for this node's apiserver (${api.server}) to answer: ${describeError(err)}`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/**
 * The one lock order of init, rotate-key, disable, rollback and their followers: taken once the
 * options are checked and the inputs given on the command line are read, before anything that
 * decides (the journal, the node view, the plan), and held to the end of `fn`. A dry run takes no
 * lock and creates nothing, but is refused, as a run would be, while another run holds it.
 */
export async function underLock<T>(ctx: Context, operation: string, dryRun: boolean | undefined, fn: () => Promise<T>): Promise<T> {
  const warn = (m: string) => ctx.out.warn(m);
  if (dryRun) {
    await assertLockFree(ctx.paths.stateDir, { now: ctx.now, warn });
    return fn();
  }
  return withLock(ctx.paths.stateDir, operation, { now: ctx.now, warn, sweepDirs: [ctx.paths.configDir, ctx.paths.manifestsDir, ctx.paths.backupDir] }, fn);
}

/**
 * The re-encrypt-all engine as init and the transitions run it: resources resolved by discovery, a
 * checkpoint keyed by the config's sha256 (a re-run after kill -9 continues), progress on stderr.
 */
async function rewriteWithCheckpoint(ctx: Context, api: ApiClient, configPath: string, resources: string[]) {
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
interface EngineSettings {
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

export const transitionDeps = (ctx: Context, node: NodeView, opts: TransitionOptions, follow: string) =>
  engineDeps(ctx, node, { timeoutMs: parseTimeoutMs(opts.timeout), force: Boolean(opts.force), kubeadmConfig: opts.kubeadmConfig, keepBackups: opts.keepBackups, followCommand: follow });


function readersOfAll(cfg: EncryptionConfiguration): Set<string> {
  const resources = [...new Set(cfg.resources.flatMap((r) => r.resources))];
  return new Set(resources.flatMap((r) => readersOf(cfg, r)));
}

/**
 * A further control plane runs what the first one ran (or one stage on): a file that writes with
 * a key this node's current config does not read yet may be one the others cannot read either (a
 * stale or skipped file). Refused unless --force. init --from-config and the rotate-key/disable
 * followers check it the same way.
 */
export function assertFollowerReads(o: { label: string; text: string; cfg: EncryptionConfiguration; current: EncryptionConfiguration; configPath: string; force: boolean; warn: (m: string) => void }): void {
  const newWriter = describeConfigText(o.text, o.cfg).writeLabel;
  if (readersOfAll(o.current).has(newWriter)) return;
  const msg = `${o.label} writes with ${newWriter}, which ${o.configPath} does not read yet: the other control planes may not read it either`;
  if (!o.force) throw refused(msg, 'install the stages in order (add-reader first), or pass --force if every control plane already reads it');
  o.warn(`--force: ${msg}`);
}

/** A file on this node that holds key material, and the names of the keys in it. */
export interface KeyHolder {
  file: string;
  keys: string[];
}

/**
 * Which files on this node still hold which keys: the config, its backups, and base copies of
 * unfinished transitions. What the final message names, instead of "old keys removed" while
 * backups keep them. A file that does not parse is named with its keys unknown.
 */
export async function keyHolders(configPath: string, backupDir: string, stateDir: string): Promise<KeyHolder[]> {
  const files = [configPath, ...(await listBackups(backupDir, basename(configPath)))];
  const transitions = join(stateDir, 'transitions');
  for (const n of await listDir(transitions)) {
    if (n.endsWith('.base.yaml')) files.push(join(transitions, n));
  }
  const out: KeyHolder[] = [];
  for (const f of files) {
    if (!(await fileExists(f))) continue;
    let keys: string[];
    try {
      keys = keyNamesOf(parseEncryptionConfig(await readText(f, 'read'), f));
    } catch {
      keys = ['(unreadable: check it by hand)'];
    }
    if (keys.length) out.push({ file: f, keys });
  }
  return out;
}

/** The lines that name them, for a command's summary. */
export const keyHolderLines = (holders: readonly KeyHolder[]): string[] =>
  holders.length ? ['key material on this node (0600):', ...holders.map((h) => `  ${h.file}: ${h.keys.join(', ')}`)] : ['no file on this node holds a key'];

/** Deletes a finished transition's base copy (it holds the keys the transition started from). */
export async function removeBaseCopy(path: string): Promise<void> {
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw fsError('remove', path, err);
  });
}

/** A KMS plugin must answer before any config names it (the apiserver would not come back). */
export async function checkKmsPlugin(ctx: Pick<Context, 'out'>, kms: { endpoint: string; apiVersion?: string | undefined; timeout?: string | undefined }): Promise<void> {
  const { assertKmsHealthy } = await import('../kms/health');
  ctx.out.step(`checking the KMS plugin at ${kms.endpoint}`);
  const ns = kms.timeout ? parseGoDuration(kms.timeout) : undefined;
  await assertKmsHealthy(kms.endpoint, { apiVersion: kms.apiVersion === 'v1' ? 'v1' : 'v2', ...(ns ? { timeoutMs: Math.round(ns / 1e6) } : {}) });
}
