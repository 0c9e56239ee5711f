import * as o from './option-schema';
import type { ExportOpts, ImportOpts } from '../escrow/command';
import { parseOptions } from './options';
import type { CommandModule } from './types';
import { collect } from './safety';

const passphrase = { passphraseFile: o.str().optional(), passphraseStdin: o.bool().optional() };
const ExportOptions = {
  ...passphrase,
  recipient: o.strList().optional(),
  out: o.str().optional(),
  force: o.bool().optional(),
} satisfies o.ShapeOf<ExportOpts>;
const ImportOptions = {
  ...passphrase,
  identity: o.str().optional(),
  out: o.str(),
  force: o.bool().optional(),
  kubeVersion: o.str().optional(),
} satisfies o.ShapeOf<ImportOpts>;

/**
 * `k8s-encrypt keys export|import`: escrow the keys of a config as an age-encrypted bundle, and
 * turn a bundle back into a config file for recovery. Key material only ever reaches the sealed
 * bundle and the 0600 config that import writes.
 */
export const keysCommand: CommandModule = {
  register(program, wrap) {
    const keys = program.command('keys').description('escrow the keys of the config as an age-encrypted bundle, and get them back');

    keys
      .command('export')
      .description('seal every key of the config (and the config itself) to age recipients or a passphrase; never plaintext')
      .option('--config <path>', 'the EncryptionConfiguration (default ROOT/etc/kubernetes/encryption/config.yaml)')
      .option('--recipient <age1...>', 'age recipient (public key) to seal to; repeatable', collect)
      .option('--passphrase-file <file>', "seal to a passphrase (age's scrypt recipient) read from this file's first line")
      .option('--passphrase-stdin', 'seal to a passphrase read from standard input')
      .option('--out <file>', 'where the bundle goes (0600; default STATE_DIR/escrow/keys-<config sha256>.age)')
      .option('--force', 'replace an existing --out file', false)
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw) => {
          const { runKeysExport } = await import('../escrow/command');
          await runKeysExport(ctx, parseOptions(ExportOptions, raw, 'keys export'));
        }),
      );

    keys
      .command('import')
      .argument('<bundle>', 'a bundle written by "keys export" or --escrow-recipient')
      .description('open a bundle with an age identity or the passphrase and write its config back (0600, validated)')
      .option('--identity <file>', 'age identity file (AGE-SECRET-KEY-...) of one of the recipients')
      .option('--passphrase-file <file>', "the bundle's passphrase, from this file's first line")
      .option('--passphrase-stdin', "the bundle's passphrase, from standard input")
      .requiredOption('--out <file>', 'where the recovered EncryptionConfiguration goes (0600)')
      .option('--kube-version <x.y>', "validate the config for this Kubernetes version (your cluster's; default the newest known)")
      .option('--force', 'replace an existing --out file (it is backed up first)', false)
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw, args) => {
          const { runKeysImport } = await import('../escrow/command');
          await runKeysImport(ctx, parseOptions(ImportOptions, raw, 'keys import'), args[0]!);
        }),
      );
  },
};
