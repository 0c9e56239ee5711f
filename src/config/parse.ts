import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseAllDocuments } from 'yaml';
import { CliError, ExitCode, fsError } from '../ui/errors';
import { REDACTED, secretsOfConfigText } from '../ui/redact';
import {
  API_VERSION,
  decodeEncryptionConfiguration,
  KIND,
  LEGACY_API_VERSION,
  LEGACY_KIND,
  type DecodeIssue,
  type EncryptionConfiguration,
} from './schema';

/** One problem found in a config: where it is in the document and what is wrong. */
export interface Finding {
  level: 'error' | 'warning';
  /** Document path like `resources[0].providers[1].aescbc.keys[0].secret`; '' for the whole file. */
  path: string;
  message: string;
}

/**
 * A decoded config. `strict`: unknown and duplicate fields, which the apiserver drops (a later
 * duplicate wins) before strict decoding and refuses from 1.31; the config holds what it decodes
 * without them. `warnings`: what the apiserver accepts but the tool would write differently.
 */
type ParseResult =
  | { ok: true; config: EncryptionConfiguration; problems: []; strict: Finding[]; warnings: Finding[] }
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
  // Words (EncryptionConfiguration) are not keys: a run must hold a digit, '+', '/' or '='.
  return out.replace(/[A-Za-z0-9+/=]{16,}/g, (run) => (/[0-9+/=]/.test(run) && text.includes(run) ? REDACTED : run));
}

function yamlProblem(err: { message: string; linePos?: readonly { line: number; col: number }[] }): Finding {
  // yaml's messages end with a code frame that quotes the file: keep only the first line.
  const first = err.message.split('\n')[0]!.replace(/:\s*$/, '');
  const where = err.linePos?.[0];
  const message = /at line \d+/.test(first) || !where ? first : `${first} at line ${where.line}, column ${where.col}`;
  return { level: 'error', path: '', message: `does not parse as YAML or JSON: ${message}` };
}

const goTypeOf = (v: unknown) =>
  Array.isArray(v) ? 'a list' : v === null ? 'null' : typeof v === 'object' ? 'a mapping' : `a ${typeof v}`;

