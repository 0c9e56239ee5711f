// The API client's HTTP/2 transport (src/cluster/h2.ts) against a real node:http2 TLS server with
// client certificates, as an apiserver serves (ALPN h2 and http/1.1): requests in flight are
// streams of one connection; a server that picks HTTP/1.1 gets the keep-alive agent; a GOAWAY,
// a reset stream, a server that never answers, an abort, a refused port and a server that caps
// the streams of a connection each end as the callers expect. The server is node's own, not the
// module under test.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  constants,
  createSecureServer,
  type Http2SecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createApiClient, type ApiClient } from '../../src/cluster/api';
import { ApiConnectionError, ApiError, isTransient } from '../../src/cluster/errors';
import { generatePki, type BedPki } from '../bed/pki';
import { startRelay } from '../helpers/relay';

let dir: string;
let pki: BedPki;

interface Bed {
  server: Http2SecureServer | HttpsServer;
  url: string;
  /** TLS connections accepted, and the ALPN protocol of each. */
  connections: string[];
  sessions: Set<Http2Session>;
  /** HTTP versions of the requests served. */
  versions: string[];
  /** Streams in flight at once, at most. */
  peakStreams: number;
  /** The highest HTTP/2 stream id a request came on: 2n-1 when n requests were sent once each. */
  maxStreamId: number;
  close(): Promise<void>;
}

type Handler = (stream: ServerHttp2Stream | undefined, path: string, answer: (status: number, body: unknown, headers?: Record<string, string>) => void) => void;

