/**
 * How many requests the rewrite keeps in flight, decided from what it observes: a pure state
 * machine fed with measurement windows (objects finished, seconds, latency, how full the limit
 * was) and overload signals (429, 503, 504, timeouts).
 *
 * Latency-gradient limiters (Netflix concurrency-limits' Gradient2, Vegas) stop where latency
 * starts rising above its no-load value. An apiserver's throughput keeps rising well past that
 * point (measured on kube-apiserver 1.24 with 2 cores: 508/s at 8 in flight, 661/s at 32, 870/s at
 * 96, with latency up 4x), so stopping at the latency knee leaves a quarter of the rate unused.
 * This limiter climbs on throughput instead: by Little's law rate = in-flight / latency, so once
 * the server is saturated more in flight only adds queueing delay and the rate stops rising. It
 * doubles while a doubling pays (>= 5 % more objects/s), then holds, probing 25 % up (kept when
 * it pays 5 %) and 20 % down (kept when it costs nothing, so it rests at the smallest level that
 * gives the rate: no needless queue on the apiserver; the next probe after a kept step down goes
 * down again, at once when the step paid 5 %); each probe that does not pay doubles the
 * hold before the next (3 windows up to 24), so a level that is right is not taxed by a window at
 * a worse one every few seconds (at --max-concurrency on a rising curve every probe goes down and
 * costs up to a fifth of that window's rate). A step down is measured in one window against the
 * level just above it, so on a noisy server (a window's rate moves by 10-20 % on a shared
 * 2-core node) steps that each cost less than the noise would be kept one after another and add
 * up: simulated on the kube-apiserver 1.24 curve with +-20 % per window, the 10th percentile of
 * runs averaged 0.85 of the best level's rate over the run (0.93 with what follows). So it also
 * remembers the best rate it held at any level (the running mean at the end of a hold, in which
 * each window weighs as much as all before it: about its last 3 windows), fading by 0.5 % a
 * window (a server that got 10 % slower for good is followed after about 11 windows, 20 % after
 * about 34): a step down that falls 5 % short of it is not kept unless it paid, and a hold that
 * runs 5 % short of it goes back to that level (when it is higher, within the maximum and
 * ceiling) as its next probe. Overload is AIMD: a 429/503/504 or timeout cuts the limit by 30 %
 * at once (one cut per cool-down, so one burst of rejections of the same requests cuts once) and the level it happened at becomes a ceiling for a while. A window in
 * which the source could not fill the limit (under 75 % in flight: listing behind) is
 * app-limited, as in TCP's congestion window validation (RFC 7661): it never raises the limit
 * and brings it down to the level that window would have filled.
 */

export interface LimiterOptions {
  /** Where it starts (default 64: past the latency knee of a 2-core apiserver, below its rate plateau). */
  initial?: number;
  min?: number;
  /** Never more in flight than this (--max-concurrency). */
  max: number;
}

type LimiterPhase = 'climb' | 'hold' | 'probe-up' | 'probe-down' | 'back-to-best';

export interface LimiterState {
  limit: number;
  readonly min: number;
  readonly max: number;
  phase: LimiterPhase;
  /** The level it settled on and the rate (objects/s) last measured there. */
  base?: { limit: number; rate: number };
  /** Windows held since the last probe. */
  holds: number;
  /** Windows to hold before the next probe: doubles after each probe that did not pay. */
  holdFor: number;
  nextProbe: 'up' | 'down';
  /** The level at which the apiserver last pushed back: no climbing past it for a while. */
  ceiling?: number;
  /** Windows without overload since the ceiling was set. */
  cleanWindows: number;
  /** Until when (ms, caller's clock) further overload signals do not cut again. */
  cooldownUntilMs: number;
  /** Overload cuts so far. */
  cuts: number;
  /**
   * The best rate at the end of a hold (its running mean) at any level, fading each window;
   * forgotten on overload and in a window the source could not fill (the rate then says nothing
   * about the server).
   */
  best?: { limit: number; rate: number };
}

/** One measurement window at a constant limit. */
export interface LimiterWindow {
  completions: number;
  seconds: number;
  /** Mean latency of the requests that finished in the window. */
  meanLatencyMs: number;
  /** Time-weighted mean of requests in flight over the window. */
  meanInFlight: number;
  /** Overload signals seen in the window (they also went to onOverload). */
  overloads: number;
}

