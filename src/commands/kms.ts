import { Option } from 'commander';
import { CliError, ExitCode } from '../ui/errors';
import type { PluginManifestInput } from '../kms/manifest';
import * as o from './option-schema';
import { parseOptions } from './options';
import type { CommandModule } from './types';

const HealthOptions = { endpoint: o.str(), kmsApiVersion: o.oneOf(['v1', 'v2']), timeout: o.str() };

const str = o.str().optional();
/** Numbers stay text here: planPluginManifest checks them and names the flag. */
const PluginManifestOptions = {
  plugin: str,
  variant: str,
  region: str,
  keyId: str,
  keyArn: str,
  image: str,
  socket: str,
  name: str,
  namespace: str,
  replicas: str,
  credentialsSecret: str,
  credentialsFile: str,
  instanceRole: o.bool().optional(),
  healthPort: str,
  enableKmsV1: o.bool().optional(),
} satisfies o.ShapeOf<PluginManifestInput>;

const KMS_PLUGINS = ['ack-kms-plugin', 'aws-encryption-provider'];

/** A Go duration (`3s`, `500ms`) in whole milliseconds, as the kms `timeout` field takes it. */
async function timeoutMs(text: string): Promise<number> {
  const { parseGoDuration } = await import('../config/validate');
  const ns = parseGoDuration(text);
  if (ns === undefined || ns < 1e6 || ns > 600e9) {
    throw new CliError(`--timeout must be a duration from 1ms to 10m such as 3s or 500ms, got "${text}"`, {
      exitCode: ExitCode.Usage,
      hint: 'the apiserver waits 3s by default (the kms timeout field)',
    });
  }
  return Math.round(ns / 1e6);
}