async function startServer(opts: { http1Only?: boolean; maxStreams?: number; handler?: Handler } = {}): Promise<Bed> {
  const bed: Partial<Bed> & { connections: string[]; versions: string[]; sessions: Set<Http2Session> } = {
    connections: [],
    versions: [],
    sessions: new Set(),
    peakStreams: 0,
    maxStreamId: 0,
  };
  let inFlight = 0;
  const serverTls = {
    cert: readFileSync(pki.apiserverCrt),
    key: readFileSync(pki.apiserverKey),
    ca: readFileSync(pki.caCrt),
    requestCert: true,
    rejectUnauthorized: true,
  };
  const handle = (req: Http2ServerRequest | IncomingMessage, res: Http2ServerResponse | ServerResponse) => {
      bed.versions.push(req.httpVersion);
      const id = (req as { stream?: ServerHttp2Stream }).stream?.id;
      if (id !== undefined) bed.maxStreamId = Math.max(bed.maxStreamId!, id);
      bed.peakStreams = Math.max(bed.peakStreams!, ++inFlight);
      res.on('close', () => inFlight--);
      const cn = (req.socket as TLSSocket).getPeerCertificate().subject?.CN;
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        const answer = (status: number, b: unknown, headers: Record<string, string> = {}) => {
          const text = typeof b === 'string' ? b : JSON.stringify(b);
          (res as ServerResponse).writeHead(status, { 'content-type': 'application/json', ...headers });
          res.end(text);
        };
        const handler: Handler =
          opts.handler ??
          ((_s, path, ans) =>
            setTimeout(() =>
              path === '/missing'
                ? ans(404, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404, message: 'not found' })
                : ans(200, { cn, path, method: req.method, body, auth: req.headers.authorization }),
            30));
        handler((req as { stream?: ServerHttp2Stream }).stream, req.url!, (s, b, h) => answer(s, b === undefined ? { cn, path: req.url, method: req.method, body } : b, h));
      });
  };
  // node:http2's server always offers h2; node:https offers none: a server that speaks HTTP/1.1 only.
  const server: Http2SecureServer | HttpsServer = opts.http1Only
    ? createHttpsServer(serverTls, handle)
    : createSecureServer({ ...serverTls, allowHTTP1: true, ...(opts.maxStreams ? { settings: { maxConcurrentStreams: opts.maxStreams } } : {}) }, handle);
  server.on('secureConnection', (s: TLSSocket) => bed.connections.push(String(s.alpnProtocol)));
  server.on('session', (s: Http2Session) => {
    bed.sessions.add(s);
    s.on('close', () => bed.sessions.delete(s));
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const sockets = new Set<TLSSocket>();
  server.on('secureConnection', (s: TLSSocket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return Object.assign(bed, {
    server,
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  }) as Bed;
}

const clientFor = (url: string, opts: Parameters<typeof createApiClient>[1] = {}, extra: Partial<Parameters<typeof createApiClient>[0]> = {}) =>
  createApiClient({ server: url, ca: readFileSync(pki.caCrt), cert: readFileSync(pki.adminCrt), key: readFileSync(pki.adminKey), ...extra }, opts);

const open: Array<{ close(): unknown }> = [];
const track = <T extends { close(): unknown }>(x: T): T => {
  open.push(x);
  return x;
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-api-h2-'));
  pki = await generatePki(join(dir, 'pki'));
}, 60_000);

afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('API client over HTTP/2', () => {
  it('carries every request in flight as a stream of one connection, with the client certificate and headers', async () => {
    const bed = track(await startServer());
    const api: ApiClient = track(clientFor(bed.url, { maxSockets: 4 }, { headers: { Authorization: 'Bearer t0k' } }));
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) => api.put<{ cn: string; path: string; method: string; body: string; auth: string }>(`/api/v1/x${i}`, { i })),
    );
    expect(answers.map((a) => a.cn)).toEqual(Array(40).fill('kubernetes-admin'));
    expect(answers.map((a) => a.path)).toEqual(Array.from({ length: 40 }, (_, i) => `/api/v1/x${i}`));
    expect(answers.every((a, i) => a.method === 'PUT' && JSON.parse(a.body).i === i && a.auth === 'Bearer t0k')).toBe(true);
    expect(bed.connections).toEqual(['h2']);
    expect(new Set(bed.versions)).toEqual(new Set(['2.0']));
    // Not bounded by maxSockets: that is HTTP/1.1's connections.
    expect(bed.peakStreams).toBeGreaterThan(4);
    // The answer's Status and headers as over HTTP/1.1.
    const err = await api.get('/missing', { throttleRetries: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(404);
    expect((err as ApiError).message).toContain('not found');
  });

  it('a server that picks HTTP/1.1 in ALPN gets the keep-alive agent, bounded by maxSockets', async () => {
    const bed = track(await startServer({ http1Only: true }));
    const api = track(clientFor(bed.url, { maxSockets: 4 }));
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => api.get<{ path: string }>(`/api/v1/y${i}`)));
    expect(answers.map((a) => a.path)).toEqual(Array.from({ length: 12 }, (_, i) => `/api/v1/y${i}`));
    expect(new Set(bed.versions)).toEqual(new Set(['1.1']));
    // The connection that asked, then the agent's (at most 4); later requests ask no more.
    expect(bed.connections.every((p) => p !== 'h2')).toBe(true);
    expect(bed.connections.length).toBeLessThanOrEqual(5);
    const before = bed.connections.length;
    await api.get('/again');
    expect(bed.connections.length).toBeLessThanOrEqual(before + 1);
    expect(bed.peakStreams).toBeLessThanOrEqual(4);
  });

  it('http2: false speaks HTTP/1.1 to a server that offers h2', async () => {
    const bed = track(await startServer());
    const api = track(clientFor(bed.url, { http2: false }));
    await api.get('/one');
    expect(bed.versions).toEqual(['1.1']);
  });

  it('honours the server’s SETTINGS_MAX_CONCURRENT_STREAMS: the rest wait for a stream to end, none is refused', async () => {
    const bed = track(await startServer({ maxStreams: 3 }));
    const api = track(clientFor(bed.url));
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => api.get<{ path: string }>(`/z${i}`)));
    expect(answers).toHaveLength(20);
    expect(bed.peakStreams).toBe(3);
    expect(bed.connections).toEqual(['h2']);
    // Each request on its own stream once (ids 1, 3, ... 39): none was refused and sent again,
    // which is what a burst sent before the server's SETTINGS would get.
    expect(bed.maxStreamId).toBe(39);
  });

  it('after a GOAWAY the streams in flight finish and the next request opens a new connection', async () => {
    let goaway = false;
    const bed = track(
      await startServer({
        handler: (_s, path, answer) => {
          if (path === '/goaway' && !goaway) {
            goaway = true;
            // Graceful: no new streams on this session; the one in flight is answered.
            for (const s of bed.sessions) s.close();
          }
          setTimeout(() => answer(200, undefined), 50);
        },
      }),
    );
    const api = track(clientFor(bed.url));
    await api.get('/first');
    const [a, b] = await Promise.all([api.get<{ path: string }>('/goaway'), api.get<{ path: string }>('/beside')]);
    expect([a.path, b.path]).toEqual(['/goaway', '/beside']);
    // The session is retired: this one goes on a new connection.
    await new Promise((r) => setTimeout(r, 100));
    const c = await api.get<{ path: string }>('/after');
    expect(c.path).toBe('/after');
    expect(bed.connections).toEqual(['h2', 'h2']);
  });

  it.each([
    ['resets it (INTERNAL_ERROR)', constants.NGHTTP2_INTERNAL_ERROR],
    ['ends it without any answer (NO_ERROR before headers: not "HTTP 0")', constants.NGHTTP2_NO_ERROR],
  ])('a stream the server %s is a dropped connection (transient), not sent again, and the client goes on', async (_what, code) => {
    const bed = track(
      await startServer({
        handler: (stream, path, answer) => {
          if (path === '/cut') stream!.close(code);
          else answer(200, undefined);
        },
      }),
    );
    const api = track(clientFor(bed.url));
    const err = await api.get('/cut').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiConnectionError);
    expect(isTransient(err)).toBe(true);
    expect(bed.versions).toHaveLength(1); // not sent again by the transport: the caller decides
    expect(((await api.get('/fine')) as { path: string }).path).toBe('/fine');
    expect(bed.connections).toEqual(['h2']);
  });

  it('a refused stream (not processed) is sent again; refused every time, it fails as a dropped connection', async () => {
    const seen = new Map<string, number>();
    const bed = track(
      await startServer({
        handler: (stream, path, answer) => {
          const n = (seen.get(path) ?? 0) + 1;
          seen.set(path, n);
          if (path === '/always' || n <= 2) stream!.close(constants.NGHTTP2_REFUSED_STREAM);
          else answer(200, undefined);
        },
      }),
    );
    const api = track(clientFor(bed.url));
    expect(((await api.put('/twice', { x: 1 })) as { path: string; body: string }).body).toBe('{"x":1}');
    expect(seen.get('/twice')).toBe(3);
    const err = await api.get('/always').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiConnectionError);
    expect(isTransient(err)).toBe(true);
    expect(seen.get('/always')).toBe(5); // the first send and 4 more
  });

  it('a request with no answer times out (ETIMEDOUT) and leaves the connection usable', async () => {
    const bed = track(
      await startServer({
        handler: (_s, path, answer) => {
          if (path !== '/never') answer(200, undefined);
        },
      }),
    );
    const api = track(clientFor(bed.url));
    const t0 = Date.now();
    const err = await api.get('/never', { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiConnectionError);
    expect((err as ApiConnectionError).code).toBe('ETIMEDOUT');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(((await api.get('/fine')) as { path: string }).path).toBe('/fine');
    // The PING was answered: a slow answer is not a dead connection.
    await new Promise((r) => setTimeout(r, 200));
    expect(((await api.get('/fine2')) as { path: string }).path).toBe('/fine2');
    expect(bed.connections).toEqual(['h2']);
  });

  it('a timeout on a connection that is closing (after a GOAWAY) leaves the other requests on it to finish', async () => {
    const bed = track(
      await startServer({
        handler: (_s, path, answer) => {
          if (path === '/slow') setTimeout(() => answer(200, undefined), 800);
          else if (path !== '/never') answer(200, undefined);
        },
      }),
    );
    const api = track(clientFor(bed.url, { http2PingTimeoutMs: 200 }));
    await api.get('/first');
    const slow = api.get<{ path: string }>('/slow', { timeoutMs: 5000 });
    const never = api.get('/never', { timeoutMs: 300 }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 100));
    for (const s of bed.sessions) s.close(); // GOAWAY: the two streams in flight may finish
    expect(((await never) as ApiConnectionError).code).toBe('ETIMEDOUT');
    expect((await slow).path).toBe('/slow');
  });

  it('connection-specific headers (forbidden in HTTP/2) are left out, not a failed request', async () => {
    const bed = track(await startServer());
    const api = track(clientFor(bed.url, {}, { headers: { Connection: 'keep-alive', 'Keep-Alive': 'timeout=5', Authorization: 'Bearer t' } }));
    expect(((await api.get('/x')) as { auth: string }).auth).toBe('Bearer t');
    expect(bed.versions).toEqual(['2.0']);
  });

  it('a server that sends GOAWAY on every new connection: a bounded number of tries, then a dropped connection', async () => {
    const bed = track(await startServer());
    bed.server.on('session', (s: Http2Session) => s.close());
    const api = track(clientFor(bed.url));
    const t0 = Date.now();
    const err = await api.get('/x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiConnectionError);
    expect(isTransient(err)).toBe(true);
    expect(bed.connections.length).toBeGreaterThan(1);
    expect(bed.connections.length).toBeLessThanOrEqual(15);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('an aborted request rejects with the signal’s reason, not as a connection failure', async () => {
    const bed = track(await startServer({ handler: () => {} }));
    const api = track(clientFor(bed.url));
    const ac = new AbortController();
    const p = api.get('/slow', { signal: ac.signal }).catch((e: unknown) => e);
    setTimeout(() => ac.abort(new Error('interrupted')), 100);
    const err = await p;
    expect(err).not.toBeInstanceOf(ApiConnectionError);
    expect((err as Error).message).toBe('interrupted');
  });

  it('a server that never completes the TLS handshake: the request times out, or ends at once on abort', async () => {
    const silent = createNetServer(() => {}); // accepts, says nothing
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const held = new Set<import('node:net').Socket>();
    silent.on('connection', (c) => held.add(c));
    try {
      const url = `https://127.0.0.1:${(silent.address() as AddressInfo).port}`;
      const api = track(clientFor(url));
      // A request with a long timeout starts the connection; one with a short timeout joins it
      // and gives up on its own time.
      const long = api.get('/w', { timeoutMs: 20_000 }).catch((e: unknown) => e);
      let t0 = Date.now();
      const err = await api.get('/x', { timeoutMs: 300 }).catch((e: unknown) => e);
      expect((err as ApiConnectionError).code).toBe('ETIMEDOUT');
      expect(Date.now() - t0).toBeLessThan(3000);
      api.close(); // the connection being made goes, and the request waiting for it fails now
      expect(((await long) as ApiConnectionError).code).toBe('ECONNRESET');
      expect(Date.now() - t0).toBeLessThan(3000);
      const ac = new AbortController();
      t0 = Date.now();
      const p = api.get('/y', { signal: ac.signal }).catch((e: unknown) => e);
      setTimeout(() => ac.abort(new Error('interrupted')), 100);
      expect(((await p) as Error).message).toBe('interrupted');
      expect(Date.now() - t0).toBeLessThan(3000);
    } finally {
      for (const c of held) c.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  it('a peer that goes silent (no close, no reset): the request times out, an unanswered PING drops the connection, the next request connects again', async () => {
    const bed = track(await startServer());
    const relay = await startRelay(Number(new URL(bed.url).port));
    try {
      const api = track(clientFor(`https://127.0.0.1:${relay.port}`, { http2PingTimeoutMs: 300 }));
      await api.get('/before');
      relay.silence(true);
      const err = await api.get('/lost', { timeoutMs: 300 }).catch((e: unknown) => e);
      expect((err as ApiConnectionError).code).toBe('ETIMEDOUT');
      await new Promise((r) => setTimeout(r, 700)); // the PING's 300 ms pass unanswered
      relay.silence(false);
      expect(((await api.get('/after', { timeoutMs: 5000 })) as { path: string }).path).toBe('/after');
      expect(relay.connections).toBe(2);
    } finally {
      await relay.close();
    }
  });

  it('a header value Node refuses (HTTP/1.1: a newline) is not a connection problem, not retried as one', async () => {
    const bed = track(await startServer());
    const api = track(clientFor(bed.url, { http2: false }, { headers: { Authorization: 'Bearer a\nb' } }));
    const err = await api.get('/x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TypeError);
    expect(err).not.toBeInstanceOf(ApiConnectionError);
    expect(isTransient(err)).toBe(false);
  });

  it('a port nobody listens on fails as a connection error with its code; a server that comes back is reached', async () => {
    const probe = createNetServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const api = track(clientFor(`https://127.0.0.1:${port}`));
    const err = await api.get('/x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiConnectionError);
    expect((err as ApiConnectionError).code).toBe('ECONNREFUSED');
    expect(isTransient(err)).toBe(true);
  });

  it('a connection the server drops is replaced on the next request', async () => {
    const bed = track(await startServer());
    const api = track(clientFor(bed.url));
    await api.get('/one');
    for (const s of bed.sessions) s.destroy();
    await new Promise((r) => setTimeout(r, 100));
    expect(((await api.get('/two')) as { path: string }).path).toBe('/two');
    expect(bed.connections).toEqual(['h2', 'h2']);
  });

  it('a certificate the CA did not sign fails as a certificate problem (not transient)', async () => {
    const bed = track(await startServer());
    const api = track(clientFor(bed.url, {}, { ca: readFileSync(pki.etcdCaCrt) }));
    const err = await api.get('/x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiConnectionError);
    expect(String((err as Error).message)).toMatch(/certificate/i);
    expect(isTransient(err)).toBe(false);
  });

  it('an idle connection does not keep the process alive', async () => {
    const bed = track(await startServer());
    // A child that makes one request and never calls close(): it must exit by itself.
    const script = join(dir, 'idle.ts');
    const bundle = join(dir, 'idle.mjs');
    const api = fileURLToPath(new URL('../../src/cluster/api.ts', import.meta.url));
    await writeFile(
      script,
      `import { readFileSync } from 'node:fs';
import { createApiClient } from ${JSON.stringify(api)};
const c = createApiClient({ server: ${JSON.stringify(bed.url)}, ca: readFileSync(${JSON.stringify(pki.caCrt)}), cert: readFileSync(${JSON.stringify(pki.adminCrt)}), key: readFileSync(${JSON.stringify(pki.adminKey)}) });
const r = await c.get('/from-child');
console.log(JSON.stringify(r));
`,
    );
    await build({ entryPoints: [script], bundle: true, platform: 'node', format: 'esm', outfile: bundle, logLevel: 'silent' });
    const child = spawn(process.execPath, [bundle], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    const code = await new Promise<number | null>((r) => {
      const t = setTimeout(() => {
        child.kill('SIGKILL');
        r(-1);
      }, 10_000);
      child.on('exit', (c) => {
        clearTimeout(t);
        r(c);
      });
    });
    expect(err).toBe('');
    expect(code).toBe(0);
    expect(JSON.parse(out).path).toBe('/from-child');
    expect(bed.connections).toEqual(['h2']);
  });
});
