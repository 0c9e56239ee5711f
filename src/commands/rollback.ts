import { z } from 'zod';
import { nodeOptions, parseOptions } from './options';
import { intOption, type CommandModule } from './types';
import { addFleetOptions, runFleetIfAsked } from '../fleet/options';

export const RollbackOptions = z.object({ ...nodeOptions, to: z.string().optional(), timeout: z.string() });

/**
 * `k8s-encrypt rollback`: restores the previous config on this node (the newest backup that differs
 * from the current file, or --to FILE), only when it can still read every object etcd holds.
 */
export const rollbackCommand: CommandModule = {
  register(program, wrap) {
    program
      .command('rollback')
      .description("restore this node's previous EncryptionConfiguration, if it can read every object written since")
      .option('--to <file>', 'restore this copy instead of the newest earlier backup')
      .option('--config <path>', 'the EncryptionConfiguration (default: the manifest\'s --encryption-provider-config)')
      .option('--manifest <path>', 'kube-apiserver static pod manifest (default ROOT/etc/kubernetes/manifests/kube-apiserver.yaml)')
      .option('--timeout <duration>', 'how long the apiserver may take to run the restored config', '5m')
      .option('--keep-backups <n>', 'previous configs kept in the backup dir', intOption('--keep-backups'), 10)
      .option('--node-name <name>', "this control plane's node name (default: found from its mirror pod)")
      .option('--dry-run', 'print the diff (keys redacted) and the check; change nothing', false)
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw) => {
          if (await runFleetIfAsked(ctx, program, 'rollback', raw)) return;
          const opts = parseOptions(RollbackOptions, raw, 'rollback');
          const { runRollbackCommand } = await import('../transition/rollback-command');
          await runRollbackCommand(ctx, opts);
        }),
      );
    addFleetOptions(program, 'rollback');
  },
};
