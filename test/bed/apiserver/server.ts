/**
 * The HTTPS front: client-certificate authentication, health/version/metrics/discovery, and the
 * core/v1 REST paths k8s-encrypt and the kubelet stand-in use. Errors are Kubernetes Status bodies.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { STORED_RESOURCES, type StoredResource } from './encryption';
import type { Knobs } from './knobs';
import type { Metrics } from './metrics';
import { mergePatch, parseLabelSelector, type KObject } from './objects';
import {
  ApiError,
  badRequest,
  conflict,
  internalError,
  successStatus,
  tooManyRequests,
  unauthorized,
} from './status';
import { RESOURCES, type ResourceInfo, type Store } from './store';
import type { KubeVersion } from './version';

export interface HealthState {
  /** The initial list of every resource decoded (the watch caches are synced). */
  cachesSynced: boolean;
  /** Shutting down: /readyz fails, new API requests are refused. */
  shuttingDown: boolean;
  /** Extra named checks (e.g. KMS providers); a string is the failure reason. */
  extraChecks: Map<string, () => Promise<true | string>>;
}

export interface ServerDeps {
  store: Store;
  metrics: Metrics;
  knobs: Knobs;
  version: KubeVersion;
  health: HealthState;
  /** host:port clients should use, for /api's serverAddressByClientCIDRs. */
  serverAddress: string;
  random?: () => number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const PUBLIC_PATHS = /^\/(livez|readyz|healthz)(\/.*)?$|^\/version\/?$/;

export function createHandler(deps: ServerDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const random = deps.random ?? Math.random;
  return (req, res) => {
    handle(req, res).catch((err: unknown) => {
      const e = err instanceof ApiError ? err : internalError((err as Error).message ?? String(err));
      if (!(err instanceof ApiError)) process.stderr.write(`E handler: ${(err as Error).stack ?? String(err)}\n`);
      sendStatus(res, e);
    });
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://apiserver');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const authenticated = (req.socket as TLSSocket).authorized === true;

    if (PUBLIC_PATHS.test(path)) return health(path, url, res);
    if (!authenticated) throw unauthorized();
    if (path === '/metrics') return sendText(res, 200, deps.metrics.render(), 'text/plain; version=0.0.4; charset=utf-8');

    // API requests: fault knobs apply from here on.
    if (deps.knobs.latencyMs > 0) await sleep(deps.knobs.latencyMs);
    if (deps.knobs.rate429 > 0 && random() < deps.knobs.rate429) throw tooManyRequests(deps.knobs.retryAfterSeconds);
    if (deps.knobs.forbidPaths.some((p) => path.startsWith(p))) {
      throw new ApiError(403, 'Forbidden', `${path} is forbidden: User "kubernetes-admin" cannot ${method.toLowerCase()} it (BED_FORBID_PATHS)`);
    }
    if (deps.health.shuttingDown) {
      throw new ApiError(503, 'ServiceUnavailable', 'apiserver is shutting down', { retryAfterSeconds: 1 }, { 'Retry-After': '1' });
    }

    if (path === '/api') {
      return sendJson(res, 200, {
        kind: 'APIVersions',
        versions: ['v1'],
        serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: deps.serverAddress }],
      });
    }
    if (path === '/apis') return sendJson(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: [] });
    if (path === '/api/v1') return sendJson(res, 200, resourceList());
    if (!path.startsWith('/api/v1/')) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');

    const route = parseRoute(path.slice('/api/v1/'.length).split('/'));
    if (url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1') {
      throw new ApiError(405, 'MethodNotAllowed', 'watch is not supported by the test bed apiserver');
    }
    return api(route, method, url, req, res);
  }

  async function api(route: Route, method: string, url: URL, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { info, namespace, name } = route;
    const store = deps.store;
    if (name === undefined) {
      if (method === 'GET') {
        const limitText = url.searchParams.get('limit');
        const limit = limitText ? Number(limitText) : undefined;
        if (limit !== undefined && (!Number.isInteger(limit) || limit < 0)) throw badRequest(`invalid limit "${limitText}"`);
        const list = await store.list(info, namespace, {
          limit,
          continueToken: url.searchParams.get('continue') || undefined,
          selector: parseLabelSelector(url.searchParams.get('labelSelector')),
        });
        return sendJson(res, 200, {
          kind: `${info.kind}List`,
          apiVersion: 'v1',
          metadata: {
            resourceVersion: list.resourceVersion,
            ...(list.continueToken ? { continue: list.continueToken } : {}),
            ...(list.remainingItemCount !== undefined ? { remainingItemCount: list.remainingItemCount } : {}),
          },
          items: list.items,
        });
      }
      if (method === 'POST' && (namespace !== undefined || !info.namespaced)) {
        const created = await store.create(info, namespace, await readJson(req));
        return sendJson(res, 201, created);
      }
      throw new ApiError(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
    }
    if (info.namespaced && namespace === undefined) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    switch (method) {
      case 'GET':
        return sendJson(res, 200, await store.get(info, namespace, name));
      case 'PUT': {
        const body = await readJson(req);
        const bodyName = body.metadata?.name;
        if (bodyName !== undefined && bodyName !== name) {
          throw badRequest(`the name of the object (${String(bodyName)}) does not match the name on the URL (${name})`);
        }
        if (deps.knobs.rate409 > 0 && random() < deps.knobs.rate409) throw conflict(info.resource, name);
        body.metadata = { ...(body.metadata ?? {}), name };
        return sendJson(res, 200, await store.update(info, namespace, name, body));
      }
      case 'PATCH': {
        const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
        if (type !== 'application/merge-patch+json' && type !== 'application/strategic-merge-patch+json') {
          throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json`);
        }
        const patch = await readJson(req);
        const patchRv = patch.metadata?.resourceVersion;
        // Patches apply to the latest state; a resourceVersion in the patch is a precondition.
        for (;;) {
          const cur = await store.get(info, namespace, name);
          const next = mergePatch(cur, patch) as KObject;
          next.metadata = { ...(next.metadata ?? {}), name, resourceVersion: patchRv ?? cur.metadata?.resourceVersion };
          try {
            return sendJson(res, 200, await store.update(info, namespace, name, next));
          } catch (err) {
            if (patchRv === undefined && err instanceof ApiError && err.reason === 'Conflict') continue;
            throw err;
          }
        }
      }
      case 'DELETE': {
        const gone = await store.delete(info, namespace, name);
        return sendJson(res, 200, successStatus({ name, kind: info.resource, uid: gone.metadata?.uid as string | undefined }));
      }
      default:
        throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }
  }

  async function health(path: string, url: URL, res: ServerResponse): Promise<void> {
    const [, kind, sub] = /^\/(livez|readyz|healthz)(?:\/(.*))?$/.exec(path) ?? [];
    if (path === '/version') {
      const v = deps.version;
      return sendJson(res, 200, {
        major: String(v.major),
        minor: String(v.minor),
        gitVersion: v.gitVersion,
        gitCommit: '0000000000000000000000000000000000000000',
        gitTreeState: 'clean',
        buildDate: '2025-01-01T00:00:00Z',
        goVersion: 'go1.23.0',
        compiler: 'gc',
        platform: 'linux/amd64',
      });
    }
    const checks: [string, () => Promise<true | string>][] = [
      ['ping', async () => true],
      ['log', async () => true],
      ['etcd', async () => true],
    ];
    if (kind === 'readyz' || kind === 'healthz') {
      for (const [n, c] of deps.health.extraChecks) checks.push([n, c]);
    }
    if (kind === 'readyz') {
      checks.push(['informer-sync', async () => (deps.health.cachesSynced ? true : 'caches not synced')]);
      checks.push(['shutdown', async () => (deps.health.shuttingDown ? 'process is shutting down' : true)]);
    }
    const selected = sub ? checks.filter(([n]) => n === sub) : checks;
    if (sub && selected.length === 0) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const results = await Promise.all(selected.map(async ([n, c]) => [n, await c()] as const));
    const failed = results.filter(([, r]) => r !== true);
    const verbose = url.searchParams.has('verbose');
    const lines = results.map(([n, r]) => (r === true ? `[+]${n} ok` : `[-]${n} failed: reason withheld`));
    if (failed.length) {
      return sendText(res, 500, `${lines.join('\n')}\n${kind} check failed\n`);
    }
    return sendText(res, 200, verbose ? `${lines.join('\n')}\n${kind} check passed\n` : 'ok');
  }
}

interface Route {
  info: ResourceInfo;
  namespace?: string;
  name?: string;
}

function parseRoute(parts: string[]): Route {
  const unknown = () => new ApiError(404, 'NotFound', 'the server could not find the requested resource');
  const resource = (r: string | undefined): ResourceInfo => {
    if (!r || !(STORED_RESOURCES as readonly string[]).includes(r)) throw unknown();
    return RESOURCES[r as StoredResource];
  };
  const decoded = parts.map(decodeURIComponent);
  // A trailing "status" subresource is served as the object itself (the stand-in stores it whole).
  if (decoded.length >= 3 && decoded.at(-1) === 'status' && !(decoded[0] === 'namespaces' && decoded.length === 4)) decoded.pop();
  if (decoded[0] === 'namespaces' && decoded.length >= 3) {
    const info = resource(decoded[2]);
    if (!info.namespaced || decoded.length > 4) throw unknown();
    return { info, namespace: decoded[1], name: decoded[3] };
  }
  if (decoded.length > 2) throw unknown();
  return { info: resource(decoded[0]), name: decoded[1] };
}

function resourceList(): Record<string, unknown> {
  const verbs = ['create', 'delete', 'get', 'list', 'patch', 'update'];
  return {
    kind: 'APIResourceList',
    groupVersion: 'v1',
    resources: STORED_RESOURCES.map((r) => ({
      name: r,
      singularName: RESOURCES[r].kind.toLowerCase(),
      namespaced: RESOURCES[r].namespaced,
      kind: RESOURCES[r].kind,
      verbs,
      storageVersionHash: '',
    })),
  };
}

const MAX_BODY = 8 * 1024 * 1024;

async function readJson(req: IncomingMessage): Promise<KObject> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw new ApiError(413, 'RequestEntityTooLarge', 'the request body is too large');
    chunks.push(c as Buffer);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw badRequest(`the body of the request could not be decoded: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw badRequest('the body of the request must be a JSON object');
  return parsed as KObject;
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function sendText(res: ServerResponse, code: number, text: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(code, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(text), 'X-Content-Type-Options': 'nosniff' });
  res.end(text);
}

function sendStatus(res: ServerResponse, e: ApiError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  for (const [k, v] of Object.entries(e.headers)) res.setHeader(k, v);
  sendJson(res, e.code, e.body());
}
