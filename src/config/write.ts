import { lstat, rmdir, stat } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { checkKeyName, checkKmsName, parseProvider, type Provider } from './keys';
import { readKey } from './input';
import { parseResources } from './model';
import { buildEncryptionConfig, newKeyName, renderEncryptionConfig } from './render';
import type { EncryptionConfiguration } from './schema';
import { errorsOf, findingLine, NEWEST_KUBE_VERSION, parseKubeVersion, validateEncryptionConfig, warningsOf, type Finding } from './validate';
import type { Context } from '../context';
import { backupFile, writeFileAtomic, SECRET_FILE_MODE, PRIVATE_DIR_MODE } from '../state/atomic';
import { CliError, ExitCode, fsError, usageError } from '../ui/errors';
import { confirm } from '../ui/prompt';
import { redactConfigText } from '../ui/redact';

export interface Opts {
  out?: string;
  provider: string;
  keyName?: string;
  keyFile?: string;
  keyStdin?: boolean;
  resources: string;
  kmsName?: string;
  kmsEndpoint?: string;
  kmsApiVersion: 'v1' | 'v2';
  kmsTimeout?: string;
  kmsCachesize?: number;
  kubeVersion?: string;
  force?: boolean;
  dryRun?: boolean;
}


export interface WriteConfigInput {
  provider: Provider;
  keyName: string;
  /** base64, already checked with decodeKey (local providers). */
  key?: string;
  kms?: { name: string; endpoint: string; apiVersion: 'v1' | 'v2'; timeout?: string; cachesize?: number };
  resources: string[];
  kubeVersion: string;
}

interface WriteConfigPlan {
  config: EncryptionConfiguration;
  /** The file content (holds the key). */
  text: string;
  warnings: Finding[];
}

const FLAG_OF_FIELD: Record<string, string> = {
  name: '--kms-name',
  endpoint: '--kms-endpoint',
  apiVersion: '--kms-api-version',
  timeout: '--kms-timeout',
  cachesize: '--kms-cachesize',
};

/** A finding on the config this command built, told in terms of the flag that caused it. */
function asFlagProblem(f: Finding, input: WriteConfigInput): string {
  const res = /^resources\[0\]\.resources(?:\[(\d+)\])?$/.exec(f.path);
  if (res) return `--resources${res[1] !== undefined ? ` (${input.resources[Number(res[1])]})` : ''}: ${f.message}`;
  const kms = /\.kms\.(\w+)$/.exec(f.path);
  if (kms && FLAG_OF_FIELD[kms[1]!]) return `${FLAG_OF_FIELD[kms[1]!]}: ${f.message}`;
  if (/\.keys\[0\]\.name$/.test(f.path)) return `--key-name: ${f.message}`;
  return findingLine(f);
}

/** Pure: the config to write and what validation says of it; invalid -> exit 2. */
export function planWriteConfig(input: WriteConfigInput): WriteConfigPlan {
  const config = buildEncryptionConfig(input);
  const findings = validateEncryptionConfig(config, { kubeVersion: input.kubeVersion });
  const errors = errorsOf(findings);
  if (errors.length > 0) {
    const problems = errors.map((f) => asFlagProblem(f, input));
    throw new CliError(`the config would be invalid: ${problems.join('; ')}`, {
      exitCode: ExitCode.Usage,
      hint: 'fix the options; nothing was written',
      details: { errors },
    });
  }
  return { config, text: renderEncryptionConfig(config), warnings: warningsOf(findings) };
}

