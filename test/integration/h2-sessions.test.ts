/**
 * The HTTP/2 connection keeper both clients use (src/net/h2-sessions.ts), against node's own
 * HTTP/2 server over h2c on loopback: when streams may go out, what holds the process, how it
 * closes. (Its PING, GOAWAY and reconnect behaviour is tested through both clients: api-h2 and
 * etcd-reader.)
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createH2Server, type Http2Server, type ServerHttp2Session } from 'node:http2';
import { connect, createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { H2Sessions } from '../../src/net/h2-sessions';
import { startBlackHole } from '../helpers/relay';

const lost = (m: string) => Object.assign(new Error(m), { code: 'ECONNRESET' });

describe('H2Sessions', () => {
  let dir: string;
  const cleanup: (() => Promise<void> | void)[] = [];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-h2s-'));
  });
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /**
   * An h2c server whose streams answer after `delayMs`, counting streams at once; with
   * `acceptAfterMs`, each TCP connection is only handed to HTTP/2 after that long.
   */
  async function server(o: { maxStreams?: number; delayMs?: number; acceptAfterMs?: number } = {}) {
    const h2: Http2Server = createH2Server({ settings: { maxConcurrentStreams: o.maxStreams ?? 100 } });
    let active = 0;
    let peak = 0;
    let refused = 0;
    let connections = 0;
    const sessions = new Set<ServerHttp2Session>();
    h2.on('session', (s) => {
      sessions.add(s);
      s.on('close', () => sessions.delete(s));
    });
    h2.on('stream', (stream) => {
      peak = Math.max(peak, ++active);
      stream.on('close', () => {
        active--;
        if (stream.rstCode === 7) refused++;
      });
      setTimeout(() => {
        if (!stream.closed) stream.respond({ ':status': 200 }, { endStream: false });
        if (!stream.closed) stream.end('ok');
      }, o.delayMs ?? 0);
    });
    const sockets = new Set<Socket>();
    const tcp: NetServer = createNetServer((socket) => {
      connections++;
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      setTimeout(() => h2.emit('connection', socket), o.acceptAfterMs ?? 0);
    });
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    const port = (tcp.address() as AddressInfo).port;
    cleanup.push(async () => {
      for (const s of sessions) s.destroy();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => tcp.close(() => r()));
    });
    return {
      port,
      get peak() {
        return peak;
      },
      get refused() {
        return refused;
      },
      /** TCP connections accepted so far. */
      get connections() {
        return connections;
      },
    };
  }

  const keeper = (port: number, extra: Partial<ConstructorParameters<typeof H2Sessions>[0]> = {}) => {
    const k = new H2Sessions({
      origin: `http://127.0.0.1:${port}`,
      peer: 'the test server',
      dial: () => connect(port, '127.0.0.1'),
      connectTimeoutMs: 5000,
      pingTimeoutMs: 1000,
      lost,
      connectTimedOut: (ms) => Object.assign(new Error(`connect timed out after ${ms} ms`), { code: 'ETIMEDOUT' }),
      ...extra,
    });
    cleanup.push(() => k.close('destroy'));
    return k;
  };

  /** One GET on the keeper's session, its body. */
  async function get(k: H2Sessions, wait = {}): Promise<string> {
    const s = await k.session(wait);
    if (!s) throw new Error('no session');
    const release = k.hold(s);
    const stream = s.request({ ':path': '/' });
    stream.setEncoding('utf8');
    let body = '';
    let ended = false;
    let answered = false;
    stream.on('response', () => (answered = true));
    stream.on('data', (c: string) => (body += c));
    stream.on('end', () => (ended = true));
    return new Promise((resolve, reject) => {
      stream.on('error', reject);
      stream.on('close', () => {
        release();
        if (answered && ended && !stream.rstCode) resolve(body);
        else reject(Object.assign(new Error(`cut off (HTTP/2 code ${stream.rstCode})`), { rstCode: stream.rstCode }));
      });
    });
  }

  it('streams go out only once the server\'s SETTINGS are in: a server that allows 2 at once refuses none of 12', async () => {
    const srv = await server({ maxStreams: 2, delayMs: 50 });
    const k = keeper(srv.port);
    const bodies = await Promise.all(Array.from({ length: 12 }, () => get(k)));
    expect(bodies).toEqual(Array(12).fill('ok'));
    expect(srv.refused).toBe(0);
    expect(srv.peak).toBe(2);
  });

  it('one connect for every caller that waits for it; each gives up on its own timeout and abort while the rest wait on', async () => {
    const srv = await server({ acceptAfterMs: 400 });
    const k = keeper(srv.port);
    const ac = new AbortController();
    const results = Promise.allSettled([
      get(k),
      get(k, { timeoutMs: 100, timedOut: () => new Error('gave up') }),
      get(k, { signal: ac.signal }),
      get(k),
    ]);
    setTimeout(() => ac.abort(new Error('aborted')), 50);
    const [a, b, c, d] = await results;
    expect(a).toEqual({ status: 'fulfilled', value: 'ok' });
    expect(b).toMatchObject({ status: 'rejected', reason: { message: 'gave up' } });
    expect(c).toMatchObject({ status: 'rejected', reason: { message: 'aborted' } });
    expect(d).toEqual({ status: 'fulfilled', value: 'ok' });
    expect(srv.connections).toBe(1);
  });

  it('a wait whose signal is already aborted fails with the abort, before any connect', async () => {
    const srv = await server();
    const k = keeper(srv.port);
    const signal = AbortSignal.abort(new Error('already'));
    await expect(k.session({ signal, timeoutMs: 1000 })).rejects.toThrow('already');
    await expect(k.session({ signal, aborted: () => new Error('mine') })).rejects.toThrow('mine');
    await new Promise((r) => setTimeout(r, 100));
    expect(srv.connections).toBe(0);
    expect(await get(k)).toBe('ok');
    expect(srv.connections).toBe(1);
  });

  it("a caller right after close('destroy') of a connect in progress gets a connection of its own", async () => {
    const srv = await server({ acceptAfterMs: 200 });
    const k = keeper(srv.port);
    const doomed = get(k);
    k.close('destroy');
    const next = get(k);
    await expect(doomed).rejects.toThrow('closed before it was ready');
    expect(await next).toBe('ok');
  });

  it('a connect without progress fails every waiter with connectTimedOut', async () => {
    const hole = await startBlackHole();
    cleanup.push(() => hole.close());
    const k = keeper(hole.port, { connectTimeoutMs: 300 });
    const started = Date.now();
    const errs = await Promise.all([get(k).catch((e: unknown) => e), get(k).catch((e: unknown) => e)]);
    expect(errs.map((e) => (e as Error).message)).toEqual(['connect timed out after 300 ms', 'connect timed out after 300 ms']);
    expect(hole.connections).toBe(1);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("close('drain') lets a stream in flight finish and takes no new one on that connection; close('destroy') fails it", async () => {
    const srv = await server({ delayMs: 300 });
    const k = keeper(srv.port);
    const first = get(k);
    await new Promise((r) => setTimeout(r, 100));
    k.close('drain');
    expect(await first).toBe('ok');
    const second = get(k);
    await new Promise((r) => setTimeout(r, 100));
    // The second stream went on a connection of its own, which destroy() cuts.
    expect(srv.connections).toBe(2);
    k.close('destroy');
    await expect(second).rejects.toThrow(/cut off|closed/);
  });

  /** Runs `body` in a child process (bundled with the keeper) and gives its exit code, output and time. */
  async function child(body: string) {
    const script = join(dir, `child-${Math.random().toString(36).slice(2)}.ts`);
    const bundle = script.replace(/\.ts$/, '.mjs');
    const src = fileURLToPath(new URL('../../src/net/h2-sessions.ts', import.meta.url));
    await writeFile(script, `import { connect } from 'node:net';\nimport { H2Sessions } from ${JSON.stringify(src)};\n${body}\n`);
    await build({ entryPoints: [script], bundle: true, platform: 'node', format: 'esm', outfile: bundle, logLevel: 'silent' });
    const started = Date.now();
    const p = spawn(process.execPath, [bundle], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (c) => (out += c));
    p.stderr.on('data', (c) => (out += c));
    const code = await new Promise<number | null>((r) => {
      const t = setTimeout(() => {
        p.kill('SIGKILL');
        r(-1);
      }, 15_000);
      p.on('exit', (c) => {
        clearTimeout(t);
        r(c);
      });
    });
    return { code, out: out.trim(), ms: Date.now() - started };
  }
  const keeperIn = (port: number) =>
    `const k = new H2Sessions({ origin: 'http://127.0.0.1:${port}', peer: 'p', dial: () => connect(${port}, '127.0.0.1'), connectTimeoutMs: 10000, pingTimeoutMs: 1000, lost: (m) => new Error(m), connectTimedOut: () => new Error('connect timeout') });`;

  it('a caller waiting for a connect with no timeout of its own holds the process until it is there', async () => {
    const srv = await server({ acceptAfterMs: 700 });
    const r = await child(`${keeperIn(srv.port)}
const s = await k.session();
console.log(s ? 'connected' : 'declined');`);
    expect(r).toMatchObject({ code: 0, out: 'connected' });
  });

  it('a caller that gave up leaves nothing that holds the process (the connect goes on unref\'d), nor does the idle connection after it', async () => {
    const hole = await startBlackHole();
    cleanup.push(() => hole.close());
    const gaveUp = await child(`${keeperIn(hole.port)}
await k.session({ timeoutMs: 200 }).catch(() => console.log('gave up'));`);
    expect(gaveUp).toMatchObject({ code: 0, out: 'gave up' });
    expect(gaveUp.ms).toBeLessThan(5000); // not the 10 s connect timeout

    const srv = await server();
    const idle = await child(`${keeperIn(srv.port)}
const s = await k.session();
const release = k.hold(s);
const st = s.request({ ':path': '/' });
st.resume();
st.on('close', () => { release(); console.log('done'); });`);
    expect(idle).toMatchObject({ code: 0, out: 'done' });
  });
});
