import * as o from './option-schema';
import type { Context } from '../context';
import { ExitCode } from '../ui/errors';
import { resourceList } from '../config/resources';
import { parseOptions } from './options';
import { intOption, type CommandModule } from './types';
import { addFleetOptions, runFleetIfAsked } from '../fleet/options';

const str = o.str().optional();
const StatusOptions = {
  decryptCheck: o.bool(),
  exitCode: o.bool(),
  etcd: o.bool(),
  cluster: o.bool(),
  resources: str,
  listLimit: o.int(1),
  nodeName: str,
  manifest: str,
  config: str,
};
type Opts = o.OptionsOf<typeof StatusOptions>;

/** Status's `--resources`: the resources to scan; none given (or an empty list) means the default. */
export function scanResources(v: string | undefined): string[] | undefined {
  const list = v === undefined ? [] : resourceList(v, { wildcards: false });
  return list.length ? list : undefined;
}

/**
 * Read-only: gathers the evidence (each source on its own, so one that cannot be read is reported
 * instead of failing the command), builds the report, prints it. The exit code is 0 unless the
 * command itself could not run; with --exit-code, 4 when the report has a failing finding.
 */
export async function runStatus(ctx: Context, opts: Opts): Promise<void> {
  const [{ gatherStatus, defaultGatherDeps }, { buildStatusReport }, { renderStatus }] = await Promise.all([
    import('../status/gather'),
    import('../status/report'),
    import('../status/render'),
  ]);
  const input = await gatherStatus(defaultGatherDeps(ctx.paths.kubeconfig, ctx.now), {
    manifestPath: ctx.paths.manifest,
    ...(opts.config ? { configPath: ctx.paths.config } : {}),
    defaultConfigPath: ctx.paths.config,
    resources: scanResources(opts.resources),
    decryptCheck: opts.decryptCheck,
    exitCode: opts.exitCode,
    etcd: opts.etcd,
    cluster: opts.cluster,
    listLimit: opts.listLimit,
    nodeName: opts.nodeName,
    signal: ctx.signal,
    onProgress: (m) => ctx.out.debug(m),
  });
  const report = buildStatusReport(input);
  if (input.config.ok) for (const w of await (await import('../escrow/records')).escrowWarnings(ctx.paths.stateDir, input.config.data.path)) ctx.out.warn(w);
  ctx.out.result({ ...report, ok: report.healthy }, (c) => renderStatus(report, c, { listLimit: ctx.out.verbose ? opts.listLimit : 10 }));
  if (opts.exitCode && !report.healthy) ctx.out.exitCode = ExitCode.Verification;
}

export const statusCommand: CommandModule = {
  register(program, wrap) {
    program
      .command('status')
      .description('what is configured, what each apiserver runs, and what etcd really holds (read-only)')
      .option('--decrypt-check', 'decrypt every value read from etcd with the local keys and list those that fail', false)
      .option('--exit-code', 'exit 4 when anything is not under the write key, control planes disagree, or a check fails', false)
      .option('--no-etcd', 'do not scan etcd')
      .option('--no-cluster', 'do not ask the apiserver (control planes, kubeadm-config)')
      .option('--resources <list>', 'resources to scan in etcd (default: secrets and every resource the config names)')
      .option('--list-limit <n>', 'objects kept per stale/plaintext list (counts are always complete)', intOption('--list-limit'), 100)
      .option('--node-name <name>', "this node's name among the control planes (default: recognised by its manifest)")
      .option('--manifest <path>', 'kube-apiserver manifest (default ROOT/etc/kubernetes/manifests/kube-apiserver.yaml)')
      .option('--config <path>', 'EncryptionConfiguration to compare with (default: the file the manifest names)')
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw) => {
          if (await runFleetIfAsked(ctx, program, 'status', raw)) return;
          await runStatus(ctx, parseOptions(StatusOptions, raw, 'status'));
        }),
      );
    addFleetOptions(program, 'status');
  },
};
