import { NEWEST_KUBE_VERSION } from '../config/versions';
import type { CommandModule } from './types';

export const validateConfigCommand: CommandModule = {
  register(program, wrap) {
    program
      .command('validate-config')
      .description("check an EncryptionConfiguration against the apiserver's rules and version traps")
      .argument('[path]', 'the config file (default ROOT/etc/kubernetes/encryption/config.yaml)')
      .option('--kube-version <x.y>', `apply the rules of this Kubernetes version (default ${NEWEST_KUBE_VERSION})`)
      .option('--feature-gates <list>', "the apiserver's --feature-gates, e.g. KMSv1=true (default: read from this node's manifest, if any)")
      .action(wrap<import('../config/check').Opts>(async (ctx, opts, args) => (await import('../config/check')).runValidateConfig(ctx, opts, args[0])));
  },
};
