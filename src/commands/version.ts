import { versionInfo } from '../version';
import { isSingleExecutable } from '../runtime/assets';
import type { CommandModule } from './types';

export const versionCommand: CommandModule = {
  register(program, wrap) {
    program
      .command('version')
      .description('print the version, the git commit it was built from, the Node.js it runs on and the platform')
      .action(
        wrap(async (ctx) => {
          const v = versionInfo();
          const runtime = isSingleExecutable() ? 'embedded Node.js' : 'Node.js';
          ctx.out.result(v, () => `k8s-encrypt ${v.version} (commit ${v.commit}, ${runtime} ${v.node}, ${v.platform})`);
        }),
      );
  },
};
