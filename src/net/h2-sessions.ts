import type { ClientHttp2Session, SecureClientSessionOptions } from 'node:http2';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';

/**
 * One HTTP/2 connection at a time to one server, for the clients that speak HTTP/2: the
 * apiserver's (src/cluster/h2.ts) and etcd's gRPC (src/etcd/grpc.ts). What they share is how a
 * connection is kept, which is easy to get subtly wrong and was, once per client:
 *
 * - One connect at a time, shared by everyone who waits for it, each within its own timeout and
 *   abort. The connect is done when the server's SETTINGS are in: before them nghttp2 assumes 100
 *   concurrent streams, and a server that allows fewer refuses the rest. It gives up after
 *   `connectTimeoutMs` (a server that accepts TCP and never answers: a stopped process, a black
 *   hole), and is held open (ref'd) only while someone waits for it, so a caller that gave up
 *   leaves nothing that keeps the process from exiting.
 * - A connection that closes, fails or is told GOAWAY takes no new streams: the next caller opens
 *   a new one; the streams on the old one finish or fail there. Callers that find new connections
 *   closing before a stream could go on them give up after 3.
 * - A connection holds the process while it carries streams (`hold`), and not when idle.
 * - A stream with no answer in its time sends a PING (`check`): one that stays unanswered, with
 *   nothing at all read from the connection meanwhile, means the peer went away without closing
 *   it (a node or a VIP gone, a process stopped), and the connection is destroyed so that the next
 *   caller connects again instead of waiting on it too. A slow server that still sends anything
 *   keeps its connection, and one already closing after a GOAWAY is left to finish.
 *
 * The socket is the caller's (`dial`): TLS with ALPN, or plain TCP for h2c. A TLS peer that picks
 * another protocol than h2 makes `session()` resolve with undefined from then on.
 */
export interface H2SessionsOptions {
  /** The URL origin of the server (the :authority and :scheme of every stream). */
  origin: string;
  /** The server in messages: "the apiserver", "etcd at 10.0.0.1:2379". */
  peer: string;
  /** Starts a connection: tls.connect (its ALPN decides) or net.connect (h2c). */
  dial: () => Socket;
  /** SETTINGS sent to the server (push is always off). */
  settings?: SecureClientSessionOptions['settings'];
  /** The connection-level receive window, when larger than the default 64 KiB. */
  sessionWindow?: number;
  /** nghttp2's memory limit for the session, in MB (default 10). */
  maxSessionMemory?: number;
  /** How long a connect may take up to the server's SETTINGS. */
  connectTimeoutMs: number;
  /** How long a PING may go unanswered before the connection is given up. */
  pingTimeoutMs: number;
  /** The caller's error for a connection that failed, closed or went silent (a code such as ECONNRESET). */
  lost: (message: string) => Error;
  /** The caller's error for a connect that took longer than `connectTimeoutMs`. */
  connectTimedOut: (ms: number) => Error;
}

/** What a wait for the connection gives up on: the caller's own timeout and abort. */
export interface Wait {
  timeoutMs?: number;
  timedOut?: (ms: number) => Error;
  signal?: AbortSignal;
  /** The error for an abort (default: the signal's reason). */
  aborted?: () => unknown;
}

/** Lazily, and without an ES namespace: `status` should not load HTTP/2 before it needs it. */
export const loadHttp2 = (): typeof import('node:http2') =>
  process.getBuiltinModule?.('node:http2') ?? createRequire(process.execPath)('node:http2');

export class H2Sessions {
  /** The peer picked another protocol than h2 in ALPN: no session, ever. */
  private notH2 = false;
  /** The connection new streams go on; undefined once it closed, failed or was told GOAWAY. */
  private current: ClientHttp2Session | undefined;
  private connecting: { done: Promise<void>; socket: Socket; waiters: number; settled: boolean } | undefined;
  /** Every session not yet closed, with its streams in flight. */
  private readonly open = new Map<ClientHttp2Session, number>();
  private readonly sockets = new WeakMap<ClientHttp2Session, Socket>();
  private readonly failures = new WeakMap<ClientHttp2Session, Error>();
  private readonly pinging = new WeakSet<ClientHttp2Session>();

