import { Option } from 'commander';
import { DEFAULT_KEY_BYTES, generateKey, LOCAL_PROVIDERS, parseProvider, type LocalProvider } from '../config/keys';
import * as o from './option-schema';
import { parseOptions } from './options';
import { intOption, type CommandModule } from './types';

const GenerateKeyOptions = { provider: o.str(), bytes: o.int(1) };

export const generateKeyCommand: CommandModule = {
  register(program, wrap) {
    program
      .command('generate-key')
      .description('print a new random base64 key (from the OS CSPRNG) for aescbc, aesgcm or secretbox')
      .addOption(new Option('--provider <name>', 'provider the key is for').choices(LOCAL_PROVIDERS).default('aescbc'))
      .option('--bytes <n>', 'key length in bytes', intOption('--bytes'), DEFAULT_KEY_BYTES)
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw) => {
          const opts = parseOptions(GenerateKeyOptions, raw, 'generate-key');
          const provider = parseProvider(opts.provider, false) as LocalProvider;
          const key = generateKey(provider, opts.bytes);
          // The key is the requested output here, so it goes to stdout, also with --json.
          ctx.out.result({ provider, bytes: opts.bytes, key }, () => key);
        }),
      );
  },
};
