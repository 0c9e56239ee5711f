import type { ResourceCheckpoint } from '../state/checkpoint';
import { ApiError, toCliError } from './errors';
import type { ApiClient } from './api';
import type { ResolvedResource } from './discovery';
import type { Gate } from './gate';
import { itemKey, nextPageSize, putBody, toRecord, type KubeObject, type PageRecord } from './page';
import { keyAfter, Watermark } from './watermark';

/**
 * One resource of a rewrite: lists it page by page (the next page is fetched while the current
 * one is dispatched, so the budget does not drain at every page boundary) and PUTs each object
 * back through the shared gate. Each page is turned into compact records as soon as it is parsed
 * (src/cluster/page.ts); pages are of a fixed size (default 100) or, with --page-size auto,
 * sized to keep the gate's limit filled. Everything a run shares (totals, failures, the checkpoint) comes in through
 * `RunShared`.
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

interface KubeList {
  metadata?: { continue?: string; remainingItemCount?: number; resourceVersion?: string };
  items?: KubeObject[];
}

/** A list page as the engine keeps it. */
interface CompactPage {
  records: PageRecord[];
  /** Items the page had, and those of them a resume had done already. */
  listed: number;
  skipped: number;
  continue?: string;
  remaining?: number;
}

export interface RunShared {
  api: ApiClient;
  gate: Gate;
  now: () => number;
  /** Objects per list page; undefined (--page-size auto) sizes each page to the budget. */
  pageSize?: number;
  dryRun: boolean;
  maxConflicts: number;
  /** Set when the run must stop dispatching (interrupt, or another resource failed). */
  stopped: () => boolean;
  signal?: AbortSignal;
  withRetry: <T>(fn: () => Promise<T>) => Promise<T>;
  /** An object finished (or, in a dry run, was counted). */
  finished: (res: ResolvedResource, obj: Pick<PageRecord, 'namespace' | 'name'>, outcome: Exclude<Outcome, typeof Aborted> | 'listed') => void;
  /** The estimated objects of this resource for this run became known or changed. */
  total: (resource: string, n: number | undefined) => void;
  /** Progress moved: time to think about saving the checkpoint. */
  record: () => void;
  onNotice?: (msg: string) => void;
}

/** The engine retries throttling itself (withRetry), so the client's own 429 retry is off. */
const OWN_RETRIES = { throttleRetries: 0 } as const;
/** A rewrite's PUT needs only the answer's resourceVersion (the one it sent: nothing was written). */
const PUT_OPTIONS = { ...OWN_RETRIES, only: 'metadata.resourceVersion' } as const;

export class ResourceRun {
  readonly wm: Watermark;
  private lastDispatched?: string;
  private token?: string;
  private pending = 0;
  private drained?: () => void;
  private resourceTotal?: number;
  /** The checkpoint's mark when this run began: what is at or below it was done by an earlier run. */
  private readonly resumedThrough?: string;
  /** The highest key counted as skipped so far (a list restarted after a 410 lists them again). */
  private skipCountedThrough?: string;
  /**
   * Where this run's count begins when it continued an earlier run's list (the checkpoint's page
   * token): the first key it listed. What sorts before it was never listed nor counted in the
   * total, so a list restarted from the start after a 410 does not count it as skipped either.
   */
  private countFrom?: string;
  /** Still on the list the checkpoint's page token continued (no restart from the start yet). */
  private continuing: boolean;
  /** Recent list latency (ms, smoothed), for the size of the next page. */
  private listLatencyMs = 0;
  private readonly apiVersion: string;

