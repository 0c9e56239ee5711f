import { randomBytes } from 'node:crypto';
import { createWriteStream, readdirSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdConnectionFromFlags, openEtcd, type EtcdClient } from '../../src/etcd/client';
import { identityTransformer, localTransformer, type ValueTransformer } from '../../src/etcd/codec';
import { etcdPrefixFor, scanEncryptionState } from '../../src/etcd/scan';
import { CliError, ExitCode } from '../../src/ui/errors';
import { startEtcd, type RunningEtcd } from '../helpers/etcd';
import { startBlackHole, startRelay } from '../helpers/relay';

interface Vector {
  provider: string;
  keyName: string;
  keyBase64: string;
  etcdKey: string;
  rawBase64: string;
}
const vectors: Vector[] = readFileSync(
  fileURLToPath(new URL('../fixtures/vectors/kube-apiserver-v1.32.jsonl', import.meta.url)),
  'utf8',
)
  .trim()
  .split('\n')
  .map((l) => JSON.parse(l));
const vec = (provider: string, keyName?: string) =>
  vectors.find((v) => v.provider === provider && (keyName === undefined || v.keyName === keyName))!;

/** A throwaway CA, a server certificate for 127.0.0.1 and a client certificate. */
async function makePki(dir: string) {
  const ssl = (...args: string[]) => execa('openssl', args, { cwd: dir });
  await ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=test-etcd-ca', '-keyout', 'ca.key', '-out', 'ca.crt');
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
  await writeFile(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [name, cn] of [['server', '127.0.0.1'], ['client', 'kube-apiserver-etcd-client']] as const) {
    await ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    await ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.crt`);
  }
  // A second CA whose client certificate etcd must refuse.
  await ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=other-ca', '-keyout', 'other.key', '-out', 'other.crt');
  const p = (f: string) => join(dir, f);
  return {
    caFile: p('ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    otherCert: p('other.crt'),
    otherKey: p('other.key'),
  };
}

/** Resolves once every thread of the process is stopped (SIGSTOP is delivered asynchronously). */
async function stopped(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const states = readdirSync(`/proc/${pid}/task`).map((t) => readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8').replace(/^.*\) /s, '')[0]);
    if (states.every((st) => st === 'T')) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`etcd (pid ${pid}) did not stop`);
}

/** A real Secret as kube-apiserver stores it (protobuf envelope), from the identity vector. */
const SECRET = Buffer.from(vec('identity').rawBase64, 'base64');

describe('etcd reader against a real etcd with client-certificate TLS', () => {
  let dir: string;
  let pki: Awaited<ReturnType<typeof makePki>>;
  let etcd: RunningEtcd;
  let reader: EtcdClient;

  const cbcNew = localTransformer('aescbc', 'key2', randomBytes(32).toString('base64'));
  const cbcOld = localTransformer('aescbc', 'kat-cbc-32', vec('aescbc', 'kat-cbc-32').keyBase64);
  const gcm = localTransformer('aesgcm', 'kat-gcm-32', vec('aesgcm').keyBase64);
  const sbox = localTransformer('secretbox', 'kat-sbox', vec('secretbox').keyBase64);
  // Write key first, then the readers the vectors need, then identity.
  const secretsTransformers: ValueTransformer[] = [cbcNew, cbcOld, gcm, sbox, identityTransformer()];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-etcd-it-'));
    pki = await makePki(dir);
    etcd = await startEtcd({ tls: { caFile: pki.caFile, certFile: pki.serverCert, keyFile: pki.serverKey } });
    const conn = etcdConnectionFromFlags(
      new Map([
        ['etcd-servers', etcd.endpoint],
        ['etcd-cafile', pki.caFile],
        ['etcd-certfile', pki.clientCert],
        ['etcd-keyfile', pki.clientKey],
      ]),
    );
    expect(conn.prefix).toBe('/registry');
    reader = await openEtcd(conn);

    // Values real apiservers wrote, at their own keys (aesgcm is bound to its key).
    for (const v of vectors) await reader.put(v.etcdKey, Buffer.from(v.rawBase64, 'base64'));
    // Our own writes under the write key, in two namespaces.
    for (let i = 0; i < 30; i++) {
      const key = `/registry/secrets/ns${i % 2}/own-${String(i).padStart(2, '0')}`;
      await reader.put(key, await cbcNew.encrypt(SECRET, key));
    }
    // A cluster-scoped neighbour prefix that must not be counted as secrets.
    await reader.put('/registry/secretsx/default/not-a-secret', SECRET);
    await reader.put('/registry/configmaps/default/cm1', SECRET);
  }, 120_000);

  afterAll(async () => {
    reader?.close();
    await etcd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('gets and puts raw bytes', async () => {
    const v = vec('secretbox');
    expect((await reader.get(v.etcdKey))?.equals(Buffer.from(v.rawBase64, 'base64'))).toBe(true);
    expect(await reader.get('/registry/secrets/default/missing')).toBeUndefined();
  });

  it('counts objects per provider key, lists stale and plaintext objects', async () => {
    const progress: number[] = [];
    const report = await scanEncryptionState(reader, {
      prefix: '/registry',
      resources: [{ resource: 'secrets', etcdPrefix: etcdPrefixFor('secrets') }],
      transformersFor: () => secretsTransformers,
      pageSize: 7,
      onProgress: (p) => progress.push(p.scanned),
    });
    const r = report.resources[0]!;
    expect(r.total).toBe(30 + vectors.length);
    expect(r.writeLabel).toBe('aescbc:key2');
    expect(r.counts).toEqual({
      'aescbc:key2': 30,
      'aescbc:kat-cbc-32': 1,
      'aescbc:kat-cbc-16': 1,
      'aesgcm:kat-gcm-32': 1,
      'secretbox:kat-sbox': 1,
      'kms:v2:kat-kmsv2': 1,
      plaintext: 1,
    });
    expect(r.stale.count).toBe(vectors.length);
    expect(r.stale.items).toContainEqual({ namespace: 'default', name: 'kat-identity', label: 'plaintext' });
    expect(r.stale.items).toContainEqual({ namespace: 'default', name: 'kat-sbox', label: 'secretbox:kat-sbox' });
    expect(r.plaintext).toEqual({ count: 1, items: [{ namespace: 'default', name: 'kat-identity', label: 'plaintext' }] });
    expect(r.decryptFailures).toBeUndefined();
    expect(report).toMatchObject({ total: r.total, staleTotal: vectors.length, plaintextTotal: 1 });
    expect(progress.at(-1)).toBe(r.total);
    expect(progress.length).toBeGreaterThan(3);
  });

  it('pages through a prefix in key order without repeating or skipping', async () => {
    const keys: string[] = [];
    for await (const kv of reader.scan('/registry/secrets/', { pageSize: 4, keysOnly: true })) {
      expect(kv.value).toBeUndefined();
      expect(Number(kv.modRevision)).toBeGreaterThan(0);
      keys.push(kv.key);
    }
    expect(keys.length).toBe(30 + vectors.length);
    expect(new Set(keys).size).toBe(keys.length);
    expect([...keys].sort()).toEqual(keys);
    expect(keys).not.toContain('/registry/secretsx/default/not-a-secret');
  });

  it('pages sized by bytes still return every key once, in order', async () => {
    const all: string[] = [];
    for await (const kv of reader.scan('/registry/secrets/', { pageSize: 500 })) all.push(kv.key);
    // Starts at one key, then grows and shrinks with the values seen (pageBytes of ~2 values).
    const paged: string[] = [];
    for await (const kv of reader.scan('/registry/secrets/', { pageSize: 1, pageBytes: 600, maxPageSize: 3 })) {
      expect(kv.value?.length).toBeGreaterThan(0);
      paged.push(kv.key);
    }
    expect(paged).toEqual(all);
    expect(all.length).toBe(30 + vectors.length);
  });

  it('scan values are the stored bytes on every page, though each page reuses the last one\'s buffer', async () => {
    let pages = 0;
    let checked = 0;
    for await (const kv of reader.scan('/registry/secrets/', { pageSize: 3, pageBytes: 1500, maxPageSize: 4 })) {
      const stored = await reader.get(kv.key);
      expect(kv.value?.equals(stored!), kv.key).toBe(true);
      checked++;
      if (checked % 3 === 0) pages++;
    }
    expect(checked).toBe(30 + vectors.length);
    expect(pages).toBeGreaterThan(5);
  });

  it('a call past its deadline fails as "cannot reach etcd", and the client works again afterwards', async () => {
    const short = await openEtcd(reader.connection, { callTimeoutMs: 800 });
    try {
      process.kill(etcd.pid, 'SIGSTOP'); // a hung etcd: the connection is up, nothing answers
      await stopped(etcd.pid);
      const started = Date.now();
      const err = await short.count('/registry/secrets/').catch((e: unknown) => e);
      process.kill(etcd.pid, 'SIGCONT');
      expect(err).toBeInstanceOf(CliError);
      expect((err as CliError).exitCode).toBe(ExitCode.Cluster);
      expect((err as CliError).message).toMatch(/^etcd count of \/registry\/secrets\/ at https:\/\/127\.0\.0\.1:\d+: cannot reach etcd \(4 DEADLINE_EXCEEDED/);
      expect(Date.now() - started).toBeLessThan(5000);
      expect(await short.count('/registry/secrets/')).toBe(30 + vectors.length);
    } finally {
      process.kill(etcd.pid, 'SIGCONT');
      short.close();
    }
  });

  it('halves its page when a page of large values is over the reply limit', async () => {
    const small = await openEtcd(reader.connection, { maxReplyBytes: 1024 * 1024 });
    try {
      const big = randomBytes(300 * 1024);
      for (let i = 0; i < 6; i++) await reader.put(`/registry/bigsecrets/default/big-${i}`, big);
      const seen: string[] = [];
      for await (const kv of small.scan('/registry/bigsecrets/', { pageSize: 500 })) {
        expect(kv.value?.equals(big)).toBe(true);
        seen.push(kv.key);
      }
      expect(seen).toEqual([0, 1, 2, 3, 4, 5].map((i) => `/registry/bigsecrets/default/big-${i}`));
    } finally {
      small.close();
    }
  });

  it('counts a prefix without reading it, serializable or not', async () => {
    const n = 30 + vectors.length;
    expect(await reader.count('/registry/secrets/')).toBe(n);
    expect(await reader.count('/registry/secrets/', { serializable: true })).toBe(n);
    expect(await reader.count('/registry/nothing-here/')).toBe(0);
    const serial: string[] = [];
    for await (const kv of reader.scan('/registry/secrets/', { pageSize: 9, serializable: true, keysOnly: true })) serial.push(kv.key);
    expect(serial.length).toBe(n);
  });

  it('reports the member status with the database size', async () => {
    const s = await reader.status();
    expect(s.version).toMatch(/^3\.\d+\.\d+/);
    expect(s.dbSize).toBeGreaterThan(16 * 1024);
    expect(s.dbSizeInUse).toBeGreaterThan(0);
    expect(s.dbSizeInUse).toBeLessThanOrEqual(s.dbSize);
    expect(s.leader).toBe(s.memberId);
    expect(Number(s.revision)).toBeGreaterThan(30);
  });

  it('streams a snapshot that etcdctl accepts, chunk by chunk', async () => {
    const file = join(dir, 'snap.db');
    const out = createWriteStream(file, { mode: 0o600 });
    let chunks = 0;
    let bytes = 0;
    for await (const chunk of reader.snapshot()) {
      chunks++;
      bytes += chunk.length;
      if (!out.write(chunk)) await once(out, 'drain');
    }
    await new Promise<void>((resolve, reject) => out.end((e?: Error | null) => (e ? reject(e) : resolve())));
    expect(chunks).toBeGreaterThan(1);
    expect(bytes).toBeGreaterThanOrEqual((await reader.status()).dbSize);
    const st = await execa('etcdctl', ['snapshot', 'status', file, '-w', 'json'], { env: { ETCDCTL_API: '3' } });
    const info = JSON.parse(st.stdout) as { totalKey: number; revision: number };
    expect(info.totalKey).toBeGreaterThanOrEqual(30 + vectors.length);
  });

  it('stops a snapshot when the caller stops reading or aborts', async () => {
    for await (const chunk of reader.snapshot()) {
      expect(chunk.length).toBeGreaterThan(0);
      break;
    }
    const ac = new AbortController();
    const seen = await (async () => {
      let n = 0;
      for await (const _ of reader.snapshot({ signal: ac.signal })) {
        if (++n === 1) ac.abort(new Error('stop'));
      }
      return n;
    })().catch((e: Error) => e.message);
    expect(seen).toBe('stop');
    // The connection is still good afterwards.
    expect(await reader.count('/registry/secrets/')).toBeGreaterThan(0);
  });

  it('moves on to the next endpoint when the first is down', async () => {
    const two = await openEtcd({ ...reader.connection, endpoints: ['https://127.0.0.1:1', reader.connection.endpoints[0]!] }, { callTimeoutMs: 5000 });
    try {
      expect(await two.count('/registry/secrets/')).toBe(30 + vectors.length);
      expect((await two.status()).dbSize).toBeGreaterThan(0);
    } finally {
      two.close();
    }
  }, 20_000);

  it('moves on to the next endpoint when the first accepts TCP and never answers (a black hole), before the call\'s deadline', async () => {
    const hole = await startBlackHole();
    try {
      const started = Date.now();
      const two = await openEtcd({ ...reader.connection, endpoints: [`https://127.0.0.1:${hole.port}`, reader.connection.endpoints[0]!] });
      try {
        expect(await two.count('/registry/secrets/')).toBe(30 + vectors.length);
        expect(hole.connections).toBe(1);
        // The connect gave up after 3 s without progress; the default deadline is 10 s.
        expect(Date.now() - started).toBeLessThan(8000);
      } finally {
        two.close();
      }
    } finally {
      await hole.close();
    }
  }, 20_000);

  it('a member that goes silent under a live connection: the call moves on to the next endpoint before its deadline, the silent connection is dropped', async () => {
    const relay = await startRelay(Number(new URL(reader.connection.endpoints[0]!).port));
    try {
      const two = await openEtcd({ ...reader.connection, endpoints: [`https://127.0.0.1:${relay.port}`, reader.connection.endpoints[0]!] });
      try {
        expect((await two.status()).dbSize).toBeGreaterThan(0); // on the relay: a live connection
        relay.silence(true);
        const started = Date.now();
        expect(await two.count('/registry/secrets/')).toBe(30 + vectors.length);
        // The PING after 3 s went unanswered for 3 s, and the call went on before its 10 s
        // deadline (past it, the count would have failed with DEADLINE_EXCEEDED).
        expect(Date.now() - started).toBeGreaterThan(5000);
        expect(Date.now() - started).toBeLessThan(9500);
        expect(relay.connections).toBe(1);
      } finally {
        two.close();
      }
    } finally {
      await relay.close();
    }
  }, 20_000);

  // Runs after the counting tests: it adds two broken values.
  it('a decrypt check finds corrupted values, unknown keys and plaintext the config cannot read', async () => {
    const good = '/registry/secrets/ns0/own-00';
    const stored = (await reader.get(good))!;
    const corrupted = Buffer.from(stored);
    // The first ciphertext block: the plaintext's envelope header comes out garbled (aescbc has
    // no MAC, so only the content check can tell).
    corrupted['k8s:enc:aescbc:v1:key2:'.length + 16]! ^= 0xff;
    await reader.put('/registry/secrets/ns9/corrupted', corrupted);
    // Stored under one etcd key, copied to another: aesgcm's authenticated data catches it.
    await reader.put('/registry/secrets/ns9/moved', Buffer.from(vec('aesgcm').rawBase64, 'base64'));
    const report = await scanEncryptionState(reader, {
      resources: [{ resource: 'secrets', etcdPrefix: '/registry/secrets/' }],
      // No identity and no kat-cbc-16 key: the apiserver could not read those either.
      transformersFor: () => [cbcNew, cbcOld, gcm, sbox],
      decryptCheck: true,
      pageSize: 5,
    });
    const r = report.resources[0]!;
    const failed = Object.fromEntries(r.decryptFailures!.items.map((f) => [`${f.namespace}/${f.name}`, f.error]));
    expect(Object.keys(failed).sort()).toEqual(
      ['default/kat-cbc-16', 'default/kat-identity', 'ns9/corrupted', 'ns9/moved'].sort(),
    );
    expect(failed['default/kat-identity']).toBe('no matching prefix found');
    expect(failed['ns9/moved']).toMatch(/authentication failed/);
    expect(failed['ns9/corrupted']).toMatch(/padding|PKCS7|not a Kubernetes object/);
    expect(r.kmsNotChecked).toBe(1);
    expect(report.decryptFailuresTotal).toBe(4);
  });

  it('maps an unreachable endpoint and a foreign client certificate to cluster errors', async () => {
    const refused = await openEtcd({ endpoints: ['https://127.0.0.1:1'], caFile: pki.caFile, certFile: pki.clientCert, keyFile: pki.clientKey }, { callTimeoutMs: 2000 }).catch((e) => e);
    expect(refused).toBeInstanceOf(CliError);
    expect(refused.exitCode).toBe(ExitCode.Cluster);
    expect(refused.message).toMatch(/^etcd connection check at https:\/\/127\.0\.0\.1:1: /);
    expect(refused.message).not.toMatch(/Resolution note/);
    expect(refused.hint).toMatch(/certificate/);

    const foreign = await openEtcd({ endpoints: [etcd.endpoint], caFile: pki.caFile, certFile: pki.otherCert, keyFile: pki.otherKey }, { callTimeoutMs: 3000 }).catch((e) => e);
    expect(foreign).toBeInstanceOf(CliError);
    expect(foreign.exitCode).toBe(ExitCode.Cluster);

    const missing = await openEtcd({ endpoints: [etcd.endpoint], caFile: join(dir, 'nope.crt') }).catch((e) => e);
    expect(missing).toBeInstanceOf(CliError);
    expect(missing.message).toMatch(/cannot read the etcd CA file .*nope\.crt: it does not exist/);
  }, 30_000);
});

