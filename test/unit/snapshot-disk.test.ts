import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CliError, ExitCode } from '../../src/ui/errors';

/** The disk filling after the free-space check passed: the snapshot's writes get ENOSPC. */
let failWrites = false;
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...real,
    open: async (...args: Parameters<typeof real.open>) => {
      const fh = await real.open(...args);
      if (failWrites && String(args[0]).includes('.partial-')) {
        fh.write = (async () => {
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
        }) as typeof fh.write;
      }
      return fh;
    },
  };
});

const { takeSnapshot } = await import('../../src/snapshot/take');

describe('a snapshot whose disk fills mid-stream', () => {
  let dir: string | undefined;
  afterEach(async () => {
    failWrites = false;
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('fails as one line naming the file (not an internal error) and leaves no file', async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-snapdisk-'));
    const out = join(dir, 'snaps');
    failWrites = true;
    const source = {
      status: async () => ({ dbSize: 1024 }),
      async *snapshot() {
        yield new Uint8Array(512);
        yield new Uint8Array(32);
      },
    };
    const err = await takeSnapshot(source, out, 'etcd-test-20260101T000000Z.db').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).message).toBe(`cannot write ${join(out, '.partial-etcd-test-20260101T000000Z.db')}: no space left on the device`);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).hint).toBe('free some space and re-run');
    expect(await readdir(out)).toEqual([]);
  });
});
