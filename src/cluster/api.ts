import { Agent, request as httpsRequest } from 'node:https';
import { createRequire } from 'node:module';
import { setTimeout as delay } from 'node:timers/promises';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { CliError, ExitCode, fsError } from '../ui/errors';
import { ApiConnectionError, ApiError, statusFields } from './errors';
import { h2Transport, type Answer, type Send } from './h2';
import { Malformed, metadataString } from './json-member';

// Not `import ... from 'node:http'`: an ES module import of node:http builds its namespace, which
// reads its lazy WebSocket export and so loads Node's bundled undici and web streams (about 10 MB
// of resident memory at start-up, for code the tool never runs).
// (process.getBuiltinModule arrived in Node 22.3; require is the same module without the namespace.)
const http: typeof import('node:http') = process.getBuiltinModule?.('node:http') ?? createRequire(process.execPath)('node:http');
const { request: httpRequest, Agent: HttpAgent } = http;

/**
 * Where and how to talk to one apiserver: the server URL plus TLS material and auth headers.
 * `loadKubeconfig` builds it from a kubeconfig; tests may build it by hand.
 */
export interface ApiTarget {
  server: string;
  ca?: Buffer | string;
  cert?: Buffer | string;
  key?: Buffer | string;
  /** insecure-skip-tls-verify from the kubeconfig. */
  insecureSkipTlsVerify?: boolean;
  /** TLS server name to verify when `server` is an address the certificate does not name. */
  tlsServerName?: string;
  /** Extra headers (Authorization from a token or an exec plugin). */
  headers?: Record<string, string>;
  /** Re-computes auth headers (exec plugin tokens expire); called once after a 401. */
  refreshHeaders?: () => Promise<Record<string, string>>;
  /** Where this came from, for messages: `/etc/kubernetes/admin.conf (context kubernetes-admin@kubernetes)`. */
  source?: string;
}

export interface LoadKubeconfigOptions {
  /** Talk to this URL instead of the kubeconfig's server, keeping its credentials. */
  server?: string;
  context?: string;
}

/**
 * Reads a kubeconfig with @kubernetes/client-node (parsing, client certs, tokens, exec plugins,
 * CA) and returns the target for `createApiClient`. client-node is imported here, lazily, so
 * commands that never reach the cluster (and `--help`) do not pay for loading it.
 */
export async function loadKubeconfig(path: string, opts: LoadKubeconfigOptions = {}): Promise<ApiTarget> {
  // client-node costs ~85 MB of RSS and a slow start: read the plain cases (client cert, token,
  // basic auth, CA; kubeadm's admin.conf) ourselves, and hand exec/auth-provider users to it.
  const light = await loadPlainKubeconfig(path, opts);
  if (light) return light;
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code) throw kubeconfigReadError(path, err);
    // The parser's error is not the cause (--verbose would print its message and stack): see yamlReason.
    throw new CliError(`cannot parse kubeconfig ${path}: ${yamlReason(err)}`, {
      exitCode: ExitCode.Usage,
      hint: 'check that the file is a valid kubeconfig (YAML with clusters, users and contexts)',
    });
  }
  if (opts.context) {
    if (!kc.getContextObject(opts.context)) {
      throw new CliError(`kubeconfig ${path} has no context "${opts.context}"`, {
        exitCode: ExitCode.Usage,
        hint: `contexts there: ${kc.getContexts().map((c) => c.name).join(', ') || '(none)'}`,
      });
    }
    kc.setCurrentContext(opts.context);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    throw new CliError(`kubeconfig ${path} has no current context with a cluster`, {
      exitCode: ExitCode.Usage,
      hint: 'set current-context in the kubeconfig or pass a kubeconfig that has one',
    });
  }
  const server = opts.server ?? cluster.server;
  checkServerUrl(server, opts.server ? '--server' : `kubeconfig ${path}`);

  const collect = async () => {
    const o: { ca?: Buffer; cert?: Buffer; key?: Buffer; headers?: Record<string, string>; auth?: string; rejectUnauthorized?: boolean } =
      {};
    try {
      await kc.applyToHTTPSOptions(o as never);
    } catch (err) {
      throw new CliError(`cannot load the credentials of kubeconfig ${path}: ${(err as Error).message}`, {
        exitCode: ExitCode.Usage,
        hint: 'check the client certificate/key files, token or exec plugin the kubeconfig names',
        cause: err,
      });
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(o.headers ?? {})) headers[k] = String(v);
    if (o.auth) headers.Authorization = `Basic ${Buffer.from(o.auth).toString('base64')}`;
    return { o, headers };
  };
  const { o, headers } = await collect();
  return {
    server,
    ca: o.ca,
    cert: o.cert,
    key: o.key,
    insecureSkipTlsVerify: cluster.skipTLSVerify || o.rejectUnauthorized === false,
    headers,
    refreshHeaders: async () => (await collect()).headers,
    source: `${path} (context ${kc.getCurrentContext()})`,
  };
}

