import { resolve } from 'node:path';
import type { ChalkInstance } from 'chalk';
import { parseConfigText, readConfigBytes, scrubSecrets } from './parse';
import {
  errorsOf,
  findingLine,
  NEWEST_KUBE_VERSION,
  parseKubeVersion,
  validateEncryptionConfig,
  warningsOf,
  type Finding,
} from './validate';
import type { Context } from '../context';
import { ExitCode } from '../ui/errors';

export interface Opts {
  kubeVersion?: string;
}

export interface ValidateConfigResult {
  path: string;
  kubeVersion: string;
  valid: boolean;
  errors: Finding[];
  warnings: Finding[];
}

/** Pure: every finding for a config text, shape problems included; key values scrubbed. */
export function checkConfigText(text: string, path: string, kubeVersion: string): ValidateConfigResult {
  const parsed = parseConfigText(text);
  const findings = parsed.ok ? validateEncryptionConfig(parsed.config, { kubeVersion }) : parsed.problems;
  const clean = findings.map((f) => ({ ...f, message: scrubSecrets(f.message, text) }));
  const errors = errorsOf(clean);
  return { path, kubeVersion, valid: errors.length === 0, errors, warnings: warningsOf(clean) };
}

export function renderValidation(r: ValidateConfigResult, c: ChalkInstance): string {
  const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
  const head = r.valid
    ? `${c.green('✓')} ${r.path} is valid for Kubernetes ${r.kubeVersion}${r.warnings.length ? ` (${count(r.warnings.length, 'warning')})` : ''}`
    : `${c.red('✗')} ${r.path} is not valid for Kubernetes ${r.kubeVersion}: ${count(r.errors.length, 'error')}, ${count(r.warnings.length, 'warning')}`;
  const lines = [
    ...r.errors.map((f) => `  ${c.red('✗ error')}   ${findingLine(f)}`),
    ...r.warnings.map((f) => `  ${c.yellow('! warning')} ${findingLine(f)}`),
  ];
  return [head, ...lines].join('\n');
}

export async function runValidateConfig(ctx: Context, opts: Opts, path: string | undefined): Promise<void> {
  const kubeVersion = opts.kubeVersion ?? NEWEST_KUBE_VERSION;
  parseKubeVersion(kubeVersion);
  const file = resolve(path ?? ctx.paths.config);
  const text = (await readConfigBytes(file)).toString('utf8');
  const result = checkConfigText(text, file, kubeVersion);
  // The findings are the result (also when there are errors), so they go to stdout; the exit code
  // tells CI whether the apiserver would take the file.
  ctx.out.result({ ok: result.valid, ...result }, (c) => renderValidation(result, c));
  if (!result.valid) ctx.out.exitCode = ExitCode.Usage;
}