export const DEFAULT_INITIAL_CONCURRENCY = 64;
export const DEFAULT_MAX_CONCURRENCY = 256;

const CLIMB_GAIN = 0.05;
const PROBE_GAIN = 0.05;
/** A step down is kept when it costs at most this share of the rate (noise on a loaded host). */
const PROBE_DOWN_LOSS = 0.01;
const HOLD_WINDOWS = 3;
/** The longest hold between probes once they keep failing (about 10 s of windows). */
const MAX_HOLD_WINDOWS = 24;
const BACKOFF = 0.7;
/** Windows without overload after which the ceiling is forgotten. */
const CEILING_WINDOWS = 8;
/** Below this share of the limit in flight, a window says nothing about the limit. */
const DEMAND_LIMITED = 0.75;
/** An app-limited window takes the limit down by at most this factor. */
const APP_LIMITED_DECAY = 0.5;
const MIN_WINDOW_MS = 500;
const MIN_WINDOW_COMPLETIONS = 20;
const MIN_COOLDOWN_MS = 1000;
/** The remembered best rate fades by this factor each window (5 % in 10 windows). */
const BEST_FADE = 0.995;
/** How far short of the best rate a level may run before it is left for the best level. */
const BEST_SHORTFALL = 0.05;

const clamp = (s: Pick<LimiterState, 'min' | 'max' | 'ceiling'>, n: number) =>
  Math.max(s.min, Math.min(s.max, s.ceiling ?? Infinity, Math.round(n)));

export function initialLimiter(o: LimiterOptions): LimiterState {
  const max = Math.max(1, Math.floor(o.max));
  const min = Math.max(1, Math.min(max, Math.floor(o.min ?? 4)));
  const limit = Math.max(min, Math.min(max, Math.floor(o.initial ?? DEFAULT_INITIAL_CONCURRENCY)));
  return { limit, min, max, phase: limit === max ? 'hold' : 'climb', holds: 0, holdFor: HOLD_WINDOWS, nextProbe: 'up', cleanWindows: 0, cooldownUntilMs: 0, cuts: 0 };
}

/** Whether the window running at this limit has measured enough to decide on. */
export function windowComplete(elapsedMs: number, completions: number, meanLatencyMs: number): boolean {
  return completions >= MIN_WINDOW_COMPLETIONS && elapsedMs >= Math.max(MIN_WINDOW_MS, 4 * meanLatencyMs);
}

