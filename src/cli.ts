import { Command, CommanderError, Option } from 'commander';
import { commands } from './commands/index';
import type { Wrap } from './commands/types';
import type { Context, GlobalOptions } from './context';
import { resolvePaths } from './paths';
import { CliError, ExitCode, exitCodeNames } from './ui/errors';
import { Output, wantColor } from './ui/output';
import { unsupportedNode, VERSION } from './version';
import { silenceIpServernameWarning } from './ui/warnings';
import { boundYoungGeneration, saveMemory } from './heap';
import { CLI_NAME, invokedAs, KUBECTL_PLUGIN_NAME } from './runtime/assets';

boundYoungGeneration();
saveMemory();
silenceIpServernameWarning();

const controller = new AbortController();
let interrupted = 0;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    interrupted++;
    if (interrupted > 1) process.exit(ExitCode.Interrupted);
    process.stderr.write(`\n${sig}: stopping at the next safe point (again to quit now)\n`);
    controller.abort(new CliError(`interrupted by ${sig}`, { exitCode: ExitCode.Interrupted }));
  });
}

function makeOutput(g: Partial<GlobalOptions>): Output {
  const isTTY = Boolean(process.stderr.isTTY);
  return new Output({
    json: Boolean(g.json),
    verbose: Boolean(g.verbose),
    color: wantColor(g.color, process.env, isTTY),
    interactive: isTTY && process.env.CI !== 'true',
    progressJson: Boolean(g.progressJson),
  });
}

function report(out: Output, err: unknown): number {
  const e =
    err instanceof CliError
      ? err
      : new CliError(`internal error: ${(err as Error)?.message ?? String(err)}`, {
          exitCode: ExitCode.Internal,
          hint: 're-run with --verbose for the stack trace, and report it',
          cause: err,
        });
  if (out.json) {
    const warnings = out.takeWarnings();
    const body = {
      ok: false,
      error: {
        message: e.message,
        ...(e.hint ? { hint: e.hint } : {}),
        exitCode: e.exitCode,
        kind: exitCodeNames[e.exitCode] ?? 'error',
        ...(e.details ? { details: e.details } : {}),
      },
      ...(warnings.length ? { warnings } : {}),
    };
    out.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
  } else {
    const hint = e.hint ? out.c.dim(` (${e.hint})`) : '';
    out.stderr.write(`${out.c.red('error:')} ${e.message}${hint}\n`);
    if (out.verbose) {
      const stack = err instanceof CliError ? (err.cause as Error | undefined)?.stack : (err as Error)?.stack;
      if (stack) out.stderr.write(`${out.c.dim(stack)}\n`);
    }
  }
  return e.exitCode;
}

/** Options every node command takes, accepted before the subcommand too (like --root): commander
 * parses them on the program wherever they stand, and they are handed to the subcommand here. */
const NODE_OPTIONS = ['nodeName', 'manifest', 'config'] as const;

function takeNodeOptions(program: Command, cmd: Command): void {
  for (const key of NODE_OPTIONS) {
    const value = program.getOptionValue(key) as string | undefined;
    if (value === undefined) continue;
    const flag = program.options.find((o) => o.attributeName() === key)!.long!;
    if (!cmd.options.some((o) => o.attributeName() === key)) {
      throw new CliError(`${cmd.name()} takes no ${flag}`, { hint: `see: k8s-encrypt ${cmd.name()} --help`, exitCode: ExitCode.Usage });
    }
    cmd.setOptionValueWithSource(key, value, 'cli');
  }
}

export function buildProgram(): Command {
  // Run as the kubectl plugin (`kubectl encrypt ...`) it is the same program under kubectl's name.
  const program = new Command(invokedAs() === KUBECTL_PLUGIN_NAME ? 'kubectl encrypt' : CLI_NAME)
    .description('Turn on, rotate, verify and undo Kubernetes encryption at rest on kubeadm control planes')
    .version(VERSION, '-V, --version')
    .option('--json', 'print the result (or the error) as JSON on stdout', false)
    .option('-v, --verbose', 'more detail, stack traces on errors', false)
    .option('--no-color', 'no colour (NO_COLOR is honoured too)')
    // What the fleet orchestrator passes to each node's run, to relay the rewrite's progress.
    .addOption(new Option('--progress-json', 'progress of the rewrite as JSON lines on stderr').hideHelp())
    .option('-y, --yes', 'answer yes to confirmations (needed without a terminal)', false)
    .addOption(new Option('--root <dir>', 'prefix for every default kubeadm path').default('/'))
    .option('--kubeconfig <path>', 'kubeconfig (default ROOT/etc/kubernetes/admin.conf)')
    .option('--state-dir <dir>', 'journals and checkpoints (default ROOT/var/lib/k8s-encrypt)')
    .option('--backup-dir <dir>', 'backups, never inside the manifests dir (default STATE_DIR/backups)')
    .option('--node-name <name>', "this control plane's node name, for the commands that take it")
    .option('--manifest <path>', 'kube-apiserver static pod manifest, for the commands that take it')
    .option('--config <path>', 'the EncryptionConfiguration, for the commands that take it')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  const wrap: Wrap = (fn) =>
    async (...commanderArgs: unknown[]) => {
      const cmd = commanderArgs[commanderArgs.length - 1] as Command;
      const out = makeOutput(cmd.optsWithGlobals() as GlobalOptions);
      try {
        takeNodeOptions(program, cmd);
      } catch (err) {
        process.exitCode = report(out, err);
        return;
      }
      const all = cmd.optsWithGlobals() as GlobalOptions & Record<string, unknown>;
      const ctx: Context = {
        out,
        opts: all,
        paths: resolvePaths({
          root: all.root,
          kubeconfig: all.kubeconfig,
          stateDir: all.stateDir,
          backupDir: all.backupDir,
          manifest: typeof all.manifest === 'string' ? all.manifest : undefined,
          config: typeof all.config === 'string' ? all.config : undefined,
        }),
        env: process.env,
        now: () => new Date(),
        stdinIsTTY: Boolean(process.stdin.isTTY),
        stdin: process.stdin,
        signal: controller.signal,
      };
      try {
        await fn(ctx, cmd.opts() as never, cmd.args);
        process.exitCode = out.exitCode;
      } catch (err) {
        process.exitCode = report(out, err);
      }
    };

  for (const c of commands) c.register(program, wrap);
  // Every level, nested subcommands included, reports usage errors with exit 2 through main().
  const harden = (cmd: Command): void => {
    for (const sub of cmd.commands) {
      sub.exitOverride().showHelpAfterError('(run with --help for usage)');
      harden(sub);
    }
  };
  harden(program);
  return program;
}

async function main(argv: string[]): Promise<void> {
  const old = unsupportedNode(process.versions.node);
  if (old) {
    process.exitCode = report(makeOutput({ json: argv.includes('--json') }), new CliError(old.message, { hint: old.hint, exitCode: ExitCode.Usage }));
    return;
  }
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version') {
        process.exitCode = 0;
        return;
      }
      // Commander already printed its message on stderr; with --json the error goes to stdout too.
      if (argv.includes('--json')) {
        const message = err.message.replace(/^error: /, '');
        process.stdout.write(
          `${JSON.stringify({ ok: false, error: { message, exitCode: ExitCode.Usage, kind: 'usage' } }, null, 2)}\n`,
        );
      }
      process.exitCode = ExitCode.Usage;
      return;
    }
    process.exitCode = report(makeOutput({ json: argv.includes('--json') }), err);
  }
}

void main(process.argv);
