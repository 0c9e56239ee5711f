import * as o from './option-schema';
import type { VerifySnapshotOpts } from '../snapshot/command';
import { parseOptions } from './options';
import type { CommandModule } from './types';

const VerifySnapshotOptions = {
  config: o.str().optional(),
  bundle: o.str().optional(),
  identity: o.str().optional(),
  passphraseFile: o.str().optional(),
  passphraseStdin: o.bool().optional(),
  etcdPrefix: o.str(),
} satisfies o.ShapeOf<VerifySnapshotOpts>;

/**
 * `k8s-encrypt verify-snapshot SNAPSHOT`: the restore drill. Reads an etcd snapshot offline and
 * decrypts every object the config covers with the config's keys (or a key bundle's); exit 4 when
 * any object is unreadable or the snapshot fails etcd's integrity check.
 */
export const verifySnapshotCommand: CommandModule = {
  register(program, wrap) {
    program
      .command('verify-snapshot')
      .argument('<snapshot>', 'an etcd snapshot file (etcdctl snapshot save, or the one init/rotate-key/disable took)')
      .description('restore drill: read an etcd snapshot offline and decrypt every object the config covers; names any that cannot be read')
      .option('--config <file>', 'the EncryptionConfiguration whose keys to use')
      .option('--bundle <file>', 'a key bundle (keys export / --escrow-recipient) instead of --config')
      .option('--identity <file>', 'age identity file that opens --bundle')
      .option('--passphrase-file <file>', "the passphrase that opens --bundle, from this file's first line")
      .option('--passphrase-stdin', 'the passphrase that opens --bundle, from standard input')
      .option('--etcd-prefix <prefix>', "kube-apiserver's --etcd-prefix", '/registry')
      .addHelpText('after', '\nExit codes: 0 every object readable, 4 some are not (or the snapshot is damaged), 2 bad options or files.')
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw, args) => {
          const opts = parseOptions(VerifySnapshotOptions, raw, 'verify-snapshot');
          const { runVerifySnapshot } = await import('../snapshot/command');
          await runVerifySnapshot(ctx, opts, args[0]!);
        }),
      );
  },
};
