/**
 * Writing and reading escrow bundles on disk, and the escrow step of init / rotate-key: the
 * config that first holds the new key is sealed to the --escrow-recipient keys and written (0600,
 * atomic) before that config is installed, so no object is ever encrypted under a key that has
 * no escrowed copy.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Context } from '../context';
import { readText, SECRET_FILE_MODE, writeFileAtomic, fileExists } from '../state/atomic';
import type { JsonObject } from '../state/journal';
import { CliError, ExitCode, fsError, usageError } from '../ui/errors';
import { bundleFingerprint, buildBundle, checkRecipients, escrowedKeyNames, sealBundle, type KeyBundle, type Seal } from './bundle';
import { escrowRecorder } from './records';

interface WrittenBundle extends JsonObject {
  path: string;
  fingerprint: string;
  bytes: number;
  keys: string[];
  configSha256: string;
}

export async function writeBundle(bundle: KeyBundle, seal: Seal, out: string, by: string, stateDir: string): Promise<WrittenBundle> {
  const addRecord = await escrowRecorder(stateDir);
  const sealed = await sealBundle(bundle, seal);
  await writeFileAtomic(out, sealed, { mode: SECRET_FILE_MODE });
  const fingerprint = bundleFingerprint(sealed);
  await addRecord({
    bundle: out,
    fingerprint,
    createdAt: bundle.createdAt,
    configSha256: bundle.configSha256,
    keys: bundle.keys.filter((k) => k.secret !== undefined).map((k) => ({ provider: k.provider, name: k.name })),
    sealedTo: 'recipients' in seal ? seal.recipients : 'passphrase',
    by,
  });
  return { path: out, fingerprint, bytes: sealed.length, keys: escrowedKeyNames(bundle), configSha256: bundle.configSha256 };
}

export async function readBundleFile(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw fsError('read bundle', path, err);
  }
}

/** A passphrase from a file (its first line) or from stdin (all of it, trailing newline cut). */
export async function readPassphrase(ctx: Context, opts: { passphraseFile?: string; passphraseStdin?: boolean }): Promise<string | undefined> {
  if (opts.passphraseFile && opts.passphraseStdin) throw usageError('give the passphrase with --passphrase-file or --passphrase-stdin, not both');
  let text: string | undefined;
  if (opts.passphraseFile) text = (await readText(opts.passphraseFile, 'read passphrase file')).split(/\r?\n/)[0];
  else if (opts.passphraseStdin) {
    const chunks: Buffer[] = [];
    for await (const c of ctx.stdin) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
    text = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  }
  if (text === undefined) return undefined;
  if (text.length === 0) throw usageError(`the passphrase ${opts.passphraseFile ? `in ${opts.passphraseFile}` : 'on stdin'} is empty`);
  return text;
}

export interface EscrowOptions {
  escrowRecipient?: string[];
  escrowDir?: string;
}

export const escrowDirOf = (ctx: Context, opts: EscrowOptions) => opts.escrowDir ?? join(ctx.paths.stateDir, 'escrow');

/** Checks --escrow-recipient before anything changes (a bad recipient is exit 2, nothing written). */
export function checkEscrowOptions(opts: EscrowOptions): void {
  if (opts.escrowRecipient?.length) checkRecipients(opts.escrowRecipient, '--escrow-recipient');
  else if (opts.escrowDir) throw usageError('--escrow-dir needs --escrow-recipient');
}

interface StepJournalLike {
  readonly steps: readonly { name: string }[];
  complete(step: string, output: JsonObject): Promise<void>;
}

export const ESCROW_STEP = 'escrow';

/**
 * The escrow step: seals the config that first holds the new key (with every other key in it)
 * to the recipients, as ESCROW_DIR/KEYNAME.age, and journals where and its fingerprint. Runs
 * again while no config has been written (a resumed run may hold a new key); once one has, the
 * recorded bundle stands.
 */
export async function escrowNewKey(
  ctx: Context,
  journal: StepJournalLike,
  opts: EscrowOptions,
  what: { keyName: string; configText: string; configPath: string; operation: string },
): Promise<WrittenBundle | undefined> {
  if (!opts.escrowRecipient?.length) return undefined;
  const written = journal.steps.some((s) => s.name.endsWith(':write'));
  if (written && journal.steps.some((s) => s.name === ESCROW_STEP)) return undefined;
  const bundle = buildBundle(what.configText, what.configPath, ctx.now());
  if (!bundle.keys.some((k) => k.name === what.keyName && k.secret !== undefined)) {
    ctx.out.warn(`--escrow-recipient: "${what.keyName}" is not a local key (a KMS key stays in the KMS); the bundle holds the config's other keys only`);
  }
  const dir = escrowDirOf(ctx, opts);
  const out = join(dir, `${what.keyName}.age`);
  if (written) ctx.out.warn(`${what.keyName} was written to ${what.configPath} before this run escrowed it`);
  const r = await writeBundle(bundle, { recipients: opts.escrowRecipient }, out, what.operation, ctx.paths.stateDir);
  await journal.complete(ESCROW_STEP, r);
  ctx.out.step(`escrowed ${r.keys.join(', ')} to ${out} (0600, ${r.fingerprint.slice(0, 19)}…, sealed to ${opts.escrowRecipient.length} recipient(s))`);
  return r;
}

/** A bundle path for `keys export` that does not exist yet (or --force). */
export async function assertNewFile(path: string, force: boolean, what: string): Promise<void> {
  if (!force && (await fileExists(path))) {
    throw new CliError(`${path} already exists`, { exitCode: ExitCode.Refused, hint: `pass --force to replace it, or choose another ${what}` });
  }
}