/**
 * A YAML parser's error (js-yaml's, under client-node) without anything of the file: its message
 * goes on after the first line with a code frame quoting the lines around the error, and the
 * reason itself quotes alias and tag names (`unidentified alias "x"`, `unknown scalar tag !<x>`),
 * which in a kubeconfig may be a token or a password. Quoted names and tags become "...", and
 * what follows a colon is dropped; the position says where to look.
 */
export function yamlReason(err: unknown): string {
  const e = (err ?? {}) as { reason?: unknown; message?: unknown; mark?: { line?: unknown; column?: unknown } };
  // js-yaml's reason is its message without the position and the code frame.
  const reason = typeof e.reason === 'string' ? e.reason : String(e.message ?? err).replace(/\s*\(\d+:\d+\)\s*(\n[^]*)?$/, '');
  const safe = reason
    .split('\n')[0]!
    .replace(/"[^"]*"|'[^']*'/g, '"..."')
    .replace(/!<[^>]*>|!\S*/g, '!...')
    .replace(/:\s.*$/, '')
    .trim();
  const line = e.mark?.line;
  const column = e.mark?.column;
  const at = typeof line === 'number' ? ` at line ${line + 1}${typeof column === 'number' ? `, column ${column + 1}` : ''}` : '';
  return `${safe || 'not valid YAML'}${at}`;
}

/** The kubeconfig file itself could not be read (missing, unreadable, a directory). */
function kubeconfigReadError(path: string, err: unknown): CliError {
  const e = fsError('read kubeconfig', path, err);
  return new CliError(e.message, {
    exitCode: ExitCode.Usage,
    hint: 'pass --kubeconfig (or --root) pointing at an admin kubeconfig such as /etc/kubernetes/admin.conf',
    cause: err,
  });
}

type Dict = Record<string, unknown>;
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/**
 * The kubeconfig without client-node, for users without exec or auth-provider plugins; returns
 * undefined when a plugin is needed (or the file is not plain YAML: client-node then gives its own
 * error). A file that cannot be read at all fails here.
 */
