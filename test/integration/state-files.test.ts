// Files the tool writes as root: never through a symlink, only into private directories, no temp
// file left behind, backups that cannot be listed said so, and a lock that two runs cannot both
// take over. Real files, links and processes in temp dirs.
import { chown, chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { backupFile, sweepTempFiles, writeFileAtomic } from '../../src/state/atomic';
import { listBackups } from '../../src/state/backups';
import { acquireLock, assertLockFree, LOCK_FILE } from '../../src/state/lock';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-state-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const mode = async (p: string) => (await stat(p)).mode & 0o777;

describe('no write through a symlink', () => {
  it('writeFileAtomic replaces a link at the target itself and leaves what it pointed to alone', async () => {
    await writeFile(join(dir, 'victim'), 'victim\n');
    await symlink(join(dir, 'victim'), join(dir, 'config.yaml'));
    await writeFileAtomic(join(dir, 'config.yaml'), 'new\n');
    expect(await readFile(join(dir, 'victim'), 'utf8')).toBe('victim\n');
    expect((await lstat(join(dir, 'config.yaml'))).isFile()).toBe(true);
    expect(await mode(join(dir, 'config.yaml'))).toBe(0o600);
  });

  it('backupFile takes the next name when a link holds the first one, and never writes through it', async () => {
    await writeFile(join(dir, 'config.yaml'), 'keys\n');
    await mkdir(join(dir, 'backups'), { mode: 0o700 });
    const now = new Date('2026-03-01T00:00:00Z');
    await symlink(join(dir, 'victim'), join(dir, 'backups', 'config.yaml.20260301T000000Z.bak'));
    const b = await backupFile(join(dir, 'config.yaml'), join(dir, 'backups'), now);
    expect(b).toBe(join(dir, 'backups', 'config.yaml.20260301T000000Z-1.bak'));
    expect(await readFile(b, 'utf8')).toBe('keys\n');
    expect(await mode(b)).toBe(0o600);
    await expect(stat(join(dir, 'victim'))).rejects.toThrow(/ENOENT/);
  });

  it('backupFile refuses a source that is a symlink', async () => {
    await writeFile(join(dir, 'real'), 'keys\n');
    await symlink(join(dir, 'real'), join(dir, 'config.yaml'));
    await expect(backupFile(join(dir, 'config.yaml'), join(dir, 'backups'), new Date())).rejects.toThrow(/config\.yaml: it is a symbolic link/);
  });

  it('a new backup dir is 0700; a shared or foreign one, or a link, is refused with nothing written', async () => {
    await writeFile(join(dir, 'config.yaml'), 'keys\n');
    await backupFile(join(dir, 'config.yaml'), join(dir, 'new/backups'), new Date());
    expect(await mode(join(dir, 'new/backups'))).toBe(0o700);
    await mkdir(join(dir, 'shared'));
    await chmod(join(dir, 'shared'), 0o777);
    await mkdir(join(dir, 'foreign'), { mode: 0o700 });
    await chown(join(dir, 'foreign'), 65534, 65534);
    await symlink(join(dir, 'new/backups'), join(dir, 'linked'));
    for (const [d, why] of [['shared', /group- or world-writable \(mode 0777\)/], ['foreign', /owned by uid 65534/], ['linked', /is a symbolic link/]] as const) {
      const err = await backupFile(join(dir, 'config.yaml'), join(dir, d), new Date()).catch((e) => e);
      expect(err.message).toMatch(/^refusing to write into the backup directory .* it /);
      expect(err.message).toMatch(why);
      expect(err.exitCode).toBe(2);
      if (d !== 'linked') expect(await readdir(join(dir, d))).toEqual([]);
    }
    const err = await acquireLock(join(dir, 'shared'), 'init').catch((e) => e);
    expect(err.message).toMatch(/^refusing to write into the state directory/);
    expect(await readdir(join(dir, 'shared'))).toEqual([]);
  });
});

describe('leftover temp files', () => {
  it('are swept when the lock is taken: only old files named like ours, in the dirs we write', async () => {
    await mkdir(join(dir, 'state'), { mode: 0o700 });
    await mkdir(join(dir, 'etc'));
    const old = [join(dir, 'etc', '.config.yaml.0123456789ab.tmp'), join(dir, 'state', '.x.json.ba9876543210.tmp')];
    for (const p of old) {
      await writeFile(p, 'a whole key file\n');
      await utimes(p, new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
    }
    const young = join(dir, 'etc', '.config.yaml.aaaaaaaaaaaa.tmp');
    await writeFile(young, 'a write under way\n');
    const others = [join(dir, 'etc', '.config.yaml.tmp'), join(dir, 'etc', 'notes.0123456789ab.tmp')];
    for (const p of others) {
      await writeFile(p, 'not ours\n');
      await utimes(p, new Date(0), new Date(0));
    }
    const warned: string[] = [];
    const lock = await acquireLock(join(dir, 'state'), 'init', { sweepDirs: [join(dir, 'etc')], warn: (m) => warned.push(m) });
    await lock.release();
    for (const p of old) await expect(stat(p)).rejects.toThrow(/ENOENT/);
    for (const p of [young, ...others]) expect((await stat(p)).isFile()).toBe(true);
    expect(warned.sort()).toEqual(old.map((p) => `removed ${p}, left by an interrupted write`).sort());
    expect(await sweepTempFiles([join(dir, 'missing')])).toEqual([]);
  });
});

describe('listBackups', () => {
  it('says when the backup dir cannot be read instead of finding no backups', async () => {
    expect(await listBackups(join(dir, 'missing'), 'config.yaml')).toEqual([]);
    await writeFile(join(dir, 'file'), '');
    await expect(listBackups(join(dir, 'file'), 'config.yaml')).rejects.toThrow(/^cannot list the backups in .*\/file: a parent is not a directory$/);
  });
});

describe('lock takeover', () => {
  it('takes over a lock whose pid now belongs to another process (start time differs)', async () => {
    await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: process.pid, pidStart: '1', host: 'h1', startedAt: '2026-01-01T00:00:00Z', operation: 'init', token: 'old' }));
    const warned: string[] = [];
    const l = await acquireLock(dir, 'rotate-key', { host: 'h1', warn: (m) => warned.push(m) });
    expect(warned[0]).toMatch(/took over a stale lock: init \(pid \d+/);
    await l.release();
    expect(await readdir(dir)).toEqual([]);
  });

  it('a stale lock raced for by several processes is held by one at a time, never taken from a live holder', async () => {
    const racer = join(dir, 'racer.mjs');
    await build({ entryPoints: [fileURLToPath(new URL('../helpers/lock-racer.ts', import.meta.url))], bundle: true, platform: 'node', format: 'esm', outfile: racer, logLevel: 'silent' });
    const state = join(dir, 'state');
    await mkdir(state, { mode: 0o700 });
    const dead = (await execa('sh', ['-c', 'echo $$'])).stdout.trim();
    for (let round = 0; round < 3; round++) {
      await writeFile(join(state, LOCK_FILE), JSON.stringify({ pid: Number(dead), host: (await import('node:os')).hostname(), startedAt: '2026-01-01T00:00:00Z', operation: 'init' }));
      const startAt = String(Date.now() + 1500);
      const outs = await Promise.all(Array.from({ length: 5 }, () => execa(process.execPath, [racer, state, startAt])));
      const rs = outs.map((o) => JSON.parse(o.stdout));
      const got = rs.filter((r) => r.got).sort((a, b) => a.t0 - b.t0);
      expect(got.length, JSON.stringify(rs)).toBeGreaterThanOrEqual(1);
      for (const r of got) expect(r.still, JSON.stringify(rs)).toBe(true);
      for (let i = 1; i < got.length; i++) expect(got[i].t0, JSON.stringify(rs)).toBeGreaterThanOrEqual(got[i - 1].t1);
      for (const r of rs.filter((x) => !x.got)) expect(r.message).toMatch(/another k8s-encrypt run holds the lock/);
      expect(await readdir(state)).toEqual([]);
    }
  }, 60_000);
});

