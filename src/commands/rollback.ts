import * as o from './option-schema';
import { addNodeFlags, nodeOptions, parseOptions } from './options';
import type { CommandModule } from './types';
import { addFleetOptions, runFleetIfAsked } from '../fleet/options';

export const RollbackOptions = { ...nodeOptions, to: o.str().optional(), timeout: o.str() };

/**
 * `k8s-encrypt rollback`: restores the previous config on this node (the newest backup that differs
 * from the current file, or --to FILE), only when it can still read every object etcd holds.
 */
export const rollbackCommand: CommandModule = {
  register(program, wrap) {
    addNodeFlags(program.command('rollback'), 'how long the apiserver may take to run the restored config')
      .description("restore this node's previous EncryptionConfiguration, if it can read every object written since")
      .option('--to <file>', 'restore this copy instead of the newest earlier backup')
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
