// The compact page record and the page size that follows the in-flight budget (src/cluster/page.ts),
// and the engine using them: against an in-process fake client with set latencies, the pages it
// asks for grow to what fills the budget, a fixed --page-size stays fixed, PUT bodies are the
// listed objects' strings, and a resume across pages of changing size skips exactly what was done.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ApiClient } from '../../src/cluster/api';
import { resolvedResource } from '../../src/cluster/discovery';
import { ApiError } from '../../src/cluster/errors';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MIN_PAGE_SIZE, itemKey, nextPageSize, toRecord, type KubeObject } from '../../src/cluster/page';
import { rewriteAll } from '../../src/cluster/rewrite';
import { FileCheckpointStore, rewriteRunId } from '../../src/state/checkpoint';

describe('compact page records', () => {
  it('keeps the key fields and the PUT body as one string, apiVersion and kind filled in', () => {
    const obj = { metadata: { namespace: 'ns1', name: 'a', resourceVersion: '42', labels: { x: 'y' } }, type: 'Opaque', data: { k: 'dg==' } } as KubeObject;
    const id = itemKey(obj)!;
    const rec = toRecord(obj, id, 'v1', 'Secret');
    expect(rec).toMatchObject({ namespace: 'ns1', name: 'a', resourceVersion: '42', key: 'ns1/a' });
    expect(typeof rec.body).toBe('string');
    expect(JSON.parse(rec.body)).toEqual({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { namespace: 'ns1', name: 'a', resourceVersion: '42', labels: { x: 'y' } },
      type: 'Opaque',
      data: { k: 'dg==' },
    });
  });

  it('leaves an apiVersion and kind the item carries; cluster-scoped objects have no namespace', () => {
    const obj: KubeObject = { apiVersion: 'example.com/v2', kind: 'Widget', metadata: { name: 'w', namespace: '' } };
    const rec = toRecord(obj, itemKey(obj)!, 'example.com/v1', 'Gadget');
    expect(rec).not.toHaveProperty('namespace');
    expect(rec).not.toHaveProperty('resourceVersion');
    expect(rec.key).toBe('w');
    expect(JSON.parse(rec.body)).toMatchObject({ apiVersion: 'example.com/v2', kind: 'Widget' });
  });

  it('an item without a name has no key', () => {
    expect(itemKey({ metadata: {} })).toBeUndefined();
    expect(itemKey({})).toBeUndefined();
  });
});

describe('page size from the budget (Little’s law)', () => {
  it('the default until both latencies are known', () => {
    expect(nextPageSize({ limit: 128, listLatencyMs: 0, putLatencyMs: 50 })).toBe(DEFAULT_PAGE_SIZE);
    expect(nextPageSize({ limit: 128, listLatencyMs: 80, putLatencyMs: 0 })).toBe(DEFAULT_PAGE_SIZE);
  });

  it('1.5 x limit x list latency / PUT latency, within bounds', () => {
    // 128 in flight at 200 ms a PUT take 640 objects/s; a list every 300 ms must bring 192, x1.5.
    expect(nextPageSize({ limit: 128, listLatencyMs: 300, putLatencyMs: 200 })).toBe(288);
    expect(nextPageSize({ limit: 8, listLatencyMs: 20, putLatencyMs: 50 })).toBe(MIN_PAGE_SIZE);
    expect(nextPageSize({ limit: 256, listLatencyMs: 900, putLatencyMs: 100 })).toBe(MAX_PAGE_SIZE);
  });

  it('grows with the limit and shrinks again when it comes down', () => {
    const at = (limit: number) => nextPageSize({ limit, listLatencyMs: 100, putLatencyMs: 60 });
    expect(at(64)).toBeLessThan(at(192));
    expect(at(192)).toBeGreaterThan(at(96));
    expect(at(96)).toBe(240);
  });
});

