import { Option } from 'commander';
import { DEFAULT_KEY_BYTES, generateKey, LOCAL_PROVIDERS, parseProvider, type LocalProvider } from '../config/keys';
import { intOption, type CommandModule } from './types';

interface Opts {
  provider: string;
  bytes: number;
}

export const generateKeyCommand: CommandModule = {
  register(program, wrap) {
    program
      .command('generate-key')
      .description('print a new random base64 key (from the OS CSPRNG) for aescbc, aesgcm or secretbox')
      .addOption(new Option('--provider <name>', 'provider the key is for').choices(LOCAL_PROVIDERS).default('aescbc'))
      .option('--bytes <n>', 'key length in bytes', intOption('--bytes'), DEFAULT_KEY_BYTES)
      .action(
        wrap<Opts>(async (ctx, opts) => {
          const provider = parseProvider(opts.provider, false) as LocalProvider;
          const key = generateKey(provider, opts.bytes);
          // The key is the requested output here, so it goes to stdout, also with --json.
          ctx.out.result({ provider, bytes: opts.bytes, key }, () => key);
        }),
      );
  },
};