  constructor(private readonly o: H2SessionsOptions) {}

  /** The live session, without waiting (the usual case, without a timer). */
  live(): ClientHttp2Session | undefined {
    const s = this.current;
    return s && !s.closed && !s.destroyed ? s : undefined;
  }

  /** Whether the peer chose not to speak h2. */
  get declined(): boolean {
    return this.notH2;
  }

  /**
   * The live session, connecting when there is none, within the caller's timeout and abort (the
   * connect goes on for others who wait); undefined once the peer declined h2. Rejects with the
   * connect's failure, and gives up when new connections keep closing before a stream could go
   * on them.
   */
  async session(wait: Wait = {}): Promise<ClientHttp2Session | undefined> {
    // A caller that gave up already starts no connect (within() would reject only after it).
    if (wait.signal?.aborted) throw abortError(wait);
    for (let fresh = 0; !this.notH2; fresh++) {
      const s = this.live();
      if (s) return s;
      if (fresh >= 3) throw this.o.lost(`${this.o.peer} closed each new HTTP/2 connection before a stream could go on it`);
      this.current = undefined;
      const c = (this.connecting ??= this.connect());
      if (c.waiters++ === 0) c.socket.ref();
      try {
        await within(c.done, wait);
      } finally {
        // Once settled the session's own holds decide (and a failed socket is gone).
        if (--c.waiters === 0 && !c.settled) c.socket.unref();
      }
    }
    return undefined;
  }

