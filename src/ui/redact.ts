import { parseAllDocuments, stringify } from 'yaml';

/** The placeholder shown wherever a key would be. */
export const REDACTED = '<redacted>';

/** What is printed instead of a config text that does not parse: nothing of the text itself. */
export const UNPARSEABLE_CONFIG = '# (this config text does not parse as YAML or JSON; none of it is shown)\n';

/** The header renderEncryptionConfig writes; the only comment kept, since it holds no value. */
const KNOWN_HEADER = /^# Written by k8s-encrypt\. This file holds encryption keys: keep it mode 0600 \(owner root only\)\n# and back it up somewhere safe; a lost key means data that can no longer be read\.\n/;

type Parsed = { ok: true; values: unknown[] } | { ok: false };

/**
 * Parses a config text the way the apiserver's decoder reads it (YAML 1.1, merge keys, aliases
 * resolved; JSON is YAML). Any error (syntax, duplicate keys, alias bombs) makes it unparseable.
 */
function parseValues(text: string): Parsed {
  try {
    const docs = parseAllDocuments(text, { version: '1.1', uniqueKeys: true, merge: true });
    const list = Array.isArray(docs) ? docs : [docs];
    if (list.some((d) => d.errors.length > 0)) return { ok: false };
    const values = list.filter((d) => d.contents !== null).map((d) => d.toJS({ maxAliasCount: 100 }) as unknown);
    return { ok: true, values };
  } catch {
    return { ok: false };
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function leavesOf(v: unknown, out: Set<string>): void {
  if (Array.isArray(v)) v.forEach((x) => leavesOf(x, out));
  else if (v instanceof Uint8Array) out.add(Buffer.from(v).toString('base64'));
  else if (v instanceof Map) [...v.entries()].forEach(([k, x]) => (leavesOf(k, out), leavesOf(x, out)));
  else if (isRecord(v) && !(v instanceof Date)) Object.entries(v).forEach(([k, x]) => (out.add(k), leavesOf(x, out)));
  else if (v !== null && v !== undefined && v !== '') out.add(String(v));
}

function collectSecrets(v: unknown, out: Set<string>): void {
  if (Array.isArray(v)) v.forEach((x) => collectSecrets(x, out));
  else if (isRecord(v)) {
    for (const [k, x] of Object.entries(v)) {
      if (k === 'secret') leavesOf(x, out);
      else collectSecrets(x, out);
    }
  }
}

/** Every form a secret may take in printed text: as written, and its decoded bytes as hex. */
function withDecodedForms(values: Iterable<string>): string[] {
  const out = new Set<string>();
  for (const s of values) {
    out.add(s);
    // A block scalar keeps its line breaks; Go's base64 decoder skips them, so the key is the rest.
    out.add(s.replace(/\s+/g, ''));
    const bytes = /^[A-Za-z0-9+/=\s]+$/.test(s) ? Buffer.from(s, 'base64') : undefined;
    if (bytes && bytes.length >= 8) {
      out.add(bytes.toString('hex'));
      out.add(bytes.toString('latin1'));
    }
  }
  // Short values (one or two characters) would redact half the document; `secret` is hidden anyway.
  return [...out].filter((s) => s.length >= 4);
}

/**
 * The secret values of a config text, found structurally (every `secret` field at any depth,
 * whatever the YAML style), or undefined when the text does not parse.
 */
export function secretsOfConfigText(text: string): string[] | undefined {
  const parsed = parseValues(text);
  if (!parsed.ok) return undefined;
  const found = new Set<string>();
  try {
    parsed.values.forEach((v) => collectSecrets(v, found));
  } catch {
    return undefined; // a cyclic alias
  }
  return withDecodedForms(found);
}

function scrub(v: unknown, secrets: readonly string[]): unknown {
  const holds = (s: string) => secrets.some((x) => s.includes(x));
  if (Array.isArray(v)) return v.map((x) => scrub(x, secrets));
  // No field of an EncryptionConfiguration is binary: a !!binary value is shown as nothing.
  if (v instanceof Uint8Array) return REDACTED;
  if (v instanceof Map) return scrub(Object.fromEntries([...v.entries()].map(([k, x]) => [String(k), x])), secrets);
  if (isRecord(v) && !(v instanceof Date)) {
    const out: Record<string, unknown> = {};
    let n = 0;
    for (const [k, x] of Object.entries(v)) {
      const key = holds(k) ? `${REDACTED}${n++ ? `-${n}` : ''}` : k;
      out[key] = k === 'secret' ? REDACTED : scrub(x, secrets);
    }
    return out;
  }
  if (typeof v === 'string' && holds(v)) return REDACTED;
  return v;
}

type RedactedConfig = { ok: true; text: string } | { ok: false; text: string };

/**
 * An EncryptionConfiguration text (YAML or JSON, any style) made printable: parsed as the
 * apiserver parses it, every `secret` value (and any other value holding one) replaced, then
 * re-rendered as block YAML. Comments are dropped (they may quote an old key). A text that does
 * not parse is shown as one line saying so, never in part.
 */
export function redactConfig(text: string): RedactedConfig {
  const secrets = secretsOfConfigText(text);
  const parsed = parseValues(text);
  if (!secrets || !parsed.ok) return { ok: false, text: UNPARSEABLE_CONFIG };
  let body: string;
  try {
    body = parsed.values
      .map((v) => stringify(scrub(v, secrets), { lineWidth: 0, indent: 2, indentSeq: true, version: '1.1' }))
      .join('---\n');
  } catch {
    return { ok: false, text: UNPARSEABLE_CONFIG }; // e.g. an alias inside its own anchor (a cycle)
  }
  const header = KNOWN_HEADER.exec(text)?.[0] ?? '';
  return { ok: true, text: body === '' ? '' : header + body };
}

/** The printable form of a config text (see redactConfig); what every printed config goes through. */
export function redactConfigText(text: string): string {
  return redactConfig(text).text;
}