/** The next state after a full window at `s.limit`. */
export function onWindow(s: LimiterState, w: LimiterWindow): LimiterState {
  if (w.seconds <= 0 || w.completions <= 0) return s;
  const rate = w.completions / w.seconds;
  const next: LimiterState = { ...s };
  if (w.overloads === 0 && s.ceiling !== undefined && ++next.cleanWindows >= CEILING_WINDOWS) {
    next.ceiling = undefined;
    next.cleanWindows = 0;
  }
  if (next.best) next.best = { limit: next.best.limit, rate: next.best.rate * BEST_FADE };
  const base = s.base;
  const settle = (limit: number): LimiterState => ({ ...next, limit, phase: 'hold', holds: 0 });
  // A probe that did not pay costs a window at a worse level: probe half as often after each one.
  const failed = (limit: number): LimiterState => ({ ...settle(limit), holdFor: Math.min(MAX_HOLD_WINDOWS, s.holdFor * 2) });
  // Not enough work to fill the limit (listing behind, the end of a resource): app-limited, so no
  // evidence about the limit and no growth (RFC 7661's rule for an unvalidated window). The limit
  // comes down to the largest level at which this window would have filled it (4/3 of the mean in
  // flight, at most halving per window, never below the minimum): the peak in flight, the sockets
  // and their memory stay near what is used, and the limit binds again so the decisions below can
  // measure levels and probe down. The peak is no measure of use: one burst of a page reaches the
  // limit whatever it is.
  if (w.meanInFlight < DEMAND_LIMITED * s.limit) {
    // The source is the limit now: a best level measured before is none to go back to.
    next.best = undefined;
    // A step up the source could not fill is a probe that did not pay.
    if ((s.phase === 'probe-up' || s.phase === 'back-to-best') && base) return failed(base.limit);
    const used = clamp(next, Math.max(Math.floor(w.meanInFlight / DEMAND_LIMITED), s.limit * APP_LIMITED_DECAY));
    if (used >= s.limit) return next;
    return { ...next, limit: used, phase: 'hold', base: undefined, holds: 0, holdFor: HOLD_WINDOWS };
  }
  switch (s.phase) {
    case 'climb': {
      if (base && rate < base.rate * (1 + CLIMB_GAIN)) return settle(base.limit);
      next.base = { limit: s.limit, rate };
      const up = clamp(next, s.limit * 2);
      return up > s.limit ? { ...next, limit: up } : settle(s.limit);
    }
    case 'hold': {
      next.base = base && base.limit === s.limit ? { limit: s.limit, rate: (base.rate + rate) / 2 } : { limit: s.limit, rate };
      if (++next.holds < s.holdFor) return next;
      next.holds = 0;
      // Only the end of a hold is remembered (its running mean, about its last 3 windows): the best
      // of single windows, or of every window's running mean, would be the luckiest of many noisy
      // samples, and an equal level would then look short of it.
      const held = next.base;
      if (!next.best || held.rate > next.best.rate) next.best = { ...held };
      // Running short of the best level (steps down that each cost less than the noise): go back.
      if (next.best.limit > s.limit && held.rate < next.best.rate * (1 - BEST_SHORTFALL)) {
        const back = clamp(next, next.best.limit);
        if (back > s.limit) return { ...next, limit: back, phase: 'back-to-best', nextProbe: 'down' };
      }
      const up = clamp(next, s.limit * 1.25);
      const down = clamp(next, s.limit * 0.8);
      const dir = next.nextProbe === 'up' ? (up > s.limit ? 'up' : 'down') : down < s.limit ? 'down' : 'up';
      next.nextProbe = dir === 'up' ? 'down' : 'up';
      if (dir === 'up' && up > s.limit) return { ...next, limit: up, phase: 'probe-up' };
      if (dir === 'down' && down < s.limit) return { ...next, limit: down, phase: 'probe-down' };
      return next;
    }
    case 'probe-up':
    case 'back-to-best': {
      if (!base || rate < base.rate * (1 + PROBE_GAIN)) return failed(base?.limit ?? s.limit);
      next.base = { limit: s.limit, rate };
      next.holdFor = HOLD_WINDOWS;
      const up = clamp(next, s.limit * 1.25);
      return up > s.limit ? { ...next, limit: up, phase: 'probe-up' } : settle(s.limit);
    }
    case 'probe-down': {
      if (base && rate < base.rate * (1 - PROBE_DOWN_LOSS)) return failed(base.limit);
      // Within a step of the level above but short of the best one held: steps like it add up.
      // (A step that paid is kept: a server thrashing is followed down.)
      const short = next.best !== undefined && next.best.limit > s.limit && rate < next.best.rate * (1 - BEST_SHORTFALL);
      if (base && short && rate < base.rate * (1 + PROBE_GAIN)) return failed(base.limit);
      // Kept: the next probe goes down again (as a probe up that pays goes on up), so a server that
      // is faster with fewer in flight is followed down in steps of one probe each, not two.
      const kept: LimiterState = { ...settle(s.limit), base: { limit: s.limit, rate }, holdFor: HOLD_WINDOWS, nextProbe: 'down' };
      // Faster with fewer in flight (a server thrashing): keep stepping down while it pays.
      const down = clamp(next, s.limit * 0.8);
      return base && rate >= base.rate * (1 + PROBE_GAIN) && down < s.limit ? { ...kept, limit: down, phase: 'probe-down' } : kept;
    }
  }
}

/**
 * 429, 503, 504 or a timeout: cut the limit now (once per cool-down: the requests in flight when
 * the apiserver started refusing are all refused together) and remember where it happened.
 */
export function onOverload(s: LimiterState, nowMs: number, meanLatencyMs: number, retryAfterMs = 0): LimiterState {
  if (nowMs < s.cooldownUntilMs) return s;
  const limit = Math.max(s.min, Math.floor(s.limit * BACKOFF));
  return {
    ...s,
    limit,
    ceiling: s.limit > s.min ? s.limit - 1 : s.min,
    best: undefined, // measured before the apiserver pushed back: no level to return to
    cleanWindows: 0,
    phase: 'hold',
    base: undefined,
    holds: 0,
    holdFor: HOLD_WINDOWS,
    nextProbe: 'up',
    cooldownUntilMs: nowMs + Math.max(MIN_COOLDOWN_MS, 2 * meanLatencyMs, retryAfterMs),
    cuts: s.cuts + 1,
  };
}
