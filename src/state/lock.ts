import { randomBytes } from 'node:crypto';
import { constants, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { link, open, readFile, rename, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { CliError, ExitCode, fsError } from '../ui/errors';
import { ensurePrivateDir, SECRET_FILE_MODE, sweepTempFiles } from './atomic';

/** What a lock file holds: enough for an operator to find the run that holds it. */
export interface LockInfo {
  pid: number;
  host: string;
  startedAt: string;
  operation: string;
  /** The holder's process start time (/proc/PID/stat, clock ticks since boot): a reused pid differs. */
  pidStart?: string;
  /** Unique per acquisition: release and takeover compare it, not the pid. */
  token?: string;
}

export interface Lock {
  readonly path: string;
  readonly info: LockInfo;
  /** Removes the lock file if it is still ours; safe to call twice. */
  release(): Promise<void>;
}

export interface LockOptions {
  now?: () => Date;
  /** Told when a stale lock (its process is gone) is taken over, and of temp files swept. */
  warn?: (msg: string) => void;
  /** Whether a lock's holder still runs on this host (injectable for tests). */
  isAlive?: (pid: number, pidStart?: string) => boolean;
  pid?: number;
  host?: string;
  /** More directories (config, manifests, backups) whose leftover temp files go once the lock is ours. */
  sweepDirs?: readonly string[];
}

export const LOCK_FILE = 'k8s-encrypt.lock';

/** A process's start time from /proc (undefined where there is no /proc or no such process). */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22, counted after the command name, which may itself hold spaces and parentheses.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export function pidIsAlive(pid: number, pidStart?: string): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const now = pidStart === undefined ? undefined : processStartTime(pid);
  return now === undefined || now === pidStart;
}

function parseLock(text: string): LockInfo | undefined {
  try {
    const v = JSON.parse(text) as Partial<LockInfo>;
    if (typeof v.pid === 'number' && typeof v.host === 'string' && typeof v.startedAt === 'string') {
      return {
        pid: v.pid,
        host: v.host,
        startedAt: v.startedAt,
        operation: String(v.operation ?? '?'),
        ...(typeof v.pidStart === 'string' ? { pidStart: v.pidStart } : {}),
        ...(typeof v.token === 'string' ? { token: v.token } : {}),
      };
    }
  } catch {
    // fall through
  }
  return undefined;
}

/** A lock file this young with unreadable content may be half-written by a starting run. */
const UNREADABLE_GRACE_MS = 10_000;

/** Writes `body` to a new private temp file next to `path` (O_EXCL, no symlink) and returns it. */
async function tempWith(path: string, body: string): Promise<string> {
  const tmp = join(path, '..', `.${LOCK_FILE}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, SECRET_FILE_MODE);
  try {
    await fh.writeFile(body);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return tmp;
}

/**
 * The lock text found at `path`, judged: a live holder (or one on another host sharing the
 * directory, or an unreadable lock young enough to be half-written) is a refusal naming it; a
 * stale one is returned, with the line that names it.
 */
async function judge(path: string, text: string, host: string, isAlive: NonNullable<LockOptions['isAlive']>, now: () => Date): Promise<string> {
  const holder = parseLock(text);
  if (!holder) {
    const age = await stat(path).then((s) => now().getTime() - s.mtimeMs, () => Infinity);
    if (age < UNREADABLE_GRACE_MS) throw busy(path, undefined);
    return `the unreadable lock file ${path}`;
  }
  if (holder.host !== host || isAlive(holder.pid, holder.pidStart)) throw busy(path, holder);
  return `a stale lock: ${holder.operation} (pid ${holder.pid}, started ${holder.startedAt}) is no longer running`;
}

/**
 * Removes the directories the lock created (`created`, the first of them, down to `stateDir`) if
 * they are empty again: a run that wrote nothing else leaves no state directory behind.
 */
async function removeCreatedDirs(stateDir: string, created: string | undefined): Promise<void> {
  if (!created) return;
  const top = resolve(created);
  for (let d = resolve(stateDir); ; d = dirname(d)) {
    try {
      await rmdir(d);
    } catch {
      return; // not empty (something else was written there) or gone: it stays as it is
    }
    if (d === top || dirname(d) === d) return;
  }
}

/**
 * Takes the state directory's exclusive lock, so two runs of any mutating command never
 * interleave on one node. The lock appears whole or not at all: it is written to a temp file and
 * linked into place (link fails if a lock exists). A lock whose process no longer runs on this
 * host (pid gone, or reused by a process with another start time) is taken over with a warning,
 * under a second, short-lived takeover lock: the holder of that one checks that the lock is still
 * the stale one it read and renames its own over it, so two runs can never both take it over. A
 * live lock (or one from another host sharing the directory) is a refusal naming its holder.
 * Once the lock is ours, temp files an interrupted write left in the state directory (and in
 * `sweepDirs`) are removed. A state directory (and parents) that the lock had to create is
 * removed again on release, or when the lock is not taken, if nothing else was written there.
 */
export async function acquireLock(stateDir: string, operation: string, opts: LockOptions = {}): Promise<Lock> {
  const now = opts.now ?? (() => new Date());
  const pid = opts.pid ?? process.pid;
  const isAlive = opts.isAlive ?? pidIsAlive;
  const pidStart = processStartTime(pid);
  const info: LockInfo = {
    pid,
    host: opts.host ?? hostname(),
    startedAt: now().toISOString(),
    operation,
    ...(pidStart ? { pidStart } : {}),
    token: randomBytes(8).toString('hex'),
  };
  const path = join(stateDir, LOCK_FILE);
  const body = `${JSON.stringify(info)}\n`;
  let created: string | undefined;
  let tmp: string | undefined;
  try {
    // Another run's release may remove the directory it created between our mkdir and our write.
    for (let attempt = 0; !tmp; attempt++) {
      created = (await ensurePrivateDir(stateDir, 'state directory')) ?? created;
      tmp = await tempWith(path, body).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' && attempt < 3) return undefined;
        throw fsError('create lock file', path, err);
      });
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        await link(tmp, path);
        return await taken(path, info, body, created, opts);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError('create lock file', path, err);
      }
      const text = await readFile(path, 'utf8').catch(() => undefined);
      if (text === undefined) continue; // released in between: try again
      const stale = await judge(path, text, info.host, isAlive, now);
      if (await takeOver(path, text, tmp, info.host, isAlive)) {
        opts.warn?.(`took over ${stale}`);
        return await taken(path, info, body, created, opts);
      }
    }
    throw busy(path, undefined);
  } catch (err) {
    if (tmp) await unlink(tmp).catch(() => {});
    tmp = undefined;
    await removeCreatedDirs(stateDir, created);
    throw err;
  } finally {
    if (tmp) await unlink(tmp).catch(() => {});
  }
}

/**
 * A dry run's look at the lock: it creates nothing (no state directory, no lock). A run holding
 * the lock refuses it as it would refuse a run (what it would show may change under it); a stale
 * lock is a warning, since a run would take it over.
 */
export async function assertLockFree(stateDir: string, opts: Pick<LockOptions, 'now' | 'warn' | 'isAlive' | 'host'> = {}): Promise<void> {
  const path = join(stateDir, LOCK_FILE);
  const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
    throw fsError('read lock file', path, err);
  });
  if (text === undefined) return;
  const stale = await judge(path, text, opts.host ?? hostname(), opts.isAlive ?? pidIsAlive, opts.now ?? (() => new Date()));
  opts.warn?.(`found ${stale}: a run would take it over (this dry run leaves it)`);
}

/** Replaces the stale lock `staleText` with `tmp` under the takeover lock; false if another run moved first. */
async function takeOver(path: string, staleText: string, tmp: string, host: string, isAlive: NonNullable<LockOptions['isAlive']>): Promise<boolean> {
  const guard = `${path}.takeover`;
  try {
    await link(tmp, guard);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError('create lock file', guard, err);
    // A takeover guard whose run died mid-takeover (a window of microseconds) is cleared for the next attempt.
    const g = parseLock(await readFile(guard, 'utf8').catch(() => ''));
    if (g && g.host === host && !isAlive(g.pid, g.pidStart)) await unlink(guard).catch(() => {});
    return false;
  }
  try {
    const cur = await readFile(path, 'utf8').catch(() => undefined);
    if (cur !== staleText) return false;
    await rename(tmp, path);
    return true;
  } finally {
    await unlink(guard).catch(() => {});
  }
}

async function taken(path: string, info: LockInfo, body: string, created: string | undefined, opts: LockOptions): Promise<Lock> {
  let released = false;
  const lock: Lock = {
    path,
    info,
    async release() {
      if (released) return;
      released = true;
      // Only remove it if it is still ours (a takeover by another run must not be undone).
      const cur = await readFile(path, 'utf8').catch(() => undefined);
      if (cur === body) await unlink(path).catch(() => {});
      await removeCreatedDirs(join(path, '..'), created);
    },
  };
  try {
    const swept = await sweepTempFiles([join(path, '..'), join(path, '..', 'journals'), join(path, '..', 'transitions'), ...(opts.sweepDirs ?? [])]);
    for (const f of swept) opts.warn?.(`removed ${f}, left by an interrupted write`);
  } catch (err) {
    await lock.release();
    throw err;
  }
  return lock;
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
