import * as o from './option-schema';
import { addNodeFlags, addStagedFlags, nodeOptions, parseOptions, snapshotOptions, stagedOptions } from './options';
import type { CommandModule } from './types';
import { addSnapshotOptions } from './safety';

const DisableOptions = { ...nodeOptions, ...stagedOptions, ...snapshotOptions, kubeadmConfig: o.bool() };
import { addFleetOptions, runFleetIfAsked } from '../fleet/options';

/**
 * `k8s-encrypt disable`: identity first with every key kept as a reader, rewrite, verify that etcd
 * holds nothing encrypted, then remove the flag, the mount, the kubeadm-config entries and finally
 * the config file (kept as a 0600 backup). Asks first; without a terminal it needs --yes.
 */
export const disableCommand: CommandModule = {
  register(program, wrap) {
    addStagedFlags(addNodeFlags(addSnapshotOptions(program.command('disable')), 'how long the apiserver may take to run each new config'))
      .description('turn encryption at rest off: identity first, rewrite, verify, then remove the flag, mount and config')
      .option('--stage <name>', 'run only this stage: add-reader, promote, rewrite or prune (prune on a further control plane unpatches it)')
      .option('--no-kubeadm-config', 'leave kube-system/kubeadm-config alone')
      .option('--force', 'advance although control planes disagree, or turn off although etcd still holds encrypted objects', false)
      .option('--dry-run', "print each stage's config diff (keys redacted); change nothing", false)
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw) => {
          if (await runFleetIfAsked(ctx, program, 'disable', raw)) return;
          const opts = parseOptions(DisableOptions, raw, 'disable');
          const { runTransitionCommand } = await import('../transition/command');
          await runTransitionCommand(ctx, { kind: 'disable', operation: 'disable' }, opts);
        }),
      );
    addFleetOptions(program, 'disable');
  },
};
