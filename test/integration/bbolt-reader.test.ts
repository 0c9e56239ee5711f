import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { liveKeyValues, type SnapshotSummary } from '../../src/bbolt/etcd';
import { BoltDb, BoltFormatError } from '../../src/bbolt/reader';
import { runCli } from '../helpers/cli';
import { startEtcd, type RunningEtcd } from '../helpers/etcd';

/**
 * The offline bbolt reader against snapshots of a real etcd 3.4 taken with etcdctl (not with the
 * project's own snapshot code), compared with what etcdctl itself reads back from the server.
 */
const etcdctl = (endpoint: string, ...args: string[]) =>
  execa('etcdctl', [`--endpoints=${endpoint}`, ...args], { env: { ETCDCTL_API: '3' } });

/** Every live key and value, as etcdctl reads them from the server (hex, since values are binary). */
async function serverView(endpoint: string, prefix: string): Promise<Map<string, string>> {
  const { stdout } = await etcdctl(endpoint, 'get', prefix, '--prefix', '-w', 'json');
  const res = JSON.parse(stdout) as { kvs?: { key: string; value?: string }[] };
  return new Map((res.kvs ?? []).map((kv) => [Buffer.from(kv.key, 'base64').toString('utf8'), Buffer.from(kv.value ?? '', 'base64').toString('hex')]));
}

async function snapshotView(file: string, prefix: string, summary?: SnapshotSummary): Promise<Map<string, string>> {
  const db = await BoltDb.open(file);
  try {
    const out = new Map<string, string>();
    for await (const kv of liveKeyValues(db, { prefixes: [prefix] }, summary)) out.set(kv.key, kv.value.toString('hex'));
    return out;
  } finally {
    await db.close();
  }
}

/** etcdctl put with the value on stdin: binary-safe enough for our random hex values. */
async function put(endpoint: string, key: string, value: string) {
  await execa('etcdctl', [`--endpoints=${endpoint}`, 'put', key], { env: { ETCDCTL_API: '3' }, input: value });
}