/** Turns the options into a checked input; reads the key from --key-file/--key-stdin. */
async function gatherInput(ctx: Context, opts: Opts, provider: Provider): Promise<{ input: WriteConfigInput; generated: boolean }> {
  const resources = parseResources(opts.resources);
  const kubeVersion = opts.kubeVersion ?? NEWEST_KUBE_VERSION;
  parseKubeVersion(kubeVersion);
  const kmsFlags = ['kmsName', 'kmsEndpoint', 'kmsTimeout', 'kmsCachesize'] as const;

  if (provider === 'kms') {
    if (opts.keyFile || opts.keyStdin || opts.keyName) {
      throw usageError('--key-name, --key-file and --key-stdin do not apply to --provider kms', 'the KMS plugin holds the key; give --kms-name and --kms-endpoint');
    }
    if (!opts.kmsName || !opts.kmsEndpoint) {
      throw usageError('--provider kms needs --kms-name and --kms-endpoint', 'e.g. --kms-name mykms --kms-endpoint unix:///var/run/kmsplugin/socket.sock');
    }
    checkKmsName(opts.kmsName);
    const kms = {
      name: opts.kmsName,
      endpoint: opts.kmsEndpoint,
      apiVersion: opts.kmsApiVersion,
      ...(opts.kmsTimeout !== undefined ? { timeout: opts.kmsTimeout } : {}),
      ...(opts.kmsCachesize !== undefined ? { cachesize: opts.kmsCachesize } : {}),
    };
    return { input: { provider, keyName: opts.kmsName, kms, resources, kubeVersion }, generated: false };
  }

  const stray = kmsFlags.find((f) => opts[f] !== undefined);
  if (stray) {
    const flag = `--${stray.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    throw usageError(`${flag} applies to --provider kms only`, `drop it, or pass --provider kms`);
  }
  if (opts.keyFile && opts.keyStdin) throw usageError('give the key with --key-file or --key-stdin, not both');
  const keyName = opts.keyName ?? newKeyName(ctx.now());
  checkKeyName(keyName);
  const { key, source } = await readKey(ctx, provider, opts);
  return { input: { provider, keyName, key, resources, kubeVersion }, generated: source === 'generated' };
}

const inside = (dir: string, path: string) => {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
};

/** The directories a write to `path` would create, outermost first. */
async function missingDirs(path: string): Promise<string[]> {
  const missing: string[] = [];
  for (let d = dirname(path); d !== dirname(d); d = dirname(d)) {
    try {
      await lstat(d);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') break;
      missing.unshift(d);
    }
  }
  return missing;
}

/** Whether a config is already at `path` (a directory there is an error, not a file). */
async function isExistingFile(path: string): Promise<boolean> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return false;
    throw fsError('check', path, err);
  }
  if (st.isDirectory()) throw usageError(`${path} is a directory`, 'give --out a file path');
  return true;
}

export async function runWriteConfig(ctx: Context, opts: Opts): Promise<void> {
  const provider = parseProvider(opts.provider);
  const out = resolve(opts.out ?? ctx.paths.config);
  if (inside(ctx.paths.manifestsDir, out)) {
    throw usageError(`refusing to write the config into the kubelet's manifests directory (${ctx.paths.manifestsDir})`, 'the kubelet reads every file there; use e.g. /etc/kubernetes/encryption/config.yaml');
  }
  const { input, generated } = await gatherInput(ctx, opts, provider);
  const plan = planWriteConfig(input);

  const exists = await isExistingFile(out);
  // A dry run shows what would happen, the refusal included, instead of refusing.
  if (exists && !opts.force && !opts.dryRun) {
    throw new CliError(`${out} already exists; refusing to overwrite it (its keys may be the only way to read what is stored)`, {
      exitCode: ExitCode.Refused,
      hint: 'pass --force to replace it (a backup is kept in the backup dir), or choose another --out',
    });
  }
  if (exists && inside(ctx.paths.manifestsDir, ctx.paths.backupDir)) {
    throw usageError(`the backup dir ${ctx.paths.backupDir} is inside the kubelet's manifests directory`, 'choose another --backup-dir');
  }

  // Validation warnings are worth reading only once the config is (or would be) written.
  const warn = () => plan.warnings.forEach((w) => ctx.out.warn(findingLine(w)));
  const summary = {
    path: out,
    provider,
    keyName: input.keyName,
    resources: input.resources,
    kubeVersion: input.kubeVersion,
  };

  if (opts.dryRun) {
    warn();
    const content = redactConfigText(plan.text);
    const needsForce = exists && !opts.force;
    ctx.out.info(
      `dry run: would write ${out} (mode 0600)${exists ? `, replacing the existing file after backing it up (0600) to ${ctx.paths.backupDir}` : ''}` +
        (needsForce ? `; ${out} already exists, so this needs --force (its keys may be the only way to read what is stored)` : ''),
    );
    ctx.out.result(
      { ...summary, written: false, dryRun: true, overwrite: exists, ...(exists ? { needsForce, backupDir: ctx.paths.backupDir } : {}), content },
      () => content,
    );
    return;
  }

  if (exists) await confirm(ctx, `replace ${out}? Its keys may be the only way to read what is stored; a 0600 backup goes to ${ctx.paths.backupDir}.`);

  const backup = exists ? await backupFile(out, ctx.paths.backupDir, ctx.now()) : undefined;
  const created = await missingDirs(out);
  try {
    await writeFileAtomic(out, plan.text, { mode: SECRET_FILE_MODE, dirMode: PRIVATE_DIR_MODE });
  } catch (err) {
    // Leave nothing behind: remove the directories this write created (only if still empty).
    for (const d of created.reverse()) await rmdir(d).catch(() => {});
    throw err;
  }

  warn();
  const parentMode = (await stat(dirname(out))).mode & 0o777;
  if (parentMode & 0o077) {
    ctx.out.warn(`${dirname(out)} is mode 0${parentMode.toString(8)}; the config is 0600, but 0700 keeps even its name private`);
  }
  if (generated) ctx.out.info(`a new ${provider} key was generated; it exists only in ${out}: keep a copy somewhere safe`);
  ctx.out.info(`next: k8s-encrypt patch-manifest --config-path ${out}`);
  ctx.out.result({ ...summary, ...(backup ? { backup } : {}), written: true }, (c) =>
    [
      `${c.green('✓')} wrote ${out} (${provider}, ${provider === 'kms' ? 'KMS provider' : 'key'} ${input.keyName}, resources: ${input.resources.join(', ')})`,
      ...(backup ? [`  previous file backed up to ${backup}`] : []),
    ].join('\n'),
  );
}