export const kmsCommand: CommandModule = {
  register(program, wrap) {
    const kms = program.command('kms').description('KMS plugins: check one before the apiserver depends on it, render plugin manifests');

    kms
      .command('health')
      .description('check a KMS plugin over gRPC: Status/Version, healthz, version, key id and an Encrypt/Decrypt round trip')
      .requiredOption('--endpoint <unix-url>', 'the plugin socket, e.g. unix:///var/run/kmsplugin/grpc.sock')
      .addOption(new Option('--kms-api-version <v>', 'KMS API the apiserver will use').choices(['v2', 'v1']).default('v2'))
      .option('--timeout <duration>', 'deadline of each call (the apiserver default is 3s)', '3s')
      .addHelpText('after', '\nExit codes: 0 healthy, 3 not healthy or not reachable, 2 bad options.')
      // src/cli.ts sets these on top-level commands only; nested ones need them for exit code 2.
      .exitOverride()
      .showHelpAfterError('(run with --help for usage)')
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw) => {
          const opts = parseOptions(HealthOptions, raw, 'kms health');
          const { checkKmsHealth, summarizeFailures } = await import('../kms/health');
          const { formatDurationMs, parseKmsEndpoint } = await import('../kms/client');
          parseKmsEndpoint(opts.endpoint);
          const ms = await timeoutMs(opts.timeout);
          ctx.out.step(`checking the KMS ${opts.kmsApiVersion} plugin at ${opts.endpoint} (timeout ${formatDurationMs(ms)})`);
          const report = await checkKmsHealth(opts.endpoint, { apiVersion: opts.kmsApiVersion, timeoutMs: ms });
          const human = (c: import('chalk').ChalkInstance) =>
            [
              `KMS plugin ${report.endpoint} (${report.apiVersion}): ${report.ok ? c.green('healthy') : c.red('NOT healthy')}`,
              ...report.checks.map((k) => `  ${k.ok ? c.green('✓') : c.red('✗')} ${k.name.padEnd(10)} ${k.detail}${k.ms ? c.dim(` (${k.ms} ms)`) : ''}`),
              ...(report.keyId ? [`  key id: ${report.keyId}`] : []),
            ].join('\n');
          if (report.ok) {
            ctx.out.result({ kmsHealth: report }, human);
            return;
          }
          // Unhealthy: the report on stdout for people, and one error (with the report) for --json.
          if (!ctx.out.json) ctx.out.result(report, human);
          throw new CliError(`KMS plugin at ${report.endpoint} is not healthy: ${summarizeFailures(report)}`, {
            exitCode: ExitCode.Cluster,
            hint: "check the plugin's logs, its credentials and its key; the apiserver must not be switched to it yet",
            details: { kmsHealth: report },
          });
        }),
      );

    kms
      .command('plugin-manifest')
      .description('print a KMS plugin manifest (static pod or Deployment) for the control-plane nodes')
      .exitOverride()
      .showHelpAfterError('(run with --help for usage)')
      .addOption(new Option('--plugin <name>', 'the plugin').choices(KMS_PLUGINS).makeOptionMandatory())
      .addOption(new Option('--variant <kind>', 'static-pod (recommended) or deployment').choices(['static-pod', 'deployment']).default('static-pod'))
      .option('--region <id>', 'cloud region of the key (e.g. cn-hangzhou, us-west-2)')
      .option('--key-id <id>', 'ack-kms-plugin: Alibaba Cloud KMS key id')
      .option('--key-arn <arn>', 'aws-encryption-provider: AWS KMS key ARN (not an alias)')
      .option('--image <ref>', 'plugin image with a pinned tag or digest (ack-kms-plugin defaults to the upstream image of the region)')
      .option('--socket <path>', 'plugin socket path on the node (ack: /var/run/kmsplugin/grpc.sock, aws: /var/run/kmsplugin/socket.sock)')
      .option('--name <name>', 'pod / Deployment name (default: the plugin name)')
      .option('--namespace <ns>', 'namespace', 'kube-system')
      .option('--replicas <n>', 'deployment: the number of control-plane nodes, one plugin on each (default: the control planes found through the kubeconfig)')
      .option('--credentials-secret <name>', 'deployment: Secret holding the cloud credentials (referenced, never copied)')
      .option('--credentials-file <path>', 'static-pod: root-only credentials file on each node (a static pod cannot read Secrets)')
      .option('--instance-role', "use the node's cloud role from the metadata service instead of stored credentials", false)
      .option('--health-port <port>', 'aws-encryption-provider: health port on the host network (default 8083)')
      .option('--enable-kms-v1', 'ack-kms-plugin: also serve KMS v1beta1 (clusters before 1.29 / migrations)', false)
      .addHelpText(
        'after',
        '\nThe manifest is printed on stdout: `| kubectl apply -f -` for a Deployment; a static pod is saved as\n' +
          '/etc/kubernetes/manifests/NAME.yaml on every control-plane node. Notes go to stderr.\n' +
          'aws-encryption-provider has no promoted release image: build it or mirror one (upstream stages\n' +
          'images at us-central1-docker.pkg.dev/k8s-staging-images/aws-encryption-provider/aws-encryption-provider).',
      )
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw) => {
          const opts: import('../kms/manifest').PluginManifestInput = parseOptions(PluginManifestOptions, raw, 'kms plugin-manifest');
          const { loadKmsTemplate, planPluginManifest, renderPluginManifest } = await import('../kms/manifest');
          let counted: string | undefined;
          if (opts.variant === 'deployment' && opts.replicas === undefined) {
            const found = await countControlPlanes(ctx.paths.kubeconfig, (m) => ctx.out.warn(m));
            if (typeof found === 'string') opts.replicasUncounted = found;
            else {
              opts.replicas = found.length;
              counted = `--replicas ${found.length}: the control planes found through ${ctx.paths.kubeconfig} (${found.join(', ')})`;
            }
          }
          const plan = planPluginManifest(opts);
          if (counted) ctx.out.info(`note: ${counted}`);
          const manifest = renderPluginManifest(plan, loadKmsTemplate(plan.template));
          for (const w of plan.warnings) ctx.out.warn(w);
          for (const n of plan.notes) ctx.out.info(`note: ${n}`);
          ctx.out.result(
            {
              plugin: plan.plugin,
              variant: plan.variant,
              endpoint: plan.endpoint,
              socketDir: plan.socketDir,
              ...(plan.manifestPath ? { manifestPath: plan.manifestPath } : {}),
              notes: plan.notes,
              manifest,
            },
            () => manifest,
          );
        }),
      );
  },
};

/** The control planes' names through the kubeconfig, or why they could not be counted. */
async function countControlPlanes(kubeconfig: string, warn: (msg: string) => void): Promise<string[] | string> {
  const [{ loadKubeconfig, createApiClient }, { discoverControlPlanes }] = await Promise.all([import('../cluster/api'), import('../cluster/nodes')]);
  let api: Awaited<ReturnType<typeof createApiClient>> | undefined;
  try {
    api = createApiClient(await loadKubeconfig(kubeconfig), { timeoutMs: 5000 });
    const names = (await discoverControlPlanes(api, { warn })).map((c) => c.name);
    return names.length ? names : 'none found through the kubeconfig';
  } catch (err) {
    return (err as Error).message;
  } finally {
    api?.close();
  }
}
