import { Chalk, type ChalkInstance } from 'chalk';

interface OutputOptions {
  json: boolean;
  verbose: boolean;
  color: boolean;
  /** stderr is a terminal: spinners and progress bars are allowed. */
  interactive: boolean;
  /** Progress as JSON lines on stderr, for the fleet orchestrator (`--progress-json`). */
  progressJson?: boolean;
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
}

/**
 * Results go to stdout (human text, or one JSON document with --json); everything else (progress,
 * warnings, chatter) goes to stderr, so `--json | jq` always sees clean JSON.
 */
export class Output {
  readonly json: boolean;
  readonly verbose: boolean;
  readonly interactive: boolean;
  readonly progressJson: boolean;
  readonly c: ChalkInstance;
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  private readonly warnings: string[] = [];
  private readonly said = new Set<string>();
  /** A command whose result is itself a failure verdict (validate-config, status --exit-code)
   * sets this; src/cli.ts turns it into the process exit code. */
  exitCode = 0;

  constructor(opts: OutputOptions) {
    this.json = opts.json;
    this.verbose = opts.verbose;
    this.interactive = opts.interactive && !opts.json;
    this.progressJson = Boolean(opts.progressJson);
    this.c = new Chalk({ level: opts.color && !opts.json ? 1 : 0 });
    this.stdout = opts.stdout ?? process.stdout;
    this.stderr = opts.stderr ?? process.stderr;
  }

  /** Progress and chatter: stderr, suppressed with --json. */
  info(msg: string): void {
    if (!this.json) this.stderr.write(`${msg}\n`);
  }

  step(msg: string): void {
    this.info(`${this.c.cyan('›')} ${msg}`);
  }

  success(msg: string): void {
    this.info(`${this.c.green('✓')} ${msg}`);
  }

  debug(msg: string): void {
    if (this.verbose && !this.json) this.stderr.write(`${this.c.dim(msg)}\n`);
  }

  /**
   * Warnings go to stderr and are also collected into the --json result. One already said in
   * this run is not said again (each stage gate re-discovers the control planes, and meets the
   * same 403 as the first discovery).
   */
  warn(msg: string): void {
    if (this.said.has(msg)) return;
    this.said.add(msg);
    this.warnings.push(msg);
    if (!this.json) this.stderr.write(`${this.c.yellow('warning:')} ${msg}\n`);
  }

  takeWarnings(): string[] {
    return this.warnings.splice(0);
  }

  /** The command's result: JSON on stdout with --json, otherwise the human rendering on stdout. */
  result(data: unknown, human?: (c: ChalkInstance) => string): void {
    if (this.json) {
      const warnings = this.takeWarnings();
      const body =
        data && typeof data === 'object' && !Array.isArray(data)
          ? { ok: true, ...(data as object), ...(warnings.length ? { warnings } : {}) }
          : data;
      this.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
    } else if (human) {
      const text = human(this.c);
      if (text) this.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    }
  }
}

/** chalk does not honour NO_COLOR on its own; neither colour nor spinners without a TTY. */
export function wantColor(flag: boolean | undefined, env: NodeJS.ProcessEnv, isTTY: boolean): boolean {
  if (flag === false) return false;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '0') return true;
  return isTTY;
}
