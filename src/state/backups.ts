import { stat, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { backupFile, listDir } from './atomic';

/** Backups with a retention limit: NAME.TIMESTAMP[-N].bak, 0600, in the backup dir. */

export interface BackupTarget {
  /** The file backed up. */
  configPath: string;
  backupDir: string;
  now: () => Date;
  /** Copies kept (the oldest go first). */
  keepBackups: number;
}

/** Backs up the config (0600) and keeps only the newest `keep` copies of it. */
export async function backupConfig(deps: BackupTarget): Promise<string> {
  const path = await backupFile(deps.configPath, deps.backupDir, deps.now());
  await pruneBackups(deps.backupDir, basename(deps.configPath), deps.keepBackups);
  return path;
}

/**
 * Backups of a file, newest first (NAME.TIMESTAMP[-N].bak sorts by time). A backup dir that does
 * not exist yet holds none; one that cannot be read is an error, not "no backups" (rollback would
 * otherwise say nothing is kept, and pruning would silently keep everything).
 */
export async function listBackups(backupDir: string, fileName: string): Promise<string[]> {
  const names = await listDir(backupDir, 'list the backups in');
  const re = new RegExp(`^${fileName.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(\\d{8}T\\d{6}Z)(?:-(\\d+))?\\.bak$`);
  return names
    .map((n) => ({ n, m: re.exec(n) }))
    .filter((x) => x.m)
    .sort((a, b) => (a.m![1]! === b.m![1]! ? Number(b.m![2] ?? 0) - Number(a.m![2] ?? 0) : a.m![1]! < b.m![1]! ? 1 : -1))
    .map((x) => join(backupDir, x.n));
}

export async function pruneBackups(backupDir: string, fileName: string, keep: number): Promise<string[]> {
  const all = await listBackups(backupDir, fileName);
  const gone = all.slice(Math.max(1, keep));
  for (const p of gone) await unlink(p).catch(() => {});
  return gone;
}

/** The newest backup of `file` made at or after `since` (ISO time), if any. */
export async function newestBackupSince(backupDir: string, file: string, since: string): Promise<string | null> {
  const newest = (await listBackups(backupDir, basename(file)))[0];
  // Backup names carry whole seconds: compare at that precision.
  return newest && (await stat(newest)).mtimeMs >= Math.floor(Date.parse(since) / 1000) * 1000 ? newest : null;
}
