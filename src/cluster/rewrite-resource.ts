import type { ResourceCheckpoint } from '../state/checkpoint';
import { ApiError, toCliError } from './errors';
import type { ApiClient } from './api';
import type { ResolvedResource } from './discovery';
import type { Gate } from './gate';
import { objectKey, keyAfter, Watermark } from './watermark';

/**
 * One resource of a rewrite: lists it page by page (the next page is fetched while the current
 * one is dispatched, so the budget does not drain at every page boundary) and PUTs each object
 * back through the shared gate. Everything a run shares (totals, failures, the checkpoint) comes
 * in through `RunShared`.
 */

export interface ResourceSummary {
  /** Objects the API listed in this run (without those a resume skipped). */
  listed: number;
  rewritten: number;
  unchanged: number;
  deleted: number;
  failed: number;
  conflictsRetried: number;
  /** Objects skipped because a resumed checkpoint had them done. */
  skipped: number;
  /** The resource was already complete in the resumed checkpoint. */
  alreadyComplete?: boolean;
}

type Outcome = 'rewritten' | 'unchanged' | 'deleted' | typeof Aborted | { error: unknown };
export const Aborted = Symbol('aborted');

interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
  [k: string]: unknown;
}
interface KubeList {
  metadata?: { continue?: string; remainingItemCount?: number; resourceVersion?: string };
  items?: KubeObject[];
}

export interface RunShared {
  api: ApiClient;
  gate: Gate;
  now: () => number;
  pageSize: number;
  dryRun: boolean;
  maxConflicts: number;
  /** Set when the run must stop dispatching (interrupt, or another resource failed). */
  stopped: () => boolean;
  signal?: AbortSignal;
  withRetry: <T>(fn: () => Promise<T>) => Promise<T>;
  /** An object finished (or, in a dry run, was counted). */
  finished: (res: ResolvedResource, obj: KubeObject, outcome: Exclude<Outcome, typeof Aborted> | 'listed') => void;
  /** The estimated objects of this resource for this run became known or changed. */
  total: (resource: string, n: number | undefined) => void;
  /** Progress moved: time to think about saving the checkpoint. */
  record: () => void;
  onNotice?: (msg: string) => void;
}

/** The engine retries throttling itself (withRetry), so the client's own 429 retry is off. */
const OWN_RETRIES = { throttleRetries: 0 } as const;

export class ResourceRun {
  readonly wm: Watermark;
  private lastDispatched?: string;
  private token?: string;
  private pending = 0;
  private drained?: () => void;
  private resourceTotal?: number;

  constructor(
    private readonly sh: RunShared,
    private readonly res: ResolvedResource,
    readonly state: ResourceCheckpoint,
    readonly rs: ResourceSummary,
  ) {
    this.wm = new Watermark(state.doneThrough, state.pageContinue);
    this.lastDispatched = state.doneThrough;
    this.token = state.pageContinue;
  }

  /** Copies the watermark into the checkpoint state. */
  sync(): void {
    this.state.doneThrough = this.wm.doneThrough;
    this.state.pageContinue = this.wm.pageContinue;
  }

  /** Resolves once every PUT this resource dispatched has finished. */
  settled(): Promise<void> {
    return this.pending === 0 ? Promise.resolve() : new Promise((r) => (this.drained = r));
  }

  private list(token: string | undefined): Promise<KubeList> {
    const { api, withRetry, pageSize, signal } = this.sh;
    const p = withRetry(() =>
      api.list<KubeList>(this.res.listPath, { query: { limit: pageSize, continue: token }, signal, ...OWN_RETRIES }),
    );
    p.catch(() => {}); // awaited (and its error handled) when its turn comes
    return p;
  }

