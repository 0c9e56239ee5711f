import { NEWEST_KUBE_VERSION } from '../config/versions';
import * as o from './option-schema';
import type { Opts } from '../config/check';
import { parseOptions } from './options';
import type { CommandModule } from './types';

const ValidateConfigOptions = { kubeVersion: o.str().optional(), featureGates: o.str().optional() } satisfies o.ShapeOf<Opts>;

export const validateConfigCommand: CommandModule = {
  register(program, wrap) {
    program
      .command('validate-config')
      .description("check an EncryptionConfiguration against the apiserver's rules and version traps")
      .argument('[path]', 'the config file (default ROOT/etc/kubernetes/encryption/config.yaml)')
      .option('--kube-version <x.y>', `apply the rules of this Kubernetes version (default ${NEWEST_KUBE_VERSION})`)
      .option('--feature-gates <list>', "the apiserver's --feature-gates, e.g. KMSv1=true (default: read from this node's manifest, if any)")
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw, args) =>
          (await import('../config/check')).runValidateConfig(ctx, parseOptions(ValidateConfigOptions, raw, 'validate-config'), args[0]),
        ),
      );
  },
};
