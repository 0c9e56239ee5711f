/**
 * The gRPC the etcd client needs, on node:http2: unary calls and one server stream, over h2c or
 * TLS with a client certificate (gRPC over HTTP/2: grpc/grpc doc/PROTOCOL-HTTP2.md). One HTTP/2
 * session per endpoint, opened on first use and again after it closed, kept as the apiserver
 * client keeps its own (src/net/h2-sessions.ts): a connect that makes no progress in 3 s, or a
 * connection that goes silent under a call (an unanswered PING), fails the call as UNAVAILABLE,
 * which moves it on to the next endpoint before its deadline.
 *
 * Why not @grpc/grpc-js, as src/kms/ uses: a scan of 100,000 Secrets reads ~40 MiB of replies.
 * grpc-js concatenates each reply into a fresh buffer, and every one of those that a scavenge
 * finds alive (the page's values are views into it while they are classified) waits in old space
 * for a full collection: tens of MiB of dead replies, and glibc heap that their frees leave
 * behind. Here a scan copies each reply into one buffer of its own that the next page reuses
 * (`Scratch`), so the HTTP/2 chunks die young and nothing page-sized is garbage. It also keeps
 * grpc-js's ~65 modules out of `status`.
 */
import type * as Http2 from 'node:http2';
import { connect as netConnect, isIP } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { H2Sessions } from '../net/h2-sessions';

/** gRPC status codes (grpc/grpc doc/statuscodes.md). */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
const NAMES = Object.fromEntries(Object.entries(Code).map(([k, v]) => [v, k])) as Record<number, string>;

/** A failed call, with grpc-js's message shape (`14 UNAVAILABLE: connect ECONNREFUSED ...`). */
export class GrpcError extends Error {
  constructor(
    readonly code: number,
    readonly details: string,
  ) {
    super(`${code} ${NAMES[code] ?? 'UNKNOWN'}: ${details}`);
    this.name = 'GrpcError';
  }
}

/** HTTP status to gRPC code when a reply is not gRPC at all (grpc/grpc doc/http-grpc-status-mapping.md). */
function httpCode(status: number): number {
  if (status === 400) return Code.INTERNAL;
  if (status === 401) return Code.UNAUTHENTICATED;
  if (status === 403) return Code.PERMISSION_DENIED;
  if (status === 404) return Code.UNIMPLEMENTED;
  if (status === 429 || status === 502 || status === 503 || status === 504) return Code.UNAVAILABLE;
  return Code.UNKNOWN;
}

/**
 * One receive buffer reused call after call: a reply lands in it and is valid until the next
 * call that uses the same Scratch. It grows to the largest reply seen and gives memory back
 * when replies become much smaller.
 */
export class Scratch {
  private buf: Buffer = Buffer.alloc(0);

  take(bytes: number): Buffer {
    if (bytes > this.buf.length || this.buf.length > 4 * Math.max(bytes, 64 * 1024)) {
      this.buf = Buffer.allocUnsafeSlow(Math.max(bytes, 64 * 1024));
    }
    return this.buf.subarray(0, bytes);
  }
}

export interface ChannelOptions {
  /** `host:port`. */
  target: string;
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  /** Largest reply message accepted; beyond it the call fails with RESOURCE_EXHAUSTED. */
  maxReplyBytes: number;
  /** HTTP/2 receive window per stream and per session (default 1 MiB). */
  windowBytes?: number;
  /** How long a connect may go without progress before the endpoint counts as unavailable. */
  connectTimeoutMs?: number;
  /** How long a PING may go unanswered before the connection is dropped. */
  pingTimeoutMs?: number;
}

export interface CallOptions {
  /** Absolute deadline (Date.now() based), sent as grpc-timeout and enforced here. */
  deadline?: number;
  signal?: AbortSignal;
  /** Reply lands in this buffer (see Scratch) instead of a fresh one. */
  scratch?: Scratch;
}

/** Splits the DATA of a stream into gRPC messages (1-byte flag, 4-byte length, message). */
export class MessageReader {
  private head = Buffer.alloc(5);
  private headFill = 0;
  private body: Buffer | undefined;
  private bodyFill = 0;

  constructor(
    private readonly max: number,
    private readonly alloc: (bytes: number) => Buffer,
    private readonly onMessage: (m: Buffer) => void,
  ) {}

