import { Option } from 'commander';
import { PROVIDERS } from '../config/keys';
import { NEWEST_KUBE_VERSION } from '../config/versions';
import * as o from './option-schema';
import type { Opts } from '../config/write';
import { keyOptions, parseOptions } from './options';
import { intOption, type CommandModule } from './types';

const WriteConfigOptions = {
  ...keyOptions,
  out: o.str().optional(),
  provider: o.str(),
  resources: o.str(),
  kmsCachesize: o.int().optional(),
  kubeVersion: o.str().optional(),
  force: o.bool().optional(),
  dryRun: o.bool().optional(),
} satisfies o.ShapeOf<Opts>;

export const writeConfigCommand: CommandModule = {
  register(program, wrap) {
    program
      .command('write-config')
      .description('write a new EncryptionConfiguration (mode 0600): the chosen provider first, identity last')
      .option('--out <path>', 'where to write it (default ROOT/etc/kubernetes/encryption/config.yaml)')
      .option('--provider <name>', `provider that encrypts new writes: ${PROVIDERS.join(', ')}`, 'aescbc')
      .option('--key-name <name>', 'name of the key (default key-<UTC timestamp>)')
      .option('--key-file <file>', 'read the base64 key from this file (default: generate one)')
      .option('--key-stdin', 'read the base64 key from standard input')
      .option('--resources <list>', 'comma-separated resources to encrypt', 'secrets')
      .option('--kms-name <name>', 'KMS provider name (--provider kms)')
      .option('--kms-endpoint <url>', 'KMS plugin socket, unix:///path (--provider kms)')
      .addOption(new Option('--kms-api-version <v>', 'KMS API version (--provider kms)').choices(['v1', 'v2']).default('v2'))
      .option('--kms-timeout <duration>', 'KMS call timeout, e.g. 3s (--provider kms)')
      .option('--kms-cachesize <n>', 'KMS v1 DEK cache size (--provider kms)', intOption('--kms-cachesize', -2147483648))
      .option('--kube-version <x.y>', `validate for this Kubernetes version (default ${NEWEST_KUBE_VERSION})`)
      .option('--force', 'replace an existing file (after backing it up)', false)
      .option('--dry-run', 'print the config with its key redacted and write nothing', false)
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw) =>
          (await import('../config/write')).runWriteConfig(ctx, parseOptions(WriteConfigOptions, raw, 'write-config')),
        ),
      );
  },
};
