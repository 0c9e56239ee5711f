import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Progress } from '../../src/cluster/rewrite';
import { Output } from '../../src/ui/output';
import { createProgressReporter, progressLine } from '../../src/ui/progress';

const p = (o: Partial<Progress>): Progress => ({
  resource: 'secrets',
  done: 0,
  concurrency: 32,
  rewritten: 0,
  unchanged: 0,
  deleted: 0,
  failed: 0,
  conflictsRetried: 0,
  elapsedSeconds: 0,
  ...o,
});

function output(o: { json?: boolean; interactive?: boolean }) {
  // cli-progress draws only on a terminal: this stream says it is one.
  const stderr = Object.assign(new PassThrough(), { isTTY: true, columns: 120 });
  let text = '';
  stderr.on('data', (c) => (text += c));
  const out = new Output({ json: Boolean(o.json), verbose: false, color: false, interactive: Boolean(o.interactive), stderr, stdout: new PassThrough() });
  return { out, text: () => text };
}

describe('progress', () => {
  it.each([
    [p({ done: 500, total: 1000, rewritten: 480, unchanged: 20, elapsedSeconds: 2 }), 'secrets: 500/1000 done (480 rewritten, 20 unchanged), 250/s, 32 in flight, ETA 2s'],
    [p({ done: 30, rewritten: 25, unchanged: 0, deleted: 3, failed: 2, elapsedSeconds: 1 }), 'secrets: 30 done (25 rewritten, 0 unchanged, 3 deleted, 2 failed), 30/s, 32 in flight'],
    [p({ resource: 'secrets, configmaps', done: 20_000, total: 110_000, concurrency: 96, rewritten: 20_000, elapsedSeconds: 20 }), 'secrets, configmaps: 20000/110000 done (20.0k rewritten, 0 unchanged), 1000/s, 96 in flight, ETA 1m30s'],
  ])('line %#', (progress, want) => expect(progressLine(progress)).toBe(want));

  it('without a terminal: a plain line every interval and a last one at the end', () => {
    let now = 0;
    const { out, text } = output({});
    const r = createProgressReporter(out, { intervalMs: 5000, now: () => now });
    for (let i = 1; i <= 12; i++) {
      now = i * 1000;
      r.update(p({ done: i, rewritten: i, elapsedSeconds: i }));
    }
    r.stop();
    const lines = text().trim().split('\n');
    expect(lines).toEqual([
      'secrets: 5 done (5 rewritten, 0 unchanged), 1/s, 32 in flight',
      'secrets: 10 done (10 rewritten, 0 unchanged), 1/s, 32 in flight',
      'secrets: 12 done (12 rewritten, 0 unchanged), 1/s, 32 in flight',
    ]);
  });

  it('with --json: nothing', () => {
    const { out, text } = output({ json: true, interactive: true });
    const r = createProgressReporter(out, { now: () => 10_000 });
    r.update(p({ done: 1, elapsedSeconds: 1 }));
    r.stop();
    expect(text()).toBe('');
  });

  it('on a terminal: a bar with done/total and rate', () => {
    const { out, text } = output({ interactive: true });
    let now = 0;
    const r = createProgressReporter(out, { now: () => (now += 200) });
    r.update(p({ done: 10, total: 40, rewritten: 10, elapsedSeconds: 1 }));
    r.update(p({ done: 40, total: 40, rewritten: 40, elapsedSeconds: 2 }));
    r.stop();
    expect(text()).toMatch(/secrets \[.*\] 40\/40 \| 20\/s \| 32 in flight/);
  });
});
