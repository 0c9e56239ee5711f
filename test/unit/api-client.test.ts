import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiClient } from '../../src/cluster/api';
import { ApiError } from '../../src/cluster/errors';

describe('createApiClient throttling', () => {
  let server: Server;
  let url: string;
  let throttleNext = 0;
  let requests = 0;

  beforeAll(async () => {
    server = createServer((req, res) => {
      requests++;
      if (throttleNext > 0) {
        throttleNext--;
        res.writeHead(429, { 'Content-Type': 'application/json', 'Retry-After': '0' });
        res.end(JSON.stringify({ kind: 'Status', code: 429, reason: 'TooManyRequests', message: 'slow down' }));
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ kind: 'APIResourceList', path: req.url }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('retries a 429 after its Retry-After, for any method', async () => {
    const api = createApiClient({ server: url });
    throttleNext = 2;
    requests = 0;
    expect(await api.get<{ path: string }>('/api/v1')).toEqual({ kind: 'APIResourceList', path: '/api/v1' });
    expect(requests).toBe(3);
    throttleNext = 1;
    await api.put('/api/v1/namespaces/default/secrets/a', { metadata: { name: 'a' } });
    api.close();
  });

  it('gives up after throttleRetries and surfaces the 429', async () => {
    const api = createApiClient({ server: url });
    throttleNext = 10;
    requests = 0;
    const err = await api.get('/api/v1', { throttleRetries: 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(429);
    expect(requests).toBe(3);
    throttleNext = 0;
    api.close();
  });
});