  /** Lists and dispatches everything; resolves 'stopped' when the run stopped it first. */
  async run(): Promise<'listed' | 'stopped'> {
    const sh = this.sh;
    let expiredInARow = 0;
    let firstPage = true;
    let next: Promise<KubeList> | undefined = this.list(this.token);
    while (next) {
      if (sh.stopped()) return 'stopped';
      let page: KubeList;
      const pageToken = this.token;
      try {
        page = await next;
      } catch (err) {
        if (sh.stopped()) return 'stopped';
        if (err instanceof ApiError && err.status === 410) {
          // The continue token expired (compaction). The Status may carry a token that continues
          // from the same place on a fresh snapshot; otherwise start over and skip what is done.
          const fresh = (err.body as KubeList | undefined)?.metadata?.continue;
          sh.onNotice?.(
            `${this.res.resource}: the list expired on the server (410); ${fresh ? 'continuing on a fresh snapshot' : 'listing again from the start, skipping what is done'}`,
          );
          if (++expiredInARow > 3) throw toCliError(err, `list ${this.res.resource}`);
          this.token = fresh || undefined;
          next = this.list(this.token);
          continue;
        }
        throw toCliError(err, `list ${this.res.resource}`);
      }
      expiredInARow = 0;
      this.token = page.metadata?.continue || undefined;
      next = this.token ? this.list(this.token) : undefined;
      const items = page.items ?? [];
      if (firstPage) {
        firstPage = false;
        const remaining = page.metadata?.remainingItemCount;
        if (typeof remaining === 'number') this.resourceTotal = items.length + remaining;
        sh.total(this.res.resource, this.resourceTotal);
      }
      page = {}; // the page is not held while the last of its objects are in flight
      if ((await this.dispatchPage(items, pageToken)) === 'stopped') return 'stopped';
    }
    return 'listed';
  }

  private async dispatchPage(items: KubeObject[], pageToken: string | undefined): Promise<'ok' | 'stopped'> {
    const sh = this.sh;
    for (let i = 0; i < items.length; i++) {
      const obj = items[i]!;
      items[i] = undefined as never; // collectable once its PUT is done
      const name = obj.metadata?.name;
      if (!name) continue;
      const key = objectKey(obj.metadata?.namespace, name);
      if (this.lastDispatched !== undefined && !keyAfter(key, this.lastDispatched)) {
        this.rs.skipped++;
        if (this.resourceTotal !== undefined) sh.total(this.res.resource, --this.resourceTotal);
        continue;
      }
      if (sh.dryRun) {
        if (sh.stopped()) return 'stopped';
        this.lastDispatched = key;
        sh.finished(this.res, obj, 'listed');
        continue;
      }
      await sh.gate.acquire();
      if (sh.stopped()) {
        sh.gate.cancel();
        return 'stopped';
      }
      this.lastDispatched = key;
      this.rs.listed++;
      this.wm.dispatched(key, pageToken);
      this.pending++;
      const t0 = sh.now();
      void this.rewriteOne(obj)
        .catch((err: unknown): Outcome => ({ error: err }))
        .then((outcome) => {
          sh.gate.release(sh.now() - t0);
          if (outcome !== Aborted) {
            sh.finished(this.res, obj, outcome);
            this.wm.done(key);
            sh.record();
          }
          if (--this.pending === 0) this.drained?.();
        });
    }
    return 'ok';
  }

  private async rewriteOne(obj: KubeObject): Promise<Outcome> {
    const { api, withRetry, signal } = this.sh;
    const res = this.res;
    const path = res.itemPath(obj.metadata?.namespace, obj.metadata!.name!);
    const apiVersion = res.group ? `${res.group}/${res.version}` : res.version;
    let body = obj;
    for (let conflicts = 0; ; ) {
      body.apiVersion ??= apiVersion;
      body.kind ??= res.kind;
      const sent = body.metadata?.resourceVersion;
      try {
        const out = await withRetry(() => api.put<KubeObject>(path, body, OWN_RETRIES));
        return out?.metadata?.resourceVersion !== sent ? 'rewritten' : 'unchanged';
      } catch (err) {
        if (signal?.aborted && !(err instanceof ApiError)) return Aborted;
        if (err instanceof ApiError && err.status === 404) return 'deleted';
        if (!(err instanceof ApiError && err.status === 409) || conflicts >= this.sh.maxConflicts) return { error: err };
        conflicts++;
        this.rs.conflictsRetried++;
        // Someone wrote the object after we listed it: PUT what is there now, never our copy.
        try {
          body = await withRetry(() => api.get<KubeObject>(path, OWN_RETRIES));
        } catch (gerr) {
          if (signal?.aborted && !(gerr instanceof ApiError)) return Aborted;
          if (gerr instanceof ApiError && gerr.status === 404) return 'deleted';
          return { error: gerr };
        }
      }
    }
  }
}
