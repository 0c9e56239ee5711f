import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, stat, unlink, chmod, copyFile, readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fsError } from '../ui/errors';

export const SECRET_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

/** Creates a directory (and parents) with the given mode; tightens an existing one we created. */
export async function ensureDir(dir: string, mode = PRIVATE_DIR_MODE): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode });
  } catch (err) {
    throw fsError('create directory', dir, err);
  }
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
    fh = await open(tmp, 'wx', mode);
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
 * Copies `path` into `backupDir` as NAME.TIMESTAMP.bak (0600) and returns the copy's path.
 * Callers must pass a backup dir outside the kubelet's manifests directory.
 */
export async function backupFile(path: string, backupDir: string, now: Date): Promise<string> {
  await ensureDir(backupDir, PRIVATE_DIR_MODE);
  const base = `${basename(path)}.${compactTimestamp(now)}`;
  let target = join(backupDir, `${base}.bak`);
  for (let i = 1; await fileExists(target); i++) target = join(backupDir, `${base}-${i}.bak`);
  try {
    await copyFile(path, target);
    await chmod(target, SECRET_FILE_MODE);
  } catch (err) {
    throw fsError('back up', path, err);
  }
  return target;
}
