import { Option } from 'commander';
import * as o from './option-schema';
import { escrowOptions, keyOptions, nodeOptions, parseOptions, snapshotOptions, stagedOptions } from './options';
import { intOption, type CommandModule } from './types';
import { addEscrowOptions, addSnapshotOptions } from './safety';
import { addFleetOptions, runFleetIfAsked } from '../fleet/options';

/**
 * `k8s-encrypt init`: turn on encryption at rest on this control-plane node, prove it, rewrite
 * every Secret; or leave the node as it was (rolled back, exit 5).
 *
 * Re-running: an interrupted init (journal in the state dir) continues where it stopped, with the
 * key already in the config file. After a finished init a re-run exits 0 with "nothing to do";
 * a node whose manifest already sets --encryption-provider-config without a journal of ours is
 * refused (exit 6, "already encrypted": see status / rotate-key).
 */

export const InitOptions = {
  ...nodeOptions,
  ...keyOptions,
  ...stagedOptions,
  ...snapshotOptions,
  ...escrowOptions,
  provider: o.str(),
  resources: o.str(),
  timeout: o.str().optional(),
  kubeadmConfig: o.bool(),
};
export type Opts = o.OptionsOf<typeof InitOptions>;

export const initCommand: CommandModule = {
  register(program, wrap) {
    addEscrowOptions(addSnapshotOptions(program.command('init')))
      .description('turn on encryption at rest on this control-plane node: config, manifest, wait, proof, rewrite (rolled back if the apiserver does not come back)')
      .option('--provider <name>', 'aescbc, aesgcm, secretbox or kms', 'aescbc')
      .option('--resources <list>', 'comma-separated resources to encrypt', 'secrets')
      .option('--key-name <name>', 'name of the key (default key-<UTC timestamp>)')
      .option('--key-file <file>', 'read the base64 key from this file (default: generate one)')
      .option('--key-stdin', 'read the base64 key from standard input')
      .option('--manifest <path>', 'kube-apiserver static pod manifest (default ROOT/etc/kubernetes/manifests/kube-apiserver.yaml)')
      .option('--config <path>', 'where the EncryptionConfiguration goes (default ROOT/etc/kubernetes/encryption/config.yaml)')
      .option('--timeout <duration>', 'how long the apiserver may take to come back before the change is rolled back (default 5m)')
      .option('--keep-backups <n>', 'previous configs kept in the backup dir', intOption('--keep-backups'), 10)
      .option('--no-kubeadm-config', 'do not record the flag and mount in kube-system/kubeadm-config')
      .option('--dry-run', 'print the whole plan (key redacted, config, manifest diff, kubeadm-config diff, later steps); change nothing', false)
      .option('--from-config <file>', 'other control planes: install exactly this config (copied from the first node; - reads it from standard input) and record the stage')
      .option('--force', 'replace an existing config file (backed up), or advance although control planes disagree', false)
      .option('--control-planes <n>', 'how many control planes there are, where they cannot all be discovered (no mirror pods, Nodes or identity leases)', intOption('--control-planes'))
      .option('--node-name <name>', "this control plane's node name (default: found from its mirror pod, else the host name)")
      .option('--kms-name <name>', 'KMS provider name (--provider kms)')
      .option('--kms-endpoint <url>', 'KMS plugin socket, unix:///path (--provider kms)')
      .addOption(new Option('--kms-api-version <v>', 'KMS API version (--provider kms)').choices(['v1', 'v2']).default('v2'))
      .option('--kms-timeout <duration>', 'KMS call timeout, e.g. 3s (--provider kms)')
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw) => {
          if (await runFleetIfAsked(ctx, program, 'init', raw)) return;
          const opts = parseOptions(InitOptions, raw, 'init');
          const { runInitCommand } = await import('../init/command');
          await runInitCommand(ctx, opts);
        }),
      );
    addFleetOptions(program, 'init');
  },
};

