import { hostname } from 'node:os';
import { open, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { CliError, ExitCode, fsError } from '../ui/errors';
import { ensureDir, PRIVATE_DIR_MODE, SECRET_FILE_MODE } from './atomic';

/** What a lock file holds: enough for an operator to find the run that holds it. */
export interface LockInfo {
  pid: number;
  host: string;
  startedAt: string;
  operation: string;
}

export interface Lock {
  readonly path: string;
  readonly info: LockInfo;
  /** Removes the lock file if it is still ours; safe to call twice. */
  release(): Promise<void>;
}

export interface LockOptions {
  now?: () => Date;
  /** Told when a stale lock (its process is gone) is taken over. */
  warn?: (msg: string) => void;
  /** Whether a pid runs on this host (injectable for tests). */
  isAlive?: (pid: number) => boolean;
  pid?: number;
  host?: string;
}

export const LOCK_FILE = 'k8s-encrypt.lock';

export function pidIsAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function parseLock(text: string): LockInfo | undefined {
  try {
    const v = JSON.parse(text) as Partial<LockInfo>;
    if (typeof v.pid === 'number' && typeof v.host === 'string' && typeof v.startedAt === 'string') {
      return { pid: v.pid, host: v.host, startedAt: v.startedAt, operation: String(v.operation ?? '?') };
    }
  } catch {
    // fall through
  }
  return undefined;
}

/** A lock file this young with unreadable content may be half-written by a starting run. */
const UNREADABLE_GRACE_MS = 10_000;

/**
 * Takes the state directory's exclusive lock (O_EXCL create), so two runs of any mutating
 * command never interleave on one node. A lock left by a process that no longer exists on this
 * host is taken over with a warning; a live one (or one from another host sharing the directory)
 * is a refusal naming its holder.
 */
export async function acquireLock(stateDir: string, operation: string, opts: LockOptions = {}): Promise<Lock> {
  const now = opts.now ?? (() => new Date());
  const isAlive = opts.isAlive ?? pidIsAlive;
  const info: LockInfo = {
    pid: opts.pid ?? process.pid,
    host: opts.host ?? hostname(),
    startedAt: now().toISOString(),
    operation,
  };
  await ensureDir(stateDir, PRIVATE_DIR_MODE);
  const path = join(stateDir, LOCK_FILE);
  const body = `${JSON.stringify(info)}\n`;

  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(path, 'wx', SECRET_FILE_MODE);
      try {
        await fh.writeFile(body);
        await fh.sync();
      } finally {
        await fh.close();
      }
      let released = false;
      return {
        path,
        info,
        async release() {
          if (released) return;
          released = true;
          // Only remove it if it is still ours (a takeover by another run must not be undone).
          const cur = await readFile(path, 'utf8').catch(() => undefined);
          if (cur === body) await unlink(path).catch(() => {});
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError('create lock file', path, err);
    }

    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text === undefined) continue; // released in between: try again
    const holder = parseLock(text);
    if (!holder) {
      const age = await stat(path).then((s) => now().getTime() - s.mtimeMs, () => Infinity);
      if (age < UNREADABLE_GRACE_MS) throw busy(path, undefined);
      opts.warn?.(`taking over the unreadable lock file ${path}`);
      await unlink(path).catch(() => {});
      continue;
    }
    if (holder.host === info.host && !isAlive(holder.pid)) {
      opts.warn?.(
        `taking over a stale lock: ${holder.operation} (pid ${holder.pid}, started ${holder.startedAt}) is no longer running`,
      );
      await unlink(path).catch(() => {});
      continue;
    }
    throw busy(path, holder);
  }
  throw busy(path, undefined);
}

function busy(path: string, holder: LockInfo | undefined): CliError {
  const who = holder
    ? `${holder.operation} (pid ${holder.pid} on ${holder.host}, started ${holder.startedAt})`
    : 'another run';
  return new CliError(`another k8s-encrypt run holds the lock: ${who}`, {
    exitCode: ExitCode.Refused,
    hint: `wait for it to finish; if it is gone for good, remove ${path}`,
    details: { lock: path, ...(holder ? { holder } : {}) },
  });
}

/** Runs `fn` holding the lock and releases it afterwards, also on failure. */
export async function withLock<T>(
  stateDir: string,
  operation: string,
  opts: LockOptions,
  fn: (lock: Lock) => Promise<T>,
): Promise<T> {
  const lock = await acquireLock(stateDir, operation, opts);
  try {
    return await fn(lock);
  } finally {
    await lock.release();
  }
}
