import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { CliError, ExitCode, fsError } from '../ui/errors';

export const SECRET_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

/** Creates a directory (and parents) with the given mode (0700 by default); returns the first one it created. */
export async function ensureDir(dir: string, mode = PRIVATE_DIR_MODE): Promise<string | undefined> {
  try {
    return await mkdir(dir, { recursive: true, mode });
  } catch (err) {
    throw fsError('create directory', dir, err);
  }
}

/**
 * Creates a directory that holds keys or state (0700), or checks an existing one: it must be a
 * real directory (not a symlink), owned by this user and writable by no one else, since anyone
 * who may write there may swap a file for a link between our check and our write.
 */
export async function ensurePrivateDir(dir: string, what = 'directory'): Promise<string | undefined> {
  const created = await ensureDir(dir, PRIVATE_DIR_MODE);
  let st;
  try {
    st = await lstat(dir);
  } catch (err) {
    throw fsError('check', dir, err);
  }
  const uid = process.getuid?.();
  const problem = st.isSymbolicLink()
    ? 'is a symbolic link'
    : !st.isDirectory()
      ? 'is not a directory'
      : uid !== undefined && st.uid !== uid
        ? `is owned by uid ${st.uid}, not by this user (uid ${uid})`
        : (st.mode & 0o022) !== 0
          ? `is group- or world-writable (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')})`
          : undefined;
  if (problem) {
    throw new CliError(`refusing to write into the ${what} ${dir}: it ${problem}`, {
      exitCode: ExitCode.Usage,
      hint: `make it a directory owned by this user with mode 0700 (chown, chmod 700), or choose another one with its flag`,
    });
  }
  return created;
}

/** Flags for every file k8s-encrypt creates: a new file only, never through a symlink. */
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** The lock's own temp files (`.k8s-encrypt.lock.<hex>.tmp`), never swept. */
export const LOCK_TEMP_PREFIX = 'k8s-encrypt.lock.';

/** A temp file of writeFileAtomic: `.NAME.<12 hex>.tmp`, next to its target. */
export const TEMP_FILE = /^\..+\.[0-9a-f]{12}\.tmp$/;

/**
 * Removes temp files an interrupted writeFileAtomic left in `dirs` (they may hold a whole key
 * file). Only regular files of this user named like our temp files go; returns what went.
 */
export async function sweepTempFiles(dirs: readonly string[], minAgeMs = 60_000, now = Date.now()): Promise<string[]> {
  const gone: string[] = [];
  const uid = process.getuid?.();
  for (const dir of new Set(dirs)) {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw fsError('read directory', dir, err);
    }
    // A lock temp file belongs to a run that is taking the lock right now.
    for (const n of names.filter((x) => TEMP_FILE.test(x) && !x.startsWith(`.${LOCK_TEMP_PREFIX}`))) {
      const p = join(dir, n);
      const st = await lstat(p).catch(() => undefined);
      if (!st?.isFile() || (uid !== undefined && st.uid !== uid)) continue;
      // A write of a command that takes no lock (write-config) may be under way: only old ones go.
      if (now - st.mtimeMs < minAgeMs) continue;
      try {
        await unlink(p);
        gone.push(p);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError('remove the leftover temp file', p, err);
      }
    }
  }
  return gone;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  } finally {
    await fh.close();
  }
}

export interface AtomicWriteOptions {
  mode?: number;
  /** Mode for parent directories this call creates (existing directories are left alone). */
  dirMode?: number;
}

/**
 * Writes a file so that readers (the kubelet, the apiserver) see either the old or the new
 * content, never a partial one: temp file in the same directory, fsync, rename, fsync the dir.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  opts: AtomicWriteOptions = {},
): Promise<void> {
  const mode = opts.mode ?? SECRET_FILE_MODE;
  const dir = dirname(path);
  await ensureDir(dir, opts.dirMode ?? PRIVATE_DIR_MODE);
  // A dot-prefixed temp name: the kubelet ignores hidden files in the manifests directory.
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  let fh;
  try {
    fh = await open(tmp, CREATE_FLAGS, mode);
  } catch (err) {
    throw fsError('write', path, err);
  }
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // open() honours the umask; the mode must be exact.
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
    await fsyncDir(dir);
  } catch (err) {
    await fh?.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw fsError('write', path, err);
  }
}

/** The names in a directory; none when it does not exist yet (any other failure is one clear line). */
export async function listDir(dir: string, what = 'list'): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw fsError(what, dir, err);
  }
}

export async function fileExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw fsError('read', path, err);
  }
}

/** Reads a UTF-8 file, turning fs errors into one clear line. */
export async function readText(path: string, what = 'read'): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw fsError(what, path, err);
  }
}

/** A sortable UTC timestamp for file and key names: 20261126T140200Z. */
export function compactTimestamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/**
 * Copies `path` into `backupDir` as NAME.TIMESTAMP.bak (0600) and returns the copy's path. Neither
 * the source nor the copy is reached through a symlink: the source is opened with O_NOFOLLOW, the
 * copy created with O_EXCL|O_NOFOLLOW (a name taken by anything, a link too, moves on to -N).
 * Callers must pass a backup dir outside the kubelet's manifests directory.
 */
export async function backupFile(path: string, backupDir: string, now: Date): Promise<string> {
  await ensurePrivateDir(backupDir, 'backup directory');
  let data: Buffer;
  try {
    const src = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      if (!(await src.stat()).isFile()) throw Object.assign(new Error('it is not a regular file'), { code: 'EINVAL' });
      data = await src.readFile();
    } finally {
      await src.close();
    }
  } catch (err) {
    throw fsError('back up', path, err);
  }
  const base = `${basename(path)}.${compactTimestamp(now)}`;
  for (let i = 0; ; i++) {
    const target = join(backupDir, i === 0 ? `${base}.bak` : `${base}-${i}.bak`);
    let fh;
    try {
      fh = await open(target, CREATE_FLAGS, SECRET_FILE_MODE);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && i < 1000) continue;
      throw fsError('back up', path, err);
    }
    try {
      await fh.writeFile(data);
      await fh.chmod(SECRET_FILE_MODE);
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => {});
      await unlink(target).catch(() => {});
      throw fsError('back up', path, err);
    }
    await fh.close();
    return target;
  }
}