function valueAt(doc: unknown, path: readonly PropertyKey[]): unknown {
  let v = doc;
  for (const p of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

function typeProblem(issue: DecodeIssue, doc: unknown): Finding {
  const path = formatPath(issue.path);
  const found = goTypeOf(valueAt(doc, issue.path));
  let want = /expected (\w+)/.exec(issue.message)?.[1];
  if (issue.code === 'too_big' || issue.code === 'too_small') want = 'a 32-bit integer';
  else if (issue.code === 'invalid_type' && want === 'int') want = 'an integer';
  else if (want === 'object') want = 'a mapping';
  else if (want === 'array') want = 'a list';
  else if (want) want = `a ${want}`;
  const message = want ? `cannot be decoded: expected ${want}, found ${found}` : `cannot be decoded: ${issue.message}`;
  return { level: 'error', path, message };
}

/** Go's decoding of JSON null: the zero value, i.e. as if the field were not there. */
function withoutNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map((x) => (x === null ? undefined : withoutNulls(x)));
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (x !== null) out[k] = withoutNulls(x);
  return out;
}

function deleteAt(doc: unknown, path: readonly PropertyKey[]): void {
  const parent = valueAt(doc, path.slice(0, -1));
  if (parent && typeof parent === 'object') delete (parent as Record<PropertyKey, unknown>)[path[path.length - 1]!];
}

const CURRENT_FORM = `apiVersion: ${API_VERSION} and kind: ${KIND}`;

/** The type header, as the apiserver's scheme checks it; undefined when it is one it loads. */
function typeProblems(doc: unknown): Finding[] | undefined {
  const notIt = (why: string): Finding[] => [
    { level: 'error', path: '', message: `the file is not an EncryptionConfiguration: ${why} (expected a mapping with ${CURRENT_FORM})` },
  ];
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return notIt(`it holds ${goTypeOf(doc)}`);
  const { apiVersion, kind } = doc as Record<string, unknown>;
  if (kind === undefined || kind === '') return notIt("Object 'Kind' is missing");
  if (typeof kind !== 'string') return notIt(`kind is ${goTypeOf(kind)}`);
  if (apiVersion === undefined || apiVersion === '') return notIt("Object 'apiVersion' is missing");
  if (typeof apiVersion !== 'string') return notIt(`apiVersion is ${goTypeOf(apiVersion)}`);
  const registered = (apiVersion === API_VERSION && kind === KIND) || (apiVersion === LEGACY_API_VERSION && kind === LEGACY_KIND);
  return registered ? undefined : notIt(`no kind ${JSON.stringify(kind)} is registered for version ${JSON.stringify(apiVersion)}`);
}

function decode(js: unknown, duplicates: Finding[]): ParseResult {
  const header = typeProblems(js);
  if (header) return { ok: false, problems: header };
  const warnings: Finding[] = [];
  const doc = withoutNulls(js) as Record<string, unknown>;
  if (doc.kind === LEGACY_KIND) {
    warnings.push({
      level: 'warning',
      path: '',
      message: `"apiVersion: ${LEGACY_API_VERSION}" with "kind: ${LEGACY_KIND}" is a legacy form the apiserver still loads; the current form is ${CURRENT_FORM} (write-config and rotate-key write it)`,
    });
  }
  const current = { ...doc, apiVersion: API_VERSION, kind: KIND };
  const strict = [...duplicates];
  for (;;) {
    const parsed = decodeEncryptionConfiguration(current);
    if (parsed.success) return { ok: true, config: parsed.data, problems: [], strict, warnings };
    const unknown = parsed.issues.filter((i) => i.code === 'unrecognized_keys');
    if (unknown.length === 0) return { ok: false, problems: parsed.issues.map((i) => typeProblem(i, current)) };
    for (const issue of unknown) {
      for (const key of issue.keys!) {
        strict.push({ level: 'error', path: formatPath([...issue.path, key]), message: 'unknown field' });
        deleteAt(current, [...issue.path, key]);
      }
    }
  }
}

/**
 * Parses an EncryptionConfiguration (YAML or JSON) and decodes it as the apiserver does, returning
 * every problem instead of throwing. Semantic rules are ./validate.ts's job.
 */
export function parseConfigText(text: string): ParseResult {
  // YAML 1.1, as the apiserver's decoder (sigs.k8s.io/yaml) reads it: `name: on` is a boolean there.
  const parseDocs = (uniqueKeys: boolean) => {
    const docs = parseAllDocuments(text, { prettyErrors: true, uniqueKeys, version: '1.1' });
    return (Array.isArray(docs) ? docs : [docs]).filter((d) => d.contents !== null || d.errors.length > 0);
  };
  let nonEmpty = parseDocs(true);
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
  const duplicates: Finding[] = [];
  const dupErrors = nonEmpty[0]!.errors.filter((e) => e.code === 'DUPLICATE_KEY');
  if (dupErrors.length > 0 && dupErrors.length === nonEmpty[0]!.errors.length) {
    // Without strict decoding the later value wins: read it that way and report each duplicate.
    for (const e of dupErrors) {
      const where = e.linePos?.[0];
      duplicates.push({ level: 'error', path: '', message: `duplicate field${where ? ` at line ${where.line}` : ''}` });
    }
    nonEmpty = parseDocs(false);
  }
  const doc = nonEmpty[0]!;
  if (doc.errors.length > 0) return { ok: false, problems: doc.errors.map(yamlProblem) };
  return decode(doc.toJS({ maxAliasCount: 100 }), duplicates);
}

/** `resources[0].providers[0].aescbc.keys[0].secret: secrets must be base64 encoded` */
export function findingLine(f: Finding): string {
  return f.path ? `${f.path}: ${f.message}` : f.message;
}

/** One line naming the first problems; key values never appear in it. */
function describeProblems(problems: readonly Finding[], text: string): string {
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
  // An unknown or duplicate field is refused here at every version: a config rewritten from what
  // the apiserver decodes would lose it without a word.
  if (r.ok && r.strict.length === 0) return r.config;
  const found = r.ok ? r.strict.map((f) => ({ ...f, message: `${f.message} (the apiserver drops it before 1.31 and refuses the file from 1.31)` })) : r.problems;
  const problems = found.map((f) => ({ ...f, message: scrubSecrets(f.message, text) }));
  throw new CliError(`${source} is not a valid EncryptionConfiguration: ${describeProblems(problems, text)}`, {
    exitCode: ExitCode.Usage,
    hint: r.ok ? 'remove or correct the field' : `run "k8s-encrypt validate-config ${source}" to see every problem`,
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
