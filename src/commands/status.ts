import type { Context } from '../context';
import { CliError, ExitCode } from '../ui/errors';
import { intOption, type CommandModule } from './types';

interface Opts {
  decryptCheck: boolean;
  exitCode: boolean;
  etcd: boolean;
  cluster: boolean;
  resources?: string;
  listLimit: number;
  nodeName?: string;
  manifest?: string;
  config?: string;
}

export function parseResourceList(v: string | undefined): string[] | undefined {
  if (v === undefined) return undefined;
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = list.find((r) => !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(r));
  if (bad !== undefined) {
    throw new CliError(`--resources: "${bad}" is not a resource name`, {
      exitCode: ExitCode.Usage,
      hint: 'give plural resource names, comma-separated: secrets,configmaps,widgets.example.com',
    });
  }
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
    resources: parseResourceList(opts.resources),
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
      .action(wrap<Opts>((ctx, opts) => runStatus(ctx, opts)));
  },
};
