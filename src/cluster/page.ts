import { objectKey } from './watermark';

/**
 * What the rewrite keeps of a list page, and how large its pages are.
 *
 * A page is held until its last PUT is dispatched, and with pages large enough to fill the
 * in-flight budget that outlives V8's young generation (16 MiB, src/heap.ts): a parsed object is
 * a tree of dozens of heap objects, and 500 of them promoted cost tens of MB of old space and slow
 * major GCs. So each item becomes a compact record as soon as the page is parsed: the few fields
 * the engine needs and the PUT body as one flat string, and the parsed tree is dropped at once.
 * A promoted string is one allocation with nothing in it to trace.
 */

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
  [k: string]: unknown;
}

/** One listed object as the engine holds it until its PUT goes out. */
export interface PageRecord {
  namespace?: string;
  name: string;
  /** The resourceVersion the body carries (what a rewritten PUT changes). */
  resourceVersion?: string;
  /** objectKey(namespace, name): its place in the list order. */
  key: string;
  /** The PUT body: the object as listed, with apiVersion and kind filled in. */
  body: string;
}

/** `obj` as it goes back in a PUT: list items carry no apiVersion or kind; the object is filled in place. */
export function putBody(obj: KubeObject, apiVersion: string, kind: string): KubeObject {
  obj.apiVersion ??= apiVersion;
  obj.kind ??= kind;
  return obj;
}

/** The object's name and key, or undefined for an item without a name (skipped). */
export function itemKey(obj: KubeObject): { namespace?: string; name: string; key: string } | undefined {
  const name = obj.metadata?.name;
  if (!name) return undefined;
  const namespace = obj.metadata?.namespace || undefined;
  return { ...(namespace ? { namespace } : {}), name, key: objectKey(namespace, name) };
}

/** The compact record of a listed object whose name and key are known (itemKey). */
export function toRecord(obj: KubeObject, id: { namespace?: string; name: string; key: string }, apiVersion: string, kind: string): PageRecord {
  const resourceVersion = obj.metadata?.resourceVersion;
  return { ...id, ...(resourceVersion !== undefined ? { resourceVersion } : {}), body: JSON.stringify(putBody(obj, apiVersion, kind)) };
}

export const DEFAULT_PAGE_SIZE = 100;
/** The adaptive page never goes below this (one list per 100 objects) or above the maximum. */
export const MIN_PAGE_SIZE = 100;
/** 500 records of realistic Secrets hold about 1-2 MB of strings: two pages stay small. */
export const MAX_PAGE_SIZE = 500;
/** Pages are sized for this multiple of what fills the budget (latencies move from page to page). */
const PAGE_HEADROOM = 1.5;

export interface PageSizing {
  /** Requests the gate allows in flight now. */
  limit: number;
  /** Recent latency of one list request (ms), 0 while unknown. */
  listLatencyMs: number;
  /** Recent latency of one PUT (ms), 0 while unknown. */
  putLatencyMs: number;
}

/**
 * Objects to ask for in the next list page. Lists follow each other (each continues from the
 * last), so the listing supplies at most one page per list latency, and keeping `limit` PUTs in
 * flight takes limit / putLatency objects a second (Little's law): a page must hold
 * limit x listLatency / putLatency objects, with headroom, bounded by MIN_PAGE_SIZE..MAX_PAGE_SIZE.
 * It grows when the limit does and shrinks again when the limit comes down. Until both latencies
 * are known, the default.
 */
export function nextPageSize(s: PageSizing): number {
  if (!(s.listLatencyMs > 0) || !(s.putLatencyMs > 0) || !(s.limit > 0)) return DEFAULT_PAGE_SIZE;
  const want = Math.ceil((PAGE_HEADROOM * s.limit * s.listLatencyMs) / s.putLatencyMs);
  return Math.max(MIN_PAGE_SIZE, Math.min(MAX_PAGE_SIZE, want));
}
