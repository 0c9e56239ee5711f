import type { Progress } from '../cluster/rewrite';
import { parseProgressLine } from '../ui/progress';

/**
 * A node's stderr, as it streams in over SSH: the run there has `--progress-json`, so its
 * rewrite reports come as `@k8s-encrypt:progress {...}` lines, handed on parsed; every other line
 * (a warning, a crash) is handed on as text, and the last few are kept for an error message.
 * Chunks split lines anywhere; a line is complete at its newline (or at the end). A node's text
 * reaches the operator's terminal, so control characters (C0 and C1 but tab: escape sequences
 * could move the cursor or rewrite lines) are dropped, and a line that never ends is handed on
 * cut every `MAX_LINE` characters rather than held without bound.
 */
interface StderrRelay {
  push(chunk: string): void;
  /** Flushes a last line without a newline. */
  end(): void;
  /** The last `n` text lines (progress lines left out). */
  tail(n?: number): string;
}

export const MAX_LINE = 64 * 1024;
export const CUT_MARK = ' [line cut]';

/** `text` without C0/C1 control characters, tab (and newline, when `keepNewline`) kept. */
export const printable = (text: string, keepNewline = false) => text.replace(keepNewline ? /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g : /[\x00-\x08\x0a-\x1f\x7f-\x9f]/g, '');

export function stderrRelay(on: { progress?: (p: Progress) => void; text?: (line: string) => void }): StderrRelay {
  let partial = '';
  const texts: string[] = [];
  const take = (raw: string) => {
    const line = printable(raw.replace(/\r$/, ''));
    const p = parseProgressLine(line);
    if (p) return on.progress?.(p);
    if (!line.trim()) return;
    texts.push(line);
    if (texts.length > 20) texts.shift();
    on.text?.(line);
  };
  return {
    push(chunk) {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop()!;
      for (const l of parts) take(l);
      while (partial.length > MAX_LINE) {
        take(partial.slice(0, MAX_LINE) + CUT_MARK);
        partial = partial.slice(MAX_LINE);
      }
    },
    end() {
      if (partial) take(partial);
      partial = '';
    },
    tail: (n = 5) => texts.slice(-n).join('\n'),
  };
}
