import { Agent, request as httpsRequest } from 'node:https';
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';

/**
 * A small HTTPS client for tests and the bed itself: the admin client certificate, JSON in and out,
 * no retries and no interpretation of the status (tests assert on it).
 */
export interface ApiResponse<T = any> {
  status: number;
  body: T;
  headers: Record<string, string | string[] | undefined>;
}

export interface TestApiOptions {
  server: string; // https://127.0.0.1:PORT
  ca: string | Buffer;
  cert: string | Buffer;
  key: string | Buffer;
  timeoutMs?: number;
}

export class TestApi {
  readonly server: string;
  private readonly agent: Agent;
  private readonly timeoutMs: number;

  constructor(opts: TestApiOptions) {
    this.server = opts.server.replace(/\/$/, '');
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.agent = new Agent({ ca: opts.ca, cert: opts.cert, key: opts.key, keepAlive: true, maxSockets: 32 });
  }

  /** Reads a kubeconfig's current context (embedded data or file references). */
  static async fromKubeconfig(path: string): Promise<TestApi> {
    const kc = parse(await readFile(path, 'utf8'));
    const ctxName = kc['current-context'];
    const ctx = kc.contexts?.find((c: any) => c.name === ctxName)?.context ?? kc.contexts?.[0]?.context;
    const cluster = kc.clusters?.find((c: any) => c.name === ctx?.cluster)?.cluster;
    const user = kc.users?.find((u: any) => u.name === ctx?.user)?.user;
    if (!cluster?.server || !user) throw new Error(`${path}: no usable cluster/user in the current context`);
    const material = async (data: string | undefined, file: string | undefined, what: string) => {
      if (data) return Buffer.from(data, 'base64');
      if (file) return readFile(file);
      throw new Error(`${path}: no ${what} for the current user/cluster`);
    };
    return new TestApi({
      server: cluster.server,
      ca: await material(cluster['certificate-authority-data'], cluster['certificate-authority'], 'CA'),
      cert: await material(user['client-certificate-data'], user['client-certificate'], 'client certificate'),
      key: await material(user['client-key-data'], user['client-key'], 'client key'),
    });
  }

  request<T = any>(method: string, path: string, body?: unknown): Promise<ApiResponse<T>> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        `${this.server}${path}`,
        {
          method,
          agent: this.agent,
          timeout: this.timeoutMs,
          headers: {
            accept: 'application/json',
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              // Health endpoints answer plain text.
            }
            resolve({ status: res.statusCode ?? 0, body: parsed as T, headers: res.headers });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out after ${this.timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  get<T = any>(path: string) {
    return this.request<T>('GET', path);
  }
  /** GET with query parameters, e.g. list('/api/v1/secrets', { limit: 50, continue: token }). */
  list<T = any>(path: string, query: Record<string, string | number | undefined> = {}) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') q.set(k, String(v));
    const qs = q.toString();
    return this.request<T>('GET', qs ? `${path}?${qs}` : path);
  }
  create<T = any>(path: string, obj: unknown) {
    return this.request<T>('POST', path, obj);
  }
  put<T = any>(path: string, obj: unknown) {
    return this.request<T>('PUT', path, obj);
  }
  delete<T = any>(path: string) {
    return this.request<T>('DELETE', path);
  }

  close(): void {
    this.agent.destroy();
  }
}
