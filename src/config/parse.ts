import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseAllDocuments } from 'yaml';
import type { z } from 'zod';
import { CliError, ExitCode, fsError } from '../ui/errors';
import { REDACTED, secretsOfConfigText } from '../ui/redact';
import { EncryptionConfigurationSchema, type EncryptionConfiguration } from './schema';

/** One problem found in a config: where it is in the document and what is wrong. */
export interface Finding {
  level: 'error' | 'warning';
  /** Document path like `resources[0].providers[1].aescbc.keys[0].secret`; '' for the whole file. */
  path: string;
  message: string;
}

export type ParseResult =
  | { ok: true; config: EncryptionConfiguration; problems: [] }
  | { ok: false; config?: undefined; problems: Finding[] };

/** `['resources', 0, 'providers']` -> `resources[0].providers` (upstream's field path style). */
export function formatPath(path: readonly PropertyKey[]): string {
  let s = '';
  for (const p of path) {
    if (typeof p === 'number') s += `[${p}]`;
    else s += s === '' ? String(p) : `.${String(p)}`;
  }
  return s;
}

/**
 * Every `secret:` value in a config text, found without parsing (the text may not parse), so that
 * messages built from a broken file can be scrubbed of them.
 */
export function secretValuesIn(text: string): string[] {
  const found = new Set<string>();
  for (const m of text.matchAll(/["']?secret["']?\s*:\s*(["']?)([^\s"',}#:]+)\1/g)) {
    if (m[2] && m[2].length >= 4) found.add(m[2]);
  }
  return [...found];
}

/**
 * Replaces any secret of `text` that a message may quote; the last line of defence. Secrets are
 * found structurally when the text parses and by pattern when it does not; any long base64-like
 * run of the message that also occurs in the text (a key in a form neither finds) goes too.
 */
export function scrubSecrets(message: string, text: string): string {
  let out = message;
  const secrets = new Set([...secretValuesIn(text), ...(secretsOfConfigText(text) ?? [])]);
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) out = out.split(s).join(REDACTED);
  return out.replace(/[A-Za-z0-9+/=]{16,}/g, (run) => (text.includes(run) ? REDACTED : run));
}

function yamlProblem(err: { message: string; linePos?: readonly { line: number; col: number }[] }): Finding {
  // yaml's messages end with a code frame that quotes the file: keep only the first line.
  const first = err.message.split('\n')[0]!.replace(/:\s*$/, '');
  const where = err.linePos?.[0];
  const message = /at line \d+/.test(first) || !where ? first : `${first} at line ${where.line}, column ${where.col}`;
  return { level: 'error', path: '', message: `does not parse as YAML or JSON: ${message}` };
}

function zodProblems(issues: readonly z.core.$ZodIssue[]): Finding[] {
  const out: Finding[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        out.push({ level: 'error', path: formatPath([...issue.path, key]), message: `unknown field "${key}"` });
      }
      continue;
    }
    const missing = issue.code === 'invalid_type' && /received undefined$/.test(issue.message);
    const message = missing ? `required field is missing (${issue.message.replace(/^Invalid input: /, '')})` : issue.message;
    out.push({ level: 'error', path: formatPath(issue.path), message });
  }
  return out;
}

/**
 * Parses an EncryptionConfiguration (YAML or JSON) and checks its shape, returning every problem
 * instead of throwing. Semantic rules are ./validate.ts's job.
 */
export function parseConfigText(text: string): ParseResult {
  // YAML 1.1, as the apiserver's decoder (sigs.k8s.io/yaml) reads it: `name: on` is a boolean there.
  const docs = parseAllDocuments(text, { prettyErrors: true, uniqueKeys: true, version: '1.1' });
  const list = Array.isArray(docs) ? docs : [docs];
  const nonEmpty = list.filter((d) => d.contents !== null || d.errors.length > 0);
  if (nonEmpty.length === 0) {
    return { ok: false, problems: [{ level: 'error', path: '', message: 'the file is empty' }] };
  }
  if (nonEmpty.length > 1) {
    return {
      ok: false,
      problems: [
        {
          level: 'error',
          path: '',
          message: `the file holds ${nonEmpty.length} YAML documents; an EncryptionConfiguration file holds exactly one`,
        },
      ],
    };
  }
  const doc = nonEmpty[0]!;
  if (doc.errors.length > 0) return { ok: false, problems: doc.errors.map(yamlProblem) };
  const parsed = EncryptionConfigurationSchema.safeParse(doc.toJS({ maxAliasCount: 100 }));
  if (!parsed.success) return { ok: false, problems: zodProblems(parsed.error.issues) };
  return { ok: true, config: parsed.data, problems: [] };
}

/** `resources[0].providers[0].aescbc.keys[0].secret: secrets must be base64 encoded` */
export function findingLine(f: Finding): string {
  return f.path ? `${f.path}: ${f.message}` : f.message;
}

/** One line naming the first problems; key values never appear in it. */
export function describeProblems(problems: readonly Finding[], text: string): string {
  const head = problems.slice(0, 3).map(findingLine).join('; ');
  const more = problems.length > 3 ? ` (and ${problems.length - 3} more)` : '';
  return scrubSecrets(head + more, text);
}

/**
 * Parses and shape-checks a config text; throws a usage error (exit 2) that names each problem by
 * its document path, e.g. `resources[0].providers[1].aescbc.keys[0].secret`.
 */
export function parseEncryptionConfig(text: string, source: string): EncryptionConfiguration {
  const r = parseConfigText(text);
  if (r.ok) return r.config;
  const problems = r.problems.map((f) => ({ ...f, message: scrubSecrets(f.message, text) }));
  throw new CliError(`${source} is not a valid EncryptionConfiguration: ${describeProblems(problems, text)}`, {
    exitCode: ExitCode.Usage,
    hint: `run "k8s-encrypt validate-config ${source}" to see every problem`,
    details: { source, problems },
  });
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface LoadedConfig {
  config: EncryptionConfiguration;
  /** The file's text, as read (it holds keys: never print it unredacted). */
  text: string;
  /** sha256 of the exact file bytes, hex (what the apiserver's config-info metric reports). */
  sha256: string;
}

/** Reads the raw bytes of a config file, mapping fs errors to one clear line. */
export async function readConfigBytes(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw fsError('read', path, err);
  }
}

export async function loadEncryptionConfig(path: string): Promise<LoadedConfig> {
  const bytes = await readConfigBytes(path);
  const text = bytes.toString('utf8');
  return { config: parseEncryptionConfig(text, path), text, sha256: sha256Hex(bytes) };
}
