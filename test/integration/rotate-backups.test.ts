// Previous configs are kept as 0600 backups with a retention limit, newest first, and never more.
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { backupConfig, listBackups, pruneBackups } from '../../src/state/backups';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-backups-'));
});
afterEach(async () => rm(dir, { recursive: true, force: true }));

describe('config backups', () => {
  it('lists backups of one file newest first, same-second copies by their suffix, other files ignored', async () => {
    const names = [
      'config.yaml.20261126T100000Z.bak',
      'config.yaml.20261126T110000Z.bak',
      'config.yaml.20261126T110000Z-1.bak',
      'config.yaml.20261126T110000Z-2.bak',
      'kube-apiserver.yaml.20261126T120000Z.bak',
      'config.yaml.tmp',
    ];
    for (const n of names) await writeFile(join(dir, n), n);
    expect((await listBackups(dir, 'config.yaml')).map((p) => basename(p))).toEqual([
      'config.yaml.20261126T110000Z-2.bak',
      'config.yaml.20261126T110000Z-1.bak',
      'config.yaml.20261126T110000Z.bak',
      'config.yaml.20261126T100000Z.bak',
    ]);
    expect(await listBackups(join(dir, 'missing'), 'config.yaml')).toEqual([]);
  });

  it.each([1, 3, 10])('keeps the newest %i (0600) across many writes, and leaves other files alone', async (keep) => {
    const configPath = join(dir, 'config.yaml');
    const backupDir = join(dir, 'backups');
    let t = Date.parse('2026-11-26T10:00:00Z');
    await writeFile(join(dir, 'other'), 'x');
    for (let i = 0; i < 14; i++) {
      await writeFile(configPath, `version ${i}\n`);
      await backupConfig({ configPath, backupDir, keepBackups: keep, now: () => new Date((t += 1000)) });
    }
    const kept = await listBackups(backupDir, 'config.yaml');
    expect(kept).toHaveLength(keep);
    for (const p of kept) expect((await stat(p)).mode & 0o777).toBe(0o600);
    expect((await readdir(dir)).sort()).toEqual(['backups', 'config.yaml', 'other']);
    expect(await pruneBackups(backupDir, 'config.yaml', keep)).toEqual([]);
  });
});
