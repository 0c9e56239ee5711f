import cliProgress from 'cli-progress';
import type { Progress } from '../cluster/rewrite';
import type { Output } from './output';

interface ProgressReporter {
  update(p: Progress): void;
  /** Ends the bar (or prints a last line); safe to call twice. */
  stop(): void;
}

interface ProgressReporterOptions {
  /** Plain-line period without a TTY (default 5 s). */
  intervalMs?: number;
  now?: () => number;
}

/** `12.3k`, `950`: compact counts for one status line. */
function fmtCount(n: number): string {
  return n >= 10_000 ? `${(n / 1000).toFixed(1)}k` : String(n);
}

function fmtDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  const m = Math.floor(s / 60);
  const sec = Math.round(s % 60);
  return m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** One plain progress line (also used by the non-TTY reporter). */
export function progressLine(p: Progress): string {
  const rate = p.elapsedSeconds > 0 ? p.done / p.elapsedSeconds : 0;
  const of = p.total !== undefined ? `/${p.total}` : '';
  const eta = p.total !== undefined && rate > 0 ? `, ETA ${fmtDuration((p.total - p.done) / rate)}` : '';
  const extra = [
    p.deleted ? `${p.deleted} deleted` : '',
    p.conflictsRetried ? `${p.conflictsRetried} conflicts retried` : '',
    p.failed ? `${p.failed} failed` : '',
  ]
    .filter(Boolean)
    .join(', ');
  return (
    `${p.resource}: ${p.done}${of} done (${fmtCount(p.rewritten)} rewritten, ${fmtCount(p.unchanged)} unchanged` +
    `${extra ? `, ${extra}` : ''}), ${Math.round(rate)}/s, ${p.concurrency} in flight${eta}`
  );
}

/** Marks a stderr line that carries one progress report as JSON (`--progress-json`). */
export const PROGRESS_JSON_PREFIX = '@k8s-encrypt:progress ';

const PROGRESS_NUMBERS = ['done', 'rewritten', 'unchanged', 'deleted', 'failed', 'conflictsRetried', 'elapsedSeconds', 'concurrency'] as const;

/** The line `--progress-json` writes for one report (no newline). */
export const progressJsonLine = (p: Progress) => `${PROGRESS_JSON_PREFIX}${JSON.stringify(p)}`;

/** The report a `--progress-json` line carries; undefined for any other line (or a bad one). */
export function parseProgressLine(line: string): Progress | undefined {
  if (!line.startsWith(PROGRESS_JSON_PREFIX)) return undefined;
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(line.slice(PROGRESS_JSON_PREFIX.length));
  } catch {
    return undefined;
  }
  if (!v || typeof v !== 'object' || typeof v.resource !== 'string') return undefined;
  if (!PROGRESS_NUMBERS.every((k) => typeof v[k] === 'number' && Number.isFinite(v[k]))) return undefined;
  if (v.total !== undefined && typeof v.total !== 'number') return undefined;
  const p: Progress = { resource: v.resource } as Progress;
  for (const k of PROGRESS_NUMBERS) p[k] = v[k] as number;
  if (typeof v.total === 'number') p.total = v.total;
  return p;
}

/** A line at most every `every` ms (the first one at once if `eager`), and the latest at the end. */
function throttledLines(out: Output, every: number, now: () => number, eager: boolean, render: (p: Progress) => string): ProgressReporter {
  let last = eager ? -Infinity : now();
  let latest: Progress | undefined;
  let printed: Progress | undefined;
  return {
    update(p) {
      latest = p;
      if (now() - last >= every) {
        last = now();
        printed = p;
        out.stderr.write(`${render(p)}\n`);
      }
    },
    stop() {
      if (latest && latest !== printed) out.stderr.write(`${render(latest)}\n`);
      printed = latest;
    },
  };
}

/**
 * Rewrite progress on stderr (all resources of the run on one line, with the requests in flight
 * the engine allows now): a cli-progress bar with done/total, rate and ETA on a terminal,
 * a plain line every few seconds otherwise, nothing with --json. With `--progress-json` (a node
 * run by the fleet orchestrator) a JSON line at most every second, even with --json: stdout keeps
 * the one result document.
 */
export function createProgressReporter(out: Output, opts: ProgressReporterOptions = {}): ProgressReporter {
  const now = opts.now ?? Date.now;
  if (out.progressJson) return throttledLines(out, opts.intervalMs ?? 1000, now, true, progressJsonLine);
  if (out.json) return { update() {}, stop() {} };
  if (!out.interactive) return throttledLines(out, opts.intervalMs ?? 5000, now, false, progressLine);
  let bar: cliProgress.SingleBar | undefined;
  let resource: string | undefined;
  let lastRender = 0;
  const finishBar = () => {
    bar?.stop();
    bar = undefined;
  };
  return {
    update(p) {
      if (p.resource !== resource) {
        finishBar();
        resource = p.resource;
      }
      const t = now();
      // Redraw at most ~10 times a second: the engine reports every object.
      if (bar && t - lastRender < 100 && p.done !== p.total) return;
      lastRender = t;
      const rate = p.elapsedSeconds > 0 ? p.done / p.elapsedSeconds : 0;
      const payload = {
        resource: p.resource,
        rate: Math.round(rate),
        detail: [p.deleted ? `${p.deleted} deleted` : '', p.failed ? out.c.red(`${p.failed} failed`) : '']
          .filter(Boolean)
          .join(' '),
        inFlight: p.concurrency,
        etaText: p.total !== undefined && rate > 0 ? fmtDuration((p.total - p.done) / rate) : '?',
        totalText: p.total !== undefined ? String(p.total) : '?',
      };
      if (!bar) {
        bar = new cliProgress.SingleBar(
          {
            stream: out.stderr as NodeJS.WriteStream,
            format: '{resource} [{bar}] {value}/{totalText} | {rate}/s | {inFlight} in flight | ETA {etaText} {detail}',
            hideCursor: true,
            clearOnComplete: false,
            barsize: 30,
            fps: 10,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(Math.max(p.total ?? 0, p.done), p.done, payload);
      } else {
        if (p.total !== undefined) bar.setTotal(Math.max(p.total, p.done));
        else bar.setTotal(Math.max(p.done, 1));
        bar.update(p.done, payload);
      }
    },
    stop: finishBar,
  };
}