  /** Throws a GrpcError for a compressed or oversized message. */
  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.body === undefined) {
        const n = Math.min(5 - this.headFill, chunk.length - at);
        chunk.copy(this.head, this.headFill, at, at + n);
        this.headFill += n;
        at += n;
        if (this.headFill < 5) return;
        if (this.head[0] !== 0) throw new GrpcError(Code.INTERNAL, 'compressed reply message, which was not asked for');
        const len = this.head.readUInt32BE(1);
        if (len > this.max) throw new GrpcError(Code.RESOURCE_EXHAUSTED, `Received message larger than max (${len} vs ${this.max})`);
        this.body = this.alloc(len);
        this.bodyFill = 0;
      }
      const n = Math.min(this.body.length - this.bodyFill, chunk.length - at);
      chunk.copy(this.body, this.bodyFill, at, at + n);
      this.bodyFill += n;
      at += n;
      if (this.bodyFill === this.body.length) {
        const m = this.body;
        this.body = undefined;
        this.headFill = 0;
        this.onMessage(m);
      }
    }
  }

  get partial(): boolean {
    return this.headFill > 0;
  }
}

type Http2Module = typeof Http2;

export class Channel {
  private readonly sessions: H2Sessions;
  private closed = false;

  constructor(
    private readonly http2: Http2Module,
    private readonly opts: ChannelOptions,
  ) {
    const { tls, target } = opts;
    const { origin, host, port } = dialAddress(target, tls !== undefined);
    const window = opts.windowBytes ?? 1024 * 1024;
    const unavailable = (m: string) => new GrpcError(Code.UNAVAILABLE, m);
    this.sessions = new H2Sessions({
      origin,
      peer: `etcd at ${target}`,
      dial: () =>
        tls
          ? tlsConnect({ host, port, ...(isIP(host) ? {} : { servername: host }), ca: tls.ca, cert: tls.cert, key: tls.key, ALPNProtocols: ['h2'] })
          : netConnect({ host, port }),
      settings: { initialWindowSize: window },
      sessionWindow: window,
      connectTimeoutMs: opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
      pingTimeoutMs: opts.pingTimeoutMs ?? PING_TIMEOUT_MS,
      lost: unavailable,
      connectTimedOut: (ms) => unavailable(`no HTTP/2 connection to etcd at ${target} within ${ms} ms`),
    });
  }

  /** The session a call goes on, connecting within the call's deadline and abort. */
  private async session(opts: CallOptions): Promise<Http2.ClientHttp2Session> {
    let s: Http2.ClientHttp2Session | undefined;
    try {
      s =
        this.sessions.live() ??
        (await this.sessions.session({
          ...(opts.deadline === undefined ? {} : { timeoutMs: Math.max(0, opts.deadline - Date.now()) }),
          timedOut: () => new GrpcError(Code.DEADLINE_EXCEEDED, `Deadline exceeded (${this.opts.target})`),
          signal: opts.signal,
          aborted: () => new GrpcError(Code.CANCELLED, 'Cancelled on client'),
        }));
    } catch (err) {
      // A TLS or socket failure (refused, a foreign certificate): the endpoint is unavailable.
      throw err instanceof GrpcError ? err : new GrpcError(Code.UNAVAILABLE, (err as Error).message);
    }
    if (!s) throw new GrpcError(Code.UNAVAILABLE, `etcd at ${this.opts.target} did not choose HTTP/2 in TLS ALPN`);
    return s;
  }

  /**
   * Cancels a call (RST_STREAM CANCEL). destroy() too: a paused stream that already has all its
   * data (a snapshot left early) would otherwise wait for a reader before it closes.
   */
  private abandon(stream: Http2.ClientHttp2Stream): void {
    if (!stream.closed) stream.close(this.http2.constants.NGHTTP2_CANCEL);
    stream.destroy();
  }

  /** The call's failure from how its stream ended. */
  private streamFailure(session: Http2.ClientHttp2Session, stream: Http2.ClientHttp2Stream, err?: Error): GrpcError {
    // A stream that was waiting for its session carries the session's error as its cause.
    const cause = this.sessions.failure(session) ?? ((err?.cause as Error | undefined) || err);
    if (cause && (cause as NodeJS.ErrnoException).code !== 'ERR_HTTP2_STREAM_ERROR') return new GrpcError(Code.UNAVAILABLE, cause.message);
    const rst = stream.rstCode;
    const c = this.http2.constants;
    // The connection ended under the stream (the server closed it, e.g. etcd stopping): Node
    // reports that as a CANCEL of the stream without an error. grpc-js calls it UNAVAILABLE
    // ("Connection dropped"), which is also what moves a call on to the next endpoint.
    if (session.destroyed && (rst === c.NGHTTP2_CANCEL || rst === c.NGHTTP2_NO_ERROR)) {
      return new GrpcError(Code.UNAVAILABLE, `connection to ${this.opts.target} dropped`);
    }
    if (rst === c.NGHTTP2_REFUSED_STREAM) return new GrpcError(Code.UNAVAILABLE, 'stream refused by the server');
    if (rst === c.NGHTTP2_CANCEL) return new GrpcError(Code.CANCELLED, 'stream cancelled by the server');
    if (rst === c.NGHTTP2_ENHANCE_YOUR_CALM) return new GrpcError(Code.RESOURCE_EXHAUSTED, 'the server says: enhance your calm');
    return new GrpcError(Code.INTERNAL, `stream closed without a status (HTTP/2 code ${rst ?? '?'})`);
  }