/** A fake client: `n` Secrets in one namespace, lists and PUTs answering after set delays. */
function fakeApi(n: number, o: { listMs: number; putMs: number }) {
  const objects = new Map<string, { rv: number; v: string }>();
  for (let i = 0; i < n; i++) objects.set(`s-${String(i).padStart(5, '0')}`, { rv: i + 1, v: `v${i}` });
  const keys = [...objects.keys()].sort();
  let rv = n;
  const limits: number[] = [];
  const bodies: unknown[] = [];
  const puts: string[] = [];
  const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const api = {
    async list(_path: string, opts: { query: { limit: number; continue?: string } }) {
      limits.push(opts.query.limit);
      await wait(o.listMs);
      const after = opts.query.continue;
      const rest = after ? keys.filter((k) => k > after) : keys;
      const page = rest.slice(0, opts.query.limit);
      const more = rest.length > page.length;
      return {
        metadata: more ? { continue: page[page.length - 1], remainingItemCount: rest.length - page.length } : {},
        items: page.map((k) => ({ metadata: { namespace: 'default', name: k, resourceVersion: String(objects.get(k)!.rv) }, data: { v: objects.get(k)!.v } })),
      };
    },
    async put(path: string, body: unknown) {
      bodies.push(body);
      const name = path.split('/').pop()!;
      puts.push(name);
      await wait(o.putMs);
      const sent = JSON.parse(body as string) as KubeObject;
      const cur = objects.get(name)!;
      if (sent.metadata?.resourceVersion !== String(cur.rv)) throw new ApiError({ status: 409, reason: 'Conflict', message: 'conflict', method: 'PUT', path, url: path } as never);
      cur.rv = ++rv;
      return { metadata: { name, resourceVersion: String(cur.rv) } };
    },
    async get() {
      throw new Error('not used');
    },
    close() {},
  } as unknown as ApiClient;
  return { api, limits, bodies, puts, objects };
}

const secrets = resolvedResource('', 'v1', { name: 'secrets', namespaced: true, kind: 'Secret' });

describe('the engine with --page-size auto', () => {
  let stateDir: string;
  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-pages-'));
  });
  afterEach(async () => {
    await rm(stateDir, { recursive: true, force: true });
  });

  it('asks for larger pages when lists are slow against the PUTs, and PUTs each listed string', async () => {
    // 32 in flight at 10 ms a PUT take 3,200 objects/s; a list every 50 ms must bring 160, x1.5 = 240.
    const f = fakeApi(3000, { listMs: 50, putMs: 10 });
    const s = await rewriteAll({ api: f.api, now: () => new Date() }, { resources: [secrets], concurrency: 32, pageSize: 'auto' });
    expect(s.rewritten).toBe(3000);
    expect(f.limits[0]).toBe(DEFAULT_PAGE_SIZE);
    expect(Math.max(...f.limits)).toBeGreaterThan(DEFAULT_PAGE_SIZE);
    expect(Math.max(...f.limits)).toBeLessThanOrEqual(MAX_PAGE_SIZE);
    expect(f.bodies.every((b) => typeof b === 'string')).toBe(true);
    expect(JSON.parse(f.bodies[0] as string)).toEqual({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { namespace: 'default', name: 's-00000', resourceVersion: '1' },
      data: { v: 'v0' },
    });
  });

  it('without --page-size pages stay at the default 100', async () => {
    const f = fakeApi(600, { listMs: 50, putMs: 10 });
    await rewriteAll({ api: f.api, now: () => new Date() }, { resources: [secrets], concurrency: 32 });
    expect(new Set(f.limits)).toEqual(new Set([DEFAULT_PAGE_SIZE]));
  });

  it('a fixed --page-size stays fixed', async () => {
    const f = fakeApi(600, { listMs: 50, putMs: 10 });
    await rewriteAll({ api: f.api, now: () => new Date() }, { resources: [secrets], concurrency: 32, pageSize: 70 });
    expect(new Set(f.limits)).toEqual(new Set([70]));
  });

  it('interrupted and resumed across pages of changing size: each object is done once, none lost', async () => {
    const f = fakeApi(2500, { listMs: 40, putMs: 5 });
    const store = new FileCheckpointStore({ stateDir, runId: rewriteRunId(['secrets'], 'k1'), everyObjects: 200, everyMs: 60_000 });
    const ac = new AbortController();
    const realPut = f.api.put.bind(f.api);
    (f.api as { put: ApiClient['put'] }).put = ((path: string, body: unknown, opts?: object) => {
      if (f.puts.length === 1500) ac.abort();
      return realPut(path, body, opts);
    }) as ApiClient['put'];
    await expect(rewriteAll({ api: f.api, now: () => new Date(), checkpoint: store, signal: ac.signal }, { resources: [secrets], concurrency: 16, pageSize: 'auto' })).rejects.toThrow(/interrupted/);
    expect(Math.max(...f.limits)).toBeGreaterThan(DEFAULT_PAGE_SIZE);
    const first = new Set(f.puts);
    f.puts.length = 0;
    const s = await rewriteAll({ api: f.api, now: () => new Date(), checkpoint: store }, { resources: [secrets], resume: true, concurrency: 16, pageSize: 'auto' });
    expect(s.resumed).toBe(true);
    expect(s.failed).toBe(0);
    // Everything is written, nothing twice but the few in flight at the interrupt (at most 16).
    const again = f.puts.filter((k) => first.has(k));
    expect(new Set([...first, ...f.puts]).size).toBe(2500);
    expect(again.length).toBeLessThanOrEqual(16);
    expect(s.perResource.secrets!.skipped).toBeGreaterThan(0);
  });
});
