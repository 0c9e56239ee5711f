/**
 * One member of a JSON document read without parsing the rest: `metadata.resourceVersion` of a
 * PUT's answer, which is all the rewrite needs of it. JSON.parse would build the whole object
 * (every data value a string, dozens of heap objects) for each of the 100,000 answers of a
 * re-encrypt-all, and those of the requests in flight at a young-generation GC are promoted.
 *
 * This is a scanner, not a validator: it follows the structure (strings with their escapes,
 * nested objects and arrays) only as far as it needs to. Where several members have the same
 * name the last one counts, as in JSON.parse.
 */

const Q = 0x22; // "
const BS = 0x5c; // \
const LB = 0x7b; // {
const RB = 0x7d; // }
const LS = 0x5b; // [
const RS = 0x5d; // ]
const COLON = 0x3a;
const COMMA = 0x2c;

/** What does not follow JSON's structure where the scanner looked. */
export const Malformed = Symbol('malformed');

const isWs = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

function skipWs(s: string, i: number): number {
  while (i < s.length && isWs(s.charCodeAt(i))) i++;
  return i;
}

/** `s[i]` is a quote: the index after the closing one, or -1. */
function skipString(s: string, i: number): number {
  for (let j = i + 1; j < s.length; j++) {
    const c = s.charCodeAt(j);
    if (c === BS) j++;
    else if (c === Q) return j + 1;
  }
  return -1;
}

/** The index after the value that starts at `i` (after whitespace), or -1. */
function skipValue(s: string, i: number): number {
  i = skipWs(s, i);
  const c = s.charCodeAt(i);
  if (c === Q) return skipString(s, i);
  if (c === LB || c === LS) {
    let depth = 0;
    for (let j = i; j < s.length; j++) {
      const d = s.charCodeAt(j);
      if (d === Q) {
        j = skipString(s, j);
        if (j < 0) return -1;
        j--;
      } else if (d === LB || d === LS) depth++;
      else if (d === RB || d === RS) {
        if (--depth === 0) return j + 1;
      }
    }
    return -1;
  }
  let j = i;
  while (j < s.length) {
    const d = s.charCodeAt(j);
    if (d === COMMA || d === RB || d === RS || isWs(d)) break;
    j++;
  }
  return j > i ? j : -1;
}

/**
 * Where the value of member `name` of the object at `i` starts (after whitespace): -1 when the
 * object has no such member, Malformed when it is not an object or is cut short.
 */
function memberAt(s: string, i: number, name: string): number | typeof Malformed {
  i = skipWs(s, i);
  if (s.charCodeAt(i) !== LB) return Malformed;
  i = skipWs(s, i + 1);
  if (s.charCodeAt(i) === RB) return -1;
  let found = -1;
  for (;;) {
    if (s.charCodeAt(i) !== Q) return Malformed;
    const end = skipString(s, i);
    if (end < 0) return Malformed;
    const raw = s.slice(i + 1, end - 1);
    const key = raw.includes('\\') ? (JSON.parse(s.slice(i, end)) as string) : raw;
    i = skipWs(s, end);
    if (s.charCodeAt(i) !== COLON) return Malformed;
    const at = skipWs(s, i + 1);
    const after = skipValue(s, at);
    if (after < 0) return Malformed;
    if (key === name) found = at;
    i = skipWs(s, after);
    const c = s.charCodeAt(i);
    if (c === RB) return found;
    if (c !== COMMA) return Malformed;
    i = skipWs(s, i + 1);
  }
}

/**
 * `doc.metadata[field]` when it is a string, undefined when the document has no such string
 * there, Malformed when the document is not JSON as far as the scanner read it.
 */
export function metadataString(doc: string, field: string): string | undefined | typeof Malformed {
  try {
    const m = memberAt(doc, 0, 'metadata');
    if (m === Malformed) return Malformed;
    if (m < 0 || doc.charCodeAt(m) !== LB) return undefined;
    const v = memberAt(doc, m, field);
    if (v === Malformed) return Malformed;
    if (v < 0 || doc.charCodeAt(v) !== Q) return undefined;
    return JSON.parse(doc.slice(v, skipString(doc, v))) as string;
  } catch {
    return Malformed; // an invalid escape in a key or in the value
  }
}