  /**
   * One call: writes the request, hands each reply message to `onMessage` as it completes, and
   * resolves once the status is OK (or rejects with a GrpcError).
   */
  private async call(path: string, request: Buffer, opts: CallOptions, onMessage: (m: Buffer) => void, flow?: (stream: Http2.ClientHttp2Stream) => void): Promise<void> {
    if (this.closed) throw new GrpcError(Code.CANCELLED, 'the channel was closed');
    // An 'abort' listener added now would never fire.
    if (opts.signal?.aborted) throw new GrpcError(Code.CANCELLED, 'Cancelled on client');
    let session: Http2.ClientHttp2Session;
    let stream: Http2.ClientHttp2Stream;
    for (let tries = 1; ; tries++) {
      session = await this.session(opts);
      if (this.closed) throw new GrpcError(Code.CANCELLED, 'the channel was closed');
      const headers: Http2.OutgoingHttpHeaders = {
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/grpc',
        te: 'trailers',
      };
      if (opts.deadline !== undefined) headers['grpc-timeout'] = grpcTimeout(opts.deadline - Date.now());
      try {
        stream = session.request(headers);
        break;
      } catch (err) {
        // Closed or told GOAWAY since it was looked up: nothing was sent; once more on a new one.
        this.sessions.retire(session);
        const code = (err as NodeJS.ErrnoException).code;
        if ((code !== 'ERR_HTTP2_INVALID_SESSION' && code !== 'ERR_HTTP2_GOAWAY_SESSION') || tries >= 2) {
          throw new GrpcError(Code.UNAVAILABLE, (err as Error).message);
        }
      }
    }
    return new Promise<void>((resolve, reject) => {
      const release = this.sessions.hold(session);
      let status: number | undefined;
      let message = '';
      let failed: GrpcError | undefined;
      const fail = (e: GrpcError) => {
        failed ??= e;
        this.abandon(stream);
      };
      const left = opts.deadline === undefined ? undefined : Math.max(0, opts.deadline - Date.now());
      const timer = left === undefined ? undefined : setTimeout(() => fail(new GrpcError(Code.DEADLINE_EXCEEDED, `Deadline exceeded (${this.opts.target})`)), left);
      // A call still unanswered after a while asks whether the connection is there at all (a PING
      // that stays unanswered drops it: the call fails UNAVAILABLE and moves on to the next
      // endpoint before its deadline, as gRPC's keepalive does). Calls without a deadline (a
      // snapshot) have their own stall timeout.
      const quiet = left === undefined ? undefined : setTimeout(() => this.sessions.check(session), Math.min(PING_AFTER_MS, left / 2));
      const onAbort = () => fail(new GrpcError(Code.CANCELLED, 'Cancelled on client'));
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      const alloc = opts.scratch ? (n: number) => opts.scratch!.take(n) : (n: number) => Buffer.allocUnsafe(n);
      const reader = new MessageReader(this.opts.maxReplyBytes, alloc, onMessage);
      const readStatus = (h: Http2.IncomingHttpHeaders) => {
        const s = h['grpc-status'];
        if (s === undefined) return;
        // A status that is not one of the codes (a word, an empty value, 99) is UNKNOWN, not NaN.
        status = typeof s === 'string' && /^\d{1,2}$/.test(s) && Number(s) in NAMES ? Number(s) : Code.UNKNOWN;
        const m = h['grpc-message'];
        if (typeof m === 'string') message = percentDecoded(m);
      };
      stream.on('response', (h) => {
        const http = Number(h[':status']);
        readStatus(h);
        if (status === undefined && http !== 200) fail(new GrpcError(httpCode(http), `HTTP status ${http} from ${this.opts.target}`));
        else if (status === undefined && !String(h['content-type'] ?? '').startsWith('application/grpc')) {
          fail(new GrpcError(Code.UNKNOWN, `not a gRPC reply (content-type ${h['content-type']}) from ${this.opts.target}`));
        }
      });
      stream.on('trailers', readStatus);
      stream.on('data', (chunk: Buffer) => {
        if (failed) return;
        try {
          reader.push(chunk);
        } catch (err) {
          fail(err instanceof GrpcError ? err : new GrpcError(Code.INTERNAL, (err as Error).message));
        }
      });
      let streamErr: Error | undefined;
      stream.on('error', (err) => (streamErr = err));
      stream.on('close', () => {
        if (timer) clearTimeout(timer);
        if (quiet) clearTimeout(quiet);
        opts.signal?.removeEventListener('abort', onAbort);
        release();
        if (failed) reject(failed);
        else if (status === Code.OK && !reader.partial) resolve();
        else if (status !== undefined && status !== Code.OK) reject(new GrpcError(status, message));
        else reject(this.streamFailure(session, stream, streamErr));
      });
      flow?.(stream);
      stream.end(frame(request));
    });
  }

