/**
 * The apiserver stand-in against a real etcd with TLS: start-up refusals like kube-apiserver's,
 * the REST semantics k8s-encrypt relies on, and the on-disk formats checked with a reference
 * decrypt written here on node:crypto (not the project's codec) and with values a real
 * kube-apiserver stored (test/fixtures/vectors).
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, type CipherGCMTypes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { execa } from 'execa';
import nacl from 'tweetnacl';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startEtcd, type RunningEtcd } from '../helpers/etcd';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const STANDIN = join(ROOT, 'dist/test/bed/bin/apiserver.js');
const VECTORS = join(ROOT, 'test/fixtures/vectors/kube-apiserver-v1.32.jsonl');

interface Certs {
  dir: string;
  ca: string;
  caKey: string;
  serverCrt: string;
  serverKey: string;
  clientCrt: string;
  clientKey: string;
}

async function makeCerts(dir: string): Promise<Certs> {
  const p = (f: string) => join(dir, f);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await execa('openssl', ['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '2', '-subj', '/CN=standin-test-ca']);
  const sign = async (name: string, subj: string, ext: string) => {
    await writeFile(p(`${name}.ext`), ext);
    await execa('openssl', ['req', ...ec, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', subj]);
    await execa('openssl', ['x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p(`${name}.crt`), '-days', '2', '-extfile', p(`${name}.ext`)]);
  };
  await sign('server', '/CN=127.0.0.1', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  await sign('client', '/O=system:masters/CN=kubernetes-admin', 'extendedKeyUsage=clientAuth\n');
  return { dir, ca: p('ca.crt'), caKey: p('ca.key'), serverCrt: p('server.crt'), serverKey: p('server.key'), clientCrt: p('client.crt'), clientKey: p('client.key') };
}

// ---- reference crypto, independent of src/etcd/codec.ts ----

function refDecrypt(raw: Buffer, etcdKey: string, keys: Record<string, Buffer>): Buffer {
  const m = /^k8s:enc:(aescbc|aesgcm|secretbox):v1:([^:]+):/.exec(raw.subarray(0, 200).toString('latin1'));
  if (!m) throw new Error(`not an encrypted value: ${raw.subarray(0, 30).toString('latin1')}`);
  const [prefix, kind, keyName] = m as unknown as [string, string, string];
  const key = keys[keyName];
  if (!key) throw new Error(`no key ${keyName}`);
  const body = raw.subarray(prefix.length);
  if (kind === 'aescbc') {
    const d = createDecipheriv(`aes-${key.length * 8}-cbc`, key, body.subarray(0, 16));
    return Buffer.concat([d.update(body.subarray(16)), d.final()]);
  }
  if (kind === 'aesgcm') {
    const d = createDecipheriv(`aes-${key.length * 8}-gcm` as CipherGCMTypes, key, body.subarray(0, 12));
    d.setAAD(Buffer.from(etcdKey));
    d.setAuthTag(body.subarray(body.length - 16));
    return Buffer.concat([d.update(body.subarray(12, body.length - 16)), d.final()]);
  }
  const opened = nacl.secretbox.open(body.subarray(24), body.subarray(0, 24), key);
  if (!opened) throw new Error('secretbox open failed');
  return Buffer.from(opened);
}

function refEncryptCbc(plain: Buffer, keyName: string, key: Buffer): Buffer {
  const iv = randomBytes(16);
  const c = createCipheriv(`aes-${key.length * 8}-cbc`, key, iv);
  return Buffer.concat([Buffer.from(`k8s:enc:aescbc:v1:${keyName}:`), iv, c.update(plain), c.final()]);
}

// ---- running the stand-in ----

interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

interface StandIn {
  url: string;
  proc: ChildProcess;
  stderr: () => string;
  call(method: string, path: string, body?: unknown, headers?: Record<string, string>, anonymous?: boolean): Promise<Response>;
  waitReady(timeoutMs?: number): Promise<void>;
  stop(): Promise<number | null>;
}

let certs: Certs;
let etcd: RunningEtcd;
let raw: Etcd3;
let work: string;
const running = new Set<ChildProcess>();

function flagsFor(port: number, extra: string[]): string[] {
  return [
    'kube-apiserver',
    '--advertise-address=127.0.0.1',
    '--allow-privileged=true',
    '--authorization-mode=Node,RBAC',
    `--client-ca-file=${certs.ca}`,
    '--enable-admission-plugins=NodeRestriction',
    `--etcd-cafile=${certs.ca}`,
    `--etcd-certfile=${certs.clientCrt}`,
    `--etcd-keyfile=${certs.clientKey}`,
    `--etcd-servers=${etcd.endpoint}`,
    `--secure-port=${port}`,
    '--bind-address=127.0.0.1',
    `--tls-cert-file=${certs.serverCrt}`,
    `--tls-private-key-file=${certs.serverKey}`,
    ...extra,
  ];
}

/** Runs the stand-in to its exit (for refusals): exit code and stderr. */
async function runToExit(extra: string[], env: Record<string, string> = {}) {
  const port = await freePort();
  const r = await execa(process.execPath, [STANDIN, ...flagsFor(port, extra)], {
    reject: false,
    timeout: 15_000,
    env: { BED_KUBE_VERSION: '1.32.6', ...env },
  });
  return { code: r.exitCode, stderr: String(r.stderr) };
}

