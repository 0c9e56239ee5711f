/**
 * etcd snapshots as files: streamed from Maintenance.Snapshot into a 0600 temp file in the target
 * directory, etcd's own integrity check verified (the stream ends with the sha256 of everything
 * before it, which `etcdutl snapshot restore` checks too: a file whose size is 32 more than a
 * multiple of 512 carries it), fsync, rename. The snapshot is never held in memory, and a failed
 * or interrupted stream leaves no file under the final name (its temp file is removed, or swept
 * by the next run).
 */
import { createHash } from 'node:crypto';
import { open, rename, stat, statfs, unlink } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { dirname, join } from 'node:path';
import { compactTimestamp, ensurePrivateDir, listDir, SECRET_FILE_MODE } from '../state/atomic';
import { CliError, ExitCode, fsError } from '../ui/errors';

/** What the snapshot code needs from an etcd client (src/etcd/client.ts EtcdClient has both). */
export interface SnapshotSource {
  status(): Promise<{ dbSize: number }>;
  snapshot(opts?: { signal?: AbortSignal }): AsyncIterable<Uint8Array>;
}

const SNAPSHOT_PREFIX = 'etcd-';
const SNAPSHOT_SUFFIX = '.db';
const TEMP_MARK = '.partial-';
const HASH_BYTES = 32;

interface SnapshotFile {
  [k: string]: string | number;
  path: string;
  bytes: number;
  /** sha256 of the whole file (what `sha256sum FILE` prints). */
  sha256: string;
  /** etcd's trailing sha256 of the database bytes, verified. */
  etcdSha256: string;
}

export const snapshotName = (operation: string, now: Date) => `${SNAPSHOT_PREFIX}${operation}-${compactTimestamp(now)}${SNAPSHOT_SUFFIX}`;

/** Free bytes for an unprivileged writer where `dir` is (or would be created). */
async function freeBytes(dir: string): Promise<number> {
  let d = dir;
  for (;;) {
    try {
      const s = await statfs(d);
      return s.bavail * s.bsize;
    } catch (err) {
      const up = dirname(d);
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || up === d) throw fsError('check free space at', d, err);
      d = up;
    }
  }
}

/** Refuses (exit 6) when the directory has less than twice the database's size free. */
export async function assertRoomFor(dir: string, dbSize: number): Promise<number> {
  const free = await freeBytes(dir);
  if (free < 2 * dbSize) {
    throw new CliError(`${dir} has ${mib(free)} free, less than twice the etcd database (${mib(dbSize)}): no snapshot taken and nothing changed`, {
      exitCode: ExitCode.Refused,
      hint: 'free space there, point --snapshot-dir at a larger disk, or pass --no-snapshot to go on without one',
      details: { dir, free, dbSize },
    });
  }
  return free;
}

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/** How long the snapshot stream may go without a chunk before it counts as stalled. */
export const DEFAULT_STALL_TIMEOUT_MS = 30_000;

/**
 * The source's chunks, failing (exit 3) when none arrives for `stallMs`: etcd stopped sending
 * (paused, wedged, a dead peer behind a proxy). Timed here, where chunks arrive, whatever client
 * carries the stream; the stream is cancelled through its signal, also when the caller's aborts.
 */
async function* chunksUntilStall(source: SnapshotSource, stallMs: number, outer?: AbortSignal): AsyncGenerator<Uint8Array> {
  const ac = new AbortController();
  const forward = () => ac.abort(outer!.reason);
  if (outer?.aborted) forward();
  outer?.addEventListener('abort', forward, { once: true });
  const it = source.snapshot({ signal: ac.signal })[Symbol.asyncIterator]();
  let bytes = 0;
  const stall = () =>
    new CliError(`the etcd snapshot stream stalled: no data for ${stallMs / 1000}s after ${bytes} bytes; the partial snapshot was removed`, {
      exitCode: ExitCode.Cluster,
      hint: 'check that etcd is running and responsive (its log, disk and CPU); --snapshot-stall-timeout sets how long to wait',
      details: { stallTimeoutMs: stallMs, bytes },
    });
  try {
    for (;;) {
      const timer = setTimeout(() => ac.abort(stall()), stallMs);
      // Settles the wait for a chunk even from a source that does not honour its signal. One
      // per chunk: every race on one long-lived promise would leave a reaction on it holding that
      // race's result, i.e. every chunk, until the stream ends (the whole snapshot in memory).
      let onAbort!: () => void;
      const stopped = new Promise<never>((_, reject) => (onAbort = () => reject(ac.signal.reason)));
      stopped.catch(() => {});
      if (ac.signal.aborted) onAbort();
      else ac.signal.addEventListener('abort', onAbort, { once: true });
      let r: IteratorResult<Uint8Array>;
      try {
        r = await Promise.race([it.next(), stopped]);
      } finally {
        clearTimeout(timer);
        ac.signal.removeEventListener('abort', onAbort);
      }
      if (r.done) return;
      bytes += r.value.byteLength;
      yield r.value;
    }
  } finally {
    outer?.removeEventListener('abort', forward);
    // Cancels a stream still open (an error, an early exit); a no-op after a clean end.
    if (!ac.signal.aborted) ac.abort(new Error('the snapshot stream was closed'));
  }
}

/**
 * Streams a snapshot into `dir/name`. The hash of all bytes but the last 32 is computed as they
 * arrive and compared with those 32 (etcd's trailer) before the file gets its final name. A
 * stream with no chunk for `stallTimeoutMs` is abandoned (its temp file removed).
 */
