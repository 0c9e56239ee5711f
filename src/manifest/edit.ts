import { isAlias, isMap, isScalar, isSeq, parseDocument, Scalar, stringify, type Document, type Node } from 'yaml';
import type { ParsedManifest } from './manifest';

/**
 * Structural edits on a manifest, applied as text splices: every byte outside the edited lines
 * (comments, key order, quoting, indentation, blank lines) stays as it was, so the diff shows only
 * what the tool adds. Layouts a line splice cannot express safely (flow collections, block
 * scalars) fall back to the yaml Document API, which keeps comments and order but may re-render.
 */

export type DocPath = (string | number)[];

export type Edit =
  /** Insert `value` at `index` of the sequence at `seq`; a missing sequence is created as the
   * last key of its parent mapping. Several inserts into one sequence go in ascending order. */
  | { op: 'insert'; seq: DocPath; index: number; value: unknown }
  /** Replace the scalar at `path`, keeping its quoting style. */
  | { op: 'set'; path: DocPath; value: string }
  /** Remove item `index` of the sequence at `seq` (the key too when it was the last item). Several
   * removals from one sequence go in descending order. */
  | { op: 'remove'; seq: DocPath; index: number };

export function applyEdits(m: ParsedManifest, edits: Edit[]): string {
  if (m.format === 'json') return applyJsonEdits(m.text, edits);
  let text = m.text;
  for (const e of edits) text = applyYamlEdit(text, e);
  return text;
}

// ---------------------------------------------------------------- JSON

function detectJsonIndent(text: string): string | number {
  const m = /\n([ \t]+)["{[\]}]/.exec(text);
  if (!m) return text.includes('\n') ? 2 : 0;
  return m[1]!.startsWith('\t') ? '\t' : m[1]!.length;
}

function applyJsonEdits(text: string, edits: Edit[]): string {
  const root = JSON.parse(text) as Record<string, unknown>;
  const at = (path: DocPath): any => path.reduce<any>((o, k) => (o == null ? undefined : o[k]), root);
  for (const e of edits) {
    if (e.op === 'set') {
      at(e.path.slice(0, -1))[e.path[e.path.length - 1]!] = e.value;
      continue;
    }
    const parent = at(e.seq.slice(0, -1));
    const key = e.seq[e.seq.length - 1]!;
    if (e.op === 'insert') {
      if (!Array.isArray(parent[key])) parent[key] = [];
      (parent[key] as unknown[]).splice(e.index, 0, structuredClone(e.value));
    } else {
      const arr = parent[key] as unknown[];
      arr.splice(e.index, 1);
      if (arr.length === 0) delete parent[key];
    }
  }
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  let out = JSON.stringify(root, null, detectJsonIndent(text));
  if (eol !== '\n') out = out.replace(/\n/g, eol);
  return /\r?\n$/.test(text) ? out + eol : out;
}

// ---------------------------------------------------------------- YAML

/** Thrown by the splicer when a layout needs the Document API fallback. */
class NeedsFallback extends Error {}

const lineStart = (text: string, pos: number) => text.lastIndexOf('\n', pos - 1) + 1;

/** Offset just past the line holding `pos` (the start of the next line). */
function lineEndAfter(text: string, pos: number): number {
  if (pos > 0 && text[pos - 1] === '\n') return pos;
  const nl = text.indexOf('\n', pos);
  return nl === -1 ? text.length : nl + 1;
}

/** Where the last visible content of a node ends (block collections' ranges swallow trailing lines). */
function contentEnd(node: unknown): number {
  if (isScalar(node) || isAlias(node)) return node.range![1];
  if ((isMap(node) || isSeq(node)) && !node.flow) {
    const last = node.items[node.items.length - 1] as unknown;
    if (last === undefined) return node.range![1];
    if (isSeq(node)) return contentEnd(last);
    const pair = last as { key: unknown; value: unknown };
    return contentEnd(pair.value ?? pair.key);
  }
  return (node as Node).range![1];
}

/** Moves an insertion point above comment lines that introduce the item there. */
function aboveLeadingComments(text: string, pos: number): number {
  let at = pos;
  while (at > 0) {
    const prev = lineStart(text, at - 1);
    if (!/^[ \t]*#/.test(text.slice(prev, at))) break;
    at = prev;
  }
  return at;
}

interface ItemStyle {
  dashCol: number;
  contentCol: number;
  /** Indentation step of nested mappings. */
  unit: number;
  scalarType: Scalar.Type;
}

function itemStyle(text: string, item: Node, unitHint: number): ItemStyle {
  const ls = lineStart(text, item.range![0]);
  const m = /^([ \t]*)-([ \t]+)$/.exec(text.slice(ls, item.range![0]));
  if (!m || m[1]!.includes('\t')) throw new NeedsFallback('item not on its own dash line');
  const dashCol = m[1]!.length;
  let unit = unitHint;
  if (isMap(item)) {
    for (const p of item.items) {
      const v = p.value as Node | null;
      if (isMap(v) && !v.flow && v.items[0]) {
        const inner = (v.items[0].key as Node).range![0];
        unit = inner - lineStart(text, inner) - (item.range![0] - ls);
        break;
      }
    }
  }
  const scalarType =
    isScalar(item) && (item.type === 'QUOTE_DOUBLE' || item.type === 'QUOTE_SINGLE') ? item.type : 'PLAIN';
  return { dashCol, contentCol: item.range![0] - ls, unit: unit > 0 ? unit : 2, scalarType };
}

function renderScalar(value: unknown, type: Scalar.Type = 'PLAIN'): string {
  if (typeof value === 'boolean' || typeof value === 'number') return String(value);
  const s = new Scalar(String(value));
  s.type = type;
  const out = stringify(s, { lineWidth: 0 }).replace(/\n$/, '');
  if (out.includes('\n')) throw new NeedsFallback('multi-line scalar');
  return out;
}

/** Lines of a block mapping at `col` (the first line without indentation: it follows a dash). */
function renderMapLines(obj: Record<string, unknown>, col: number, unit: number): string[] {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = renderScalar(k);
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      lines.push(`${' '.repeat(col)}${key}:`);
      lines.push(...renderMapLines(v as Record<string, unknown>, col + unit, unit));
    } else if (Array.isArray(v)) {
      throw new NeedsFallback('nested sequence');
    } else {
      lines.push(`${' '.repeat(col)}${key}: ${renderScalar(v)}`);
    }
  }
  return lines;
}