async function startStandIn(extra: string[], env: Record<string, string> = {}): Promise<StandIn> {
  const port = await freePort();
  const proc = spawn(process.execPath, [STANDIN, ...flagsFor(port, extra)], {
    env: { ...process.env, BED_KUBE_VERSION: '1.32.6', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.add(proc);
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => { running.delete(proc); resolve(code); }));
  const agent = new Agent({ ca: readFileSync(certs.ca), cert: readFileSync(certs.clientCrt), key: readFileSync(certs.clientKey), keepAlive: true });
  const anonAgent = new Agent({ ca: readFileSync(certs.ca), keepAlive: false });
  const url = `https://127.0.0.1:${port}`;
  const call: StandIn['call'] = (method, path, body, headers = {}, anonymous = false) =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = request(
        `${url}${path}`,
        {
          method,
          agent: anonymous ? anonAgent : agent,
          headers: { Accept: 'application/json', ...(payload ? { 'Content-Type': 'application/json' } : {}), ...headers },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  const s: StandIn = {
    url,
    proc,
    stderr: () => log,
    call,
    async waitReady(timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (proc.exitCode !== null) throw new Error(`stand-in exited ${proc.exitCode}:\n${log}`);
        const r = await call('GET', '/readyz').catch(() => undefined);
        if (r?.status === 200) return;
        if (Date.now() > deadline) throw new Error(`stand-in not ready in ${timeoutMs} ms:\n${log}`);
        await new Promise((res) => setTimeout(res, 100));
      }
    },
    async stop() {
      agent.destroy();
      anonAgent.destroy();
      if (proc.exitCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
  return s;
}

async function writeConfig(name: string, providers: string, resources = ['secrets']): Promise<string> {
  const file = join(work, name);
  await writeFile(
    file,
    `apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [${resources.join(', ')}]\n    providers:\n${providers}`,
    { mode: 0o600 },
  );
  return file;
}

const KEY1 = randomBytes(32);
const KEY2 = randomBytes(32);
const SBOX = randomBytes(32);
const aescbc = (name: string, key: Buffer) => `      - aescbc:\n          keys:\n            - name: ${name}\n              secret: ${key.toString('base64')}\n`;
const aesgcm = (name: string, key: Buffer) => `      - aesgcm:\n          keys:\n            - name: ${name}\n              secret: ${key.toString('base64')}\n`;
const secretbox = (name: string, key: Buffer) => `      - secretbox:\n          keys:\n            - name: ${name}\n              secret: ${key.toString('base64')}\n`;
const identity = '      - identity: {}\n';

const secret = (name: string, data: Record<string, string>, labels?: Record<string, string>) => ({
  apiVersion: 'v1',
  kind: 'Secret',
  metadata: { name, ...(labels ? { labels } : {}) },
  data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
});

async function etcdGet(key: string): Promise<{ value: Buffer; mod: string } | undefined> {
  const r = await raw.kv.range({ key: Buffer.from(key) });
  const kv = r.kvs[0];
  return kv ? { value: kv.value, mod: String(kv.mod_revision) } : undefined;
}

beforeAll(async () => {
  if (!existsSync(STANDIN)) throw new Error(`${STANDIN} is missing: run "npm run build" first`);
  work = await mkdtemp(join(tmpdir(), 'k8s-encrypt-standin-'));
  certs = await makeCerts(work);
  etcd = await startEtcd({ tls: { caFile: certs.ca, certFile: certs.serverCrt, keyFile: certs.serverKey } });
  raw = new Etcd3({
    hosts: etcd.endpoint,
    credentials: { rootCertificate: readFileSync(certs.ca), certChain: readFileSync(certs.clientCrt), privateKey: readFileSync(certs.clientKey) },
  });
});

afterAll(async () => {
  for (const p of running) p.kill('SIGKILL');
  raw?.close();
  await etcd?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('start-up refusals, like kube-apiserver', () => {
  it('refuses a missing, invalid or version-inappropriate configuration with upstream wording', async () => {
    const shortKey = await writeConfig('short.yaml', aescbc('k1', Buffer.from('12345678')));
    const notB64 = await writeConfig('notb64.yaml', `      - secretbox:\n          keys:\n            - name: k1\n              secret: "not base64!!"\n`);
    const twoInOne = await writeConfig('two.yaml', `      - aescbc:\n          keys:\n            - name: k1\n              secret: ${KEY1.toString('base64')}\n        identity: {}\n`);
    const masked = join(work, 'masked.yaml');
    await writeFile(masked, `apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: ['*.*']\n    providers:\n${identity}  - resources: [secrets]\n    providers:\n${aescbc('k1', KEY1)}`);
    const kmsV1 = await writeConfig('kmsv1.yaml', `      - kms:\n          name: old\n          endpoint: unix:///var/run/kms.sock\n`);
    const kmsV2Cache = await writeConfig('kmsv2cache.yaml', `      - kms:\n          apiVersion: v2\n          name: new\n          endpoint: unix:///var/run/kms.sock\n          cachesize: 100\n`);
    const kmsTcp = await writeConfig('kmstcp.yaml', `      - kms:\n          apiVersion: v2\n          name: new\n          endpoint: tcp://127.0.0.1:9\n`);
    const good = await writeConfig('good.yaml', aescbc('k1', KEY1));

    const cases: { name: string; extra: string[]; env?: Record<string, string>; want: RegExp }[] = [
      { name: 'missing file', extra: [`--encryption-provider-config=${join(work, 'nope.yaml')}`], want: /open \S*nope\.yaml: no such file or directory/ },
      { name: 'short key', extra: [`--encryption-provider-config=${shortKey}`], want: /secret is not of the expected length, got 8, expected one of \[16 24 32\]/ },
      { name: 'not base64', extra: [`--encryption-provider-config=${notB64}`], want: /secrets must be base64 encoded/ },
      { name: 'two providers in one element', extra: [`--encryption-provider-config=${twoInOne}`], want: /more than one provider specified in a single element/ },
      { name: 'masked rule (1.32)', extra: [`--encryption-provider-config=${masked}`], want: /resource \\?"secrets\\?" is masked by earlier rule \\?"\*\.\*\\?"/ },
      { name: 'KMS v1 on 1.32 without the gate', extra: [`--encryption-provider-config=${kmsV1}`], want: /KMSv1 is deprecated.*--feature-gates=KMSv1=true/ },
      { name: 'cachesize with v2', extra: [`--encryption-provider-config=${kmsV2Cache}`], want: /cachesize is not supported in v2/ },
      { name: 'kms endpoint not unix', extra: [`--encryption-provider-config=${kmsTcp}`], want: /unsupported scheme \\?"tcp\\?" for KMS provider, only unix is supported/ },
      { name: 'reload flag before 1.26', extra: [`--encryption-provider-config=${good}`, '--encryption-provider-config-automatic-reload=true'], env: { BED_KUBE_VERSION: '1.25.3' }, want: /unknown flag: --encryption-provider-config-automatic-reload/ },
      {
        // Only the certificate files are mounted (as file hostPaths); the config is outside every mount.
        name: 'config outside every mounted hostPath',
        extra: [`--encryption-provider-config=${good}`],
        env: {
          BED_MOUNTS: JSON.stringify(
            [certs.ca, certs.serverCrt, certs.serverKey, certs.clientCrt, certs.clientKey].map((f) => ({ hostPath: f, mountPath: f, readOnly: true })),
          ),
        },
        want: new RegExp(`open ${good.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: no such file or directory`),
      },
      { name: 'crash knob', extra: [], env: { BED_CRASH_ON_START: '1' }, want: /BED_CRASH_ON_START/ },
    ];
    const results = await Promise.all(cases.map((c) => runToExit(c.extra, c.env)));
    results.forEach((r, i) => {
      const c = cases[i]!;
      expect(r.code, `${c.name}: ${r.stderr}`).toBe(1);
      expect(r.stderr, c.name).toMatch(c.want);
      for (const key of [KEY1]) expect(r.stderr).not.toContain(key.toString('base64'));
    });
    expect(results[1]!.stderr).toMatch(/Invalid value: \\?"REDACTED\\?"/);
  });

  it('accepts a wildcard silently before 1.27, where it matches nothing', async () => {
    const wild = await writeConfig('wild.yaml', aescbc('k1', KEY1), ["'*.*'"]);
    const s = await startStandIn([`--encryption-provider-config=${wild}`, '--etcd-prefix=/wild'], { BED_KUBE_VERSION: '1.24.17' });
    try {
      await s.waitReady();
      const c = await s.call('POST', '/api/v1/namespaces/default/secrets', secret('w', { a: 'b' }));
      expect(c.status).toBe(201);
      expect((await etcdGet('/wild/secrets/default/w'))!.value.subarray(0, 1).toString()).toBe('{');
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });
});

describe('serving from etcd', () => {
  it('stores aescbc that an independent decrypt opens, with Status errors, paging and optimistic concurrency', async () => {
    const cfg = await writeConfig('cbc.yaml', aescbc('key1', KEY1));
    const s = await startStandIn([`--encryption-provider-config=${cfg}`, '--etcd-prefix=/crud']);
    try {
      // health and auth
      await s.waitReady();
      expect((await s.call('GET', '/livez', undefined, {}, true)).text).toBe('ok');
      const anon = await s.call('GET', '/api/v1/secrets', undefined, {}, true);
      expect(anon.status).toBe(401);
      expect(anon.json).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Unauthorized', code: 401 });
      const version = await s.call('GET', '/version');
      expect(version.json).toMatchObject({ major: '1', minor: '32', gitVersion: 'v1.32.6' });
      expect((await s.call('GET', '/api/v1')).json.resources.map((r: { name: string }) => r.name)).toContain('secrets');

      // create
      const created = await s.call('POST', '/api/v1/namespaces/default/secrets', secret('db', { password: 'hunter2' }));
      expect(created.status).toBe(201);
      expect(created.json.metadata).toMatchObject({ name: 'db', namespace: 'default' });
      expect(created.json.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
      const stored = (await etcdGet('/crud/secrets/default/db'))!;
      expect(stored.mod).toBe(created.json.metadata.resourceVersion);
      expect(stored.value.subarray(0, 'k8s:enc:aescbc:v1:key1:'.length).toString()).toBe('k8s:enc:aescbc:v1:key1:');
      const plain = JSON.parse(refDecrypt(stored.value, '/crud/secrets/default/db', { key1: KEY1 }).toString());
      expect(plain).toMatchObject({ kind: 'Secret', apiVersion: 'v1', metadata: { name: 'db' }, data: { password: Buffer.from('hunter2').toString('base64') } });
      expect(plain.metadata.resourceVersion).toBeUndefined();

      const again = await s.call('POST', '/api/v1/namespaces/default/secrets', secret('db', {}));
      expect(again.json).toMatchObject({ kind: 'Status', reason: 'AlreadyExists', code: 409, details: { name: 'db', kind: 'secrets' } });
      const noNs = await s.call('POST', '/api/v1/namespaces/missing/secrets', secret('x', {}));
      expect(noNs.json).toMatchObject({ reason: 'NotFound', code: 404, message: 'namespaces "missing" not found' });

      // update semantics
      const got = await s.call('GET', '/api/v1/namespaces/default/secrets/db');
      expect(got.json.data.password).toBe(Buffer.from('hunter2').toString('base64'));
      const same = await s.call('PUT', '/api/v1/namespaces/default/secrets/db', got.json);
      expect(same.status).toBe(200);
      expect(same.json.metadata.resourceVersion).toBe(got.json.metadata.resourceVersion);
      expect((await etcdGet('/crud/secrets/default/db'))!.value.equals(stored.value)).toBe(true);

      const changed = await s.call('PUT', '/api/v1/namespaces/default/secrets/db', { ...got.json, data: { password: Buffer.from('new').toString('base64') } });
      expect(changed.status).toBe(200);
      expect(Number(changed.json.metadata.resourceVersion)).toBeGreaterThan(Number(got.json.metadata.resourceVersion));
      expect(changed.json.metadata.uid).toBe(created.json.metadata.uid);
      const stale = await s.call('PUT', '/api/v1/namespaces/default/secrets/db', got.json);
      expect(stale.json).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Conflict', code: 409 });
      expect(stale.json.message).toBe('Operation cannot be fulfilled on secrets "db": the object has been modified; please apply your changes to the latest version and try again');

      // delete
      expect((await s.call('DELETE', '/api/v1/namespaces/default/secrets/db')).status).toBe(200);
      expect((await s.call('GET', '/api/v1/namespaces/default/secrets/db')).json).toMatchObject({ reason: 'NotFound', code: 404, message: 'secrets "db" not found' });
      expect((await s.call('DELETE', '/api/v1/namespaces/default/secrets/db')).status).toBe(404);

      // paging: a consistent snapshot across pages
      expect((await s.call('POST', '/api/v1/namespaces', { metadata: { name: 'paging' } })).status).toBe(201);
      for (let i = 0; i < 7; i++) {
        const r = await s.call('POST', '/api/v1/namespaces/paging/secrets', secret(`s${i}`, { i: String(i) }, { parity: i % 2 ? 'odd' : 'even' }));
        expect(r.status).toBe(201);
      }
      const first = await s.call('GET', '/api/v1/namespaces/paging/secrets?limit=3');
      expect(first.json.items.map((x: any) => x.metadata.name)).toEqual(['s0', 's1', 's2']);
      expect(first.json.metadata.continue).toBeTruthy();
      expect(first.json.metadata.remainingItemCount).toBe(4);
      await s.call('POST', '/api/v1/namespaces/paging/secrets', secret('s9-late', {}));
      const names: string[] = first.json.items.map((x: any) => x.metadata.name);
      let token = first.json.metadata.continue as string | undefined;
      while (token) {
        const page = await s.call('GET', `/api/v1/namespaces/paging/secrets?limit=3&continue=${encodeURIComponent(token)}`);
        expect(page.status).toBe(200);
        expect(page.json.metadata.resourceVersion).toBe(first.json.metadata.resourceVersion);
        names.push(...page.json.items.map((x: any) => x.metadata.name));
        token = page.json.metadata.continue;
      }
      expect(names).toEqual(['s0', 's1', 's2', 's3', 's4', 's5', 's6']);
      const all = await s.call('GET', '/api/v1/secrets');
      expect(all.json.items.map((x: any) => x.metadata.name)).toContain('s9-late');
      const odd = await s.call('GET', '/api/v1/namespaces/paging/secrets?labelSelector=parity%3Dodd');
      expect(odd.json.items.map((x: any) => x.metadata.name)).toEqual(['s1', 's3', 's5']);

      // a continue token from before a compaction is Expired
      const old = await s.call('GET', '/api/v1/namespaces/paging/secrets?limit=2');
      await s.call('POST', '/api/v1/namespaces/paging/secrets', secret('bump', {}));
      const head = await raw.kv.range({ key: Buffer.from('/nothing') });
      await raw.kv.compact({ revision: head.header.revision, physical: true });
      const gone = await s.call('GET', `/api/v1/namespaces/paging/secrets?limit=2&continue=${encodeURIComponent(old.json.metadata.continue)}`);
      expect(gone.json).toMatchObject({ kind: 'Status', reason: 'Expired', code: 410 });

      // nodes: merge and strategic merge patches on annotations
      expect((await s.call('POST', '/api/v1/nodes', { metadata: { name: 'cp-0', annotations: { a: '1', b: '2' } } })).status).toBe(201);
      const p1 = await s.call('PATCH', '/api/v1/nodes/cp-0', { metadata: { annotations: { a: null, c: '3' } } }, { 'Content-Type': 'application/merge-patch+json' });
      expect(p1.json.metadata.annotations).toEqual({ b: '2', c: '3' });
      const p2 = await s.call('PATCH', '/api/v1/nodes/cp-0', { metadata: { labels: { role: 'cp' } } }, { 'Content-Type': 'application/strategic-merge-patch+json' });
      expect(p2.json.metadata).toMatchObject({ labels: { role: 'cp' }, annotations: { b: '2', c: '3' } });
      expect(await etcdGet('/crud/minions/cp-0')).toBeDefined();

      // metrics
      const metrics = (await s.call('GET', '/metrics')).text;
      expect(metrics).toMatch(/^process_start_time_seconds \d+(\.\d+)?$/m);
      // Upstream's prefix transformers nest (provider, then key) and each level counts under its own prefix.
      for (const type of ['to_storage', 'from_storage']) {
        for (const prefix of ['k8s:enc:aescbc:v1:', 'key1:']) {
          expect(metrics).toContain(`apiserver_storage_transformation_operations_total{status="OK",transformation_type="${type}",transformer_prefix="${prefix}"} `);
        }
      }
      expect(metrics).not.toContain('last_config_info'); // 1.34+ only
    } finally {
      const t0 = Date.now();
      expect(await s.stop()).toBe(0);
      expect(Date.now() - t0).toBeLessThan(2500);
    }
  });

  it('rewrites an unchanged object only when it was read through a non-first key (stale)', async () => {
    const before = await writeConfig('rot1.yaml', aescbc('key1', KEY1));
    let s = await startStandIn([`--encryption-provider-config=${before}`, '--etcd-prefix=/rot']);
    await s.waitReady();
    const created = await s.call('POST', '/api/v1/namespaces/default/secrets', secret('r', { v: 'x' }));
    expect(created.status).toBe(201);
    await s.stop();

    // key2 (aesgcm) first, key1 still readable: the object is stale until rewritten.
    const after = await writeConfig('rot2.yaml', aesgcm('key2', KEY2) + aescbc('key1', KEY1));
    s = await startStandIn([`--encryption-provider-config=${after}`, '--etcd-prefix=/rot']);
    try {
      await s.waitReady();
      const got = await s.call('GET', '/api/v1/namespaces/default/secrets/r');
      expect(got.json.metadata.resourceVersion).toBe(created.json.metadata.resourceVersion);
      const put1 = await s.call('PUT', '/api/v1/namespaces/default/secrets/r', got.json);
      expect(put1.status).toBe(200);
      expect(put1.json.metadata.resourceVersion).not.toBe(got.json.metadata.resourceVersion);
      const stored = (await etcdGet('/rot/secrets/default/r'))!;
      expect(stored.value.subarray(0, 23).toString()).toBe('k8s:enc:aesgcm:v1:key2:');
      expect(JSON.parse(refDecrypt(stored.value, '/rot/secrets/default/r', { key2: KEY2 }).toString()).data.v).toBe(Buffer.from('x').toString('base64'));
      // AES-GCM binds the value to its etcd key: under another key it must not open.
      expect(() => refDecrypt(stored.value, '/rot/secrets/default/other', { key2: KEY2 })).toThrow();

      const put2 = await s.call('PUT', '/api/v1/namespaces/default/secrets/r', put1.json);
      expect(put2.json.metadata.resourceVersion).toBe(put1.json.metadata.resourceVersion);
      expect((await etcdGet('/rot/secrets/default/r'))!.value.equals(stored.value)).toBe(true);
    } finally {
      await s.stop();
    }
  });

  it('writes secretbox, and leaves resources no rule covers in plaintext', async () => {
    const cfg = await writeConfig('sbox.yaml', secretbox('sb', SBOX) + identity);
    const s = await startStandIn([`--encryption-provider-config=${cfg}`, '--etcd-prefix=/sbox']);
    try {
      await s.waitReady();
      expect((await s.call('POST', '/api/v1/namespaces/default/secrets', secret('k', { t: 'box' }))).status).toBe(201);
      const v = (await etcdGet('/sbox/secrets/default/k'))!.value;
      expect(v.subarray(0, 24).toString()).toBe('k8s:enc:secretbox:v1:sb:');
      expect(JSON.parse(refDecrypt(v, '/sbox/secrets/default/k', { sb: SBOX }).toString()).data.t).toBe(Buffer.from('box').toString('base64'));
      expect((await s.call('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'cm' }, data: { a: 'b' } })).status).toBe(201);
      expect(JSON.parse((await etcdGet('/sbox/configmaps/default/cm'))!.value.toString())).toMatchObject({ kind: 'ConfigMap', data: { a: 'b' } });
    } finally {
      await s.stop();
    }
  });

  it('serves Secrets a real kube-apiserver stored (protobuf inside every provider format)', async () => {
    const vectors = readFileSync(VECTORS, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { provider: string; keyName: string; keyBase64: string; etcdKey: string; name: string; data: Record<string, string>; rawBase64: string })
      .filter((v) => v.provider !== 'kms');
    const keysOf = (p: string) =>
      vectors.filter((v) => v.provider === p).map((v) => `            - name: ${v.keyName}\n              secret: ${v.keyBase64}\n`).join('');
    const cfg = await writeConfig(
      'vectors.yaml',
      `      - aescbc:\n          keys:\n${keysOf('aescbc')}      - aesgcm:\n          keys:\n${keysOf('aesgcm')}      - secretbox:\n          keys:\n${keysOf('secretbox')}${identity}`,
    );
    for (const v of vectors) await raw.put(v.etcdKey).value(Buffer.from(v.rawBase64, 'base64'));
    const s = await startStandIn([`--encryption-provider-config=${cfg}`]);
    try {
      await s.waitReady();
      for (const v of vectors) {
        const r = await s.call('GET', `/api/v1/namespaces/default/secrets/${v.name}`);
        expect(r.status, `${v.provider} ${v.name}: ${r.text}`).toBe(200);
        expect(r.json.metadata).toMatchObject({ name: v.name, namespace: 'default' });
        expect(r.json.type).toBe('Opaque');
        const data = Object.fromEntries(Object.entries(r.json.data as Record<string, string>).map(([k, b]) => [k, Buffer.from(b, 'base64').toString()]));
        expect(data).toEqual(v.data);
      }
      // Not under the first key: an unchanged PUT rewrites it with the first provider.
      const cbc = await s.call('GET', '/api/v1/namespaces/default/secrets/kat-cbc-16');
      const put = await s.call('PUT', '/api/v1/namespaces/default/secrets/kat-cbc-16', cbc.json);
      expect(put.json.metadata.resourceVersion).not.toBe(cbc.json.metadata.resourceVersion);
      expect((await etcdGet('/registry/secrets/default/kat-cbc-16'))!.value.subarray(0, 29).toString()).toBe('k8s:enc:aescbc:v1:kat-cbc-32:');
    } finally {
      await s.stop();
      for (const v of vectors) await raw.delete().key(v.etcdKey);
    }
  });

  it('reads and writes KMS v2 through a plugin on a unix socket, including a real apiserver\'s value', async () => {
    const v = readFileSync(VECTORS, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { provider: string; keyName: string; etcdKey: string; name: string; data: Record<string, string>; rawBase64: string })
      .find((x) => x.provider === 'kms')!;
    const socket = join(work, 'kms.sock');
    const plugin = spawn(process.execPath, [join(ROOT, 'dist/test/bed/bin/kms-plugin.js'), '--socket', socket, '--api', 'v2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(plugin);
    let pluginLog = '';
    plugin.stderr!.on('data', (d: Buffer) => (pluginLog += d.toString()));
    await new Promise<void>((resolve, reject) => {
      plugin.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      plugin.on('exit', (code) => reject(new Error(`kms plugin exited ${code}: ${pluginLog}`)));
    });
    const cfg = await writeConfig('kms.yaml', `      - kms:\n          apiVersion: v2\n          name: ${v.keyName}\n          endpoint: unix://${socket}\n`);
    await raw.put(v.etcdKey).value(Buffer.from(v.rawBase64, 'base64'));
    const s = await startStandIn([`--encryption-provider-config=${cfg}`]);
    try {
      await s.waitReady();
      expect((await s.call('GET', '/readyz/kms-providers')).text).toBe('ok');
      const got = await s.call('GET', `/api/v1/namespaces/default/secrets/${v.name}`);
      expect(got.status, got.text).toBe(200);
      const data = Object.fromEntries(Object.entries(got.json.data as Record<string, string>).map(([k, b]) => [k, Buffer.from(b, 'base64').toString()]));
      expect(data).toEqual(v.data);
      expect((await s.call('POST', '/api/v1/namespaces/default/secrets', secret('via-kms', { a: 'b' }))).status).toBe(201);
      const prefix = `k8s:enc:kms:v2:${v.keyName}:`;
      expect((await etcdGet('/registry/secrets/default/via-kms'))!.value.subarray(0, prefix.length).toString()).toBe(prefix);
      expect((await s.call('GET', '/api/v1/namespaces/default/secrets/via-kms')).json.data.a).toBe(Buffer.from('b').toString('base64'));
    } finally {
      await s.stop();
      plugin.kill('SIGTERM');
      await raw.delete().key(v.etcdKey);
      await raw.delete().key('/registry/secrets/default/via-kms');
    }
  });

  it('stays unready while a stored object cannot be decrypted, and recovers when it is gone', async () => {
    const cfg = await writeConfig('ready.yaml', aescbc('key1', KEY1));
    const lost = randomBytes(32);
    const orphan = refEncryptCbc(Buffer.from(JSON.stringify(secret('orphan', { a: 'b' }))), 'lostkey', lost);
    await raw.put('/unready/secrets/default/orphan').value(orphan);
    const s = await startStandIn([`--encryption-provider-config=${cfg}`, '--etcd-prefix=/unready']);
    try {
      const deadline = Date.now() + 5000;
      while (!s.stderr().includes('no matching')) {
        if (Date.now() > deadline) throw new Error(s.stderr());
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(s.stderr()).toMatch(/\/unready\/secrets\/default\/orphan.*no matching key was found for the provided AES transformer/);
      expect((await s.call('GET', '/livez')).status).toBe(200);
      const ready = await s.call('GET', '/readyz?verbose');
      expect(ready.status).toBe(500);
      expect(ready.text).toContain('[-]informer-sync failed');
      await raw.delete().key('/unready/secrets/default/orphan');
      await s.waitReady(5000);
    } finally {
      await s.stop();
    }
  });

  it('reloads a changed config automatically, counts reloads, and keeps the old one on an invalid file', async () => {
    const file = await writeConfig('reload.yaml', aescbc('key1', KEY1));
    const s = await startStandIn(
      [`--encryption-provider-config=${file}`, '--encryption-provider-config-automatic-reload=true', '--etcd-prefix=/reload'],
      { BED_KUBE_VERSION: '1.34.1', BED_RELOAD_INTERVAL_MS: '150' },
    );
    const metrics = async () => (await s.call('GET', '/metrics')).text;
    const waitFor = async (re: RegExp) => {
      const deadline = Date.now() + 5000;
      for (;;) {
        const m = await metrics();
        if (re.test(m)) return m;
        if (Date.now() > deadline) throw new Error(`no ${re} in:\n${m}\n${s.stderr()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    try {
      await s.waitReady();
      const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
      let m = await metrics();
      expect(m).toMatch(new RegExp(`apiserver_encryption_config_controller_last_config_info\\{apiserver_id_hash="sha256:[0-9a-f]{64}",hash="sha256:${sha(file)}"\\} 1`));
      expect(m).not.toContain('automatic_reloads_total');

      await writeConfig('reload.yaml', aesgcm('key2', KEY2) + aescbc('key1', KEY1));
      m = await waitFor(/apiserver_encryption_config_controller_automatic_reloads_total\{apiserver_id_hash="sha256:[0-9a-f]{64}",status="success"\} 1/);
      expect(m).toContain(`hash="sha256:${sha(file)}"`);
      expect(m).toMatch(/apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds\{apiserver_id_hash="[^"]+",status="success"\} \d/);
      expect((await s.call('POST', '/api/v1/namespaces/default/secrets', secret('after', {}))).status).toBe(201);
      expect((await etcdGet('/reload/secrets/default/after'))!.value.subarray(0, 23).toString()).toBe('k8s:enc:aesgcm:v1:key2:');

      await writeConfig('reload.yaml', aescbc('bad', Buffer.from('short')));
      await waitFor(/automatic_reloads_total\{apiserver_id_hash="[^"]+",status="failure"\} 1/);
      expect((await s.call('POST', '/api/v1/namespaces/default/secrets', secret('still', {}))).status).toBe(201);
      expect((await etcdGet('/reload/secrets/default/still'))!.value.subarray(0, 23).toString()).toBe('k8s:enc:aesgcm:v1:key2:');
      expect(s.stderr()).not.toContain(Buffer.from('short').toString('base64'));
    } finally {
      await s.stop();
    }
  });

  it('injects 429s with Retry-After and 409s on PUT, never on health, version or metrics', async () => {
    const s = await startStandIn(['--etcd-prefix=/knobs'], { BED_RATE_429: '1', BED_RETRY_AFTER: '2' });
    try {
      await s.waitReady();
      const r = await s.call('GET', '/api/v1/namespaces/default/secrets');
      expect(r.status).toBe(429);
      expect(r.headers['retry-after']).toBe('2');
      expect(r.json).toMatchObject({ kind: 'Status', reason: 'TooManyRequests', code: 429, details: { retryAfterSeconds: 2 } });
      for (const p of ['/livez', '/healthz', '/version', '/metrics']) expect((await s.call('GET', p)).status, p).toBe(200);
    } finally {
      await s.stop();
    }
    const c = await startStandIn(['--etcd-prefix=/knobs'], { BED_RATE_409: '1' });
    try {
      await c.waitReady();
      expect((await c.call('POST', '/api/v1/namespaces/default/secrets', secret('k', {}))).status).toBe(201);
      const got = await c.call('GET', '/api/v1/namespaces/default/secrets/k');
      const put = await c.call('PUT', '/api/v1/namespaces/default/secrets/k', got.json);
      expect(put.json).toMatchObject({ reason: 'Conflict', code: 409 });
    } finally {
      await c.stop();
    }
  });
});