describe('bbolt reader on real etcd 3.4 snapshots', () => {
  let etcd: RunningEtcd;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-bbolt-'));
    etcd = await startEtcd();
  });
  afterAll(async () => {
    await etcd?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('reads a small snapshot: newest revision per key, deletions honoured, inline-free leaves', async () => {
    await put(etcd.endpoint, '/registry/secrets/a/one', 'v1');
    await put(etcd.endpoint, '/registry/secrets/a/one', 'v2');
    await put(etcd.endpoint, '/registry/secrets/a/two', 'gone soon');
    await etcdctl(etcd.endpoint, 'del', '/registry/secrets/a/two');
    await put(etcd.endpoint, '/registry/configmaps/a/x', 'cm');
    // A key with a lease: etcd's lease IDs are int64 values past 2^53.
    const lease = (await etcdctl(etcd.endpoint, 'lease', 'grant', '600')).stdout.split(' ')[1]!;
    expect(BigInt(`0x${lease}`)).toBeGreaterThan(2n ** 53n);
    await etcdctl(etcd.endpoint, 'put', `--lease=${lease}`, '/registry/secrets/a/leased', 'with-lease');
    const file = join(dir, 'small.db');
    await etcdctl(etcd.endpoint, 'snapshot', 'save', file);
    const summary: SnapshotSummary = { revision: 0n, records: 0 };
    const got = await snapshotView(file, '/registry/secrets/', summary);
    expect(got).toEqual(await serverView(etcd.endpoint, '/registry/secrets/'));
    expect(got.get('/registry/secrets/a/one')).toBe(Buffer.from('v2').toString('hex'));
    expect(got.has('/registry/secrets/a/two')).toBe(false);
    expect(got.get('/registry/secrets/a/leased')).toBe(Buffer.from('with-lease').toString('hex'));
    expect(summary.records).toBeGreaterThanOrEqual(5);
    const db = await BoltDb.open(file);
    try {
      expect(db.meta.pageSize).toBe(4096);
      expect((await db.root().buckets()).sort()).toEqual(expect.arrayContaining(['key', 'meta', 'members']));
      // etcd 3.4 runs bbolt without a persisted freelist or with one: either reads.
      expect(Array.isArray(await db.freePages())).toBe(true);
    } finally {
      await db.close();
    }
  });

  it('walks a bucket with more than one page level and values on overflow pages', async () => {
    // ~3,000 small keys give bucket "key" branch pages over many leaves; 20 values of 10-40 KiB
    // (a large Secret) each span several overflow pages.
    const small = Array.from({ length: 3000 }, (_, i) => [`/registry/secrets/ns${i % 7}/s-${String(i).padStart(5, '0')}`, randomBytes(24).toString('hex')] as const);
    const txn = small.map(([k, v]) => `put ${k} ${v}`);
    // etcd limits a txn to 128 operations by default.
    for (let i = 0; i < txn.length; i += 100) {
      await execa('etcdctl', [`--endpoints=${etcd.endpoint}`, 'txn'], { env: { ETCDCTL_API: '3' }, input: `\n${txn.slice(i, i + 100).join('\n')}\n\n\n` });
    }
    for (let i = 0; i < 20; i++) await put(etcd.endpoint, `/registry/secrets/big/b-${i}`, randomBytes(5000 + i * 750).toString('hex'));
    const file = join(dir, 'big.db');
    await etcdctl(etcd.endpoint, 'snapshot', 'save', file);

    const db = await BoltDb.open(file);
    try {
      const stats = await (await db.bucket('key'))!.stats();
      expect(stats.depth).toBeGreaterThanOrEqual(2);
      expect(stats.branchPages).toBeGreaterThanOrEqual(1);
      expect(stats.overflowPages).toBeGreaterThan(20);
      // No page is both reachable and on the freelist.
      const free = new Set((await db.freePages()).map(String));
      expect(stats.pages.filter((p) => free.has(String(p)))).toEqual([]);
    } finally {
      await db.close();
    }
    const got = await snapshotView(file, '/registry/secrets/');
    const want = await serverView(etcd.endpoint, '/registry/secrets/');
    expect(got.size).toBe(want.size);
    expect(got).toEqual(want);
    expect(got.get('/registry/secrets/big/b-19')!.length).toBe((5000 + 19 * 750) * 4);
  });

  it('a corrupted page header or branch page in a real snapshot is a one-line format error, never a raw error or a wrong walk', async () => {
    // The bed etcd's snapshot of the previous test, its bucket "key" two levels deep or more.
    const good = await readFile(join(dir, 'big.db'));
    const ps = good.readUInt32LE(16 + 8);
    const page = (id: bigint) => Number(id) * ps;
    // The meta page in use (higher txid), the root bucket's leaf, bucket "key"'s root branch page:
    // located by hand from bbolt's layout, not by the reader under test.
    const metaAt = good.readBigUInt64LE(16 + 48) >= good.readBigUInt64LE(ps + 16 + 48) ? 0 : ps;
    const rootAt = page(good.readBigUInt64LE(metaAt + 16 + 16));
    let keyRoot: bigint | undefined;
    for (let i = 0; i < good.readUInt16LE(rootAt + 10); i++) {
      const el = rootAt + 16 + i * 16;
      const k = el + good.readUInt32LE(el + 4);
      if (good.toString('latin1', k, k + good.readUInt32LE(el + 8)) === 'key') keyRoot = good.readBigUInt64LE(k + good.readUInt32LE(el + 8));
    }
    expect(keyRoot).toBeDefined();
    const branchAt = page(keyRoot!);
    expect(good.readUInt16LE(branchAt + 8)).toBe(0x01); // a branch page
    expect(good.readUInt16LE(branchAt + 10)).toBeGreaterThan(1);
    const child = (i: number) => good.readBigUInt64LE(branchAt + 16 + i * 16 + 8);
    const firstLeafAt = page(child(0));

    const corrupt = async (name: string, edit: (b: Buffer) => Buffer | void) => {
      const b = Buffer.from(good);
      const out = edit(b) ?? b;
      const file = join(dir, `${name}.db`);
      await writeFile(file, out);
      return file;
    };
    const formatError = async (file: string): Promise<string> => {
      const err = await (async () => {
        const db = await BoltDb.open(file);
        try {
          for await (const _ of liveKeyValues(db, { prefixes: ['/registry/'] })) void _;
        } finally {
          await db.close();
        }
      })().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(BoltFormatError);
      const message = (err as Error).message;
      expect(message).not.toMatch(/\n/);
      return message;
    };

    const cases: [string, (b: Buffer) => Buffer | void, RegExp][] = [
      ['branch-count', (b) => void b.writeUInt16LE(0xffff, branchAt + 10), /branch page \d+ is shorter than its 65535 elements/],
      ['branch-twice', (b) => void b.writeBigUInt64LE(child(0), branchAt + 16 + 16 + 8), new RegExp(`page ${child(0)} is reached twice in one tree`)],
      ['branch-cycle', (b) => void b.writeBigUInt64LE(keyRoot!, branchAt + 16 + 8), new RegExp(`page ${keyRoot} is reached twice in one tree`)],
      ['leaf-flags', (b) => void b.writeUInt16LE(0, firstLeafAt + 8), new RegExp(`page ${child(0)} is neither a branch nor a leaf \\(flags 0x0\\)`)],
      ['leaf-id', (b) => void b.writeBigUInt64LE(child(0) + 1000n, firstLeafAt), new RegExp(`page ${child(0)} says it is page ${child(0) + 1000n} \\(corrupted\\)`)],
      ['leaf-overflow', (b) => void b.writeUInt32LE(0xffffffff, firstLeafAt + 12), new RegExp(`page ${child(0)} overflows past the end of the database`)],
      ['child-outside', (b) => void b.writeBigUInt64LE(1n << 40n, branchAt + 16 + 8), /page 1099511627776 is outside the database/],
    ];
    for (const [name, edit, want] of cases) expect(await formatError(await corrupt(name, edit)), name).toMatch(want);

    // Both meta pages damaged (their checksums), and a file cut in the middle of the tree.
    const metas = await corrupt('metas', (b) => {
      b[16 + 56]! ^= 0xff;
      b[ps + 16 + 56]! ^= 0xff;
    });
    await expect(BoltDb.open(metas)).rejects.toThrow(/both meta pages are invalid \(meta page 0 checksum mismatch; meta page 1 checksum mismatch\)$/);
    const cut = await corrupt('cut-mid', (b) => b.subarray(0, branchAt + ps / 2));
    await expect(BoltDb.open(cut)).rejects.toThrow(/shorter than its \d+ pages of \d+ \(truncated\)$/);

    // Through the CLI: one line, exit 4, naming the damage.
    const cfg = join(dir, 'identity.yaml');
    await writeFile(cfg, 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n', { mode: 0o600 });
    // (etcdctl's file ends with etcd's sha256, which already fails; without it the walk must.)
    expect(good.length % 512).toBe(32);
    const bare = await corrupt('branch-twice-bare', (b) => {
      b.writeBigUInt64LE(child(0), branchAt + 16 + 16 + 8);
      return b.subarray(0, b.length - 32);
    });
    const r = await runCli(['verify-snapshot', bare, '--config', cfg]);
    expect(r.exitCode, String(r.stderr)).toBe(4);
    const lines = String(r.stderr).trim().split('\n').filter((l) => !/^warning: .*no etcd sha256 trailer/.test(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/branch-twice-bare\.db is damaged: .*is reached twice in one tree/);
    expect(lines.filter((l) => /RangeError|at .*\.js:\d+/.test(l))).toEqual([]);
  });

  it('refuses a file that is not bbolt, and a truncated one', async () => {
    const junk = join(dir, 'junk.db');
    await writeFile(junk, randomBytes(16384));
    await expect(BoltDb.open(junk)).rejects.toBeInstanceOf(BoltFormatError);
    const file = join(dir, 'small.db');
    const bytes = await readFile(file);
    const cut = join(dir, 'cut.db');
    await writeFile(cut, bytes.subarray(0, 3 * 4096));
    await expect(BoltDb.open(cut)).rejects.toThrow(/truncated|outside/);
  });
});
