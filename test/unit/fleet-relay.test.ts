import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Progress } from '../../src/cluster/rewrite';
import { CUT_MARK, MAX_LINE, printable, stderrRelay } from '../../src/fleet/relay';
import { Output } from '../../src/ui/output';
import { createProgressReporter, parseProgressLine, progressJsonLine, PROGRESS_JSON_PREFIX } from '../../src/ui/progress';

const p = (o: Partial<Progress> = {}): Progress => ({
  resource: 'secrets',
  done: 10,
  total: 40,
  rewritten: 9,
  unchanged: 1,
  deleted: 0,
  failed: 0,
  conflictsRetried: 0,
  elapsedSeconds: 0.5,
  concurrency: 64,
  ...o,
});

function output(o: { json?: boolean; progressJson?: boolean }) {
  const stderr = new PassThrough();
  let text = '';
  stderr.on('data', (c) => (text += c));
  const out = new Output({ json: Boolean(o.json), verbose: false, color: false, interactive: false, progressJson: Boolean(o.progressJson), stderr, stdout: new PassThrough() });
  return { out, text: () => text };
}

describe('--progress-json (a node run by the fleet orchestrator)', () => {
  it('writes a JSON line at once, then at most one a second, and the last one at the end, even with --json', () => {
    let now = 0;
    const { out, text } = output({ json: true, progressJson: true });
    const r = createProgressReporter(out, { now: () => now });
    for (let i = 1; i <= 25; i++) {
      now = i * 100;
      r.update(p({ done: i }));
    }
    r.stop();
    r.stop();
    const lines = text().trim().split('\n');
    expect(lines.every((l) => l.startsWith(PROGRESS_JSON_PREFIX))).toBe(true);
    expect(lines.map((l) => parseProgressLine(l)!.done)).toEqual([1, 11, 21, 25]);
  });

  it('round-trips a report, total or not', () => {
    expect(parseProgressLine(progressJsonLine(p()))).toEqual(p());
    const { total: _, ...noTotal } = p();
    expect(parseProgressLine(progressJsonLine(noTotal))).toEqual(noTotal);
  });

  it.each([
    ['a warning', 'warning: something'],
    ['no prefix', JSON.stringify(p())],
    ['not JSON', `${PROGRESS_JSON_PREFIX}{"resource":`],
    ['a field missing', `${PROGRESS_JSON_PREFIX}${JSON.stringify({ ...p(), done: undefined })}`],
    ['a field of another type', `${PROGRESS_JSON_PREFIX}${JSON.stringify({ ...p(), concurrency: '64' })}`],
    ['a bad total', `${PROGRESS_JSON_PREFIX}${JSON.stringify({ ...p(), total: 'many' })}`],
    ['an array', `${PROGRESS_JSON_PREFIX}[1,2]`],
  ])('is not a progress line: %s', (_, line) => expect(parseProgressLine(line)).toBeUndefined());
});

describe('the relay of a node\'s stderr', () => {
  it('hands on progress lines parsed and every other line as text, whatever the chunks split', () => {
    const got: Array<['progress', number] | ['text', string]> = [];
    const relay = stderrRelay({ progress: (x) => got.push(['progress', x.done]), text: (t) => got.push(['text', t]) });
    const stream = `${progressJsonLine(p({ done: 1 }))}\nwarning: the node said something\r\n\n${progressJsonLine(p({ done: 2 }))}\n${PROGRESS_JSON_PREFIX}{broken\ncrashed without a newline`;
    // Every split point of the stream into two chunks, then one byte at a time.
    for (const chunks of [[stream], [stream.slice(0, 7), stream.slice(7)], [...stream]]) {
      got.length = 0;
      const r = stderrRelay({ progress: (x) => got.push(['progress', x.done]), text: (t) => got.push(['text', t]) });
      for (const c of chunks) r.push(c);
      r.end();
      expect(got).toEqual([
        ['progress', 1],
        ['text', 'warning: the node said something'],
        ['progress', 2],
        ['text', `${PROGRESS_JSON_PREFIX}{broken`],
        ['text', 'crashed without a newline'],
      ]);
      expect(r.tail(2)).toBe(`${PROGRESS_JSON_PREFIX}{broken\ncrashed without a newline`);
    }
    relay.end();
    expect(relay.tail()).toBe('');
  });

  it('keeps only text lines in the tail for an error message', () => {
    const r = stderrRelay({});
    for (let i = 0; i < 30; i++) r.push(`line ${i}\n${progressJsonLine(p({ done: i }))}\n`);
    r.end();
    expect(r.tail()).toBe(['line 25', 'line 26', 'line 27', 'line 28', 'line 29'].join('\n'));
  });
});

describe('what a node\'s stderr may do to the operator\'s terminal and memory', () => {
  it('drops C0/C1 control characters but tab from relayed text and from the tail', () => {
    const got: string[] = [];
    const r = stderrRelay({ text: (t) => got.push(t) });
    r.push('\x1b[2J\x1b[Hwarning:\tclear\x07ed\x9b1A\rup\r\n\x00\x1b\n');
    r.end();
    expect(got).toEqual(['[2J[Hwarning:\tcleared1Aup']);
    expect(r.tail()).toBe('[2J[Hwarning:\tcleared1Aup');
  });

  it('hands on a line without a newline cut every MAX_LINE characters, marked, instead of holding it', () => {
    const got: string[] = [];
    const r = stderrRelay({ text: (t) => got.push(t) });
    for (let i = 0; i < 2 * MAX_LINE + 10; i += 1000) r.push('x'.repeat(1000));
    expect(got).toEqual(['x'.repeat(MAX_LINE) + CUT_MARK, 'x'.repeat(MAX_LINE) + CUT_MARK]);
    r.push('y\n');
    expect(got.length).toBe(3);
    expect(got[2]).toMatch(/^x+y$/);
    expect(got[2]!.length).toBeLessThanOrEqual(MAX_LINE + 1);
    r.end();
  });

  it('printable keeps newlines only when asked', () => {
    expect(printable('a\x1b]0;title\x07\nb\t\x85c')).toBe('a]0;titleb\tc');
    expect(printable('a\x1b]0;title\x07\nb\t\x85c', true)).toBe('a]0;title\nb\tc');
  });
});
