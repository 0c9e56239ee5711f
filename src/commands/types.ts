import { InvalidArgumentError, type Command } from 'commander';
import type { Context } from '../context';

/**
 * Runs a command action with a Context built from the global and the command's options.
 * Errors thrown inside are printed and mapped to exit codes by src/cli.ts.
 */
export type Wrap = <O extends object>(
  fn: (ctx: Context, opts: O, args: string[]) => Promise<void>,
) => (...commanderArgs: unknown[]) => Promise<void>;

export interface CommandModule {
  register(program: Command, wrap: Wrap): void;
}

/** Commander option parser for positive integers with a clear error. */
export function intOption(name: string, min = 1) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) {
      throw new InvalidArgumentError(`${name} must be a whole number >= ${min}, got "${v}"`);
    }
    return n;
  };
}
