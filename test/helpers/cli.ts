import { execa, type Result } from 'execa';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/k8s-encrypt.js', import.meta.url));

/**
 * The CLI under test: `K8S_ENCRYPT_BIN` (e.g. dist/exe/k8s-encrypt-linux-x64, the single
 * executable), or by default this Node.js running bin/k8s-encrypt.js on the built dist/.
 */
export const EXE = process.env.K8S_ENCRYPT_BIN || undefined;

/**
 * The Node.js that runs bin/k8s-encrypt.js when there is no EXE: `K8S_ENCRYPT_NODE` (CI runs the
 * smoke set with the oldest Node.js the package supports, scripts/fetch-node.mjs), or this one.
 */
export const NODE = process.env.K8S_ENCRYPT_NODE || process.execPath;

/** PATH without any directory that holds a `node`: the single executable must not need one. */
export function pathWithoutNode(path = process.env.PATH ?? ''): string {
  const hasNode = (dir: string) => {
    try {
      accessSync(join(dir, 'node'), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  return path.split(delimiter).filter((d) => d && !hasNode(d)).join(delimiter);
}

/** The command and arguments that run the CLI with `args`, for tests that spawn it themselves. */
export function cliCommand(args: string[]): { file: string; args: string[]; env: Record<string, string> } {
  const base = { NO_COLOR: '1', CI: 'true' };
  if (EXE) return { file: EXE, args, env: { ...base, PATH: pathWithoutNode() } };
  return { file: NODE, args: [BIN, ...args], env: base };
}

export interface RunOptions {
  input?: string;
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
}

/** Runs the built CLI as a child process, the way an operator or a CI job would. */
export async function runCli(args: string[], opts: RunOptions = {}): Promise<Result> {
  const c = cliCommand(args);
  return execa(c.file, c.args, {
    reject: false,
    input: opts.input ?? '',
    cwd: opts.cwd,
    timeout: opts.timeoutMs ?? 120_000,
    env: { ...c.env, ...opts.env },
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