async function loadPlainKubeconfig(path: string, opts: LoadKubeconfigOptions): Promise<ApiTarget | undefined> {
  const [{ readFile }, { parseDocument }, { dirname, isAbsolute, join }] = await Promise.all([
    import('node:fs/promises'),
    import('yaml'),
    import('node:path'),
  ]);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    // A file that cannot be read is an error whoever parses it: no need to load client-node.
    if ((err as NodeJS.ErrnoException).code) throw kubeconfigReadError(path, err);
    return undefined;
  }
  let doc: Dict;
  try {
    // parseDocument, not parse: parse prints each warning to stderr with the line it is about (an
    // unresolved tag on a token's line quotes the token), and a warning leaves a value changed
    // (that tag's value becomes ""). Anything short of clean YAML goes to client-node.
    const d = parseDocument(text);
    if (d.errors.length > 0 || d.warnings.length > 0) return undefined;
    doc = d.toJS() as Dict;
  } catch {
    return undefined;
  }
  if (!doc || typeof doc !== 'object') return undefined;
  const named = (list: unknown, name: string | undefined, field: string): Dict | undefined => {
    if (!Array.isArray(list) || !name) return undefined;
    const e = list.find((x: Dict) => x?.name === name) as Dict | undefined;
    return e && typeof e[field] === 'object' ? (e[field] as Dict) : undefined;
  };
  const ctxName = opts.context ?? str(doc['current-context']);
  const context = named(doc.contexts, ctxName, 'context');
  if (!context) return undefined; // client-node words the error
  const cluster = named(doc.clusters, str(context.cluster), 'cluster');
  const user = named(doc.users, str(context.user), 'user') ?? {};
  if (!cluster || user.exec || user['auth-provider']) return undefined;
  const base = dirname(path);
  const file = async (p: string | undefined, what: string): Promise<Buffer | undefined> => {
    if (!p) return undefined;
    const abs = isAbsolute(p) ? p : join(base, p);
    try {
      return await readFile(abs);
    } catch (err) {
      const e = fsError(`read the ${what} named by kubeconfig ${path}:`, abs, err);
      throw new CliError(e.message, { exitCode: ExitCode.Usage, hint: e.hint, cause: err });
    }
  };
  const data = (v: unknown) => (str(v) ? Buffer.from(str(v)!, 'base64') : undefined);
  const server = opts.server ?? str(cluster.server);
  if (!server) return undefined;
  checkServerUrl(server, opts.server ? '--server' : `kubeconfig ${path}`);
  const headers: Record<string, string> = {};
  const token = str(user.token) ?? (await file(str(user.tokenFile), 'token file'))?.toString('utf8').trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  else if (str(user.username)) {
    headers.Authorization = `Basic ${Buffer.from(`${str(user.username)}:${str(user.password) ?? ''}`).toString('base64')}`;
  }
  return {
    server,
    ca: data(cluster['certificate-authority-data']) ?? (await file(str(cluster['certificate-authority']), 'CA file')),
    cert: data(user['client-certificate-data']) ?? (await file(str(user['client-certificate']), 'client certificate')),
    key: data(user['client-key-data']) ?? (await file(str(user['client-key']), 'client key')),
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] === true,
    ...(str(cluster['tls-server-name']) ? { tlsServerName: str(cluster['tls-server-name']) } : {}),
    headers,
    source: `${path} (context ${ctxName})`,
  };
}

function checkServerUrl(server: string, from: string): void {
  let u: URL;
  try {
    u = new URL(server);
  } catch {
    throw new CliError(`${from}: "${server}" is not a URL`, {
      exitCode: ExitCode.Usage,
      hint: 'use https://HOST:PORT, e.g. https://10.0.0.10:6443',
    });
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') {
    throw new CliError(`${from}: "${server}" must be an https:// URL`, {
      exitCode: ExitCode.Usage,
      hint: 'use https://HOST:PORT, e.g. https://10.0.0.10:6443',
    });
  }
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  /** Default application/json; e.g. application/merge-patch+json for PATCH. */
  contentType?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Accept header; default application/json. */
  accept?: string;
  /** How many times a 429 is retried after its Retry-After (default 5; 0 = surface it). */
  throttleRetries?: number;
  /**
   * A successful JSON answer is read for this one field only and comes back as
   * `{ metadata: { resourceVersion } }` (./json-member): for a PUT whose answer is the whole
   * object, when only its new resourceVersion matters. An answer that is not JSON comes back as
   * its text, as without this option. Errors are parsed in full as always.
   */
  only?: 'metadata.resourceVersion';
}

export interface ApiResponse<T> {
  status: number;
  headers: IncomingHttpHeaders;
  body: T;
}

