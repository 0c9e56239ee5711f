import { createHash } from 'node:crypto';
import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fsError } from '../ui/errors';
import { ensurePrivateDir, PRIVATE_DIR_MODE, SECRET_FILE_MODE, writeFileAtomic } from './atomic';

/** Where one resource's rewrite stands. Keys are `namespace/name` (or `name`), in list order. */
export interface ResourceCheckpoint {
  /** Every object whose key is <= this is done (rewritten, unchanged, deleted or failed). */
  doneThrough?: string;
  /** The continue token of the page that holds `doneThrough` (undefined: the first page). */
  pageContinue?: string;
  complete: boolean;
}

export interface CheckpointData {
  version: 1;
  runId: string;
  startedAt: string;
  updatedAt: string;
  resources: Record<string, ResourceCheckpoint>;
}

/** What the rewrite engine needs from a checkpoint: read it back, record progress, finish. */
export interface CheckpointStore {
  readonly runId: string;
  /** The saved state of this run id, or undefined (none, unreadable, or another run's). */
  load(): Promise<CheckpointData | undefined>;
  /** Records progress; writes to disk only when due (every N objects or T seconds). */
  record(data: CheckpointData, objectsDone: number): Promise<void>;
  /** Writes now (on interrupt and at the end of each resource). */
  flush(data: CheckpointData): Promise<void>;
  /** The run finished: the checkpoint is removed. */
  finish(): Promise<void>;
}

/**
 * A run id: same resources and same write key identity (the config's sha256, or the write
 * prefix) give the same id, so a resume after a different config change starts over.
 */
export function rewriteRunId(resources: readonly string[], identity: string): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ resources: [...resources].sort(), identity }));
  return h.digest('hex').slice(0, 16);
}

export const CHECKPOINT_FILE = 'rewrite-checkpoint.json';

export interface FileCheckpointOptions {
  stateDir: string;
  runId: string;
  /** Write at most every this many objects (default 500)... */
  everyObjects?: number;
  /** ...or every this many milliseconds (default 2000), whichever comes first. */
  everyMs?: number;
  now?: () => number;
  /** Told when a checkpoint of another run is found and ignored. */
  warn?: (msg: string) => void;
}

function isCheckpoint(x: unknown): x is CheckpointData {
  const c = x as CheckpointData;
  return (
    !!c &&
    c.version === 1 &&
    typeof c.runId === 'string' &&
    typeof c.resources === 'object' &&
    c.resources !== null &&
    Object.values(c.resources).every((r) => r && typeof r.complete === 'boolean')
  );
}

/** The checkpoint as one JSON file in the state directory (dir 0700, file 0600, atomic writes). */
export class FileCheckpointStore implements CheckpointStore {
  readonly runId: string;
  readonly path: string;
  private readonly everyObjects: number;
  private readonly everyMs: number;
  private readonly now: () => number;
  private readonly warn?: (msg: string) => void;
  private lastWriteAt = 0;
  private lastWriteObjects = 0;
  private writing: Promise<void> = Promise.resolve();

  constructor(o: FileCheckpointOptions) {
    this.runId = o.runId;
    this.path = join(o.stateDir, CHECKPOINT_FILE);
    this.everyObjects = o.everyObjects ?? 500;
    this.everyMs = o.everyMs ?? 2000;
    this.now = o.now ?? Date.now;
    this.warn = o.warn;
    this.lastWriteAt = this.now();
  }

  async load(): Promise<CheckpointData | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw fsError('read checkpoint', this.path, err);
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      this.warn?.(`ignoring the unreadable checkpoint ${this.path}; starting over`);
      return undefined;
    }
    if (!isCheckpoint(data)) {
      this.warn?.(`ignoring the checkpoint ${this.path}: not a rewrite checkpoint; starting over`);
      return undefined;
    }
    if (data.runId !== this.runId) {
      this.warn?.(
        `ignoring the checkpoint ${this.path}: it belongs to another run (other resources or another write key); starting over`,
      );
      return undefined;
    }
    return data;
  }

  async record(data: CheckpointData, objectsDone: number): Promise<void> {
    const due =
      objectsDone - this.lastWriteObjects >= this.everyObjects || this.now() - this.lastWriteAt >= this.everyMs;
    if (!due) return;
    this.lastWriteObjects = objectsDone;
    await this.flush(data);
  }

  flush(data: CheckpointData): Promise<void> {
    this.lastWriteAt = this.now();
    // Serialize writes so an older snapshot never lands after a newer one.
    const text = `${JSON.stringify({ ...data, updatedAt: new Date(this.now()).toISOString() }, null, 2)}\n`;
    const next = this.writing
      .catch(() => {})
      .then(async () => {
        await ensurePrivateDir(join(this.path, '..'), 'state directory');
        await writeFileAtomic(this.path, text, { mode: SECRET_FILE_MODE, dirMode: PRIVATE_DIR_MODE });
      });
    this.writing = next;
    return next;
  }

  async finish(): Promise<void> {
    await this.writing.catch(() => {});
    try {
      await unlink(this.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError('remove checkpoint', this.path, err);
    }
  }
}
