import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import tls, { type SecureContext, type TLSSocket } from 'node:tls';

/** What came back, before it is turned into a body or an ApiError. */
export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

/** One request on the wire; rejects with the transport's own error (a code such as ECONNRESET). */
export type Send = (
  method: string,
  path: string,
  headers: OutgoingHttpHeaders,
  payload: string | Buffer | undefined,
  timeoutMs: number,
  signal?: AbortSignal,
) => Promise<Answer>;

export interface H2Options {
  /** https://host:port, the :authority of every request. */
  origin: string;
  hostname: string;
  port: number;
  secureContext: SecureContext;
  rejectUnauthorized: boolean;
  /** The name to verify the certificate against, when not the host. */
  servername?: string;
  /** Where requests go once the server has picked HTTP/1.1 in ALPN. */
  fallback: Send;
  timedOut: (ms: number) => Error;
  /** How long a PING may go unanswered before the connection is given up (default 10 s). */
  pingTimeoutMs?: number;
}

export interface H2Transport {
  send: Send;
  /**
   * Closes the connections at once, and one being made: requests in flight or waiting for it fail
   * (ECONNRESET). A request after close() connects again, as the HTTP/1.1 agent does.
   */
  close(): void;
}

/** Lazily, and without an ES namespace (see the node:http note in ./api). */
const loadHttp2 = (): typeof import('node:http2') =>
  process.getBuiltinModule?.('node:http2') ?? createRequire(process.execPath)('node:http2');

/**
 * Requests as streams of one HTTP/2 connection. Every connection is TLS with ALPN offering h2
 * and http/1.1, as client-go's does; the server picks, and a server (or a proxy in front of it)
 * that picks HTTP/1.1 has every request of this client go to `fallback` from then on.
 *
 * Why: HTTP/1.1 carries one request per connection at a time, so 128 requests in flight are 128
 * TLS connections of about 150 KB each (OpenSSL state, a 64 KiB input buffer, an HTTP parser),
 * which was most of re-encrypt-all's memory beyond the V8 heap. One connection carries them all.
 *
 * A connection that closes, fails or is told GOAWAY takes no new streams: the next request opens
 * a new one. A stream the server refused (REFUSED_STREAM: past the last stream of a GOAWAY) was
 * not processed, and is sent again (a few times); one reset otherwise, or cut off with its
 * connection, fails as a dropped connection (ECONNRESET and the like), which the rewrite retries
 * as it does over HTTP/1.1. Streams go out once the server's SETTINGS are in, and nghttp2 holds
 * back those past its SETTINGS_MAX_CONCURRENT_STREAMS until one ends. An idle connection does
 * not keep the process alive.
 *
 * Each stream's objects hang off a native handle that scavenges do not free, so they are promoted
 * and wait for a full GC: the CLI runs V8 in its memory saver mode (src/heap.ts) for that.
 */
