import { Option } from 'commander';
import type { Context } from '../context';
import { usageError } from '../ui/errors';
import * as o from './option-schema';
import { parseOptions } from './options';
import type { CommandModule } from './types';

const WaitApiserverOptions = {
  since: o.str().optional(),
  sinceFile: o.str().optional(),
  timeout: o.str(),
  config: o.str().optional(),
  manifest: o.str().optional(),
  nodeName: o.str().optional(),
  mode: o.oneOf(['auto', 'restart', 'reload']),
};
type Opts = o.OptionsOf<typeof WaitApiserverOptions>;

/**
 * `k8s-encrypt wait-apiserver`: for scripts that change the manifest or the config themselves.
 * Waits until this node's apiserver runs what was changed at --since (default: the manifest's
 * mtime), and says which evidence proved it.
 */
async function run(ctx: Context, opts: Opts): Promise<void> {
  const [{ stat }, { readText, fileExists }, { readApiserverFlags }, wait, nodes, { parseTimeoutMs }, { sha256Hex }, { RELOAD_FLAG }] =
    await Promise.all([
      import('node:fs/promises'),
      import('../state/atomic'),
      import('../manifest/manifest'),
      import('../cluster/wait'),
      import('../cluster/nodes'),
      import('../transition/front'),
      import('../config/parse'),
      import('../manifest/patch'),
    ]);
  if (opts.since && opts.sinceFile) throw usageError('give --since or --since-file, not both');
  const timeoutMs = parseTimeoutMs(opts.timeout);
  const manifestPath = ctx.paths.manifest;
  const manifestText = await readText(manifestPath, 'read manifest');
  const flags = readApiserverFlags(manifestText, manifestPath);
  const manifestMtime = (await stat(manifestPath)).mtime;

  let since: Date;
  if (opts.since) {
    since = new Date(opts.since);
    if (Number.isNaN(since.getTime())) throw usageError(`--since "${opts.since}" is not an ISO 8601 time`, 'e.g. --since 2026-11-26T14:02:00Z');
  } else if (opts.sinceFile) {
    try {
      since = (await stat(opts.sinceFile)).mtime;
    } catch (err) {
      const { fsError } = await import('../ui/errors');
      throw fsError('read', opts.sinceFile, err);
    }
  } else {
    since = manifestMtime;
  }

  const configPath = opts.config ?? ctx.paths.config;
  const configSha256 = (await fileExists(configPath)) ? sha256Hex(await readText(configPath, 'read config')) : undefined;
  const reloadOn = flags.flags.get(RELOAD_FLAG) === 'true';
  const mode = opts.mode === 'auto' ? (reloadOn && manifestMtime.getTime() < since.getTime() ? 'reload' : 'restart') : opts.mode;

  const api = await wait.localApiserverClient(ctx.paths.kubeconfig, manifestText, manifestPath);
  try {
    let nodeName = opts.nodeName;
    if (!nodeName) {
      try {
        nodeName = nodes.identifyThisNode(await nodes.discoverControlPlanes(api, { warn: (m) => ctx.out.warn(m) }), flags.args).name;
      } catch {
        // The apiserver is down right now: the other signals do without the mirror pod.
      }
    }
    ctx.out.step(`waiting for ${api.server} to run the change of ${since.toISOString()} (${mode}, up to ${Math.round(timeoutMs / 1000)} s)`);
    const r = await wait.waitForApiserver(
      { api, now: ctx.now, signal: ctx.signal, onProgress: (m) => ctx.out.debug(m) },
      { since, mode, timeoutMs, ...(configSha256 ? { configSha256 } : {}), ...(nodeName ? { nodeName } : {}) },
    );
    ctx.out.result({ ...r, since: since.toISOString(), mode, server: api.server }, (c) => `${c.green('✓')} ${r.evidence}: ${r.detail}`);
  } finally {
    api.close();
  }
}

export const waitApiserverCommand: CommandModule = {
  register(program, wrap) {
    program
      .command('wait-apiserver')
      .description("wait until this node's apiserver runs a change (restart or automatic reload) and say what proves it")
      .option('--since <iso>', 'when the change was made (default: the manifest file\'s mtime)')
      .option('--since-file <path>', 'use the mtime of this file as the time of the change')
      .option('--timeout <duration>', 'give up after this long (exit 3)', '5m')
      .option('--config <path>', 'the EncryptionConfiguration, for the config-hash metric (default ROOT/etc/kubernetes/encryption/config.yaml)')
      .option('--manifest <path>', 'kube-apiserver static pod manifest (address and port of this node\'s apiserver)')
      .option('--node-name <name>', 'node name, for the mirror pod kube-apiserver-<node>')
      .addOption(new Option('--mode <m>', 'restart, reload, or auto (reload when automatic reload is on and the manifest did not change)').choices(['auto', 'restart', 'reload']).default('auto'))
      .action(wrap<Record<string, unknown>>((ctx, raw) => run(ctx, parseOptions(WaitApiserverOptions, raw, 'wait-apiserver'))));
  },
};
