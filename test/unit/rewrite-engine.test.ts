// Fault sequences the test bed cannot produce on demand (an exact 409-then-success, a 410 in the
// middle of a list, Retry-After values, PUTs finishing out of order, an abort at a known point),
// played by a scripted in-process HTTP server. Everything else runs against the bed
// (test/integration/rewrite*.test.ts).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createApiClient, type ApiClient } from '../../src/cluster/api';
import { resolvedResource } from '../../src/cluster/discovery';
import { rewriteAll, type RewriteDeps } from '../../src/cluster/rewrite';
import { FileCheckpointStore, rewriteRunId, type CheckpointData } from '../../src/state/checkpoint';
import { CliError, ExitCode } from '../../src/ui/errors';

interface Obj {
  ns: string;
  name: string;
  rv: number;
  data: string;
  stale: boolean;
}

type Hook = (req: { method: string; url: URL; key?: string; body?: any }) =>
  | { status: number; body?: unknown; headers?: Record<string, string>; delayMs?: number }
  | undefined;

/** A tiny secrets store speaking just enough of the Kubernetes API, with scripted faults. */
class ScriptedApiserver {
  objects = new Map<string, Obj>();
  configmaps = new Map<string, Obj>();
  rv = 100;
  inFlight = 0;
  peakInFlight = 0;
  /** Resources with a PUT in flight at the same time as another resource's, seen at least once. */
  overlapped = false;
  private inFlightBy = new Map<string, number>();
  hooks: Hook[] = [];
  puts: string[] = [];
  lists: URL[] = [];
  server!: Server;
  url = '';

  add(n: number, ns = 'default', into = this.objects): void {
    for (let i = 0; i < n; i++) {
      const name = `s-${String(i).padStart(4, '0')}`;
      into.set(`${ns}/${name}`, { ns, name, rv: ++this.rv, data: `v${i}`, stale: true });
    }
  }

  toJson(o: Obj, kind = 'Secret') {
    return {
      apiVersion: 'v1',
      kind,
      metadata: { namespace: o.ns, name: o.name, resourceVersion: String(o.rv) },
      data: { v: o.data },
    };
  }