export interface ApiClientOptions {
  /**
   * HTTP/1.1 connections kept per host, and so requests in flight over HTTP/1.1: size it to the
   * concurrency you intend (default 32). Over HTTP/2 there is one connection, and the server's
   * stream limit is the only bound: callers bound what they have in flight themselves.
   */
  maxSockets?: number;
  /** Per-request timeout (default 30 s). */
  timeoutMs?: number;
  /** Offer HTTP/2 over https (default true); false speaks HTTP/1.1 only. */
  http2?: boolean;
  /** How long an HTTP/2 PING may go unanswered before the connection is given up (default 10 s). */
  http2PingTimeoutMs?: number;
}

export interface ApiClient {
  readonly server: string;
  request<T = unknown>(method: string, path: string, opts?: RequestOptions): Promise<ApiResponse<T>>;
  get<T = unknown>(path: string, opts?: RequestOptions): Promise<T>;
  list<T = unknown>(path: string, opts?: RequestOptions): Promise<T>;
  put<T = unknown>(path: string, body: unknown, opts?: RequestOptions): Promise<T>;
  post<T = unknown>(path: string, body: unknown, opts?: RequestOptions): Promise<T>;
  /** Merge patch by default; pass contentType for strategic or JSON patches. */
  patch<T = unknown>(path: string, body: unknown, opts?: RequestOptions): Promise<T>;
  delete<T = unknown>(path: string, opts?: RequestOptions): Promise<T>;
  /** Plain text endpoints: /metrics, /readyz?verbose, /livez, /version. Non-2xx throws ApiError. */
  getText(path: string, opts?: RequestOptions): Promise<string>;
  /** Like getText but returns the status instead of throwing (health checks answer 500 with a body). */
  probe(path: string, opts?: RequestOptions): Promise<{ status: number; body: string }>;
  /** Closes idle keep-alive sockets so the process can exit. */
  close(): void;
}

function buildPath(path: string, query?: RequestOptions['query']): string {
  if (!query) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `${path}${path.includes('?') ? '&' : '?'}${s}` : path;
}

function parseRetryAfter(h: string | string[] | undefined): number | undefined {
  const v = Array.isArray(h) ? h[0] : h;
  if (v === undefined) return undefined;
  const n = Number(v);
  if (Number.isFinite(n) && n >= 0) return n;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, (t - Date.now()) / 1000);
}

/**
 * The CA, client certificate and key as one TLS context for every connection of the agent. Given
 * as plain options, each new socket builds its own OpenSSL context from them (parsing the PEM
 * again): 129 contexts for the 129 sockets of a 10,000-object rewrite. Material that does not
 * load is named in a CliError (which part, OpenSSL's reason, what to fix; never the material)
 * that every request of the client fails with at once: not a connection problem, so never retried.
 */
export function tlsMaterial(target: ApiTarget): { secureContext: SecureContext } | { error: CliError } {
  try {
    return { secureContext: createSecureContext({ ca: target.ca, cert: target.cert, key: target.key }) };
  } catch (err) {
    // Load each part alone to say which one it is; a pair that loads alone but not together does
    // not match.
    const parts = [
      ['the CA certificate (certificate-authority-data or certificate-authority)', { ca: target.ca }],
      ['the client certificate (client-certificate-data or client-certificate)', { cert: target.cert }],
      ['the client key (client-key-data or client-key)', { key: target.key }],
    ] as const;
    let what = `${parts[2][0]} is not the key of the client certificate`;
    let reason = (err as Error).message;
    for (const [name, part] of parts) {
      try {
        createSecureContext(part);
      } catch (e) {
        what = `cannot load ${name}`;
        reason = (e as Error).message;
        break;
      }
    }
    const from = target.source ? `kubeconfig ${target.source}` : `the credentials for ${target.server}`;
    return {
      error: new CliError(`${from}: ${what}: ${reason.replace(/^error:[0-9A-F]+:/, '')}`, {
        exitCode: ExitCode.Usage,
        hint: 'each must be PEM (base64 of PEM in the -data fields), and the key the private key of the certificate',
      }),
    };
  }
}

