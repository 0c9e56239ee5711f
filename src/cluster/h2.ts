import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { ClientHttp2Stream } from 'node:http2';
import { isIP } from 'node:net';
import tls, { type SecureContext } from 'node:tls';
import { H2Sessions, loadHttp2 } from '../net/h2-sessions';

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

/**
 * Requests as streams of one HTTP/2 connection. Every connection is TLS with ALPN offering h2
 * and http/1.1, as client-go's does; the server picks, and a server (or a proxy in front of it)
 * that picks HTTP/1.1 has every request of this client go to `fallback` from then on.
 *
 * Why: HTTP/1.1 carries one request per connection at a time, so 128 requests in flight are 128
 * TLS connections of about 150 KB each (OpenSSL state, a 64 KiB input buffer, an HTTP parser),
 * which was most of re-encrypt-all's memory beyond the V8 heap. One connection carries them all.
 *
 * How the connection is kept (one connect at a time, new streams only after the server's
 * SETTINGS, GOAWAY, a PING when a request times out) is src/net/h2-sessions.ts, shared with the
 * etcd client. Here: a stream the server refused (REFUSED_STREAM: past the last stream of a
 * GOAWAY) was not processed, and is sent again (a few times); one reset otherwise, or cut off
 * with its connection, fails as a dropped connection (ECONNRESET and the like), which the rewrite
 * retries as it does over HTTP/1.1. nghttp2 holds back streams past the server's
 * SETTINGS_MAX_CONCURRENT_STREAMS until one ends.
 *
 * Each stream's objects hang off a native handle that scavenges do not free, so they are promoted
 * and wait for a full GC: the CLI runs V8 in its memory saver mode (src/heap.ts) for that.
 */
export function h2Transport(o: H2Options): H2Transport {
  const c = loadHttp2().constants;
  const servername = o.servername ?? (isIP(o.hostname) ? undefined : o.hostname);
  const reset = (message: string) => Object.assign(new Error(message), { code: 'ECONNRESET' });
  const sessions = new H2Sessions({
    origin: o.origin,
    // tls.connect looked up at call time (the CLI's warning filter wraps it, as for the agent).
    dial: () =>
      tls.connect({
        host: o.hostname,
        port: o.port,
        ...(servername ? { servername } : {}),
        secureContext: o.secureContext,
        rejectUnauthorized: o.rejectUnauthorized,
        ALPNProtocols: ['h2', 'http/1.1'],
      }),
    // A list page is about 1 MB: a stream window that lets it come in one go (default 64 KiB).
    settings: { initialWindowSize: 4 << 20 },
    sessionWindow: 32 << 20,
    // A limit, not an allocation: past it nghttp2 refuses new streams (default 10 MB).
    maxSessionMemory: 256,
    connectTimeoutMs: CONNECT_TIMEOUT_MS,
    pingTimeoutMs: o.pingTimeoutMs ?? PING_TIMEOUT_MS,
    peer: 'the apiserver',
    lost: reset,
    connectTimedOut: o.timedOut,
  });

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
    const s = sessions.declined ? undefined : (sessions.live() ?? (await sessions.session({ timeoutMs, timedOut: o.timedOut, signal })));
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
      sessions.retire(s);
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
      const release = sessions.hold(s);
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
        sessions.check(s);
      });
      stream.on('close', () => {
        release();
        // Reset by the server, or cut off with its connection, without an 'error' or an end.
        fail(reset(`the apiserver reset the request (HTTP/2 code ${stream.rstCode})`));
      });
      if (payload !== undefined) stream.end(payload);
    });
  }

  return {
    send,
    close: () => sessions.close('destroy'),
  };
}

/** How long a connection may take to the server's SETTINGS (each request waits within its own timeout). */
const CONNECT_TIMEOUT_MS = 30_000;
/** How long an unanswered request's PING may take before its connection is given up. */
const PING_TIMEOUT_MS = 10_000;
/** Sends of one request after a REFUSED_STREAM or a session that went away under it. */
const RETRIES = 4;
/** Connection-specific headers, which HTTP/2 forbids (RFC 9113 8.2.2). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'http2-settings', 'te']);