  /** A stream goes on `s`: it holds the process until the returned release is called. */
  hold(s: ClientHttp2Session): () => void {
    const n = this.open.get(s) ?? 0;
    this.open.set(s, n + 1);
    if (n === 0 && !s.destroyed) s.ref();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.open.get(s) ?? 1) - 1;
      if (this.open.has(s)) this.open.set(s, left);
      if (left === 0 && !s.destroyed) s.unref();
    };
  }

  /** `s` failed a request synchronously (closed or told GOAWAY since it was looked up). */
  retire(s: ClientHttp2Session): void {
    if (this.current === s) this.current = undefined;
  }

  /** The error the session failed with, if it did (its streams fail with less telling ones). */
  failure(s: ClientHttp2Session): Error | undefined {
    return this.failures.get(s);
  }

  /** A stream on `s` had no answer in its time: is the connection still there? (See the top.) */
  check(s: ClientHttp2Session): void {
    const socket = this.sockets.get(s);
    if (s.closed || s.destroyed || !socket || this.pinging.has(s)) return;
    this.pinging.add(s);
    const readBefore = socket.bytesRead;
    const ms = this.o.pingTimeoutMs;
    const t = setTimeout(() => {
      // Let reads already in the socket be handled before judging it (an event loop that was busy).
      setImmediate(() => {
        if (!this.pinging.has(s)) return;
        this.pinging.delete(s);
        if (!s.closed && !s.destroyed && socket.bytesRead === readBefore) {
          s.destroy(this.o.lost(`the connection to ${this.o.peer} went silent: no answer to a PING within ${ms} ms`));
        }
      });
    }, ms);
    t.unref();
    const answered = () => {
      // Answered, or cancelled by the session closing: either way nothing to do.
      clearTimeout(t);
      this.pinging.delete(s);
    };
    try {
      s.ping(answered);
    } catch {
      answered();
    }
  }

  /**
   * `drain`: no new streams, those in flight finish (a GOAWAY). `destroy`: everything now, streams
   * in flight fail; a connect in progress too. A caller after close() connects again.
   */
  close(how: 'drain' | 'destroy'): void {
    this.current = undefined;
    // Its waiters fail; a caller from now on (even in this tick) starts a connect of its own.
    if (this.connecting && !this.connecting.settled) this.connecting.socket.destroy();
    this.connecting = undefined;
    for (const s of this.open.keys()) {
      if (how === 'destroy') s.destroy();
      else s.close();
    }
    if (how === 'destroy') this.open.clear();
  }

  private connect(): NonNullable<H2Sessions['connecting']> {
    const socket = this.o.dial();
    // Held only while someone waits (session()).
    socket.unref();
    socket.setTimeout(this.o.connectTimeoutMs, () => socket.destroy(this.o.connectTimedOut(this.o.connectTimeoutMs)));
    // TCP keep-alive for an idle connection; one with streams is judged by check().
    socket.setKeepAlive(true, 30_000);
    const done = new Promise<void>((resolve, reject) => {
      let failure: Error | undefined;
      socket.once('error', (err) => {
        failure ??= err;
        reject(err);
      });
      socket.once('close', () => {
        // Closed before it was ready without an error (close() destroyed it): its waiters fail.
        // (After the promise settled this does nothing.)
        reject(failure ?? this.o.lost(`the connection to ${this.o.peer} closed before it was ready`));
      });
      const tlsSocket = socket instanceof TLSSocket;
      socket.once(tlsSocket ? 'secureConnect' : 'connect', () => {
        if (tlsSocket && socket.alpnProtocol !== 'h2') {
          this.notH2 = true;
          socket.destroy();
          resolve();
          return;
        }
        const s = loadHttp2().connect(this.o.origin, {
          createConnection: () => socket,
          settings: { ...this.o.settings, enablePush: false },
          ...(this.o.maxSessionMemory ? { maxSessionMemory: this.o.maxSessionMemory } : {}),
        });
        if (this.o.sessionWindow) s.setLocalWindowSize(this.o.sessionWindow);
        this.sockets.set(s, socket);
        const retire = () => this.retire(s);
        s.on('error', (err) => {
          if (!this.failures.has(s)) this.failures.set(s, err);
          failure ??= err;
          retire(); // each stream in flight fails with its own error
        });
        s.on('goaway', retire);
        s.on('close', () => {
          retire();
          this.open.delete(s);
        });
        this.open.set(s, 0);
        const ready = () => {
          s.removeListener('close', closedFirst);
          socket.setTimeout(0);
          if (this.open.get(s) === 0) s.unref(); // idle until a stream holds it
          this.current = s;
          resolve();
        };
        const closedFirst = () => {
          s.removeListener('remoteSettings', ready);
          reject(failure ?? this.o.lost(`${this.o.peer} closed the connection before its HTTP/2 settings`));
        };
        s.once('remoteSettings', ready);
        s.once('close', closedFirst);
      });
    });
    const c: NonNullable<H2Sessions['connecting']> = {
      socket,
      waiters: 0,
      settled: false,
      done: done.finally(() => {
        c.settled = true;
        if (this.connecting === c) this.connecting = undefined;
      }),
    };
    // A connect nobody waits for any more still settles: its failure is nobody's to report.
    c.done.catch(() => undefined);
    return c;
  }
}

/** What a wait that was aborted rejects with: the caller's error, or the signal's reason. */
const abortError = (wait: Wait): unknown => (wait.aborted ? wait.aborted() : wait.signal!.reason);

/** `p`, or the wait's timeout or abort first (what `p` stands for goes on). */
export function within<T>(p: Promise<T>, wait: Wait): Promise<T> {
  const { timeoutMs, signal } = wait;
  if (timeoutMs === undefined && !signal) return p;
  // Before any timer or listener exists (an 'abort' listener added now would never fire).
  if (signal?.aborted) return Promise.reject(abortError(wait));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      done();
      reject(abortError(wait));
    };
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            done();
            reject(wait.timedOut ? wait.timedOut(timeoutMs) : new Error(`timed out after ${timeoutMs} ms`));
          }, timeoutMs);
    function done() {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
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
