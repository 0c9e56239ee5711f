import { resolve, join } from 'node:path';
import type { Context } from '../context';
import { readConfigBytes } from '../config/parse';
import { errorsOf, NEWEST_KUBE_VERSION, validateEncryptionConfig } from '../config/validate';
import { parseEncryptionConfig } from '../config/parse';
import { backupFile, fileExists, readText, SECRET_FILE_MODE, writeFileAtomic } from '../state/atomic';
import { usageError } from '../ui/errors';
import { buildBundle, openBundle, parseIdentityFile, summarizeBundle, type Opener, type Seal } from './bundle';
import { assertNewFile, readBundleFile, readPassphrase, writeBundle } from './export';

export interface ExportOpts {
  recipient?: string[];
  passphraseFile?: string;
  passphraseStdin?: boolean;
  out?: string;
  force?: boolean;
}

export interface ImportOpts {
  identity?: string;
  passphraseFile?: string;
  passphraseStdin?: boolean;
  out: string;
  force?: boolean;
  kubeVersion?: string;
}

async function sealOf(ctx: Context, opts: ExportOpts): Promise<Seal> {
  const given = [opts.recipient?.length ? '--recipient' : '', opts.passphraseFile ? '--passphrase-file' : '', opts.passphraseStdin ? '--passphrase-stdin' : ''].filter(Boolean);
  if (given.length === 0) throw usageError('keys export needs --recipient age1... (repeatable), --passphrase-file FILE or --passphrase-stdin', 'a bundle is never written in plaintext');
  if (given.length > 1) throw usageError(`give one of ${given.join(', ')}: a bundle is sealed to recipients or to a passphrase`);
  if (opts.recipient?.length) return { recipients: opts.recipient };
  return { passphrase: (await readPassphrase(ctx, opts))! };
}

export async function runKeysExport(ctx: Context, opts: ExportOpts): Promise<void> {
  const seal = await sealOf(ctx, opts);
  const configPath = ctx.paths.config;
  const text = (await readConfigBytes(configPath)).toString('utf8');
  const bundle = buildBundle(text, configPath, ctx.now());
  if (!bundle.keys.some((k) => k.secret !== undefined)) ctx.out.warn(`${configPath} holds no local key (KMS keys stay in the KMS): the bundle holds the config only`);
  const out = opts.out ? resolve(opts.out) : join(ctx.paths.stateDir, 'escrow', `keys-${bundle.configSha256.slice(0, 12)}.age`);
  await assertNewFile(out, Boolean(opts.force), '--out');
  const r = await writeBundle(bundle, seal, out, 'keys export', ctx.paths.stateDir);
  ctx.out.result({ bundle: r.path, fingerprint: r.fingerprint, bytes: r.bytes, keys: summarizeBundle(bundle).keys, configSha256: r.configSha256, sealedTo: 'recipients' in seal ? seal.recipients : 'passphrase' }, (c) =>
    [
      `${c.green('✓')} sealed ${bundle.keys.length} key(s) of ${configPath} to ${'recipients' in seal ? `${seal.recipients.length} recipient(s)` : 'a passphrase'}: ${r.path} (0600)`,
      ...bundle.keys.map((k) => `  ${k.provider} ${k.name} (${k.resources.join(', ')})${k.secret === undefined ? ' [kms: key stays in the KMS]' : ''}`),
      `  fingerprint ${r.fingerprint}`,
      '  store it away from this node; "k8s-encrypt keys import" turns it back into a config',
    ].join('\n'),
  );
}

async function openerOf(ctx: Context, opts: ImportOpts): Promise<Opener> {
  const given = [opts.identity ? '--identity' : '', opts.passphraseFile ? '--passphrase-file' : '', opts.passphraseStdin ? '--passphrase-stdin' : ''].filter(Boolean);
  if (given.length !== 1) throw usageError(given.length ? `give one of ${given.join(', ')}` : 'keys import needs --identity FILE, --passphrase-file FILE or --passphrase-stdin');
  if (opts.identity) return { identities: parseIdentityFile(await readText(opts.identity, 'read identity file'), opts.identity) };
  return { passphrase: (await readPassphrase(ctx, opts))! };
}

/** Opens a bundle file with an identity file or a passphrase (shared with verify-snapshot). */
export async function openBundleFile(ctx: Context, path: string, opts: Omit<ImportOpts, 'out' | 'force'>) {
  const opener = await openerOf(ctx, { ...opts, out: '' });
  return openBundle(await readBundleFile(path), opener, path);
}

export async function runKeysImport(ctx: Context, opts: ImportOpts, bundlePath: string): Promise<void> {
  const bundle = await openBundleFile(ctx, resolve(bundlePath), opts);
  const cfg = parseEncryptionConfig(bundle.config, `the config inside ${bundlePath}`);
  const errors = errorsOf(validateEncryptionConfig(cfg, { kubeVersion: opts.kubeVersion ?? NEWEST_KUBE_VERSION }));
  if (errors.length) throw usageError(`the config inside ${bundlePath} is not valid for Kubernetes ${opts.kubeVersion ?? NEWEST_KUBE_VERSION}: ${errors[0]!.path}: ${errors[0]!.message}`, 'pass --kube-version with your cluster\'s version; nothing was written');
  const out = resolve(opts.out);
  let backup: string | null = null;
  if (await fileExists(out)) {
    await assertNewFile(out, Boolean(opts.force), '--out');
    backup = await backupFile(out, ctx.paths.backupDir, ctx.now());
  }
  await writeFileAtomic(out, bundle.config, { mode: SECRET_FILE_MODE });
  const s = summarizeBundle(bundle);
  ctx.out.result({ config: out, configSha256: s.configSha256, exportedAt: s.createdAt, source: s.source, keys: s.keys, backup }, (c) =>
    [
      `${c.green('✓')} wrote ${out} (0600, sha256 ${s.configSha256.slice(0, 12)}…): the config exported from ${s.source} at ${s.createdAt}`,
      ...s.keys.map((k) => `  ${k.provider} ${k.name} (${k.resources.join(', ')})`),
      ...(backup ? [`  previous file backed up to ${backup}`] : []),
    ].join('\n'),
  );
}