describe('a lock leaves no state directory it created and found nothing in', () => {
  it('removes the state dir and the parents it created on release, when nothing else was written', async () => {
    const state = join(dir, 'var/lib/k8s-encrypt');
    const lock = await acquireLock(state, 'init');
    expect(await mode(join(dir, 'var'))).toBe(0o700);
    expect(await readdir(state)).toEqual([LOCK_FILE]);
    await lock.release();
    expect(await readdir(dir)).toEqual([]);
  });

  it('keeps what a run wrote, and the directories holding it', async () => {
    const state = join(dir, 'var/lib/k8s-encrypt');
    const lock = await acquireLock(state, 'init');
    await writeFileAtomic(join(state, 'journals', 'init.json'), '{}\n');
    await lock.release();
    expect(await readdir(state)).toEqual(['journals']);
    expect(await readFile(join(state, 'journals', 'init.json'), 'utf8')).toBe('{}\n');
  });

  it('keeps a state dir (and parents) that was there before, empty or not', async () => {
    await mkdir(join(dir, 'var/lib'), { recursive: true, mode: 0o700 });
    const l1 = await acquireLock(join(dir, 'var/lib/k8s-encrypt'), 'init');
    await l1.release();
    expect(await readdir(join(dir, 'var/lib'))).toEqual([]);
    await mkdir(join(dir, 'var/lib/k8s-encrypt'), { mode: 0o700 });
    const l2 = await acquireLock(join(dir, 'var/lib/k8s-encrypt'), 'rollback');
    await l2.release();
    expect(await readdir(join(dir, 'var/lib/k8s-encrypt'))).toEqual([]);
  });

  it('a refused run removes nothing that is not its own', async () => {
    const state = join(dir, 'state');
    const holder = await acquireLock(state, 'rotate-key');
    const err = await acquireLock(state, 'init').catch((e) => e);
    expect(err.message).toMatch(/another k8s-encrypt run holds the lock: rotate-key/);
    expect(await readdir(state)).toEqual([LOCK_FILE]);
    await holder.release();
    expect(await readdir(dir)).toEqual([]);
  });
});

