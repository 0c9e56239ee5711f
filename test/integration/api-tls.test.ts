// The API client over real TLS with client certificates: one TLS context shared by the agent's
// sockets (src/cluster/api.ts), many sockets at once, and material that does not load or verify
// named in one clear error that every request fails with at once.
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiClient, tlsMaterial } from '../../src/cluster/api';
import { ApiConnectionError, isTransient, toCliError } from '../../src/cluster/errors';
import { CliError, ExitCode } from '../../src/ui/errors';
import { generatePki, type BedPki } from '../bed/pki';

let dir: string;
let pki: BedPki;
let server: Server;
let url: string;
let connections = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-api-tls-'));
  pki = await generatePki(join(dir, 'pki'));
  server = createServer(
    {
      cert: readFileSync(pki.apiserverCrt),
      key: readFileSync(pki.apiserverKey),
      ca: readFileSync(pki.caCrt),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      // Slow enough that the requests overlap and the agent opens several sockets.
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ cn: peer.subject?.CN, path: req.url }));
      }, 50);
    },
  );
  server.on('secureConnection', () => connections++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
}, 60_000);

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  await rm(dir, { recursive: true, force: true });
});

describe('API client over TLS with a client certificate', () => {
  it('authenticates every socket of the agent with the one client certificate', async () => {
    const before = connections;
    const api = createApiClient(
      { server: url, ca: readFileSync(pki.caCrt), cert: readFileSync(pki.adminCrt), key: readFileSync(pki.adminKey) },
      { maxSockets: 4 },
    );
    try {
      const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => api.get<{ cn: string; path: string }>(`/api/v1/x${i}`)));
      expect(answers.map((a) => a.cn)).toEqual(Array(12).fill('kubernetes-admin'));
      expect(answers.map((a) => a.path)).toEqual(Array.from({ length: 12 }, (_, i) => `/api/v1/x${i}`));
      expect(connections - before).toBeGreaterThan(1);
      // This server speaks HTTP/1.1 only: the connection that asked for h2 in ALPN, then the agent's 4.
      expect(connections - before).toBeLessThanOrEqual(5);
    } finally {
      api.close();
    }
  });

  it('material that loads becomes one TLS context for the agent; material that does not is named', () => {
    const good = tlsMaterial({ server: url, ca: readFileSync(pki.caCrt), cert: readFileSync(pki.adminCrt), key: readFileSync(pki.adminKey) });
    expect(Object.keys(good)).toEqual(['secureContext']);
    const named = (t: Partial<Parameters<typeof tlsMaterial>[0]>) => {
      const m = tlsMaterial({ server: url, source: '/tmp/admin.conf (context x)', ca: readFileSync(pki.caCrt), cert: readFileSync(pki.adminCrt), key: readFileSync(pki.adminKey), ...t });
      expect('error' in m).toBe(true);
      const e = (m as { error: CliError }).error;
      expect(e.exitCode).toBe(ExitCode.Usage);
      expect(e.message.split('\n')).toHaveLength(1);
      return e.message;
    };
    expect(named({ key: 'not a key' })).toBe(
      'kubeconfig /tmp/admin.conf (context x): cannot load the client key (client-key-data or client-key): DECODER routines::unsupported',
    );
    expect(named({ cert: 'not a cert' })).toMatch(/^kubeconfig \/tmp\/admin\.conf \(context x\): cannot load the client certificate .*: PEM routines::no start line$/);
    // Each loads alone, but the key is another certificate's: a pair that does not belong together.
    const other = named({ key: readFileSync(pki.apiserverKey) });
    expect(other).toMatch(/: the client key \(client-key-data or client-key\) is not the key of the client certificate: .*key values mismatch$/);
    // Never the material itself.
    const keyPem = readFileSync(pki.apiserverKey, 'utf8');
    const line = keyPem.split('\n')[1]!;
    expect(other).not.toContain(line);
  });

  it('a CA that did not sign the server certificate: the request fails as a certificate problem', async () => {
    const api = createApiClient({ server: url, ca: readFileSync(pki.etcdCaCrt), cert: readFileSync(pki.adminCrt), key: readFileSync(pki.adminKey) });
    try {
      const err = await api.get('/api/v1/x').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ApiConnectionError);
      expect(String((err as Error).message)).toMatch(/certificate/i);
    } finally {
      api.close();
    }
  });

  it('a client key that does not load: the client is made, each request fails at once with that error, not retried', async () => {
    const before = connections;
    const api = createApiClient({ server: url, ca: readFileSync(pki.caCrt), cert: readFileSync(pki.adminCrt), key: 'not a key' });
    try {
      const err = await api.get('/api/v1/x').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CliError);
      expect(isTransient(err)).toBe(false);
      expect(toCliError(err, 'list secrets')).toBe(err);
      expect(String((err as Error).message)).toMatch(/^the credentials for https:\/\/127\.0\.0\.1:\d+: cannot load the client key /);
      expect(String((err as Error).message)).not.toContain('not a key');
      expect(connections).toBe(before); // nothing was sent
    } finally {
      api.close();
    }
  });
});
