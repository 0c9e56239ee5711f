import type { Progress } from '../cluster/rewrite';
import { parseProgressLine } from '../ui/progress';

/**
 * A node's stderr, as it streams in over SSH: the run there has `--progress-json`, so its
 * rewrite reports come as `@k8s-encrypt:progress {...}` lines, handed on parsed; every other line
 * (a warning, a crash) is handed on as text, and the last few are kept for an error message.
 * Chunks split lines anywhere; a line is complete at its newline (or at the end).
 */
export interface StderrRelay {
  push(chunk: string): void;
  /** Flushes a last line without a newline. */
  end(): void;
  /** The last `n` text lines (progress lines left out). */
  tail(n?: number): string;
}

export function stderrRelay(on: { progress?: (p: Progress) => void; text?: (line: string) => void }): StderrRelay {
  let partial = '';
  const texts: string[] = [];
  const take = (raw: string) => {
    const line = raw.replace(/\r$/, '');
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
    },
    end() {
      if (partial) take(partial);
      partial = '';
    },
    tail: (n = 5) => texts.slice(-n).join('\n'),
  };
}