/** One flow-collection item (`{a: b}` or `{ a: b }`, as its siblings are written). */
function renderFlow(value: unknown, padded: boolean): string {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const inner = Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => `${renderScalar(k)}: ${renderFlow(v, padded)}`)
      .join(', ');
    return padded ? `{ ${inner} }` : `{${inner}}`;
  }
  if (Array.isArray(value)) throw new NeedsFallback('nested sequence');
  const s = renderScalar(value);
  // Plain scalars in flow context must not carry flow indicators.
  return /[,[\]{}]/.test(s) && !/^["']/.test(s) ? renderScalar(value, 'QUOTE_DOUBLE') : s;
}

function renderItem(value: unknown, st: ItemStyle): string[] {
  const dash = `${' '.repeat(st.dashCol)}-${' '.repeat(st.contentCol - st.dashCol - 1)}`;
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const lines = renderMapLines(value as Record<string, unknown>, st.contentCol, st.unit);
    lines[0] = dash + lines[0]!.slice(st.contentCol);
    return lines;
  }
  if (Array.isArray(value)) throw new NeedsFallback('nested sequence');
  return [dash + renderScalar(value, st.scalarType)];
}

/** How far this document indents a block sequence under its key (kubeadm: 0). */
function seqIndentOf(doc: Document.Parsed, text: string): number {
  let found: number | undefined;
  const visit = (n: unknown): void => {
    if (found !== undefined) return;
    if (isMap(n) && !n.flow) {
      for (const p of n.items) {
        const v = p.value as Node | null;
        if (isSeq(v) && !v.flow && v.items[0]) {
          const k = (p.key as Node).range![0];
          const first = (v.items[0] as Node).range![0];
          const dash = text.lastIndexOf('-', first - 1);
          found = dash - lineStart(text, dash) - (k - lineStart(text, k));
          return;
        }
        visit(v);
      }
    } else if (isSeq(n)) n.items.forEach(visit);
  };
  visit(doc.contents);
  return found !== undefined && found >= 0 ? found : 0;
}

function splice(text: string, at: number, remove: number, insert: string[], eol: string): string {
  if (insert.length === 0) return text.slice(0, at) + text.slice(at + remove);
  let chunk = insert.join(eol) + eol;
  // Appending after a last line that has no newline of its own.
  if (at === text.length && text.length > 0 && !text.endsWith('\n')) chunk = eol + chunk.slice(0, -eol.length);
  return text.slice(0, at) + chunk + text.slice(at + remove);
}

function applyYamlEdit(text: string, e: Edit): string {
  const doc = parseDocument(text);
  try {
    return spliceYamlEdit(doc, text, e);
  } catch (err) {
    if (!(err instanceof NeedsFallback)) throw err;
    return documentFallback(doc, text, e);
  }
}

