import { resolve } from 'node:path';
import type { ChalkInstance } from 'chalk';
import { parseConfigText, readConfigBytes, scrubSecrets } from './parse';
import {
  errorsOf,
  findingLine,
  NEWEST_KUBE_VERSION,
  parseFeatureGates,
  parseKubeVersion,
  SINCE,
  validateEncryptionConfig,
  warningsOf,
  type FeatureGates,
  type Finding,
} from './validate';
import type { Context } from '../context';
import { ExitCode, usageError } from '../ui/errors';

export interface Opts {
  kubeVersion?: string;
  featureGates?: string;
}

interface CheckOptions {
  kubeVersion: string;
  featureGates?: FeatureGates;
  /** The apiserver runs with --encryption-provider-config-automatic-reload=true. */
  reload?: boolean;
}

interface ValidateConfigResult {
  path: string;
  kubeVersion: string;
  /** The feature gates the rules were applied with, and where they came from. */
  featureGates: FeatureGates;
  featureGatesFrom?: string;
  valid: boolean;
  errors: Finding[];
  warnings: Finding[];
}

/** Unknown and duplicate fields: refused with strict decoding (1.31+), dropped before. */
function strictFinding(f: Finding, minor: number): Finding {
  const where = f.path ? `${f.path}` : '';
  if (minor >= SINCE.strictDecoding) {
    const what = f.message === 'unknown field' ? `unknown field ${JSON.stringify(where)}` : f.message;
    return { level: 'error', path: f.path, message: `strict decoding error: ${what}` };
  }
  const effect = f.message === 'unknown field' ? 'the field is dropped' : 'the later value is used';
  return {
    level: 'warning',
    path: f.path,
    message: `${f.message}: a 1.${minor} apiserver decodes without strict checks, so ${effect} (from 1.31 the apiserver refuses the file)`,
  };
}

/** Pure: every finding for a config text, shape problems included; key values scrubbed. */
export function checkConfigText(text: string, path: string, opts: CheckOptions): Omit<ValidateConfigResult, 'featureGatesFrom'> {
  const { kubeVersion } = opts;
  const featureGates = opts.featureGates ?? {};
  const { minor } = parseKubeVersion(kubeVersion);
  const parsed = parseConfigText(text);
  const findings = parsed.ok
    ? [
        ...parsed.warnings,
        ...parsed.strict.map((f) => strictFinding(f, minor)),
        ...validateEncryptionConfig(parsed.config, { kubeVersion, featureGates, reload: opts.reload, noEffect: 'warning' }),
      ]
    : parsed.problems;
  const clean = findings.map((f) => ({ ...f, message: scrubSecrets(f.message, text) }));
  const errors = errorsOf(clean);
  return { path, kubeVersion, featureGates, valid: errors.length === 0, errors, warnings: warningsOf(clean) };
}

function renderValidation(r: ValidateConfigResult, c: ChalkInstance): string {
  const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
  const gates = Object.entries(r.featureGates).map(([k, v]) => `${k}=${v}`).join(',');
  const target = `Kubernetes ${r.kubeVersion}${gates ? ` with --feature-gates=${gates}` : ''}`;
  const head = r.valid
    ? `${c.green('✓')} ${r.path} is valid for ${target}${r.warnings.length ? ` (${count(r.warnings.length, 'warning')})` : ''}`
    : `${c.red('✗')} ${r.path} is not valid for ${target}: ${count(r.errors.length, 'error')}, ${count(r.warnings.length, 'warning')}`;
  const lines = [
    ...r.errors.map((f) => `  ${c.red('✗ error')}   ${findingLine(f)}`),
    ...r.warnings.map((f) => `  ${c.yellow('! warning')} ${findingLine(f)}`),
  ];
  return [head, ...lines].join('\n');
}

/** --feature-gates as given: every entry must be NAME=true|false (the apiserver refuses others). */
function gatesOption(value: string): FeatureGates {
  const bad = value.split(',').filter((p) => p.trim() !== '' && !/^\s*[A-Za-z0-9]+\s*=\s*(true|false)\s*$/i.test(p));
  if (bad.length > 0) {
    throw usageError(`--feature-gates: "${bad[0]}" is not NAME=true|false`, 'e.g. --feature-gates KMSv1=true');
  }
  return parseFeatureGates(value);
}

/** The gates and reload flag of this node's apiserver manifest, when there is one to read. */
async function manifestSettings(manifestPath: string): Promise<{ gates: FeatureGates; reload: boolean } | undefined> {
  const [{ readFile }, { readApiserverFlags }] = await Promise.all([import('node:fs/promises'), import('../manifest/manifest')]);
  let text: string;
  try {
    text = await readFile(manifestPath, 'utf8');
  } catch {
    return undefined; // no manifest here (not a control plane, or --root elsewhere): no gates
  }
  try {
    const { flags } = readApiserverFlags(text, manifestPath);
    return {
      gates: parseFeatureGates(flags.get('feature-gates')),
      reload: flags.get('encryption-provider-config-automatic-reload') === 'true',
    };
  } catch {
    return undefined;
  }
}

export async function runValidateConfig(ctx: Context, opts: Opts, path: string | undefined): Promise<void> {
  const kubeVersion = opts.kubeVersion ?? NEWEST_KUBE_VERSION;
  parseKubeVersion(kubeVersion);
  const fromManifest = await manifestSettings(ctx.paths.manifest);
  let featureGates: FeatureGates = fromManifest?.gates ?? {};
  let featureGatesFrom = fromManifest ? ctx.paths.manifest : undefined;
  if (opts.featureGates !== undefined) {
    featureGates = gatesOption(opts.featureGates);
    featureGatesFrom = '--feature-gates';
  }
  const reload = fromManifest?.reload ?? false;
  const file = resolve(path ?? ctx.paths.config);
  const text = (await readConfigBytes(file)).toString('utf8');
  const result = { ...checkConfigText(text, file, { kubeVersion, featureGates, reload }), ...(featureGatesFrom ? { featureGatesFrom } : {}) };
  // The findings are the result (also when there are errors), so they go to stdout; the exit code
  // tells CI whether the apiserver would take the file.
  ctx.out.result({ ok: result.valid, ...result }, (c) => renderValidation(result, c));
  if (!result.valid) ctx.out.exitCode = ExitCode.Usage;
}
