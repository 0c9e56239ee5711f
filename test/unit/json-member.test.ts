import { describe, expect, it } from 'vitest';
import { Malformed, metadataString } from '../../src/cluster/json-member';

// A deterministic generator of JSON documents that stress the scanner: "metadata" and
// "resourceVersion" as keys at other depths and inside strings, escapes in keys and values,
// nested arrays and objects, every kind of literal, and whitespace between every token.
let seed = 11;
const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
const KEYS = ['metadata', 'resourceVersion', 'name', 'data', 'a"b', 'back\\slash', 'uni\u00e9', 'nl\n', '{', '}', ''];
const STRINGS = ['', '12345', 'x"y', '\\', '\\"', '{"metadata":{"resourceVersion":"9"}}', '\u2028', '\ud83d\ude00', ']', '}'];

function value(depth: number): unknown {
  const r = rnd();
  if (depth > 3 || r < 0.35) return pick<unknown>([...STRINGS, 0, -1.5e3, true, false, null, String(Math.floor(rnd() * 1e9))]);
  if (r < 0.55) return Array.from({ length: Math.floor(rnd() * 4) }, () => value(depth + 1));
  const o: Record<string, unknown> = {};
  for (let i = Math.floor(rnd() * 5); i > 0; i--) o[pick(KEYS)] = value(depth + 1);
  return o;
}

function doc(): unknown {
  const top = value(0) as Record<string, unknown>;
  const o = top && typeof top === 'object' && !Array.isArray(top) ? top : {};
  const r = rnd();
  if (r < 0.6) o.metadata = { ...(value(1) as object), resourceVersion: pick([...STRINGS, 7, null, { x: 1 }]) };
  else if (r < 0.8) o.metadata = value(1);
  return rnd() < 0.1 ? [o] : o;
}

/** What JSON.parse says the scanner must answer (a document that is not an object: Malformed). */
function expected(text: string): string | undefined | typeof Malformed {
  const parsed = JSON.parse(text) as { metadata?: { resourceVersion?: unknown } } | null;
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return Malformed;
  const v = parsed.metadata;
  const rv = v && typeof v === 'object' && !Array.isArray(v) ? (v as { resourceVersion?: unknown }).resourceVersion : undefined;
  return typeof rv === 'string' ? rv : undefined;
}

function spaced(text: string): string {
  // Whitespace after structural characters outside strings.
  let out = '';
  let inStr = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    out += c;
    if (inStr) {
      if (c === '\\') out += text[++i]!;
      else if (c === '"') inStr = false;
      if (!inStr && rnd() < 0.3) out += pick([' ', '\n', '\t ', '\r\n']);
    } else if (c === '"') inStr = true;
    else if ('{}[],:'.includes(c) && rnd() < 0.5) out += pick([' ', '\n  ', '\t']);
  }
  return out;
}

describe('metadataString', () => {
  it('agrees with JSON.parse on 5,000 generated documents', () => {
    for (let n = 0; n < 5000; n++) {
      const d = doc();
      const text = n % 3 === 0 ? JSON.stringify(d) : n % 3 === 1 ? JSON.stringify(d, null, 2) : spaced(JSON.stringify(d));
      expect(metadataString(text, 'resourceVersion'), text).toBe(expected(text));
    }
  });

  it('reads an apiserver answer', () => {
    const put = JSON.stringify({
      kind: 'Secret',
      apiVersion: 'v1',
      metadata: {
        name: 's',
        namespace: 'ns',
        uid: 'u',
        resourceVersion: '48213',
        creationTimestamp: '2026-01-01T00:00:00Z',
        managedFields: [{ manager: 'k', operation: 'Update', fieldsV1: { 'f:data': { 'f:resourceVersion': {} } } }],
      },
      data: { resourceVersion: 'MTIz' },
      type: 'Opaque',
    });
    expect(metadataString(put, 'resourceVersion')).toBe('48213');
  });

  it('takes the last of duplicate members, as JSON.parse does', () => {
    const text = '{"metadata":{"resourceVersion":"1","resourceVersion":"2"},"metadata":{"resourceVersion":"3"}}';
    expect(metadataString(text, 'resourceVersion')).toBe('3');
    expect(metadataString(text, 'resourceVersion')).toBe(expected(text));
  });

  it('decodes escapes in keys and in the value', () => {
    expect(metadataString('{"meta\\u0064ata":{"resource\\u0056ersion":"4\\u0032"}}', 'resourceVersion')).toBe('42');
  });

  it('says Malformed, and never throws, for documents cut short or not JSON', () => {
    const full = '{"kind":"Secret","metadata":{"name":"a\\"b","resourceVersion":"77"},"data":{"k":"v"}}';
    for (let i = 0; i < full.length; i++) {
      // Last one wins, so the scan reads to the closing brace: anything cut short is Malformed.
      expect(metadataString(full.slice(0, i), 'resourceVersion')).toBe(Malformed);
    }
    for (const bad of ['', 'null', '[1]', '"x"', '{"metadata":{"resourceVersion":"\\x"}}', '{"metadata" {}}', '{"a":1 "b":2}', '{"a":}']) {
      expect(metadataString(bad, 'resourceVersion'), bad).toBe(Malformed);
    }
    expect(metadataString('{}', 'resourceVersion')).toBeUndefined();
    expect(metadataString('{"metadata":[{"resourceVersion":"1"}]}', 'resourceVersion')).toBeUndefined();
  });
});