const timedOut = (ms: number) => Object.assign(new Error(`no answer within ${ms} ms`), { code: 'ETIMEDOUT' });

/**
 * The one HTTP client every cluster-facing command uses: JSON in and out, Kubernetes Status
 * bodies turned into ApiError, connection failures into ApiConnectionError (see ./errors for
 * toCliError). Over https it offers HTTP/2 and HTTP/1.1 in ALPN, as client-go does: an apiserver
 * answers h2, and every request in flight is a stream of one connection (./h2); a server or proxy
 * that picks HTTP/1.1 gets a keep-alive agent of up to `maxSockets` connections.
 */
export function createApiClient(target: ApiTarget, opts: ApiClientOptions = {}): ApiClient {
  const base = new URL(target.server);
  const basePath = base.pathname.replace(/\/+$/, '');
  const isHttps = base.protocol === 'https:';
  const maxSockets = opts.maxSockets ?? 32;
  const tls = isHttps ? tlsMaterial(target) : undefined;
  const hostname = base.hostname.replace(/^\[|\]$/g, '');
  const port = Number(base.port || (isHttps ? 443 : 80));
  const agent = isHttps
    ? new Agent({
        keepAlive: true,
        maxSockets,
        maxFreeSockets: maxSockets,
        ...(tls && 'secureContext' in tls ? { secureContext: tls.secureContext } : {}),
        rejectUnauthorized: !target.insecureSkipTlsVerify,
        ...(target.tlsServerName ? { servername: target.tlsServerName } : {}),
      })
    : new HttpAgent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
  const defaultTimeout = opts.timeoutMs ?? 30_000;
  let headers = { ...(target.headers ?? {}) };
  let refreshed = false;

  const http1: Send = (method, path, h, payload, timeoutMs, signal) =>
    new Promise<Answer>((resolve, reject) => {
      const req = (isHttps ? httpsRequest : httpRequest)(
        { protocol: base.protocol, hostname, port, method, path, headers: h, agent, signal },
        (res) => {
          // Decoded as it arrives (no chunk list, no concatenated copy): a list page is ~1 MB and
          // off-heap buffers are only freed by a later GC, which showed in re-encrypt-all's RSS.
          res.setEncoding('utf8');
          let text = '';
          res.on('data', (c: string) => {
            text += c;
          });
          res.on('error', reject);
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
        },
      );
      req.setTimeout(timeoutMs, () => req.destroy(timedOut(timeoutMs)));
      req.on('error', reject);
      if (payload !== undefined) req.end(payload);
      else req.end();
    });

  const h2 =
    isHttps && tls && 'secureContext' in tls && opts.http2 !== false
      ? h2Transport({
          origin: base.origin,
          hostname,
          port,
          secureContext: tls.secureContext,
          rejectUnauthorized: !target.insecureSkipTlsVerify,
          servername: target.tlsServerName,
          fallback: http1,
          timedOut,
          ...(opts.http2PingTimeoutMs ? { pingTimeoutMs: opts.http2PingTimeoutMs } : {}),
        })
      : undefined;
  const send: Send = h2 ? h2.send : http1;

  function once<T>(method: string, path: string, o: RequestOptions): Promise<ApiResponse<T>> {
    const fullPath = basePath + buildPath(path, o.query);
    const url = `${base.origin}${fullPath}`;
    const payload =
      o.body === undefined ? undefined : typeof o.body === 'string' || Buffer.isBuffer(o.body) ? o.body : JSON.stringify(o.body);
    const h: OutgoingHttpHeaders = { accept: o.accept ?? 'application/json' };
    for (const [k, v] of Object.entries(headers)) h[k.toLowerCase()] = v;
    if (payload !== undefined) {
      h['content-type'] = o.contentType ?? (method === 'PATCH' ? 'application/merge-patch+json' : 'application/json');
      h['content-length'] = Buffer.byteLength(payload);
    }
    if (o.signal?.aborted) return Promise.reject(o.signal.reason ?? new Error('aborted'));
    if (tls && 'error' in tls) return Promise.reject(tls.error);
    const timeoutMs = o.timeoutMs ?? defaultTimeout;
    return send(method, fullPath, h, payload, timeoutMs, o.signal).then(
      ({ status, headers: rh, text }) => {
        const isJson = /json/.test(String(rh['content-type'] ?? ''));
        let body: unknown = text;
        const ok = status >= 200 && status < 300;
        if (ok && isJson && o.only === 'metadata.resourceVersion') {
          const rv = metadataString(text, 'resourceVersion');
          if (rv !== Malformed) body = { metadata: { resourceVersion: rv } };
        } else if (isJson && text) {
          try {
            body = JSON.parse(text);
          } catch {
            body = text;
          }
        }
        if (ok) return { status, headers: rh, body: body as T };
        const st = statusFields(body);
        throw new ApiError({
          status,
          method,
          path,
          url,
          message: st.message ?? (typeof body === 'string' && body ? body.trim().slice(0, 300) : `HTTP ${status}`),
          reason: st.reason,
          retryAfterSeconds: parseRetryAfter(rh['retry-after']) ?? st.retryAfterSeconds,
          body,
        });
      },
      (err: NodeJS.ErrnoException) => {
        if (o.signal?.aborted) throw o.signal.reason ?? err;
        // Node's own refusal of the request (a header value with a newline, say) is a TypeError:
        // not a connection problem, so never retried as one.
        if (err instanceof TypeError) throw err;
        throw new ApiConnectionError(url, err.message, err.code, err);
      },
    );
  }

  /** A 429 means the apiserver did not process the request (priority and fairness), so any
   * method may be retried once the Retry-After has passed. */
  async function throttled<T>(method: string, path: string, o: RequestOptions): Promise<ApiResponse<T>> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await once<T>(method, path, o);
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 429 || attempt >= (o.throttleRetries ?? 5)) throw err;
        const waitMs = Math.min(10, err.retryAfterSeconds ?? 1) * 1000 * (0.8 + Math.random() * 0.4);
        await delay(waitMs, undefined, o.signal ? { signal: o.signal } : undefined);
      }
    }
  }

  async function request<T>(method: string, path: string, o: RequestOptions = {}): Promise<ApiResponse<T>> {
    try {
      return await throttled<T>(method, path, o);
    } catch (err) {
      // Exec-plugin tokens expire: refresh once, then let 401 surface.
      if (err instanceof ApiError && err.status === 401 && target.refreshHeaders && !refreshed) {
        refreshed = true;
        headers = { ...(await target.refreshHeaders()) };
        return throttled<T>(method, path, o);
      }
      throw err;
    }
  }

  const asText = (b: unknown) => (typeof b === 'string' ? b : JSON.stringify(b));
  const textResponse = (path: string, o: RequestOptions = {}) =>
    request<unknown>('GET', path, { accept: 'text/plain, application/json;q=0.9, */*;q=0.8', ...o });

  return {
    server: target.server,
    request,
    get: async (path, o) => (await request('GET', path, o)).body as never,
    list: async (path, o) => (await request('GET', path, o)).body as never,
    put: async (path, body, o) => (await request('PUT', path, { ...o, body })).body as never,
    post: async (path, body, o) => (await request('POST', path, { ...o, body })).body as never,
    patch: async (path, body, o) => (await request('PATCH', path, { ...o, body })).body as never,
    delete: async (path, o) => (await request('DELETE', path, o)).body as never,
    getText: async (path, o) => asText((await textResponse(path, o)).body),
    probe: async (path, o) => {
      try {
        const r = await textResponse(path, o);
        return { status: r.status, body: asText(r.body) };
      } catch (err) {
        if (err instanceof ApiError) return { status: err.status, body: asText(err.body) };
        throw err;
      }
    },
    close: () => {
      agent.destroy();
      h2?.close();
    },
  };
}
