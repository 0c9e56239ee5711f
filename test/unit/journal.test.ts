import { mkdtemp, readFile, rm, stat, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Journal, journalPath } from '../../src/state/journal';
import { acquireLock, LOCK_FILE } from '../../src/state/lock';
import { CliError, ExitCode } from '../../src/ui/errors';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-journal-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const clock = (start = Date.parse('2026-11-26T14:00:00Z')) => {
  let t = start;
  return () => new Date((t += 1000));
};

describe('Journal', () => {
  it('records steps with outputs and timestamps in a 0600 file under a 0700 dir', async () => {
    const j = await Journal.start(join(dir, 'state'), 'init', { provider: 'aescbc' }, { now: clock() });
    await j.complete('write-config', { sha256: 'abc', created: true });
    const path = journalPath(join(dir, 'state'), 'init');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'state', 'journals'))).mode & 0o777).toBe(0o700);
    const rec = JSON.parse(await readFile(path, 'utf8'));
    expect(rec).toMatchObject({ version: 1, operation: 'init', status: 'running', inputs: { provider: 'aescbc' } });
    expect(rec.steps).toEqual([{ name: 'write-config', completedAt: expect.stringMatching(/^2026-11-26T14:00:0\d.000Z$/), output: { sha256: 'abc', created: true } }]);
  });

  it('resumes: a reloaded journal skips completed steps and runs the first unfinished one', async () => {
    const j = await Journal.start(dir, 'init', {}, { now: clock() });
    await j.step('a', async () => ({ n: 1 }));
    const reloaded = (await Journal.load(dir, 'init'))!;
    const ran: string[] = [];
    const a = await reloaded.step('a', async () => (ran.push('a'), { n: 2 }));
    const b = await reloaded.step('b', async () => (ran.push('b'), { n: 3 }));
    expect(ran).toEqual(['b']);
    expect(a).toEqual({ n: 1 });
    expect(b).toEqual({ n: 3 });
    expect(reloaded.firstUnfinished(['a', 'b', 'c'])).toBe('c');
  });

  it('a failing step is not recorded, so a re-run retries it', async () => {
    const j = await Journal.start(dir, 'init', {});
    await expect(j.step('x', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(j.done('x')).toBe(false);
    expect((await Journal.load(dir, 'init'))!.done('x')).toBe(false);
  });

  it('refuses to start over an unfinished journal and archives a finished one', async () => {
    const j = await Journal.start(dir, 'rotate-key', {});
    const err = await Journal.start(dir, 'rotate-key', {}).catch((e) => e);
    expect(err).toBeInstanceOf(CliError);
    expect(err.exitCode).toBe(ExitCode.Refused);
    await j.setStatus('done');
    const next = await Journal.start(dir, 'rotate-key', {});
    expect(next.id).not.toBe(j.id);
    const files = await readdir(join(dir, 'journals'));
    expect(files).toContain(`rotate-key.${j.id}.json`);
    expect(files).toContain('rotate-key.json');
  });

  it('never writes a forbidden value (key material)', async () => {
    const key = 'c2VjcmV0LWtleS1tYXRlcmlhbC0zMi1ieXRlcy4uLi4=';
    const j = await Journal.start(dir, 'init', { keyName: 'k1' }, { forbidden: [key] });
    const err = await j.complete('write-config', { oops: key }).catch((e) => e);
    expect(err).toBeInstanceOf(CliError);
    expect(await readFile(journalPath(dir, 'init'), 'utf8')).not.toContain(key);
  });

  it('forget() re-opens steps; statuses and messages persist', async () => {
    const j = await Journal.start(dir, 'init', {});
    await j.complete('a');
    await j.complete('b');
    await j.forget(['b']);
    await j.setStatus('waiting', 'gate');
    const r = (await Journal.load(dir, 'init'))!;
    expect(r.steps.map((s) => s.name)).toEqual(['a']);
    expect(r.status).toBe('waiting');
    expect(r.message).toBe('gate');
  });

  it('a damaged journal is a one-line usage error', async () => {
    await Journal.start(dir, 'init', {});
    await writeFile(journalPath(dir, 'init'), '{not json');
    const err = await Journal.load(dir, 'init').catch((e) => e);
    expect(err).toBeInstanceOf(CliError);
    expect(err.exitCode).toBe(ExitCode.Usage);
  });
});

describe('acquireLock', () => {
  it('is exclusive while held and free after release', async () => {
    const a = await acquireLock(dir, 'init');
    const err = await acquireLock(dir, 'rotate-key').catch((e) => e);
    expect(err).toBeInstanceOf(CliError);
    expect(err.exitCode).toBe(ExitCode.Refused);
    expect(err.message).toContain(`pid ${process.pid}`);
    await a.release();
    const b = await acquireLock(dir, 'rotate-key');
    await b.release();
  });

  it('takes over a stale lock whose process is gone, with a warning', async () => {
    await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: 999_999_999, host: 'h1', startedAt: '2026-01-01T00:00:00Z', operation: 'init' }));
    const warnings: string[] = [];
    const l = await acquireLock(dir, 'init', { host: 'h1', warn: (m) => warnings.push(m) });
    expect(warnings.join()).toMatch(/stale lock.*999999999/);
    expect(JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    await l.release();
  });

  it('does not take over a lock held from another host', async () => {
    await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: 999_999_999, host: 'other', startedAt: '2026-01-01T00:00:00Z', operation: 'init' }));
    const err = await acquireLock(dir, 'init', { host: 'h1' }).catch((e) => e);
    expect(err.exitCode).toBe(ExitCode.Refused);
  });
});
