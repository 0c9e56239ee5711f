import { intOption, type CommandModule } from './types';
import { addSnapshotOptions } from './safety';

/**
 * `k8s-encrypt disable`: identity first with every key kept as a reader, rewrite, verify that etcd
 * holds nothing encrypted, then remove the flag, the mount, the kubeadm-config entries and finally
 * the config file (kept as a 0600 backup). Asks first; without a terminal it needs --yes.
 */
export const disableCommand: CommandModule = {
  register(program, wrap) {
    addSnapshotOptions(program.command('disable'))
      .description('turn encryption at rest off: identity first, rewrite, verify, then remove the flag, mount and config')
      .option('--stage <name>', 'run only this stage: add-reader, promote, rewrite or prune (prune on a further control plane unpatches it)')
      .option('--from-config <file>', "further control planes: install the first node's config for the current stage")
      .option('--config <path>', 'the EncryptionConfiguration (default: the manifest\'s --encryption-provider-config)')
      .option('--manifest <path>', 'kube-apiserver static pod manifest (default ROOT/etc/kubernetes/manifests/kube-apiserver.yaml)')
      .option('--timeout <duration>', 'how long the apiserver may take to run each new config', '5m')
      .option('--keep-backups <n>', 'previous configs kept in the backup dir', intOption('--keep-backups'), 10)
      .option('--no-kubeadm-config', 'leave kube-system/kubeadm-config alone')
      .option('--node-name <name>', "this control plane's node name (default: found from its mirror pod)")
      .option('--control-planes <n>', 'how many control planes there are, where they cannot all be discovered (no mirror pods, Nodes or identity leases)', intOption('--control-planes'))
      .option('--force', 'advance although control planes disagree, or turn off although etcd still holds encrypted objects', false)
      .option('--dry-run', "print each stage's config diff (keys redacted); change nothing", false)
      .action(
        wrap<Record<string, unknown>>(async (ctx, opts) => {
          const { runTransitionCommand } = await import('../transition/command');
          await runTransitionCommand(ctx, { kind: 'disable', operation: 'disable' }, opts as never);
        }),
      );
  },
};
