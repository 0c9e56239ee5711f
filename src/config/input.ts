import { access, constants } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Context } from '../context';
import { readText } from '../state/atomic';
import { fsError, usageError } from '../ui/errors';
import { decodeKey, generateKey, type LocalProvider } from './keys';

/**
 * What the operator hands in: a key (--key-file, --key-stdin, or generated) and a config copied
 * from the first control plane (--from-config FILE, or `-` for standard input). The one place that
 * reads them, so every command takes them the same way; key material never comes from argv.
 */

/** `--from-config -`: the config comes on standard input (fleet mode pipes it over SSH). */
export const STDIN = '-';

async function readStdin(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The files a command line names (a key file, a config to install, a backup to restore) exist and
 * can be read: checked before the lock, so a wrong path is refused before anything is decided.
 * `-` (standard input) and absent options are skipped. The contents are checked where they are read.
 */
export async function assertReadable(files: readonly (readonly [action: string, path: string | undefined])[]): Promise<void> {
  for (const [action, path] of files) {
    if (path === undefined || path === STDIN) continue;
    await access(path, constants.R_OK).catch((err) => {
      throw fsError(action, path, err);
    });
  }
}

type KeySource = 'generated' | 'file' | 'stdin';

interface KeyOptions {
  keyFile?: string | undefined;
  keyStdin?: boolean | undefined;
}

/** A new local key: from --key-file, --key-stdin, or generated. Base64, checked for the provider. */
export async function readKey(ctx: Pick<Context, 'stdin'>, provider: LocalProvider, opts: KeyOptions): Promise<{ key: string; source: KeySource }> {
  if (opts.keyFile && opts.keyStdin) throw usageError('give the key with --key-file or --key-stdin, not both');
  if (opts.keyFile) return { key: decodeKey(provider, await readText(opts.keyFile, 'read key file'), `the key in ${opts.keyFile}`).toString('base64'), source: 'file' };
  if (opts.keyStdin) return { key: decodeKey(provider, await readStdin(ctx.stdin), 'the key on stdin').toString('base64'), source: 'stdin' };
  return { key: generateKey(provider), source: 'generated' };
}

export interface ConfigSource {
  text: string;
  /** The absolute path, or `-` for standard input. */
  path: string;
  /** How messages name it: the path, or "the config on stdin". */
  label: string;
}

/** Where a --from-config value points: `-` stays `-`, a path becomes absolute. */
export const configSourcePath = (value: string): string => (value === STDIN ? STDIN : resolve(value));

/**
 * --from-config FILE or `-`. Standard input is read whole (it is a file copied from another node);
 * a terminal there would wait for typing, so it is refused.
 */
export async function readConfigSource(ctx: Pick<Context, 'stdin' | 'stdinIsTTY'>, value: string, keyStdin?: boolean): Promise<ConfigSource> {
  if (value !== STDIN) {
    const path = resolve(value);
    return { text: await readText(path, 'read --from-config file'), path, label: path };
  }
  if (keyStdin) throw usageError('--from-config - and --key-stdin both read standard input', 'give one of them a file');
  if (ctx.stdinIsTTY) throw usageError('--from-config - reads the config from standard input, which is a terminal', 'pipe the file in (k8s-encrypt ... --from-config - < FILE), or give its path');
  const text = await readStdin(ctx.stdin);
  if (text.trim() === '') throw usageError('--from-config -: standard input is empty', 'pipe the config file from the first control plane in');
  return { text, path: STDIN, label: 'the config on stdin' };
}
