/**
 * Objects as the stand-in stores and serves them: canonical JSON (what a kube-apiserver started
 * with --storage-media-type=application/json writes: struct fields in Go declaration order, map
 * keys sorted, no resourceVersion), merge patches and label selectors.
 */
import { badRequest } from './status';

export type KObject = Record<string, unknown> & { metadata?: Record<string, unknown> };

const META_ORDER = [
  'name',
  'generateName',
  'namespace',
  'selfLink',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'labels',
  'annotations',
  'ownerReferences',
  'finalizers',
  'managedFields',
];
const TOP_ORDER: Record<string, string[]> = {
  Secret: ['immutable', 'data', 'stringData', 'type'],
  ConfigMap: ['immutable', 'data', 'binaryData'],
};

const isPlain = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function sorted(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sorted);
  if (!isPlain(v)) return v;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v).sort()) if (v[k] !== undefined) out[k] = sorted(v[k]);
  return out;
}

function ordered(o: Record<string, unknown>, order: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of order) if (o[k] !== undefined && o[k] !== null) out[k] = sorted(o[k]);
  for (const k of Object.keys(o).sort()) if (!(k in out) && o[k] !== undefined && o[k] !== null) out[k] = sorted(o[k]);
  return out;
}

/** The stored plaintext of an object: deterministic, so equal objects give equal bytes. */
export function encodeObject(obj: KObject): Buffer {
  const { kind, apiVersion, metadata, ...rest } = obj;
  const meta = { ...(metadata ?? {}) };
  delete meta.resourceVersion;
  const body: Record<string, unknown> = { kind, apiVersion, metadata: ordered(meta, META_ORDER) };
  Object.assign(body, ordered(rest, TOP_ORDER[String(kind)] ?? []));
  return Buffer.from(`${JSON.stringify(body)}\n`);
}

/** RFC 7386 JSON merge patch (also what a strategic merge patch does to maps like annotations). */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlain(patch)) return patch;
  const out: Record<string, unknown> = isPlain(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k === '$patch' || k.startsWith('$setElementOrder/') || k.startsWith('$deleteFromPrimitiveList/') || k.startsWith('$retainKeys')) continue;
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

type Requirement =
  | { key: string; op: 'eq' | 'neq'; value: string }
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'exists' | 'notexists' };

export type LabelSelector = Requirement[];

/** labelSelector syntax: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`. */
export function parseLabelSelector(text: string | null): LabelSelector {
  if (!text || !text.trim()) return [];
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  return parts.map((raw) => {
    const p = raw.trim();
    let m: RegExpExecArray | null;
    if ((m = /^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(p))) {
      return { key: m[1]!, op: m[2] as 'in' | 'notin', values: m[3]!.split(',').map((s) => s.trim()) };
    }
    if ((m = /^([^\s!=]+)\s*(==|=|!=)\s*([^\s,]*)$/.exec(p))) {
      return { key: m[1]!, op: m[2] === '!=' ? 'neq' : 'eq', value: m[3]! };
    }
    if ((m = /^!\s*([^\s!=]+)$/.exec(p))) return { key: m[1]!, op: 'notexists' };
    if ((m = /^([^\s!=()]+)$/.exec(p))) return { key: m[1]!, op: 'exists' };
    throw badRequest(`unable to parse requirement: found '${p}', expected: identifier`);
  });
}

export function matchesLabels(obj: KObject, sel: LabelSelector): boolean {
  if (sel.length === 0) return true;
  const labels = (obj.metadata?.labels ?? {}) as Record<string, string>;
  return sel.every((r) => {
    const has = Object.hasOwn(labels, r.key);
    const v = labels[r.key];
    switch (r.op) {
      case 'eq':
        return has && v === r.value;
      case 'neq':
        return !has || v !== r.value;
      case 'in':
        return has && r.values.includes(v!);
      case 'notin':
        return !has || !r.values.includes(v!);
      case 'exists':
        return has;
      case 'notexists':
        return !has;
    }
  });
}

/** RFC 3339 with second precision, as metav1.Time serialises. */
export const nowTimestamp = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
