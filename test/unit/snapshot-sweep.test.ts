import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Context } from '../../src/context';

/** A disk with room for the snapshot only once the temp file a killed run left is gone. */
const DB = Buffer.alloc(1024, 7);
let snapDir = '';
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...real,
    statfs: async (...args: Parameters<typeof real.statfs>) => {
      const s = await real.statfs(...args);
      const leftover = existsSync(snapDir) && readdirSync(snapDir).some((n) => n.startsWith('.partial-'));
      return { ...s, bsize: 1, bavail: leftover ? DB.length : 1 << 30 };
    },
  };
});
vi.mock('../../src/etcd/client', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../../src/etcd/client')>()),
  openEtcd: async () => ({
    status: async () => ({ dbSize: DB.length }),
    async *snapshot() {
      yield DB;
      yield createHash('sha256').update(DB).digest();
    },
    close() {},
  }),
}));

const { runSafetyNet } = await import('../../src/snapshot/guard');

describe('the snapshot before the first change, after a killed run', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('removes the temp file it left before checking the free space, and takes the snapshot', async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-sweep-'));
    snapDir = join(dir, 'snapshots');
    await mkdir(snapDir, { mode: 0o700 });
    await writeFile(join(snapDir, '.partial-etcd-init-20260101T000000Z.db'), DB, { mode: 0o600 });
    const info: string[] = [];
    const out = { info: (l: string) => info.push(l), step() {}, success() {}, warn() {} };
    const ctx = { out, paths: { stateDir: dir }, now: () => new Date('2026-01-02T00:00:00Z'), signal: new AbortController().signal } as unknown as Context;
    const steps: { name: string; output: unknown }[] = [];
    const journal = {
      steps,
      done: () => false,
      output: () => undefined,
      complete: async (name: string, output: unknown) => void steps.push({ name, output }),
    };
    const r = await runSafetyNet(ctx, journal, new Map([['etcd-servers', 'http://127.0.0.1:1']]), { snapshotDir: snapDir }, { operation: 'init' });
    expect(r.snapshot).toMatchObject({ path: join(snapDir, 'etcd-init-20260102T000000Z.db'), bytes: DB.length + 32 });
    expect(await readdir(snapDir)).toEqual(['etcd-init-20260102T000000Z.db']);
    expect(info).toEqual([`removed ${join(snapDir, '.partial-etcd-init-20260101T000000Z.db')}, left by an interrupted snapshot`]);
  });
});
