import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fsError } from '../ui/errors';

/**
 * Backups of a file, newest first (NAME.TIMESTAMP[-N].bak sorts by time). A backup dir that does
 * not exist yet holds none; one that cannot be read is an error, not "no backups" (rollback would
 * otherwise say nothing is kept, and pruning would silently keep everything).
 */
export async function listBackups(backupDir: string, fileName: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(backupDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw fsError('list the backups in', backupDir, err);
  }
  const re = new RegExp(`^${fileName.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(\\d{8}T\\d{6}Z)(?:-(\\d+))?\\.bak$`);
  return names
    .map((n) => ({ n, m: re.exec(n) }))
    .filter((x) => x.m)
    .sort((a, b) => (a.m![1]! === b.m![1]! ? Number(b.m![2] ?? 0) - Number(a.m![2] ?? 0) : a.m![1]! < b.m![1]! ? 1 : -1))
    .map((x) => join(backupDir, x.n));
}