describe('a dry run only looks at the lock', () => {
  it('creates nothing where there is no state dir', async () => {
    await assertLockFree(join(dir, 'var/lib/k8s-encrypt'));
    await writeFile(join(dir, 'file'), '');
    await assertLockFree(join(dir, 'file', 'state'));
    expect(await readdir(dir)).toEqual(['file']);
  });

  it('is refused while a run holds the lock, and warned of a stale one it leaves in place', async () => {
    const held = await acquireLock(dir, 'rotate-key');
    const err = await assertLockFree(dir).catch((e) => e);
    expect(err.exitCode).toBe(6);
    expect(err.message).toMatch(new RegExp(`another k8s-encrypt run holds the lock: rotate-key \\(pid ${process.pid} `));
    await held.release();
    const stale = JSON.stringify({ pid: 999_999_999, host: 'h1', startedAt: '2026-01-01T00:00:00Z', operation: 'init' });
    await writeFile(join(dir, LOCK_FILE), stale);
    const warned: string[] = [];
    await assertLockFree(dir, { host: 'h1', warn: (m) => warned.push(m) });
    expect(warned).toEqual(['found a stale lock: init (pid 999999999, started 2026-01-01T00:00:00Z) is no longer running: a run would take it over (this dry run leaves it)']);
    expect(await readFile(join(dir, LOCK_FILE), 'utf8')).toBe(stale);
    expect((await assertLockFree(join(dir), { host: 'other' }).catch((e) => e)).exitCode).toBe(6);
  });
});