export async function takeSnapshot(
  source: SnapshotSource,
  dir: string,
  name: string,
  signal?: AbortSignal,
  stallTimeoutMs = DEFAULT_STALL_TIMEOUT_MS,
): Promise<SnapshotFile> {
  await ensurePrivateDir(dir, 'snapshot directory');
  const path = join(dir, name);
  const tmp = join(dir, `${TEMP_MARK}${name}`);
  // A disk that fills (or goes read-only) mid-stream is one line naming the file, not an
  // internal error; the temp file is removed below either way.
  const onDisk = <T>(p: Promise<T>): Promise<T> =>
    p.catch((err) => {
      throw fsError('write', tmp, err);
    });
  const fh = await onDisk(open(tmp, 'wx', SECRET_FILE_MODE));
  const data = createHash('sha256');
  const whole = createHash('sha256');
  let tail = Buffer.alloc(0);
  let bytes = 0;
  let ok = false;
  try {
    await onDisk(fh.chmod(SECRET_FILE_MODE));
    for await (const raw of chunksUntilStall(source, stallTimeoutMs, signal)) {
      const chunk = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
      await onDisk(fh.write(chunk));
      whole.update(chunk);
      bytes += chunk.length;
      // Everything but the last 32 bytes seen so far belongs to the database.
      const pending = tail.length ? Buffer.concat([tail, chunk]) : chunk;
      const cut = Math.max(0, pending.length - HASH_BYTES);
      data.update(pending.subarray(0, cut));
      tail = Buffer.from(pending.subarray(cut));
    }
    const expected = data.digest();
    if (tail.length !== HASH_BYTES || (bytes - HASH_BYTES) % 512 !== 0 || !tail.equals(expected)) {
      throw new CliError(`the etcd snapshot stream failed its integrity check (${bytes} bytes; the trailing sha256 does not match the data)`, {
        exitCode: ExitCode.Cluster,
        hint: 'nothing was changed; retry, and check etcd\'s log and disk',
      });
    }
    await onDisk(fh.sync());
    await onDisk(fh.close());
    await rename(tmp, path).catch((err) => {
      throw fsError('rename a snapshot to', path, err);
    });
    const dh = await open(dir, 'r');
    await dh.sync().catch(() => {});
    await dh.close();
    ok = true;
    return { path, bytes, sha256: whole.digest('hex'), etcdSha256: tail.toString('hex') };
  } finally {
    if (!ok) {
      await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
    }
  }
}

export interface SnapshotCheck {
  path: string;
  bytes: number;
  sha256: string;
  /** The file ends with etcd's sha256 trailer (size = 512·n + 32). */
  hasHash: boolean;
  /** With hasHash: whether the trailer matches the data. */
  hashOk: boolean;
  /** The database without the trailer (bbolt ignores trailing bytes, but not this many). */
  dataBytes: number;
}

/** Re-reads a snapshot file, streamed, and checks etcd's trailer the way snapshot restore does. */
export async function checkSnapshotFile(path: string): Promise<SnapshotCheck> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (err) {
    throw fsError('read snapshot', path, err);
  }
  const hasHash = size % 512 === HASH_BYTES;
  const dataBytes = hasHash ? size - HASH_BYTES : size;
  const data = createHash('sha256');
  const whole = createHash('sha256');
  const trailer: Buffer[] = [];
  let at = 0;
  try {
    for await (const c of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
      whole.update(c);
      const inData = Math.max(0, Math.min(c.length, dataBytes - at));
      data.update(c.subarray(0, inData));
      if (inData < c.length) trailer.push(c.subarray(inData));
      at += c.length;
    }
  } catch (err) {
    throw fsError('read snapshot', path, err);
  }
  const hashOk = hasHash && Buffer.concat(trailer).equals(data.digest());
  return { path, bytes: size, sha256: whole.digest('hex'), hasHash, hashOk, dataBytes };
}

/** Snapshots of this tool in `dir`, oldest first (names sort by their UTC timestamp). */
async function listSnapshots(dir: string): Promise<string[]> {
  const names = await listDir(dir);
  const stamp = (n: string) => /(\d{8}T\d{6}Z)/.exec(n)?.[1] ?? '';
  return names
    .filter((n) => n.startsWith(SNAPSHOT_PREFIX) && n.endsWith(SNAPSHOT_SUFFIX))
    .sort((a, b) => stamp(a).localeCompare(stamp(b)) || a.localeCompare(b))
    .map((n) => join(dir, n));
}

/**
 * Keeps the newest `keep` snapshots and removes older ones, and temp files a killed run left
 * (callers hold the operation lock, so no other writer is mid-way). Returns what it removed.
 */
export async function pruneSnapshots(dir: string, keep: number): Promise<string[]> {
  const removed: string[] = [];
  const all = await listSnapshots(dir);
  for (const p of all.slice(0, Math.max(0, all.length - keep))) {
    await unlink(p).catch((err) => {
      throw fsError('remove old snapshot', p, err);
    });
    removed.push(p);
  }
  return removed;
}

/** Temp files of interrupted snapshots (kill -9 mid-stream), removed before a new one starts. */
export async function sweepPartials(dir: string): Promise<string[]> {
  const names = await listDir(dir);
  const gone: string[] = [];
  for (const n of names.filter((x) => x.startsWith(TEMP_MARK))) {
    await unlink(join(dir, n)).catch(() => {});
    gone.push(join(dir, n));
  }
  return gone;
}