  constructor(
    private readonly sh: RunShared,
    private readonly res: ResolvedResource,
    readonly state: ResourceCheckpoint,
    readonly rs: ResourceSummary,
  ) {
    this.wm = new Watermark(state.doneThrough, state.pageContinue);
    this.lastDispatched = state.doneThrough;
    this.resumedThrough = state.doneThrough;
    this.token = state.pageContinue;
    this.continuing = state.pageContinue !== undefined;
    this.apiVersion = res.group ? `${res.group}/${res.version}` : res.version;
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

  /**
   * One list page, already compact: the records are made when the answer arrives, not when its
   * turn comes, so the page fetched ahead waits as flat strings rather than as a parsed tree.
   */
  private list(token: string | undefined): Promise<CompactPage> {
    const { api, withRetry, signal, gate, now } = this.sh;
    const limit =
      this.sh.pageSize ?? nextPageSize({ limit: gate.limit, listLatencyMs: this.listLatencyMs, putLatencyMs: gate.latencyMs });
    const t0 = now();
    const p = withRetry(() =>
      api.list<KubeList>(this.res.listPath, { query: { limit, continue: token }, signal, ...OWN_RETRIES }),
    ).then((page): CompactPage => {
      const ms = Math.max(1, now() - t0);
      this.listLatencyMs = this.listLatencyMs === 0 ? ms : (this.listLatencyMs + ms) / 2;
      const items = page.items ?? [];
      return { ...this.compact(items), listed: items.length, continue: page.metadata?.continue || undefined, remaining: page.metadata?.remainingItemCount };
    });
    p.catch(() => {}); // awaited (and its error handled) when its turn comes
    return p;
  }

  /** Lists and dispatches everything; resolves 'stopped' when the run stopped it first. */
  async run(): Promise<'listed' | 'stopped'> {
    const sh = this.sh;
    let expiredInARow = 0;
    let firstPage = true;
    let next: Promise<CompactPage> | undefined = this.list(this.token);
    while (next) {
      if (sh.stopped()) return 'stopped';
      let page: CompactPage;
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
          if (!fresh) this.continuing = false;
          next = this.list(this.token);
          continue;
        }
        throw toCliError(err, `list ${this.res.resource}`);
      }
      expiredInARow = 0;
      this.token = page.continue;
      next = this.token ? this.list(this.token) : undefined;
      this.rs.skipped += page.skipped;
      if (firstPage) {
        firstPage = false;
        if (typeof page.remaining === 'number') this.resourceTotal = page.listed + page.remaining - page.skipped;
        sh.total(this.res.resource, this.resourceTotal);
      } else if (page.skipped > 0 && this.resourceTotal !== undefined) {
        sh.total(this.res.resource, (this.resourceTotal -= page.skipped));
      }
      if ((await this.dispatchPage(page.records, pageToken)) === 'stopped') return 'stopped';
    }
    return 'listed';
  }

  /**
   * The page's records, without the objects a resumed run has done (counted as skipped). Each
   * parsed item is dropped as soon as its record is made.
   */
  private compact(items: KubeObject[]): { records: PageRecord[]; skipped: number } {
    const records: PageRecord[] = [];
    let skipped = 0;
    for (let i = 0; i < items.length; i++) {
      const obj = items[i]!;
      items[i] = undefined as never;
      const id = itemKey(obj);
      if (!id) continue;
      if (this.continuing && this.countFrom === undefined) this.countFrom = id.key;
      // Keys rise through a list, and this page comes after every key dispatched so far, so
      // what a resume (or a list restarted after a 410) has done is what is not after the last
      // key dispatched. Only what the resumed run had done counts as skipped, and once: after a
      // restart from the start, the objects this run did are listed (and counted) already.
      if (this.lastDispatched !== undefined && !keyAfter(id.key, this.lastDispatched)) {
        if (
          this.resumedThrough !== undefined &&
          !keyAfter(id.key, this.resumedThrough) &&
          (this.countFrom === undefined || !keyAfter(this.countFrom, id.key)) &&
          (this.skipCountedThrough === undefined || keyAfter(id.key, this.skipCountedThrough))
        ) {
          skipped++;
          this.skipCountedThrough = id.key;
        }
        continue;
      }
      records.push(toRecord(obj, id, this.apiVersion, this.res.kind));
    }
    return { records, skipped };
  }

  private async dispatchPage(records: PageRecord[], pageToken: string | undefined): Promise<'ok' | 'stopped'> {
    const sh = this.sh;
    for (let i = 0; i < records.length; i++) {
      const rec = records[i]!;
      records[i] = undefined as never; // collectable once its PUT is done
      const key = rec.key;
      if (sh.dryRun) {
        if (sh.stopped()) return 'stopped';
        this.lastDispatched = key;
        sh.finished(this.res, rec, 'listed');
        continue;
      }
      await sh.gate.acquire();
      if (sh.stopped()) {
        sh.gate.cancel();
        return 'stopped';
      }
      this.lastDispatched = key;
      this.rs.listed++;
      const ticket = this.wm.dispatched(key, pageToken);
      this.pending++;
      const t0 = sh.now();
      const who = { namespace: rec.namespace, name: rec.name };
      void this.rewriteOne(rec)
        .catch((err: unknown): Outcome => ({ error: err }))
        .then((outcome) => {
          sh.gate.release(sh.now() - t0);
          if (outcome !== Aborted) {
            sh.finished(this.res, who, outcome);
            this.wm.done(ticket);
            sh.record();
          }
          if (--this.pending === 0) this.drained?.();
        });
    }
    return 'ok';
  }

  private async rewriteOne(rec: PageRecord): Promise<Outcome> {
    const { api, withRetry, signal } = this.sh;
    const path = this.res.itemPath(rec.namespace, rec.name);
    // The first PUT sends the listed object's string; after a 409, the object read back.
    let body: string | KubeObject = rec.body;
    let sent = rec.resourceVersion;
    for (let conflicts = 0; ; ) {
      try {
        const out = await withRetry(() => api.put<Pick<KubeObject, 'metadata'> | string>(path, body, PUT_OPTIONS));
        // An answer that is not JSON (text) carries no version: counted as rewritten.
        const rv = typeof out === 'string' ? undefined : out?.metadata?.resourceVersion;
        return rv !== sent ? 'rewritten' : 'unchanged';
      } catch (err) {
        if (signal?.aborted && !(err instanceof ApiError)) return Aborted;
        if (err instanceof ApiError && err.status === 404) return 'deleted';
        if (!(err instanceof ApiError && err.status === 409) || conflicts >= this.sh.maxConflicts) return { error: err };
        conflicts++;
        this.rs.conflictsRetried++;
        // Someone wrote the object after we listed it: PUT what is there now, never our copy.
        try {
          const fresh = putBody(await withRetry(() => api.get<KubeObject>(path, OWN_RETRIES)), this.apiVersion, this.res.kind);
          body = fresh;
          sent = fresh.metadata?.resourceVersion;
        } catch (gerr) {
          if (signal?.aborted && !(gerr instanceof ApiError)) return Aborted;
          if (gerr instanceof ApiError && gerr.status === 404) return 'deleted';
          return { error: gerr };
        }
      }
    }
  }
}
