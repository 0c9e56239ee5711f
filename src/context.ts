import type { Output } from './ui/output';
import { type PathOverrides, type Paths } from './paths';

/** Global options every command receives (parsed once in src/cli.ts). */
export interface GlobalOptions extends PathOverrides {
  json: boolean;
  verbose: boolean;
  color: boolean;
  yes: boolean;
  /** Progress as JSON lines on stderr (a node run by the fleet orchestrator). */
  progressJson?: boolean;
}

/**
 * What a command needs from the outside world, passed in so that tests can run commands
 * in-process with temp paths, a fake clock and captured output.
 */
export interface Context {
  out: Output;
  opts: GlobalOptions;
  paths: Paths;
  env: NodeJS.ProcessEnv;
  now: () => Date;
  /** Standard input is a terminal (prompts are possible). */
  stdinIsTTY: boolean;
  stdin: NodeJS.ReadableStream;
  /** Aborted on SIGINT/SIGTERM: long executors stop at a safe point and keep their journal. */
  signal: AbortSignal;
}