  /** A unary call: exactly one reply message. */
  async unary(path: string, request: Buffer, opts: CallOptions = {}): Promise<Buffer> {
    let reply: Buffer | undefined;
    let extra = false;
    await this.call(path, request, opts, (m) => {
      if (reply) extra = true;
      reply = m;
    });
    if (!reply || extra) throw new GrpcError(Code.INTERNAL, `${reply ? 'more than one' : 'no'} reply message to a unary call`);
    return reply;
  }

  /**
   * A server stream, one message at a time. Reading stops (and with it etcd, through HTTP/2 flow
   * control) while more than a few messages wait for the caller. Breaking out cancels the call.
   * No Scratch: queued messages would share its memory.
   */
  async *serverStream(path: string, request: Buffer, opts: CallOptions & { scratch?: never } = {}): AsyncGenerator<Buffer> {
    const queue: Buffer[] = [];
    let wake: (() => void) | undefined;
    let stream: Http2.ClientHttp2Stream | undefined;
    let ended: { err?: unknown } | undefined;
    const notify = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    const { scratch: _, ...callOpts } = opts as CallOptions;
    const done = this.call(
      path,
      request,
      callOpts,
      (m) => {
        queue.push(m);
        if (queue.length >= 4) stream?.pause();
        notify();
      },
      (s) => (stream = s),
    ).then(
      () => (ended = {}),
      (err: unknown) => (ended = { err }),
    );
    void done.then(notify);
    try {
      for (;;) {
        const m = queue.shift();
        if (m) {
          if (queue.length < 2) stream?.resume();
          yield m;
        } else if (ended) {
          if (ended.err) throw ended.err;
          return;
        } else {
          await new Promise<void>((r) => (wake = r));
        }
      }
    } finally {
      if (!ended && stream) this.abandon(stream);
      await done;
    }
  }

  /** No new calls; those in flight finish. */
  close(): void {
    this.closed = true;
    this.sessions.close('drain');
  }
}

/**
 * etcdctl's --dial-timeout is 2 s; a little more for a loaded control plane. Shorter than a call's
 * usual deadline (10 s), so that a black-holed endpoint is left for the next one in time.
 */
const CONNECT_TIMEOUT_MS = 3000;
/** When an unanswered call (with a deadline) sends a PING: at this or half its time, whichever is first. */
const PING_AFTER_MS = 3000;
const PING_TIMEOUT_MS = 3000;

/**
 * Where a channel to `target` (`host:port`, `[v6]:port`) connects: the :scheme and :authority
 * of its streams, and the socket's host (IPv6 without brackets) and port. The URL is parsed with
 * the channel's own scheme: WHATWG URLs drop a port that is the scheme's default (80, 443), which
 * then has to come back as that default, not as 0.
 */
export function dialAddress(target: string, tls: boolean): { origin: string; host: string; port: number } {
  const origin = `${tls ? 'https' : 'http'}://${target}`;
  // Throws on what is no URL (an IPv6 address without brackets, a zone id, a space).
  const { hostname, port, username, password, pathname, search, hash } = new URL(origin);
  // What a URL takes but a host:port is not: user info, a path, a query, a fragment, port 0.
  if (username || password || pathname !== '/' || search || hash || port === '0' || !hostname) throw new TypeError('not host:port');
  return { origin, host: hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(port || (tls ? 443 : 80)) };
}

/** grpc-timeout: at most 8 digits, in milliseconds while they fit, else seconds. */
export function grpcTimeout(ms: number): string {
  const m = Math.max(1, Math.ceil(ms));
  return m <= 99_999_999 ? `${m}m` : `${Math.min(99_999_999, Math.ceil(m / 1000))}S`;
}

/** grpc-message is percent-encoded; a malformed one is shown as it came. */
function percentDecoded(m: string): string {
  try {
    return decodeURIComponent(m);
  } catch {
    return m;
  }
}

function frame(message: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}
