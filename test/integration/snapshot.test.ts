import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as http2 from 'node:http2';
import { openEtcd, type EtcdClient } from '../../src/etcd/client';
import { Channel, Code, type GrpcError } from '../../src/etcd/grpc';
import * as codec from '../../src/etcd/rpc-codec';
import { assertRoomFor, checkSnapshotFile, pruneSnapshots, sweepPartials, takeSnapshot, type SnapshotSource } from '../../src/snapshot/take';
import { checkSafetyOptions } from '../../src/snapshot/guard';
import { CliError, ExitCode } from '../../src/ui/errors';
import { startEtcd, type RunningEtcd } from '../helpers/etcd';

/** Snapshots of the bed's real etcd 3.4, checked by etcd's own tools (etcdctl 3.4 status and restore). */
const etcdctl = (...args: string[]) => execa('etcdctl', args, { env: { ETCDCTL_API: '3' }, reject: false });

describe('etcd snapshots through Maintenance.Snapshot', () => {
  let etcd: RunningEtcd;
  let client: EtcdClient;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-snap-'));
    etcd = await startEtcd();
    client = await openEtcd({ endpoints: [etcd.endpoint] });
    for (let i = 0; i < 200; i++) await client.put(`/registry/secrets/default/s-${i}`, Buffer.alloc(2000, i));
  });
  afterAll(async () => {
    client?.close();
    await etcd?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('writes a 0600 file with the trailer verified that etcdctl snapshot status and restore accept', async () => {
    const out = join(dir, 'a');
    const s = await takeSnapshot(client, out, 'etcd-test-20260101T000000Z.db');
    expect((await stat(s.path)).mode & 0o777).toBe(0o600);
    expect(s.bytes % 512).toBe(32);
    const check = await checkSnapshotFile(s.path);
    expect(check).toMatchObject({ hasHash: true, hashOk: true, sha256: s.sha256, bytes: s.bytes });
    expect((await execa('sha256sum', [s.path])).stdout.split(' ')[0]).toBe(s.sha256);
    expect(await readdir(out)).toEqual(['etcd-test-20260101T000000Z.db']);

    const status = await etcdctl('snapshot', 'status', s.path, '-w', 'json');
    expect(status.exitCode, String(status.stderr)).toBe(0);
    expect(JSON.parse(String(status.stdout)).totalKey).toBeGreaterThanOrEqual(200);
    const restored = join(dir, 'restored');
    const r = await etcdctl('snapshot', 'restore', s.path, `--data-dir=${restored}`);
    expect(r.exitCode, String(r.stderr)).toBe(0);
  });

  it('detects a corrupted file (and so does etcdctl snapshot restore)', async () => {
    const s = await takeSnapshot(client, join(dir, 'b'), 'etcd-test-20260101T000001Z.db');
    const bytes = await readFile(s.path);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    const bad = join(dir, 'b', 'corrupt.db');
    await writeFile(bad, bytes, { mode: 0o600 });
    expect(await checkSnapshotFile(bad)).toMatchObject({ hasHash: true, hashOk: false });
    const r = await etcdctl('snapshot', 'restore', bad, `--data-dir=${join(dir, 'restored-bad')}`);
    expect(r.exitCode).not.toBe(0);
    expect(String(r.stderr)).toMatch(/expected sha256/);
  });

  it('refuses a stream whose trailer does not match and leaves no file', async () => {
    const flipped: SnapshotSource = {
      status: () => client.status(),
      async *snapshot() {
        let n = 0;
        for await (const c of client.snapshot()) {
          const b = Buffer.from(c);
          if (n++ === 1) b[10]! ^= 1;
          yield b;
        }
      },
    };
    const out = join(dir, 'c');
    await expect(takeSnapshot(flipped, out, 'etcd-test-20260101T000002Z.db')).rejects.toThrow(/integrity check/);
    expect(await readdir(out)).toEqual([]);
  });

  it('an interrupted stream (abort mid-way, or a stream that breaks) leaves no partial file', async () => {
    const out = join(dir, 'd');
    const ac = new AbortController();
    const slow: SnapshotSource = {
      status: () => client.status(),
      async *snapshot(opts) {
        let n = 0;
        for await (const c of client.snapshot(opts)) {
          if (++n === 3) ac.abort(new Error('interrupted'));
          yield c;
        }
      },
    };
    await expect(takeSnapshot(slow, out, 'etcd-test-20260101T000003Z.db', ac.signal)).rejects.toThrow(/interrupted/);
    expect(await readdir(out)).toEqual([]);

    const broken: SnapshotSource = {
      status: () => client.status(),
      async *snapshot() {
        let n = 0;
        for await (const c of client.snapshot()) {
          if (++n === 3) throw new CliError('etcd snapshot at x: cannot reach etcd', { exitCode: ExitCode.Cluster });
          yield c;
        }
      },
    };
    await expect(takeSnapshot(broken, out, 'etcd-test-20260101T000004Z.db')).rejects.toThrow(/cannot reach etcd/);
    expect(await readdir(out)).toEqual([]);

    // What kill -9 leaves (a temp file only, never the final name) is swept by the next run.
    await writeFile(join(out, '.partial-etcd-test-20260101T000005Z.db'), 'half', { mode: 0o600 });
    expect((await sweepPartials(out)).length).toBe(1);
    expect(await readdir(out)).toEqual([]);
  });

  it('a reader that stops after etcd has sent everything (paused, its end received) ends the stream', async () => {
    for (const stop of ['break', 'abort'] as const) {
      const ac = new AbortController();
      const started = Date.now();
      const outcome = await (async () => {
        for await (const _ of client.snapshot({ signal: ac.signal })) {
          await new Promise((r) => setTimeout(r, 300)); // the rest of the ~400 KB arrives meanwhile
          if (stop === 'break') break;
          ac.abort(new Error('stopped'));
        }
        return 'ended';
      })().catch((e: Error) => e.message);
      expect(outcome).toBe(stop === 'break' ? 'ended' : 'stopped');
      expect(Date.now() - started).toBeLessThan(5000);
    }
    expect((await client.status()).dbSize).toBeGreaterThan(0);
  });

  it('a call whose signal is already aborted is cancelled at once, never sent', async () => {
    const channel = new Channel(http2, { target: etcd.endpoint.replace(/^http:\/\//, ''), maxReplyBytes: 1 << 26 });
    try {
      const ac = new AbortController();
      ac.abort(new Error('stopped before'));
      const unary = await channel.unary(codec.MAINTENANCE_STATUS, codec.encodeEmpty(), { signal: ac.signal }).catch((e: GrpcError) => e);
      expect((unary as GrpcError).code).toBe(Code.CANCELLED);
      let chunks = 0;
      const streamed = await (async () => {
        for await (const _ of channel.serverStream(codec.MAINTENANCE_SNAPSHOT, codec.encodeEmpty(), { signal: ac.signal })) chunks++;
      })().catch((e: GrpcError) => e);
      expect((streamed as GrpcError).code).toBe(Code.CANCELLED);
      expect(chunks).toBe(0);
    } finally {
      channel.close();
    }
  });

  it('refuses with exit 6 when the disk has less than twice the database free', async () => {
    const free = await assertRoomFor(dir, 1024);
    expect(free).toBeGreaterThan(2048);
    const err = await assertRoomFor(dir, free).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Refused);
    expect((err as CliError).message).toMatch(/less than twice the etcd database/);
  });

  it('keeps the newest N snapshots', async () => {
    const out = join(dir, 'e');
    for (const t of ['20260101T000000Z', '20260103T000000Z', '20260102T000000Z']) await takeSnapshot(client, out, `etcd-init-${t}.db`);
    const removed = await pruneSnapshots(out, 2);
    expect(removed.map((p) => p.slice(-19))).toEqual(['20260101T000000Z.db']);
    expect((await readdir(out)).sort()).toEqual(['etcd-init-20260102T000000Z.db', 'etcd-init-20260103T000000Z.db']);
  });
});

/** Maintenance.Snapshot streams etcd started and has not finished (its gRPC metrics), once that settles. */
async function snapshotStreamsOpen(endpoint: string): Promise<number> {
  const count = (text: string, metric: string) =>
    text
      .split('\n')
      .filter((l) => l.startsWith(`${metric}{`) && l.includes('grpc_method="Snapshot"'))
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  let open = -1;
  for (let i = 0; i < 50 && open !== 0; i++) {
    if (i) await new Promise((r) => setTimeout(r, 100));
    const text = await (await fetch(`${endpoint}/metrics`)).text();
    open = count(text, 'grpc_server_started_total') - count(text, 'grpc_server_handled_total');
  }
  return open;
}

describe('a snapshot stream that etcd stops sending', () => {
  let etcd: RunningEtcd;
  let client: EtcdClient;
  let dir: string;
  let paused = false;
  const resume = () => {
    if (paused) process.kill(etcd.pid, 'SIGCONT');
    paused = false;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-snap-stall-'));
    etcd = await startEtcd();
    client = await openEtcd({ endpoints: [etcd.endpoint] });
    // Far more than the HTTP/2 windows and socket buffers hold, so a pause leaves the stream mid-way.
    const big = Buffer.alloc(512 * 1024, 7);
    for (let i = 0; i < 80; i++) await client.put(`/registry/secrets/default/big-${i}`, big);
  }, 60_000);
  afterAll(async () => {
    resume();
    client?.close();
    await etcd?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('holds no chunk it has written: a snapshot larger than memory streams through', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    let first: WeakRef<Buffer> | undefined;
    let firstKept: boolean | undefined;
    let n = 0;
    const watched: SnapshotSource = {
      status: () => client.status(),
      async *snapshot(opts) {
        for await (const c of client.snapshot(opts)) {
          first ??= new WeakRef(c);
          if (++n === 300) {
            gc();
            firstKept = first.deref() !== undefined;
          }
          yield c;
        }
      },
    };
    const s = await takeSnapshot(watched, join(dir, 'held'), 'etcd-test-20260101T000012Z.db');
    expect(s.bytes).toBeGreaterThan(40 * 1024 * 1024);
    expect(n).toBeGreaterThan(300);
    // 299 chunks (~10 MB) later, the first one is long on disk and hashed: nothing may keep it.
    expect(firstKept).toBe(false);
  }, 60_000);

  it('with etcd paused (SIGSTOP) after the first chunk: fails within the stall timeout, one line, no file left', async () => {
    const pausing: SnapshotSource = {
      status: () => client.status(),
      async *snapshot(opts) {
        for await (const c of client.snapshot(opts)) {
          if (!paused) {
            process.kill(etcd.pid, 'SIGSTOP');
            paused = true;
          }
          yield c;
        }
      },
    };
    const out = join(dir, 'stalled');
    const started = Date.now();
    try {
      const err = await takeSnapshot(pausing, out, 'etcd-test-20260101T000010Z.db', undefined, 1500).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CliError);
      expect((err as CliError).exitCode).toBe(ExitCode.Cluster);
      expect((err as CliError).message).toMatch(/^the etcd snapshot stream stalled: no data for 1\.5s after \d+ bytes; the partial snapshot was removed$/);
      expect(Number((err as CliError).message.match(/after (\d+) bytes/)![1])).toBeLessThan(40 * 1024 * 1024);
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(await readdir(out)).toEqual([]);
    } finally {
      resume();
    }
    // The stall cancelled the stream (RST_STREAM): etcd, resumed, ends its side of it. A stream
    // left open would keep etcd's Snapshot handler blocked on the flow-control window for good.
    expect(await snapshotStreamsOpen(etcd.endpoint)).toBe(0);
    // etcd, resumed, serves a whole snapshot under the same short timeout: no false stall.
    const s = await takeSnapshot(client, out, 'etcd-test-20260101T000011Z.db', undefined, 1500);
    expect(await checkSnapshotFile(s.path)).toMatchObject({ hasHash: true, hashOk: true });
    expect(s.bytes).toBeGreaterThan(40 * 1024 * 1024);
  }, 60_000);
});

describe('--snapshot-stall-timeout', () => {
  it('takes a Go duration or seconds, and is a usage error when bad or with --no-snapshot', () => {
    expect(() => checkSafetyOptions({ snapshotStallTimeout: '90s' })).not.toThrow();
    expect(() => checkSafetyOptions({ snapshotStallTimeout: '45' })).not.toThrow();
    for (const bad of [{ snapshotStallTimeout: 'soon' }, { snapshotStallTimeout: '0s' }, { snapshot: false, snapshotStallTimeout: '10s' }]) {
      const err = (() => {
        try {
          checkSafetyOptions(bad);
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err).toBeInstanceOf(CliError);
      expect((err as CliError).exitCode).toBe(ExitCode.Usage);
      expect((err as CliError).message).toMatch(/--snapshot-stall-timeout/);
    }
  });
});

describe('an etcd that goes away in the middle of a snapshot', () => {
  it('fails as "cannot reach etcd" (UNAVAILABLE, as grpc-js calls a dropped connection), not as a cancel', async () => {
    const etcd = await startEtcd();
    const dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-snap-gone-'));
    const client = await openEtcd({ endpoints: [etcd.endpoint] });
    try {
      const big = Buffer.alloc(512 * 1024, 9);
      for (let i = 0; i < 20; i++) await client.put(`/registry/secrets/default/big-${i}`, big);
      // etcd shutting down closes its connections: the client sees the session end under an
      // open stream (nghttp2 reports it as a CANCEL of the stream), or a reset.
      const leaving: SnapshotSource = {
        status: () => client.status(),
        async *snapshot(opts) {
          let n = 0;
          for await (const c of client.snapshot(opts)) {
            if (n++ === 0) process.kill(etcd.pid, 'SIGTERM');
            yield c;
          }
        },
      };
      const err = await takeSnapshot(leaving, dir, 'etcd-test-20260101T000020Z.db').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CliError);
      expect((err as CliError).exitCode).toBe(ExitCode.Cluster);
      expect((err as CliError).message).toMatch(/^etcd snapshot at http:\/\/127\.0\.0\.1:\d+: cannot reach etcd \(14 UNAVAILABLE: /);
      expect(await readdir(dir)).toEqual([]);
    } finally {
      client.close();
      await etcd.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
