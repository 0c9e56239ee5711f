import { setTimeout as delay } from 'node:timers/promises';
import type { CheckpointData, CheckpointStore, ResourceCheckpoint } from '../state/checkpoint';
import { CliError, ExitCode } from '../ui/errors';
import type { ApiClient } from './api';
import type { ResolvedResource } from './discovery';
import { ApiConnectionError, ApiError, describeError, isTransient } from './errors';
import { Gate, type GateReport } from './gate';
import { DEFAULT_INITIAL_CONCURRENCY, DEFAULT_MAX_CONCURRENCY } from './limiter';
import { ResourceRun, type ResourceSummary, type RunShared } from './rewrite-resource';
import { DEFAULT_PAGE_SIZE } from './page';

export { compareKeys, objectKey, Watermark } from './watermark';
export type { ResourceSummary } from './rewrite-resource';
export type { GateReport } from './gate';

/**
 * The re-encryption engine: every object of the given resources gets an unchanged PUT carrying
 * its resourceVersion, so the apiserver stores it again with the current write key. init,
 * rotate-key and disable call `rewriteAll` directly; `re-encrypt-all` exposes it.
 *
 * All resources are listed at once and draw on one in-flight budget (src/cluster/gate.ts), whose
 * size adapts to what the apiserver sustains (src/cluster/limiter.ts) unless it is fixed.
 * Memory is bounded by two list pages per resource plus the requests in flight: pages are
 * streamed, objects are never accumulated. Progress is kept per resource as a watermark (the
 * highest key below which everything is done; PUTs finish out of order), so a resume skips what
 * was done.
 */

export interface Progress {
  /** The resources being rewritten (`secrets`, `secrets, configmaps`). */
  resource: string;
  /** Objects finished in this run, all resources. */
  done: number;
  /** Estimated objects for this run, all resources (from remainingItemCount), once known. */
  total?: number;
  rewritten: number;
  unchanged: number;
  deleted: number;
  failed: number;
  conflictsRetried: number;
  elapsedSeconds: number;
  /** Requests allowed in flight now. */
  concurrency: number;
}

export interface RewriteFailure {
  resource: string;
  namespace?: string;
  name: string;
  error: string;
}

export interface RewriteSummary {
  dryRun: boolean;
  resumed: boolean;
  resources: string[];
  listed: number;
  rewritten: number;
  unchanged: number;
  conflictsRetried: number;
  deleted: number;
  failed: number;
  /** The first MAX_FAILURES_KEPT failures (all are counted in `failed`). */
  failures: RewriteFailure[];
  seconds: number;
  objectsPerSecond: number;
  /** Requests in flight: fixed or adaptive, and where the adaptive limit settled. */
  concurrency: GateReport;
  perResource: Record<string, ResourceSummary>;
}

export interface RewriteDeps {
  api: ApiClient;
  checkpoint?: CheckpointStore;
  now: () => Date;
  onProgress?: (p: Progress) => void;
  /** Told about recoverable events (410 list restarts, a checkpoint resumed). */
  onNotice?: (msg: string) => void;
  /** Told when the adaptive limit moves (for --verbose). */
  onConcurrency?: (limit: number, why: string) => void;
  signal?: AbortSignal;
  /** Injectable for tests: waits `ms` (rejects when the signal aborts). */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
}

export interface RewriteOptions {
  resources: ResolvedResource[];
  /** A fixed number of requests in flight; without it the engine finds the level itself. */
  concurrency?: number;
  /** The adaptive limit never goes above this (default 256). */
  maxConcurrency?: number;
  /** Where the adaptive limit starts (default 64). */
  initialConcurrency?: number;
  /** Objects per list page (default 100). 'auto' sizes each page to keep the budget filled
   * (100..500 objects, src/cluster/page.ts): faster when listing is what holds the rewrite back,
   * but on the bed it let the adaptive limit climb to ~200 in flight and peak RSS from 121 to
   * ~200 MB, so it is not the default while memory is the target furthest off. */
  pageSize?: number | 'auto';
  /** Continue from the checkpoint of the same run, when there is one. */
  resume?: boolean;
  /** List and count only; nothing is written (not even the checkpoint). */
  dryRun?: boolean;
  /** 409s per object before it counts as failed (default 8). */
  maxConflictRetries?: number;
  /** Retries of one request after 429, 5xx or a dropped connection (default 12). */
  maxTransientRetries?: number;
  /** Longest pause between retries, and the cap on Retry-After (default 30 s). */
  maxBackoffMs?: number;
}

