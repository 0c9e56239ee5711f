import {
  DEFAULT_INITIAL_CONCURRENCY,
  initialLimiter,
  onOverload,
  onWindow,
  windowComplete,
  type LimiterOptions,
  type LimiterState,
} from './limiter';

/**
 * The in-flight budget every resource of a rewrite draws from: a semaphore whose size is either
 * fixed (--concurrency) or the limiter's, fed with what the requests it admits observe. Waiters
 * are served in arrival order, so several resources share it fairly.
 */

/** The limiter's options (adaptive: never more than `max` in flight), or a fixed number. */
interface GateOptions extends LimiterOptions {
  /** A fixed number in flight; without it the limit adapts. */
  fixed?: number;
  now: () => number;
  /** Told when the adaptive limit changes (for --verbose). */
  onChange?: (limit: number, why: string) => void;
}

export interface GateReport {
  mode: 'adaptive' | 'fixed';
  /** Where the limit settled (the level it last held), or the fixed number. */
  settled: number;
  /** The most requests it allowed in flight at any time. */
  peak: number;
  max: number;
  /** Times the apiserver's push-back (429, 503, 504, timeouts) cut the limit. */
  cuts: number;
  /** Requests in flight on average over the run (time-weighted): below `settled` when listing
   * could not keep the budget full. */
  meanInFlight: number;
}

export class Gate {
  private state?: LimiterState;
  private readonly fixed?: number;
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  private peak = 0;
  // The current window: completions and latency since the limit last changed.
  private winStart = 0;
  private winCompletions = 0;
  private winLatency = 0;
  private winArea = 0;
  private lastChange = 0;
  private winOverloads = 0;
  private meanLatency = 0;
  // The whole run: requests in flight integrated over time, from the first request.
  private runArea = 0;
  private runStart?: number;
  private runLast = 0;

  constructor(private readonly o: GateOptions) {
    if (o.fixed !== undefined) this.fixed = Math.max(1, Math.floor(o.fixed));
    else this.state = initialLimiter({ initial: o.initial ?? DEFAULT_INITIAL_CONCURRENCY, min: o.min, max: o.max });
    this.resetWindow(o.now());
  }

  get limit(): number {
    return this.fixed ?? this.state!.limit;
  }

  /** Recent latency of one request (ms, smoothed), 0 before the first finished. */
  get latencyMs(): number {
    return this.meanLatency;
  }

  get active(): number {
    return this.inFlight;
  }

  acquire(): Promise<void> {
    if (this.inFlight < this.limit && this.waiters.length === 0) {
      this.take();
      return Promise.resolve();
    }
    return new Promise((r) => this.waiters.push(r));
  }

  /** One admitted request finished (whatever its outcome), after `latencyMs`. */
  release(latencyMs: number): void {
    const t = this.o.now();
    this.account(t);
    this.inFlight--;
    this.winCompletions++;
    this.winLatency += latencyMs;
    this.meanLatency = this.meanLatency === 0 ? latencyMs : this.meanLatency * 0.9 + latencyMs * 0.1;
    if (this.state) {
      const elapsed = t - this.winStart;
      if (windowComplete(elapsed, this.winCompletions, this.winLatency / this.winCompletions)) {
        const before = this.state.limit;
        this.state = onWindow(this.state, {
          completions: this.winCompletions,
          seconds: elapsed / 1000,
          meanLatencyMs: this.winLatency / this.winCompletions,
          meanInFlight: elapsed > 0 ? this.winArea / elapsed : this.inFlight,
          overloads: this.winOverloads,
        });
        if (this.state.limit !== before) this.o.onChange?.(this.state.limit, this.state.phase);
        this.resetWindow(t);
      }
    }
    this.pump();
    if (this.inFlight === 0 && this.waiters.length === 0) for (const i of this.idleWaiters.splice(0)) i();
  }

  /** A slot taken but not used (the run stopped before the request went out). */
  cancel(): void {
    this.account(this.o.now());
    this.inFlight--;
    this.pump();
    if (this.inFlight === 0 && this.waiters.length === 0) for (const i of this.idleWaiters.splice(0)) i();
  }

  /** The apiserver pushed back (429, 503, 504, a timeout): cut now, measure afresh. */
  overload(retryAfterMs?: number): void {
    if (!this.state) return;
    const t = this.o.now();
    this.winOverloads++;
    const before = this.state.limit;
    this.state = onOverload(this.state, t, this.meanLatency, retryAfterMs);
    if (this.state.limit !== before) {
      this.o.onChange?.(this.state.limit, 'overload');
      this.account(t);
      this.resetWindow(t);
    }
  }

  idle(): Promise<void> {
    return this.inFlight === 0 && this.waiters.length === 0 ? Promise.resolve() : new Promise((r) => this.idleWaiters.push(r));
  }

  report(): GateReport {
    const span = this.runStart === undefined ? 0 : this.runLast - this.runStart;
    const meanInFlight = span > 0 ? Math.round((this.runArea / span) * 10) / 10 : 0;
    if (this.fixed !== undefined) return { mode: 'fixed', settled: this.fixed, peak: this.peak, max: this.fixed, cuts: 0, meanInFlight };
    const s = this.state!;
    return { mode: 'adaptive', settled: s.base?.limit ?? s.limit, peak: this.peak, max: s.max, cuts: s.cuts, meanInFlight };
  }

  private take(): void {
    this.account(this.o.now());
    this.inFlight++;
    if (this.inFlight > this.peak) this.peak = this.inFlight;
  }

  private pump(): void {
    while (this.waiters.length > 0 && this.inFlight < this.limit) {
      this.take();
      this.waiters.shift()!();
    }
  }

  /** Integrates requests in flight over time, for the window's mean. */
  private account(t: number): void {
    this.winArea += this.inFlight * (t - this.lastChange);
    this.lastChange = t;
    if (this.runStart === undefined) this.runStart = t;
    this.runArea += this.inFlight * (t - this.runLast);
    this.runLast = t;
  }

  private resetWindow(t: number): void {
    this.winStart = t;
    this.lastChange = t;
    this.winCompletions = 0;
    this.winLatency = 0;
    this.winArea = 0;
    this.winOverloads = 0;
  }
}
