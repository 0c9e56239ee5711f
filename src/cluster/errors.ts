import { CliError, ExitCode } from '../ui/errors';

/**
 * A non-2xx answer from the apiserver, carrying what its Kubernetes `Status` body said.
 * `reason` is the Status reason (`Conflict`, `NotFound`, `Expired`, `TooManyRequests`, ...).
 */
export class ApiError extends Error {
  readonly status: number;
  readonly reason?: string;
  readonly method: string;
  readonly path: string;
  readonly url: string;
  /** Seconds from `Retry-After` (or the Status' `details.retryAfterSeconds`), when given. */
  readonly retryAfterSeconds?: number;
  /** The Status body as parsed (ListMeta `continue` on 410 lives in `body.metadata.continue`). */
  readonly body?: unknown;

  constructor(o: {
    status: number;
    method: string;
    path: string;
    url: string;
    message: string;
    reason?: string;
    retryAfterSeconds?: number;
    body?: unknown;
  }) {
    super(o.message);
    this.name = 'ApiError';
    this.status = o.status;
    this.reason = o.reason;
    this.method = o.method;
    this.path = o.path;
    this.url = o.url;
    this.retryAfterSeconds = o.retryAfterSeconds;
    this.body = o.body;
  }
}

/** A request that never got an HTTP answer (refused, reset, timed out, TLS handshake failed). */
export class ApiConnectionError extends Error {
  readonly code?: string;
  readonly url: string;
  constructor(url: string, message: string, code?: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'ApiConnectionError';
    this.url = url;
    this.code = code;
  }
}

const TLS_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'EPROTO',
]);

/** True for failures worth retrying after a pause: throttling, server errors, dropped connections. */
export function isTransient(err: unknown): boolean {
  if (err instanceof ApiError) return err.status === 429 || err.status >= 500;
  if (err instanceof ApiConnectionError) return !TLS_CODES.has(err.code ?? '');
  return false;
}

/** Short text of an error for failure lists: `409 Conflict: ...` or the connection error. */
export function describeError(err: unknown): string {
  if (err instanceof ApiError) return `${err.status}${err.reason ? ` ${err.reason}` : ''}: ${err.message}`;
  return (err as Error)?.message ?? String(err);
}

interface ApiExceptionLike {
  code: number;
  body?: unknown;
  message?: string;
}

function isApiException(err: unknown): err is ApiExceptionLike {
  return (
    typeof err === 'object' &&
    err !== null &&
    (err as { constructor?: { name?: string } }).constructor?.name === 'ApiException' &&
    typeof (err as ApiExceptionLike).code === 'number'
  );
}

/**
 * Turns anything the cluster layer throws into one CliError line with a hint. `what` names the
 * action, e.g. "list secrets" or "read /readyz".
 */
export function toCliError(err: unknown, what: string): CliError {
  if (err instanceof CliError) return err;
  if (err instanceof ApiConnectionError) {
    const tls = TLS_CODES.has(err.code ?? '') || /certificate|tls|ssl/i.test(err.message);
    return new CliError(`cannot reach the apiserver at ${err.url}: ${err.message}`, {
      exitCode: ExitCode.Cluster,
      hint: tls
        ? "the server's certificate does not match the kubeconfig's CA or address (check certificate-authority-data and --server)"
        : 'check that kube-apiserver is running and that the kubeconfig (or --server) points at it',
      cause: err,
      details: { url: err.url, ...(err.code ? { code: err.code } : {}) },
    });
  }
  let status: number | undefined;
  let message: string;
  let reason: string | undefined;
  let url: string | undefined;
  if (err instanceof ApiError) {
    ({ status, reason, message, url } = err);
  } else if (isApiException(err)) {
    status = err.code;
    const body = typeof err.body === 'string' ? safeJson(err.body) : err.body;
    const st = statusFields(body);
    message = st.message ?? err.message ?? `HTTP ${status}`;
    reason = st.reason;
  } else {
    return new CliError(`cannot ${what}: ${(err as Error)?.message ?? String(err)}`, {
      exitCode: ExitCode.Cluster,
      hint: 're-run with --verbose for details',
      cause: err,
    });
  }
  const hints: Record<number, string> = {
    401: 'the kubeconfig credentials were rejected: check the client certificate or token (is it expired?)',
    403: 'the kubeconfig user may not do this: use an admin kubeconfig (e.g. /etc/kubernetes/admin.conf)',
    404: 'the object or API does not exist on this cluster',
    409: 'the object changed while we worked on it: re-run the command',
    410: 'the list expired on the server: re-run the command',
    429: 'the apiserver is throttling requests: wait and re-run, or lower --concurrency',
  };
  const hint =
    (status !== undefined && hints[status]) ||
    (status !== undefined && status >= 500
      ? 'the apiserver failed to serve the request: check its log and re-run'
      : 'check the request and the cluster state');
  return new CliError(`cannot ${what}: ${status}${reason ? ` ${reason}` : ''}: ${message}`, {
    exitCode: ExitCode.Cluster,
    hint,
    cause: err,
    details: { status, ...(reason ? { reason } : {}), ...(url ? { url } : {}) },
  });
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}

/** The `message` and `reason` of a Kubernetes Status body, when it is one. */
export function statusFields(body: unknown): { message?: string; reason?: string; retryAfterSeconds?: number } {
  if (!body || typeof body !== 'object') return {};
  const b = body as { kind?: string; message?: unknown; reason?: unknown; details?: { retryAfterSeconds?: unknown } };
  return {
    message: typeof b.message === 'string' ? b.message : undefined,
    reason: typeof b.reason === 'string' && b.reason ? b.reason : undefined,
    retryAfterSeconds: typeof b.details?.retryAfterSeconds === 'number' ? b.details.retryAfterSeconds : undefined,
  };
}