export function h2Transport(o: H2Options): H2Transport {
  const c = loadHttp2().constants;
  const servername = o.servername ?? (isIP(o.hostname) ? undefined : o.hostname);
  /** The server picked HTTP/1.1: every request goes to the fallback. */
  let http1 = false;
  /** The connection new streams go on; undefined once it closed, failed or was told GOAWAY. */
  let live: ClientHttp2Session | undefined;
  let connecting: Promise<void> | undefined;
  /** Every session not yet closed, with its streams in flight (it holds the process while any are). */
  const open = new Map<ClientHttp2Session, number>();
  const reset = (message: string) => Object.assign(new Error(message), { code: 'ECONNRESET' });
  const usable = () => (live && !live.closed && !live.destroyed ? live : undefined);
  /** The socket of a connection being made (close() destroys it) and of each session (for PINGs). */
  let pendingSocket: TLSSocket | undefined;
  const socketOf = new WeakMap<ClientHttp2Session, TLSSocket>();

  /** A TLS connection with ALPN; resolves with the session, or undefined when h2 was not picked. */
  const connect = (): Promise<ClientHttp2Session | undefined> =>
    new Promise((resolve, reject) => {
      // tls.connect looked up at call time (the CLI's warning filter wraps it, as for the agent).
      const socket: TLSSocket = tls.connect({
        host: o.hostname,
        port: o.port,
        ...(servername ? { servername } : {}),
        secureContext: o.secureContext,
        rejectUnauthorized: o.rejectUnauthorized,
        ALPNProtocols: ['h2', 'http/1.1'],
      });
      pendingSocket = socket;
      // Each request waits for this within its own timeout, and those timers hold the process
      // while anyone waits: the connection itself does not (a request that gave up leaves nothing
      // that keeps a command from exiting), and gives up after CONNECT_TIMEOUT_MS.
      socket.unref();
      socket.setTimeout(CONNECT_TIMEOUT_MS, () => socket.destroy(o.timedOut(CONNECT_TIMEOUT_MS)));
      // A peer that vanishes without a word (a node or a VIP gone) is found by the stream
      // timeout's PING below; TCP keep-alive as the agent had it, for an idle connection.
      socket.setKeepAlive(true, 30_000);
      socket.once('error', reject);
      socket.once('close', () => {
        if (pendingSocket === socket) pendingSocket = undefined;
        // Closed before it was ready without an error (close() destroyed it): its waiters fail.
        // (After the promise settled this does nothing.)
        reject(reset('the connection to the apiserver closed before it was ready'));
      });
      socket.once('secureConnect', () => {
        socket.removeListener('error', reject);
        if (socket.alpnProtocol !== 'h2') {
          socket.destroy();
          resolve(undefined);
          return;
        }
        const s = loadHttp2().connect(o.origin, {
          createConnection: () => socket,
          // A list page is about 1 MB: a stream window that lets it come in one go (default 64 KiB).
          settings: { enablePush: false, initialWindowSize: 4 << 20 },
          // A limit, not an allocation: past it nghttp2 refuses new streams (default 10 MB).
          maxSessionMemory: 256,
        });
        s.setLocalWindowSize(32 << 20);
        socketOf.set(s, socket);
        const retire = () => {
          if (live === s) live = undefined;
        };
        let failure: Error | undefined;
        s.on('error', (err) => {
          failure ??= err;
          retire(); // each stream in flight fails with its own error
        });
        s.on('goaway', retire);
        s.on('close', () => {
          retire();
          open.delete(s);
        });
        open.set(s, 0);
        // Streams go out once the server's SETTINGS are in: before them nghttp2 assumes 100
        // concurrent streams, and a server that allows fewer refuses the rest.
        const ready = () => {
          if (pendingSocket === socket) pendingSocket = undefined;
          s.removeListener('close', closedFirst);
          socket.setTimeout(0);
          if (open.get(s) === 0) s.unref(); // idle until a request refs it (connecting held the process)
          live = s;
          resolve(s);
        };
        const closedFirst = () => {
          s.removeListener('remoteSettings', ready);
          reject(failure ?? reset('the apiserver closed the connection before its HTTP/2 settings'));
        };
        s.once('remoteSettings', ready);
        s.once('close', closedFirst);
      });
    });

  /**
   * The live session, connecting when there is none; undefined once HTTP/1.1 was picked. Gives up
   * (ECONNRESET) when new connections keep closing before a stream could go on them.
   */
  async function session(): Promise<ClientHttp2Session | undefined> {
    for (let fresh = 0; !http1; fresh++) {
      if (usable()) return live;
      if (fresh >= 3) throw reset('the apiserver closed each new HTTP/2 connection before a request could go on it');
      live = undefined;
      connecting ??= connect()
        .then((s) => {
          if (!s) http1 = true;
        })
        .finally(() => {
          connecting = undefined;
        });
      await connecting; // a failed connect fails every request that waited for it
    }
    return undefined;
  }

  /** `p`, or this request's timeout or abort first (the connection it waits for goes on). */
  function within<T>(p: Promise<T>, timeoutMs: number, signal: AbortSignal | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const timer = setTimeout(() => {
        done();
        reject(o.timedOut(timeoutMs));
      }, timeoutMs);
      const onAbort = () => {
        done();
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      p.then(
        (v) => {
          done();
          resolve(v);
        },
        (err: unknown) => {
          done();
          reject(err);
        },
      );
    });
  }

  /**
   * A stream with no answer within its timeout: is the connection still there? A PING that is not
   * answered, with nothing at all read from the connection meanwhile, means it is not (the peer
   * went away without closing it), and it is destroyed: the next request connects again instead of
   * timing out on it as well. A slow server that still sends anything keeps its connection; a
   * connection already closing (after a GOAWAY) finishes its streams and is left alone.
   */
  const pinging = new WeakSet<ClientHttp2Session>();
  const pingMs = o.pingTimeoutMs ?? PING_TIMEOUT_MS;
  function check(s: ClientHttp2Session): void {
    const socket = socketOf.get(s);
    if (s.closed || s.destroyed || !socket || pinging.has(s)) return;
    pinging.add(s);
    const readBefore = socket.bytesRead;
    const t = setTimeout(() => {
      // Let reads already in the socket be handled before judging it (an event loop that was busy).
      setImmediate(() => {
        if (!pinging.has(s)) return;
        pinging.delete(s);
        if (!s.closed && !s.destroyed && socket.bytesRead === readBefore) {
          s.destroy(reset(`the apiserver's connection went silent: no answer to a PING within ${pingMs} ms`));
        }
      });
    }, pingMs);
    t.unref();
    try {
      s.ping(() => {
        // Answered, or cancelled by the session closing: either way nothing to do.
        clearTimeout(t);
        pinging.delete(s);
      });
    } catch {
      clearTimeout(t);
      pinging.delete(s);
    }
  }

  const send: Send = (method, path, headers, payload, timeoutMs, signal) => attempt(method, path, headers, payload, timeoutMs, signal, 0);

  async function attempt(
    method: string,
    path: string,
    headers: OutgoingHttpHeaders,
    payload: string | Buffer | undefined,
    timeoutMs: number,
    signal: AbortSignal | undefined,
    tries: number,
  ): Promise<Answer> {
    // The usual case, a live connection, without a timer per request.
    const s = http1 ? undefined : (usable() ?? (await within(session(), timeoutMs, signal)));
    if (!s) return o.fallback(method, path, headers, payload, timeoutMs, signal);
    const h: OutgoingHttpHeaders = { ':method': method, ':path': path };
    for (const [k, v] of Object.entries(headers)) if (!HOP_BY_HOP.has(k)) h[k] = v;
    let stream: ClientHttp2Stream;
    try {
      stream = s.request(h, { endStream: payload === undefined, ...(signal ? { signal } : {}) });
    } catch (err) {
      // Closed or told GOAWAY since it was looked up: nothing was sent; go on a new connection.
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ERR_HTTP2_INVALID_SESSION' && code !== 'ERR_HTTP2_GOAWAY_SESSION') || tries >= RETRIES) throw err;
      if (live === s) live = undefined;
      return attempt(method, path, headers, payload, timeoutMs, signal, tries + 1);
    }
    return new Promise<Answer>((resolve, reject) => {
      let settled = false;
      let status = 0;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        // REFUSED_STREAM: the server did not process it (past a GOAWAY's last stream).
        if (stream.rstCode === c.NGHTTP2_REFUSED_STREAM && status === 0 && tries < RETRIES && !signal?.aborted) {
          attempt(method, path, headers, payload, timeoutMs, signal, tries + 1).then(resolve, reject);
        } else reject(err);
      };
      const active = open.get(s) ?? 0;
      open.set(s, active + 1);
      if (active === 0) s.ref();
      let rh: IncomingHttpHeaders = {};
      let text = '';
      stream.setEncoding('utf8');
      stream.on('response', (hd) => {
        status = Number(hd[':status']);
        rh = hd;
      });
      stream.on('data', (chunk: string) => {
        text += chunk;
      });
      stream.on('end', () => {
        // Ended without an answer (RST_STREAM NO_ERROR before any headers): a dropped request.
        if (status === 0) fail(reset(`the apiserver ended the request without an answer (HTTP/2 code ${stream.rstCode ?? 0})`));
        if (settled) return;
        settled = true;
        resolve({ status, headers: rh, text });
      });
      stream.on('error', fail);
      stream.setTimeout(timeoutMs, () => {
        fail(o.timedOut(timeoutMs));
        stream.close(c.NGHTTP2_CANCEL);
        check(s);
      });
      stream.on('close', () => {
        const left = (open.get(s) ?? 1) - 1;
        if (open.has(s)) open.set(s, left);
        if (left === 0 && !s.destroyed) s.unref();
        // Reset by the server, or cut off with its connection, without an 'error' or an end.
        fail(reset(`the apiserver reset the request (HTTP/2 code ${stream.rstCode})`));
      });
      if (payload !== undefined) stream.end(payload);
    });
  }

  return {
    send,
    close() {
      live = undefined;
      pendingSocket?.destroy();
      pendingSocket = undefined;
      for (const s of open.keys()) s.destroy();
      open.clear();
    },
  };
}

/** How long a connection may take (each request waits for it within its own timeout). */
const CONNECT_TIMEOUT_MS = 30_000;
/** How long an unanswered request's PING may take before its connection is given up. */
const PING_TIMEOUT_MS = 10_000;
/** Sends of one request after a REFUSED_STREAM or a session that went away under it. */
const RETRIES = 4;
/** Connection-specific headers, which HTTP/2 forbids (RFC 9113 8.2.2). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'http2-settings', 'te']);