describe('etcdPrefixFor', () => {
  it.each([
    ['secrets', '/registry/secrets/'],
    ['configmaps', '/registry/configmaps/'],
    ['services', '/registry/services/specs/'],
    ['endpoints', '/registry/services/endpoints/'],
    ['nodes', '/registry/minions/'],
    ['replicationcontrollers', '/registry/controllers/'],
    ['deployments.apps', '/registry/deployments/'],
    ['ingresses.networking.k8s.io', '/registry/ingress/'],
    ['roles.rbac.authorization.k8s.io', '/registry/roles/'],
    ['widgets.example.com', '/registry/example.com/widgets/'],
    ['volumesnapshots.snapshot.storage.k8s.io', '/registry/snapshot.storage.k8s.io/volumesnapshots/'],
    ['apiservices.apiregistration.k8s.io', '/registry/apiregistration.k8s.io/apiservices/'],
  ])('%s lives under %s', (resource, prefix) => {
    expect(etcdPrefixFor(resource)).toBe(prefix);
  });

  it('honours another --etcd-prefix', () => {
    expect(etcdPrefixFor('secrets', '/kubernetes.io/')).toBe('/kubernetes.io/secrets/');
  });
});

describe('etcdConnectionFromFlags', () => {
  it('reads the apiserver flags with or without dashes and needs --etcd-servers', () => {
    expect(
      etcdConnectionFromFlags(new Map([['--etcd-servers', 'https://10.0.0.1:2379, https://10.0.0.2:2379'], ['--etcd-prefix', '/k8s']])),
    ).toEqual({ endpoints: ['https://10.0.0.1:2379', 'https://10.0.0.2:2379'], caFile: undefined, certFile: undefined, keyFile: undefined, prefix: '/k8s' });
    expect(() => etcdConnectionFromFlags(new Map())).toThrow(/no --etcd-servers/);
  });
});