export { DEFAULT_INITIAL_CONCURRENCY, DEFAULT_MAX_CONCURRENCY };

export { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './page';
export const MAX_FAILURES_KEPT = 1000;

/** The apiserver saying it is overloaded (as opposed to failing): the budget shrinks at once. */
export function isOverload(err: unknown): boolean {
  if (err instanceof ApiError) return err.status === 429 || err.status === 503 || err.status === 504;
  return err instanceof ApiConnectionError && err.code === 'ETIMEDOUT';
}

const defaultSleep = (ms: number, signal?: AbortSignal): Promise<void> => delay(ms, undefined, { signal });

function emptyResourceSummary(): ResourceSummary {
  return { listed: 0, rewritten: 0, unchanged: 0, deleted: 0, failed: 0, conflictsRetried: 0, skipped: 0 };
}

const COUNTS = ['listed', 'rewritten', 'unchanged', 'deleted', 'failed', 'conflictsRetried'] as const;

export async function rewriteAll(deps: RewriteDeps, opts: RewriteOptions): Promise<RewriteSummary> {
  const { api, checkpoint, signal } = deps;
  const sleep = deps.sleep ?? defaultSleep;
  const random = deps.random ?? Math.random;
  const maxTransient = opts.maxTransientRetries ?? 12;
  const maxBackoffMs = opts.maxBackoffMs ?? 30_000;
  const dryRun = Boolean(opts.dryRun);
  const clock = () => deps.now().getTime();
  const started = clock();
  const elapsed = () => Math.max(0, (clock() - started) / 1000);

  const store = dryRun ? undefined : checkpoint;
  let cp: CheckpointData | undefined;
  let resumed = false;
  if (store && opts.resume) {
    cp = await store.load();
    if (cp) {
      resumed = true;
      deps.onNotice?.('resuming from the checkpoint of an interrupted run');
    }
  }
  const startIso = deps.now().toISOString();
  cp ??= { version: 1, runId: store?.runId ?? '', startedAt: startIso, updatedAt: startIso, resources: {} };
  const checkpointData = cp;

  const gate = new Gate({
    fixed: opts.concurrency,
    max: opts.maxConcurrency ?? DEFAULT_MAX_CONCURRENCY,
    initial: opts.initialConcurrency,
    now: clock,
    onChange: deps.onConcurrency,
  });
  const perResource: Record<string, ResourceSummary> = {};
  const failures: RewriteFailure[] = [];
  const totals = new Map<string, number | undefined>();
  let done = 0;
  let failedWith: unknown;
  let checkpointWarned = false;
  const label = opts.resources.map((r) => r.resource).join(', ');
  const sum = (k: (typeof COUNTS)[number]) => Object.values(perResource).reduce((a, s) => a + s[k], 0);

  const progress = () => {
    if (!deps.onProgress) return;
    const known = [...totals.values()];
    deps.onProgress({
      resource: label,
      done,
      total: known.length === runs.length && known.every((t) => t !== undefined) ? known.reduce((a, t) => a! + t!, 0) : undefined,
      rewritten: sum('rewritten'),
      unchanged: sum('unchanged'),
      deleted: sum('deleted'),
      failed: sum('failed'),
      conflictsRetried: sum('conflictsRetried'),
      elapsedSeconds: elapsed(),
      concurrency: gate.limit,
    });
  };

  /** Runs one request, retrying 429, 5xx and dropped connections with capped, jittered back-off. */
  async function withRetry<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isTransient(err) || attempt >= maxTransient) throw err;
        const ra = err instanceof ApiError ? err.retryAfterSeconds : undefined;
        if (isOverload(err)) gate.overload(ra !== undefined ? ra * 1000 : undefined);
        const exp = Math.min(maxBackoffMs, 200 * 2 ** attempt);
        const ms =
          ra !== undefined
            ? Math.min(maxBackoffMs, ra * 1000) + random() * Math.min(1000, Math.max(100, ra * 250))
            : exp / 2 + random() * (exp / 2);
        await sleep(ms, signal);
      }
    }
  }

  let recordChain: Promise<void> = Promise.resolve();
  const syncAll = () => {
    for (const r of runs) r.sync();
  };
  const shared: RunShared = {
    api,
    gate,
    now: clock,
    pageSize: opts.pageSize === 'auto' ? undefined : Math.max(1, Math.floor(opts.pageSize ?? DEFAULT_PAGE_SIZE)),
    dryRun,
    maxConflicts: opts.maxConflictRetries ?? 8,
    stopped: () => Boolean(signal?.aborted) || failedWith !== undefined,
    signal,
    withRetry,
    finished(res, obj, outcome) {
      const rs = perResource[res.resource]!;
      done++;
      if (outcome === 'listed') rs.listed++;
      else if (typeof outcome === 'object') {
        rs.failed++;
        if (failures.length < MAX_FAILURES_KEPT) {
          failures.push({
            resource: res.resource,
            ...(obj.namespace ? { namespace: obj.namespace } : {}),
            name: obj.name,
            error: describeError(outcome.error),
          });
        }
      } else rs[outcome]++;
      progress();
    },
    total: (resource, n) => totals.set(resource, n),
    record() {
      if (!store) return;
      syncAll();
      // record() serializes synchronously when a write is due, so later changes do not leak in.
      recordChain = store.record(checkpointData, done).catch((err: unknown) => {
        if (!checkpointWarned) deps.onNotice?.(`cannot save the checkpoint: ${(err as Error).message}`);
        checkpointWarned = true;
      });
    },
    onNotice: deps.onNotice,
  };

  const runs: ResourceRun[] = [];
  for (const res of opts.resources) {
    const rs = emptyResourceSummary();
    perResource[res.resource] = rs;
    const saved: ResourceCheckpoint | undefined = checkpointData.resources[res.resource];
    if (saved?.complete) {
      rs.alreadyComplete = true;
      continue;
    }
    const state: ResourceCheckpoint = saved ?? { complete: false };
    checkpointData.resources[res.resource] = state;
    runs.push(new ResourceRun(shared, res, state, rs));
  }

  await Promise.all(
    runs.map(async (run) => {
      try {
        const how = await run.run();
        await run.settled();
        if (how === 'listed' && !shared.stopped()) {
          run.sync();
          run.state.complete = true;
          if (store) await store.flush(checkpointData);
        }
      } catch (err) {
        failedWith ??= err;
      }
    }),
  );
  await gate.idle();
  await recordChain;
  syncAll();
  if (failedWith !== undefined || signal?.aborted) {
    if (store) await store.flush(checkpointData).catch(() => {});
    if (signal?.aborted) throw interrupted(done);
    throw failedWith;
  }
  if (store) await store.finish();
  progress();
  const seconds = elapsed();
  return {
    dryRun,
    resumed,
    resources: opts.resources.map((r) => r.resource),
    ...(Object.fromEntries(COUNTS.map((k) => [k, sum(k)])) as Record<(typeof COUNTS)[number], number>),
    failures,
    seconds: Math.round(seconds * 1000) / 1000,
    objectsPerSecond: seconds > 0 ? Math.round((done / seconds) * 10) / 10 : 0,
    concurrency: gate.report(),
    perResource,
  };
}

function interrupted(done: number): CliError {
  return new CliError(`interrupted after ${done} objects; the checkpoint is saved`, {
    exitCode: ExitCode.Interrupted,
    hint: 're-run with --resume to continue where it stopped',
    details: { done },
  });
}