  sortedKeys(objects = this.objects): string[] {
    return [...objects.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  private send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  }

  private status(code: number, reason: string, message: string, extra: object = {}) {
    return { kind: 'Status', apiVersion: 'v1', status: 'Failure', code, reason, message, ...extra };
  }

  private async handle(req: IncomingMessage, res: ServerResponse) {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const url = new URL(req.url!, 'http://x');
    const m = url.pathname.match(/^\/api\/v1\/namespaces\/([^/]+)\/(secrets|configmaps)\/([^/]+)$/);
    const resource = m?.[2] ?? url.pathname.match(/^\/api\/v1\/(secrets|configmaps)$/)?.[1] ?? 'secrets';
    const objects = resource === 'configmaps' ? this.configmaps : this.objects;
    const kind = resource === 'configmaps' ? 'ConfigMap' : 'Secret';
    const key = m ? `${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[3]!)}` : undefined;
    if (req.method === 'PUT') {
      this.inFlight++;
      this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
      this.inFlightBy.set(resource, (this.inFlightBy.get(resource) ?? 0) + 1);
      if ([...this.inFlightBy.values()].filter((n) => n > 0).length > 1) this.overlapped = true;
      res.once('finish', () => {
        this.inFlight--;
        this.inFlightBy.set(resource, this.inFlightBy.get(resource)! - 1);
      });
    }
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
    for (const h of this.hooks) {
      const r = h({ method: req.method!, url, key, body });
      if (r) {
        if (r.delayMs) await new Promise((s) => setTimeout(s, r.delayMs));
        if (r.status) return this.send(res, r.status, r.body ?? {}, r.headers);
      }
    }
    if (req.method === 'GET' && url.pathname === `/api/v1/${resource}`) {
      this.lists.push(url);
      const limit = Number(url.searchParams.get('limit') ?? 1e9);
      const cont = url.searchParams.get('continue');
      const after = cont ? Buffer.from(cont, 'base64').toString() : undefined;
      const keys = this.sortedKeys(objects).filter((k) => after === undefined || Buffer.compare(Buffer.from(k), Buffer.from(after)) > 0);
      const page = keys.slice(0, limit);
      const more = keys.length > page.length;
      return this.send(res, 200, {
        kind: `${kind}List`,
        metadata: {
          resourceVersion: String(this.rv),
          ...(more ? { continue: Buffer.from(page[page.length - 1]!).toString('base64'), remainingItemCount: keys.length - page.length } : {}),
        },
        items: page.map((k) => {
          const o = this.toJson(objects.get(k)!, kind);
          delete (o as { apiVersion?: string }).apiVersion;
          delete (o as { kind?: string }).kind;
          return o;
        }),
      });
    }
    if (key && req.method === 'GET') {
      const o = objects.get(key);
      return o ? this.send(res, 200, this.toJson(o, kind)) : this.send(res, 404, this.status(404, 'NotFound', `secrets "${key}" not found`));
    }
    if (key && req.method === 'PUT') {
      this.puts.push(resource === 'secrets' ? key : `${resource}:${key}`);
      const o = objects.get(key);
      if (!o) return this.send(res, 404, this.status(404, 'NotFound', `secrets "${key}" not found`));
      if (body?.apiVersion !== 'v1' || body?.kind !== kind) {
        return this.send(res, 400, this.status(400, 'BadRequest', 'apiVersion/kind missing'));
      }
      if (body.metadata.resourceVersion !== String(o.rv)) {
        return this.send(res, 409, this.status(409, 'Conflict', 'the object has been modified; please apply your changes to the latest version and try again'));
      }
      if (body.data.v !== o.data) {
        o.data = body.data.v;
        o.rv = ++this.rv;
        o.stale = false;
      } else if (o.stale) {
        o.rv = ++this.rv;
        o.stale = false;
      }
      return this.send(res, 200, this.toJson(o, kind));
    }
    return this.send(res, 404, this.status(404, 'NotFound', 'no route'));
  }
}

const secrets = resolvedResource('', 'v1', { name: 'secrets', namespaced: true, kind: 'Secret' });
const configmaps = resolvedResource('', 'v1', { name: 'configmaps', namespaced: true, kind: 'ConfigMap' });
const noSleep: RewriteDeps['sleep'] = async () => {};

let srv: ScriptedApiserver;
let api: ApiClient;
let stateDir: string;

beforeEach(async () => {
  srv = new ScriptedApiserver();
  await srv.start();
  api = createApiClient({ server: srv.url });
  stateDir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-rewrite-'));
});
afterEach(async () => {
  api.close();
  await srv.stop();
  await rm(stateDir, { recursive: true, force: true });
});

const deps = (extra: Partial<RewriteDeps> = {}): RewriteDeps => ({ api, now: () => new Date(), sleep: noSleep, ...extra });

describe('rewriteAll against scripted faults', () => {
  it('409 then success: re-reads the object and PUTs the fresh copy, never the stale one', async () => {
    srv.add(5);
    let conflicted = false;
    srv.hooks.push(({ method, key }) => {
      if (method === 'PUT' && key === 'default/s-0002' && !conflicted) {
        conflicted = true;
        // Someone else writes a new value first; our listed copy is now stale.
        const o = srv.objects.get(key)!;
        o.data = 'writer';
        o.rv = ++srv.rv;
        o.stale = false;
      }
      return undefined;
    });
    const s = await rewriteAll(deps(), { resources: [secrets], pageSize: 2, concurrency: 3 });
    expect(s.conflictsRetried).toBe(1);
    expect(s.failed).toBe(0);
    expect(s.rewritten).toBe(4);
    expect(s.unchanged).toBe(1); // the fresh copy was already current
    expect(srv.objects.get('default/s-0002')!.data).toBe('writer');
    expect([...srv.objects.values()].every((o) => !o.stale)).toBe(true);
  });

  it('gives up on an object after maxConflictRetries and lists it as failed', async () => {
    srv.add(3);
    srv.hooks.push(({ method, key }) =>
      method === 'PUT' && key === 'default/s-0001'
        ? { status: 409, body: { kind: 'Status', code: 409, reason: 'Conflict', message: 'always' } }
        : undefined,
    );
    const s = await rewriteAll(deps(), { resources: [secrets], maxConflictRetries: 2 });
    expect(s.failed).toBe(1);
    expect(s.conflictsRetried).toBe(2);
    expect(s.failures).toEqual([{ resource: 'secrets', namespace: 'default', name: 's-0001', error: '409 Conflict: always' }]);
    expect(s.rewritten).toBe(2);
  });

  it('410 mid-list with no fresh token: lists again from the start, skipping what was dispatched', async () => {
    srv.add(10);
    let expired = false;
    srv.hooks.push(({ method, url }) => {
      if (method === 'GET' && url.pathname === '/api/v1/secrets' && url.searchParams.get('continue') && !expired) {
        expired = true;
        return { status: 410, body: { kind: 'Status', code: 410, reason: 'Expired', message: 'The provided continue parameter is too old' } };
      }
      return undefined;
    });
    const notices: string[] = [];
    const totals: (number | undefined)[] = [];
    const s = await rewriteAll(deps({ onNotice: (m) => notices.push(m), onProgress: (p) => totals.push(p.total) }), {
      resources: [secrets],
      pageSize: 4,
    });
    expect(s.rewritten).toBe(10);
    expect(s.listed).toBe(10);
    // Listed again after the restart, but done by this run: not skipped, and still in the total.
    expect(s.perResource.secrets!.skipped).toBe(0);
    expect(new Set(totals)).toEqual(new Set([10]));
    expect(new Set(srv.puts).size).toBe(10);
    expect(srv.puts.length).toBe(10); // nothing PUT twice
    expect(notices.join('\n')).toMatch(/410/);
  });

  /** A checkpoint of an earlier run of secrets that got as far as doneThrough (and pageContinue). */
  async function earlierRun(mark: { doneThrough: string; pageContinue?: string }): Promise<FileCheckpointStore> {
    const store = new FileCheckpointStore({ stateDir, runId: rewriteRunId(['secrets'], 'k1'), everyObjects: 1, everyMs: 0 });
    await store.flush({ version: 1, runId: store.runId, startedAt: '', updatedAt: '', resources: { secrets: { ...mark, complete: false } } });
    return store;
  }

  /** The first `times` continued lists of secrets (other than with `spare`) answer 410 Expired. */
  function expireContinuedLists(times: number, spare?: string): { count: number } {
    const expired = { count: 0 };
    srv.hooks.push(({ method, url }) => {
      const c = url.searchParams.get('continue');
      if (method === 'GET' && url.pathname === '/api/v1/secrets' && c && c !== spare && expired.count < times) {
        expired.count++;
        return { status: 410, body: { kind: 'Status', code: 410, reason: 'Expired', message: 'The provided continue parameter is too old' } };
      }
      return undefined;
    });
    return expired;
  }

  it('410 in a resumed run: what the earlier run did is skipped once, however often it is listed', async () => {
    srv.add(10);
    const store = await earlierRun({ doneThrough: 'default/s-0002' });
    const expired = expireContinuedLists(2); // the list starts over twice
    const totals: (number | undefined)[] = [];
    const s = await rewriteAll(deps({ checkpoint: store, onProgress: (p) => totals.push(p.total) }), {
      resources: [secrets],
      resume: true,
      pageSize: 4,
    });
    expect(expired.count).toBe(2);
    expect(s.resumed).toBe(true);
    expect(s.perResource.secrets!.skipped).toBe(3); // s-0000..s-0002, not 3 per listing
    expect(s.listed).toBe(7);
    expect(s.rewritten).toBe(7);
    expect(new Set(totals)).toEqual(new Set([7]));
    expect([...srv.puts].sort()).toEqual(srv.sortedKeys().slice(3)); // each of the rest once
  });

  it('410 in a run resumed from a page token: what came before that page is neither skipped nor taken off the total', async () => {
    srv.add(14);
    // The earlier run did s-0000..s-0005 and was on the page after s-0005 (none of it done).
    const pageContinue = Buffer.from('default/s-0005').toString('base64');
    const store = await earlierRun({ doneThrough: 'default/s-0005', pageContinue });
    // The list continuing this run's first page expires, so the list starts over from the start.
    const expired = expireContinuedLists(1, pageContinue);
    const totals: (number | undefined)[] = [];
    const s = await rewriteAll(deps({ checkpoint: store, onProgress: (p) => totals.push(p.total) }), {
      resources: [secrets],
      resume: true,
      pageSize: 4,
    });
    expect(expired.count).toBe(1);
    expect(srv.lists.filter((u) => !u.searchParams.get('continue')).length).toBeGreaterThan(0); // it did start over
    expect(s.perResource.secrets!.skipped).toBe(0);
    expect(s.listed).toBe(8);
    expect(s.rewritten).toBe(8);
    expect(new Set(totals)).toEqual(new Set([8]));
    expect([...srv.puts].sort()).toEqual(srv.sortedKeys().slice(6));
  });

  it('410 with a fresh continue token in the Status: continues from there', async () => {
    srv.add(10);
    let expired = false;
    srv.hooks.push(({ method, url }) => {
      const c = url.searchParams.get('continue');
      if (method === 'GET' && url.pathname === '/api/v1/secrets' && c && !expired) {
        expired = true;
        return { status: 410, body: { kind: 'Status', code: 410, reason: 'Expired', message: 'too old', metadata: { continue: c } } };
      }
      return undefined;
    });
    const s = await rewriteAll(deps(), { resources: [secrets], pageSize: 4 });
    expect(s.rewritten).toBe(10);
    expect(s.perResource.secrets!.skipped).toBe(0);
    expect(srv.lists.filter((u) => !u.searchParams.get('continue'))).toHaveLength(1);
  });

  it('429 and 503: waits as Retry-After says (capped, with jitter), then succeeds', async () => {
    srv.add(3);
    const seen = new Map<string, number>();
    srv.hooks.push(({ method, key }) => {
      if (method !== 'PUT' || !key) return undefined;
      const n = (seen.get(key) ?? 0) + 1;
      seen.set(key, n);
      if (key === 'default/s-0000' && n <= 2) return { status: 429, headers: { 'retry-after': '3' }, body: { kind: 'Status', code: 429, reason: 'TooManyRequests', message: 'slow down' } };
      if (key === 'default/s-0001' && n === 1) return { status: 503, body: { kind: 'Status', code: 503, reason: 'ServiceUnavailable', message: 'busy' } };
      if (key === 'default/s-0002' && n === 1) return { status: 429, headers: { 'retry-after': '3600' }, body: { kind: 'Status', code: 429, message: 'x' } };
      return undefined;
    });
    const waits: number[] = [];
    const s = await rewriteAll(deps({ sleep: async (ms) => void waits.push(ms), random: () => 0.5 }), {
      resources: [secrets],
      maxBackoffMs: 10_000,
    });
    expect(s.rewritten).toBe(3);
    expect(s.failed).toBe(0);
    const sorted = [...waits].sort((a, b) => a - b);
    // one exponential pause for the 503, two ~3 s pauses, one capped at 10 s (+ jitter)
    expect(sorted).toHaveLength(4);
    expect(sorted[0]).toBeLessThan(1000);
    expect(sorted[1]).toBeGreaterThanOrEqual(3000);
    expect(sorted[2]).toBeGreaterThanOrEqual(3000);
    expect(sorted[2]).toBeLessThan(4000);
    expect(sorted[3]).toBeGreaterThanOrEqual(10_000);
    expect(sorted[3]).toBeLessThanOrEqual(11_000);
  });

  it('404 on PUT counts as deleted; other errors are listed and the run goes on', async () => {
    srv.add(4);
    srv.hooks.push(({ method, key }) => {
      if (method === 'PUT' && key === 'default/s-0001') {
        srv.objects.delete(key);
        return undefined;
      }
      if (method === 'PUT' && key === 'default/s-0002') {
        return { status: 422, body: { kind: 'Status', code: 422, reason: 'Invalid', message: 'admission webhook denied' } };
      }
      return undefined;
    });
    const s = await rewriteAll(deps(), { resources: [secrets] });
    expect(s).toMatchObject({ rewritten: 2, deleted: 1, failed: 1 });
    expect(s.failures[0]).toMatchObject({ name: 's-0002', error: expect.stringContaining('admission webhook denied') });
  });

  it('PUTs finishing out of order: the checkpoint keeps the highest key below which all is done', async () => {
    srv.add(6);
    const ac = new AbortController();
    const store = new FileCheckpointStore({ stateDir, runId: rewriteRunId(['secrets'], 'k1'), everyObjects: 1, everyMs: 0 });
    let midRun: CheckpointData | undefined;
    // s-0001 is slow, so s-0002 finishes before it; s-0003/4 are in flight when the abort comes.
    srv.hooks.push(({ method, key }) => {
      if (method !== 'PUT' || !key) return undefined;
      if (key === 'default/s-0001') {
        setTimeout(() => {
          midRun = JSON.parse(readFileSync(store.path, 'utf8')) as CheckpointData;
          ac.abort();
        }, 150);
        return { status: 0, delayMs: 400 };
      }
      return key > 'default/s-0002' ? { status: 0, delayMs: 300 } : undefined;
    });
    const err = await rewriteAll(deps({ signal: ac.signal, checkpoint: store }), {
      resources: [secrets],
      concurrency: 3,
      pageSize: 100,
    }).catch((e) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Interrupted);
    // While s-0001 was in flight, s-0002 being done did not move the mark past s-0000.
    expect(midRun?.resources.secrets).toMatchObject({ doneThrough: 'default/s-0000', complete: false });
    // In-flight PUTs were awaited; nothing after them was dispatched.
    const saved = JSON.parse(await readFile(store.path, 'utf8')) as CheckpointData;
    expect(saved.resources.secrets).toMatchObject({ doneThrough: 'default/s-0004', complete: false });
    expect((await stat(store.path)).mode & 0o777).toBe(0o600);
    expect((await stat(stateDir)).mode & 0o777).toBe(0o700);

    // The resume skips what is done and PUTs only the rest.
    srv.puts = [];
    srv.hooks = [];
    const s = await rewriteAll(deps({ checkpoint: store }), { resources: [secrets], resume: true, concurrency: 3 });
    expect(s.resumed).toBe(true);
    expect(srv.puts).toEqual(['default/s-0005']);
    expect([...srv.objects.values()].every((o) => !o.stale)).toBe(true);
    await expect(stat(store.path)).rejects.toThrow(); // finished: checkpoint removed
  });

  it('a checkpoint of another run (other write key) is ignored with a warning', async () => {
    srv.add(3);
    const old = new FileCheckpointStore({ stateDir, runId: rewriteRunId(['secrets'], 'old-key') });
    await old.flush({ version: 1, runId: old.runId, startedAt: '', updatedAt: '', resources: { secrets: { doneThrough: 'default/s-0002', complete: false } } });
    const warnings: string[] = [];
    const store = new FileCheckpointStore({ stateDir, runId: rewriteRunId(['secrets'], 'new-key'), warn: (w) => warnings.push(w) });
    const s = await rewriteAll(deps({ checkpoint: store }), { resources: [secrets], resume: true });
    expect(s.resumed).toBe(false);
    expect(s.rewritten).toBe(3);
    expect(warnings.join()).toMatch(/another run/);
  });

  it('--dry-run lists and counts, writes nothing', async () => {
    srv.add(7);
    const store = new FileCheckpointStore({ stateDir, runId: 'x' });
    const s = await rewriteAll(deps({ checkpoint: store }), { resources: [secrets], dryRun: true, pageSize: 3 });
    expect(s).toMatchObject({ dryRun: true, listed: 7, rewritten: 0 });
    expect(srv.puts).toEqual([]);
    await expect(stat(store.path)).rejects.toThrow();
  });
});

describe('rewriteAll: one in-flight budget for several resources, adaptive by default', () => {
  it('rewrites two resources at the same time within one fixed budget, each with its own checkpoint', async () => {
    srv.add(60);
    srv.add(60, 'default', srv.configmaps);
    srv.hooks.push(({ method }) => (method === 'PUT' ? { status: 0, delayMs: 5 } : undefined));
    const ac = new AbortController();
    const store = new FileCheckpointStore({ stateDir, runId: rewriteRunId(['secrets', 'configmaps'], 'k1'), everyObjects: 1, everyMs: 0 });
    let n = 0;
    const err = await rewriteAll(deps({ checkpoint: store, signal: ac.signal, onProgress: () => void (++n === 50 && ac.abort()) }), {
      resources: [secrets, configmaps],
      concurrency: 6,
      pageSize: 10,
    }).catch((e) => e);
    expect((err as CliError).exitCode).toBe(ExitCode.Interrupted);
    expect(srv.overlapped).toBe(true);
    expect(srv.peakInFlight).toBeLessThanOrEqual(6);
    const saved = JSON.parse(await readFile(store.path, 'utf8')) as CheckpointData;
    // Both were under way; each mark is one of its own keys.
    for (const r of ['secrets', 'configmaps']) {
      expect(saved.resources[r]!.complete).toBe(false);
      expect(saved.resources[r]!.doneThrough).toMatch(/^default\/s-00\d\d$/);
    }
    const first = srv.puts.length;
    const s = await rewriteAll(deps({ checkpoint: store }), { resources: [secrets, configmaps], resume: true, concurrency: 6, pageSize: 10 });
    expect(s.rewritten).toBe(120 - first);
    expect(s.perResource.secrets!.skipped + s.perResource.configmaps!.skipped).toBeGreaterThan(0);
    expect([...srv.objects.values(), ...srv.configmaps.values()].every((o) => !o.stale)).toBe(true);
    expect(s.concurrency).toMatchObject({ mode: 'fixed', settled: 6 });
    expect(srv.peakInFlight).toBeLessThanOrEqual(6);
  });

  it('adaptive: starts at the initial level, stays within --max-concurrency, and reports where it settled', async () => {
    srv.add(1500);
    srv.hooks.push(({ method }) => (method === 'PUT' ? { status: 0, delayMs: 50 } : undefined));
    const changes: number[] = [];
    const s = await rewriteAll(deps({ onConcurrency: (l) => changes.push(l) }), {
      resources: [secrets],
      initialConcurrency: 8,
      maxConcurrency: 24,
      pageSize: 50,
    });
    expect(s.rewritten).toBe(1500);
    expect(s.concurrency.mode).toBe('adaptive');
    expect(s.concurrency.max).toBe(24);
    // A fixed 50 ms per PUT: more in flight is always faster, so it climbs to the maximum.
    expect(changes[0]).toBe(16);
    expect(Math.max(...changes)).toBe(24);
    expect(srv.peakInFlight).toBeLessThanOrEqual(24);
    // Where it settles after its last probe depends on timing: within a probe step below the maximum.
    expect(s.concurrency.settled).toBeGreaterThanOrEqual(16);
    expect(s.concurrency.settled).toBeLessThanOrEqual(24);
    // Pages of 50 ahead of 24 in flight keep the budget mostly full (the mean counts the ramp).
    expect(s.concurrency.meanInFlight).toBeGreaterThan(8);
    expect(s.concurrency.meanInFlight).toBeLessThanOrEqual(24);
  });

  it('adaptive: a 429 cuts the limit at once, and the run still finishes', async () => {
    srv.add(200);
    let throttled = 0;
    srv.hooks.push(({ method }) => {
      if (method !== 'PUT') return undefined;
      if (srv.inFlight > 20 && throttled < 5) {
        throttled++;
        return { status: 429, headers: { 'retry-after': '1' }, body: { kind: 'Status', code: 429, reason: 'TooManyRequests', message: 'slow down' } };
      }
      return { status: 0, delayMs: 10 };
    });
    const changes: [number, string][] = [];
    const s = await rewriteAll(deps({ onConcurrency: (l, why) => changes.push([l, why]) }), {
      resources: [secrets],
      initialConcurrency: 32,
      pageSize: 100,
    });
    expect(s.failed).toBe(0);
    expect(s.rewritten).toBe(200);
    expect(changes[0]).toEqual([22, 'overload']);
    expect(s.concurrency.cuts).toBeGreaterThanOrEqual(1);
  });
});
