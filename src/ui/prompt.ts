import { createInterface } from 'node:readline/promises';
import type { Context } from '../context';
import { CliError, ExitCode } from './errors';

/**
 * Asks before a destructive step. `--yes` answers for the operator; without a terminal and
 * without `--yes` it fails at once (exit 2) rather than hang a CI job.
 */
export async function confirm(ctx: Context, question: string): Promise<void> {
  if (ctx.opts.yes) return;
  if (!ctx.stdinIsTTY || ctx.opts.json) {
    throw new CliError(`confirmation needed: ${question}`, {
      hint: 're-run with --yes to proceed without a prompt',
      exitCode: ExitCode.Usage,
    });
  }
  const rl = createInterface({ input: ctx.stdin, output: ctx.out.stderr });
  try {
    const answer = (await rl.question(`${question} [y/N] `)).trim().toLowerCase();
    if (answer !== 'y' && answer !== 'yes') {
      throw new CliError('aborted: nothing was changed', { exitCode: ExitCode.Refused });
    }
  } finally {
    rl.close();
  }
}
