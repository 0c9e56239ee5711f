import { execa, type Result } from 'execa';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/k8s-encrypt.js', import.meta.url));

export interface RunOptions {
  input?: string;
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
}

/** Runs the built CLI as a child process, the way an operator or a CI job would. */
export async function runCli(args: string[], opts: RunOptions = {}): Promise<Result> {
  return execa(process.execPath, [BIN, ...args], {
    reject: false,
    input: opts.input ?? '',
    cwd: opts.cwd,
    timeout: opts.timeoutMs ?? 120_000,
    env: { NO_COLOR: '1', CI: 'true', ...opts.env },
  });
}

/** Parses the CLI's --json stdout, failing the test with the raw output when it is not JSON. */
export function jsonOf(r: Result): any {
  try {
    return JSON.parse(String(r.stdout));
  } catch {
    throw new Error(`stdout is not JSON (exit ${r.exitCode}):\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
}
