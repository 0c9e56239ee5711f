import { randomBytes } from 'node:crypto';
import { readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { CliError, ExitCode, fsError } from '../ui/errors';
import { compactTimestamp, ensurePrivateDir, PRIVATE_DIR_MODE, SECRET_FILE_MODE, writeFileAtomic } from './atomic';

/**
 * One journal per operation (`init`, `rotate-key`, `disable`) in the state directory, so that a
 * re-run after Ctrl-C, kill -9 or a reboot continues at the first unfinished step instead of
 * starting over (and, for init, instead of generating a second key).
 *
 * What goes in: the plan's inputs and each finished step's outputs (backup paths, config sha256,
 * when the manifest changed). What never goes in: key material. The key lives only in the config
 * file; a resumed run reads it back from there. `forbidden` values are checked on every write.
 */

export type JournalStatus =
  /** Steps are being applied (or the run was interrupted while they were). */
  | 'running'
  /** Paused on purpose until something outside this node happens (other control planes). */
  | 'waiting'
  | 'done'
  /** The change was undone (e.g. the apiserver did not come back); a re-run starts over. */
  | 'rolled-back';

export type JsonValue = string | number | boolean | null | JsonValue[] | { [k: string]: JsonValue };
export type JsonObject = { [k: string]: JsonValue };

export interface JournalStep {
  name: string;
  completedAt: string;
  output: JsonObject;
}

export interface JournalRecord<I extends object> {
  version: 1;
  operation: string;
  id: string;
  status: JournalStatus;
  createdAt: string;
  updatedAt: string;
  inputs: I;
  steps: JournalStep[];
  /** Why the journal is waiting / was rolled back, for the next run's message. */
  message?: string;
}

export interface JournalOptions {
  now?: () => Date;
  /** Strings that must never reach the file (the key): a write containing one throws. */
  forbidden?: readonly string[];
}

const JOURNAL_DIR = 'journals';

export function journalPath(stateDir: string, operation: string): string {
  return join(stateDir, JOURNAL_DIR, `${operation}.json`);
}

export const isFinished = (s: JournalStatus) => s === 'done' || s === 'rolled-back';

export class Journal<I extends object = JsonObject> {
  private constructor(
    readonly path: string,
    private rec: JournalRecord<I>,
    private readonly opts: JournalOptions,
  ) {}

  /** The operation's current journal, or undefined when there is none. */
  static async load<I extends object>(
    stateDir: string,
    operation: string,
    opts: JournalOptions = {},
  ): Promise<Journal<I> | undefined> {
    const path = journalPath(stateDir, operation);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw fsError('read journal', path, err);
    }
    let rec: JournalRecord<I>;
    try {
      rec = JSON.parse(text) as JournalRecord<I>;
    } catch (err) {
      throw new CliError(`the journal ${path} is not valid JSON`, {
        exitCode: ExitCode.Usage,
        hint: 'it was damaged outside k8s-encrypt; move it away to start over (check the cluster state first with "k8s-encrypt status")',
        cause: err,
      });
    }
    if (rec?.version !== 1 || rec.operation !== operation || !Array.isArray(rec.steps)) {
      throw new CliError(`the journal ${path} is not a k8s-encrypt ${operation} journal (version 1)`, {
        exitCode: ExitCode.Usage,
        hint: 'move it away to start over',
      });
    }
    return new Journal(path, rec, opts);
  }

  /**
   * Starts a new journal. A finished one (done / rolled back) is archived next to it first; an
   * unfinished one is a refusal, since starting over would lose its progress.
   */
  static async start<I extends object>(
    stateDir: string,
    operation: string,
    inputs: I,
    opts: JournalOptions = {},
  ): Promise<Journal<I>> {
    const existing = await Journal.load<I>(stateDir, operation, opts);
    if (existing && !isFinished(existing.status)) {
      throw new CliError(`an unfinished ${operation} (${existing.id}) is recorded in ${existing.path}`, {
        exitCode: ExitCode.Refused,
        hint: `re-run "k8s-encrypt ${operation}" without new options to continue it`,
      });
    }
    await existing?.archive();
    const now = (opts.now ?? (() => new Date()))();
    const rec: JournalRecord<I> = {
      version: 1,
      operation,
      id: `${operation}-${compactTimestamp(now)}-${randomBytes(3).toString('hex')}`,
      status: 'running',
      createdAt: now.toISOString(),
      updatedAt: now.toISOString(),
      inputs,
      steps: [],
    };
    const j = new Journal(journalPath(stateDir, operation), rec, opts);
    await ensurePrivateDir(join(stateDir, JOURNAL_DIR), 'journal directory');
    await j.save();
    return j;
  }

  get id(): string {
    return this.rec.id;
  }
  get status(): JournalStatus {
    return this.rec.status;
  }
  get inputs(): I {
    return this.rec.inputs;
  }
  get message(): string | undefined {
    return this.rec.message;
  }
  get steps(): readonly JournalStep[] {
    return this.rec.steps;
  }
  /** A copy of the whole record (for --json and tests). */
  get record(): JournalRecord<I> {
    return structuredClone(this.rec);
  }

  done(step: string): boolean {
    return this.rec.steps.some((s) => s.name === step);
  }

  output<T extends JsonObject = JsonObject>(step: string): T | undefined {
    return this.rec.steps.find((s) => s.name === step)?.output as T | undefined;
  }

  /** The first step of `order` not yet completed (undefined: all done). */
  firstUnfinished(order: readonly string[]): string | undefined {
    return order.find((s) => !this.done(s));
  }

  /** Records a finished step with its outputs (replacing an earlier record of the same step). */
  async complete(step: string, output: JsonObject = {}): Promise<void> {
    const completedAt = this.now().toISOString();
    this.rec.steps = [...this.rec.steps.filter((s) => s.name !== step), { name: step, completedAt, output }];
    await this.save();
  }

  /** Forgets completed steps so they run again (after a rollback undid them). */
  async forget(steps: readonly string[]): Promise<void> {
    this.rec.steps = this.rec.steps.filter((s) => !steps.includes(s.name));
    await this.save();
  }

  /** Runs a step once: a step already recorded returns its recorded output without running. */
  async step<T extends JsonObject>(name: string, fn: () => Promise<T>): Promise<T> {
    if (this.done(name)) return this.output<T>(name)!;
    const out = await fn();
    await this.complete(name, out);
    return out;
  }

  async setStatus(status: JournalStatus, message?: string): Promise<void> {
    this.rec.status = status;
    if (message === undefined) delete this.rec.message;
    else this.rec.message = message;
    await this.save();
  }

  /** Merges more inputs (learned during preflight) into the record. */
  async updateInputs(patch: Partial<I>): Promise<void> {
    this.rec.inputs = { ...this.rec.inputs, ...patch };
    await this.save();
  }

  /** Moves the journal aside (`<operation>.<id>.json`) so that a new one can start. */
  async archive(): Promise<string> {
    const target = this.path.replace(/\.json$/, `.${this.rec.id}.json`);
    try {
      await rename(this.path, target);
    } catch (err) {
      throw fsError('archive journal', this.path, err);
    }
    return target;
  }

  private now(): Date {
    return (this.opts.now ?? (() => new Date()))();
  }

  private async save(): Promise<void> {
    this.rec.updatedAt = this.now().toISOString();
    const text = `${JSON.stringify(this.rec, null, 2)}\n`;
    for (const f of this.opts.forbidden ?? []) {
      if (f && text.includes(f)) {
        // A programming error, caught before the key reaches the disk.
        throw new CliError(`refusing to write key material into the journal ${this.path}`, {
          exitCode: ExitCode.Internal,
          hint: 'this is a bug in k8s-encrypt; please report it',
        });
      }
    }
    await writeFileAtomic(this.path, text, { mode: SECRET_FILE_MODE, dirMode: PRIVATE_DIR_MODE });
  }
}
