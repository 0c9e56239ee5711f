import { Option } from 'commander';
import * as o from './option-schema';
import { addNodeFlags, addStagedFlags, escrowOptions, keyOptions, nodeOptions, parseOptions, snapshotOptions, stagedOptions } from './options';
import type { CommandModule } from './types';
import { addEscrowOptions, addSnapshotOptions } from './safety';

const RotateKeyOptions = { ...nodeOptions, ...keyOptions, ...stagedOptions, ...snapshotOptions, ...escrowOptions, provider: o.str().optional(), ifOlderThan: o.str().optional() };
import { addFleetOptions, runFleetIfAsked } from '../fleet/options';

/**
 * `k8s-encrypt rotate-key`: a new key of the current provider (or a new provider, KMS included),
 * through the staged transition: add-reader (several control planes only), promote, rewrite +
 * verify, prune. Journaled: a re-run continues where it stopped. Further control planes install
 * the first node's file per stage with --from-config.
 */
export const rotateKeyCommand: CommandModule = {
  register(program, wrap) {
    addStagedFlags(addNodeFlags(addEscrowOptions(addSnapshotOptions(program.command('rotate-key'))), 'how long the apiserver may take to run each new config'))
      .description('rotate the write key (or change provider) through safe stages: add-reader, promote, rewrite, prune')
      .option('--provider <name>', 'aescbc, aesgcm, secretbox or kms (default: the current write provider)')
      .option('--key-file <file>', 'read the new base64 key from this file (default: generate one)')
      .option('--key-stdin', 'read the new base64 key from standard input')
      .option('--key-name <name>', 'name of the new key (default key-<UTC timestamp>)')
      .option('--kms-name <name>', 'KMS provider name (--provider kms)')
      .option('--kms-endpoint <url>', 'KMS plugin socket, unix:///path (--provider kms)')
      .addOption(new Option('--kms-api-version <v>', 'KMS API version (--provider kms)').choices(['v1', 'v2']).default('v2'))
      .option('--kms-timeout <duration>', 'KMS call timeout, e.g. 3s (--provider kms)')
      .option('--if-older-than <age>', 'only rotate when the write key is older than this (e.g. 90d); otherwise exit 0')
      .option('--stage <name>', 'run only this stage: add-reader, promote, rewrite or prune')
      .option('--force', 'advance although control planes disagree, or remove a key etcd still holds objects under', false)
      .option('--dry-run', "print each stage's config diff (keys redacted); change nothing", false)
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw) => {
          if (await runFleetIfAsked(ctx, program, 'rotate-key', raw)) return;
          const opts = parseOptions(RotateKeyOptions, raw, 'rotate-key');
          const { runTransitionCommand } = await import('../transition/command');
          await runTransitionCommand(ctx, { kind: 'rotate', operation: 'rotate-key' }, { ...opts, kubeadmConfig: true });
        }),
      );
    addFleetOptions(program, 'rotate-key');
  },
};