function spliceYamlEdit(doc: Document.Parsed, text: string, e: Edit): string {
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  if (e.op === 'set') {
    const node = doc.getIn(e.path, true);
    if (!isScalar(node) || !node.range) throw new Error(`no scalar at ${e.path.join('.')}`);
    if (node.type !== 'PLAIN' && node.type !== 'QUOTE_DOUBLE' && node.type !== 'QUOTE_SINGLE') throw new NeedsFallback('block scalar');
    const [from, to] = node.range;
    if (text.slice(from, to).includes('\n')) throw new NeedsFallback('multi-line scalar');
    return text.slice(0, from) + renderScalar(e.value, node.type) + text.slice(to);
  }

  const seq = doc.getIn(e.seq, true);
  const parentPath = e.seq.slice(0, -1);
  const key = e.seq[e.seq.length - 1]!;

  if (e.op === 'insert') {
    if (seq === undefined || seq === null) {
      const parent = doc.getIn(parentPath, true);
      if (!isMap(parent) || parent.flow || parent.items.length === 0) throw new NeedsFallback('parent not a block map');
      const firstKey = parent.items[0]!.key as Node;
      const keyCol = firstKey.range![0] - lineStart(text, firstKey.range![0]);
      const dashCol = keyCol + seqIndentOf(doc, text);
      const lines = [`${' '.repeat(keyCol)}${renderScalar(key)}:`, ...renderItem(e.value, { dashCol, contentCol: dashCol + 2, unit: 2, scalarType: 'PLAIN' })];
      return splice(text, lineEndAfter(text, contentEnd(parent)), 0, lines, eol);
    }
    if (!isSeq(seq) || seq.items.length === 0) throw new NeedsFallback('not a sequence with items');
    const items = seq.items as Node[];
    if (seq.flow) {
      const padded = /^\{ /.test(text.slice(items[0]!.range![0]));
      const item = renderFlow(e.value, padded);
      if (e.index === 0) return text.slice(0, items[0]!.range![0]) + `${item}, ` + text.slice(items[0]!.range![0]);
      const at = contentEnd(items[Math.min(e.index, items.length) - 1]);
      return text.slice(0, at) + `, ${item}` + text.slice(at);
    }
    const sibling = items[Math.min(e.index, items.length - 1)]!;
    const lines = renderItem(e.value, itemStyle(text, sibling, 2));
    const at =
      e.index < items.length
        ? aboveLeadingComments(text, lineStart(text, items[e.index]!.range![0]))
        : lineEndAfter(text, contentEnd(items[items.length - 1]));
    return splice(text, at, 0, lines, eol);
  }

  // remove
  if (!isSeq(seq)) throw new NeedsFallback('not a sequence');
  const items = seq.items as Node[];
  const item = items[e.index];
  if (!item) throw new Error(`no item ${e.index} in ${e.seq.join('.')}`);
  if (seq.flow && items.length > 1) {
    const [from, to] =
      e.index < items.length - 1
        ? [item.range![0], items[e.index + 1]!.range![0]]
        : [contentEnd(items[e.index - 1]), contentEnd(item)];
    return text.slice(0, from) + text.slice(to);
  }
  if (items.length === 1) {
    const parent = doc.getIn(parentPath, true);
    if (!isMap(parent) || parent.flow) throw new NeedsFallback('parent not a block map');
    const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === key);
    const k = pair?.key as Node | undefined;
    if (!k?.range) throw new NeedsFallback('key without range');
    const from = lineStart(text, k.range[0]);
    if (text.slice(from, k.range[0]).trim() !== '' || parent.items.length === 1) throw new NeedsFallback('key shares its line');
    return splice(text, from, lineEndAfter(text, contentEnd(seq)) - from, [], eol);
  }
  itemStyle(text, item, 2); // the item must sit on its own dash line
  const from = lineStart(text, item.range![0]);
  return splice(text, from, lineEndAfter(text, contentEnd(item)) - from, [], eol);
}

/** The Document API path: keeps comments and key order; indentation is re-rendered. */
function documentFallback(doc: Document.Parsed, text: string, e: Edit): string {
  if (e.op === 'set') {
    const node = doc.getIn(e.path, true);
    if (isScalar(node)) node.value = e.value;
    else doc.setIn(e.path, e.value);
  } else if (e.op === 'insert') {
    const seq = doc.getIn(e.seq, true);
    if (isSeq(seq)) seq.items.splice(e.index, 0, doc.createNode(e.value));
    else doc.setIn(e.seq, doc.createNode([e.value]));
  } else {
    const seq = doc.getIn(e.seq, true);
    if (!isSeq(seq)) throw new Error(`no sequence at ${e.seq.join('.')}`);
    seq.items.splice(e.index, 1);
    if (seq.items.length === 0) doc.deleteIn(e.seq);
  }
  const out = doc.toString({ lineWidth: 0, indentSeq: seqIndentOf(doc, text) > 0 });
  return text.includes('\r\n') ? out.replace(/\r?\n/g, '\r\n') : out;
}
