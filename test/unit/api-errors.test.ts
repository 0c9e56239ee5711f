import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadKubeconfig, yamlReason } from '../../src/cluster/api';
import { resolvedResource } from '../../src/cluster/discovery';
import { ApiConnectionError, ApiError, isTransient, toCliError } from '../../src/cluster/errors';
import { compareKeys, objectKey, Watermark } from '../../src/cluster/rewrite';
import { CliError, ExitCode } from '../../src/ui/errors';

const apiError = (status: number, reason?: string, retryAfterSeconds?: number) =>
  new ApiError({ status, reason, method: 'GET', path: '/api/v1/secrets', url: 'https://h:6443/api/v1/secrets', message: 'msg', retryAfterSeconds });

describe('toCliError', () => {
  it.each([
    [apiError(401, 'Unauthorized'), /cannot list secrets: 401 Unauthorized: msg/, /credentials/],
    [apiError(403, 'Forbidden'), /403 Forbidden/, /admin kubeconfig/],
    [apiError(404, 'NotFound'), /404 NotFound/, /does not exist/],
    [apiError(409, 'Conflict'), /409 Conflict/, /changed/],
    [apiError(429, 'TooManyRequests'), /429/, /throttling/],
    [apiError(503, 'ServiceUnavailable'), /503/, /apiserver failed/],
    [new ApiConnectionError('https://h:6443', 'connect ECONNREFUSED 127.0.0.1:6443', 'ECONNREFUSED'), /cannot reach the apiserver at https:\/\/h:6443: connect ECONNREFUSED/, /kube-apiserver is running/],
    [new ApiConnectionError('https://h:6443', 'self-signed certificate', 'DEPTH_ZERO_SELF_SIGNED_CERT'), /cannot reach the apiserver/, /certificate/],
  ])('%s', (err, message, hint) => {
    const e = toCliError(err, 'list secrets');
    expect(e).toBeInstanceOf(CliError);
    expect(e.exitCode).toBe(ExitCode.Cluster);
    expect(e.message).toMatch(message);
    expect(e.hint).toMatch(hint);
  });

  it('maps a client-node ApiException that leaks in', () => {
    class ApiException extends Error {
      constructor(readonly code: number, readonly body: string) {
        super('HTTP-Code: 403');
      }
    }
    const e = toCliError(new ApiException(403, JSON.stringify({ kind: 'Status', reason: 'Forbidden', message: 'secrets is forbidden' })), 'list secrets');
    expect(e.message).toBe('cannot list secrets: 403 Forbidden: secrets is forbidden');
    expect(e.hint).toMatch(/admin kubeconfig/);
  });

  it.each([
    [apiError(429), true],
    [apiError(500), true],
    [apiError(409), false],
    [apiError(404), false],
    [new ApiConnectionError('u', 'reset', 'ECONNRESET'), true],
    [new ApiConnectionError('u', 'bad cert', 'CERT_HAS_EXPIRED'), false],
    [new Error('x'), false],
  ])('isTransient(%s) = %s', (err, want) => expect(isTransient(err)).toBe(want));
});

describe('keys and the watermark', () => {
  it('orders keys like etcd does (bytes), not like localeCompare', () => {
    const keys = ['ns-a/x', 'ns/b', 'ns/a', 'ns.b/z', 'Z/q'];
    expect([...keys].sort(compareKeys)).toEqual(['Z/q', 'ns-a/x', 'ns.b/z', 'ns/a', 'ns/b']);
    expect(objectKey(undefined, 'node-1')).toBe('node-1');
    expect(objectKey('kube-system', 'x')).toBe('kube-system/x');
  });

  it('advances only over a finished prefix', () => {
    const w = new Watermark('a/0', 'tok0');
    const t1 = w.dispatched('a/1', 'tok1');
    const t2 = w.dispatched('a/2', 'tok1');
    const t3 = w.dispatched('a/3', 'tok2');
    w.done(t2);
    expect(w.doneThrough).toBe('a/0');
    w.done(t2); // a repeat changes nothing
    w.done(t1);
    expect([w.doneThrough, w.pageContinue, w.pending]).toEqual(['a/2', 'tok1', 1]);
    w.done(t1); // no longer pending: ignored
    w.done(t3);
    expect([w.doneThrough, w.pageContinue, w.pending]).toEqual(['a/3', 'tok2', 0]);
  });

  it('keeps order across ring growth and wrap-around, against a plain model', () => {
    // Deterministic pseudo-random finishing order, thousands in flight at the peak.
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const w = new Watermark();
    const model: { key: string; page: string; done: boolean }[] = [];
    const open: number[] = [];
    let n = 0;
    let head = 0;
    let through: string | undefined;
    let page: string | undefined;
    for (let step = 0; step < 20_000; step++) {
      const burst = step < 10_000 ? rnd() < 0.6 : rnd() < 0.4;
      if (burst || open.length === 0) {
        const key = `ns/${String(n).padStart(6, '0')}`;
        const pg = `p${Math.floor(n / 100)}`;
        const t = w.dispatched(key, pg);
        expect(t).toBe(n);
        model.push({ key, page: pg, done: false });
        open.push(t);
        n++;
      } else {
        const t = open.splice(Math.floor(rnd() * open.length), 1)[0]!;
        w.done(t);
        model[t]!.done = true;
        while (head < model.length && model[head]!.done) [through, page] = [model[head]!.key, model[head++]!.page];
        expect([w.doneThrough, w.pageContinue, w.pending]).toEqual([through, page, model.length - head]);
      }
    }
  });
});

describe('resolved resources', () => {
  it('builds list and item paths for core, group and cluster-scoped resources', () => {
    const s = resolvedResource('', 'v1', { name: 'secrets', namespaced: true, kind: 'Secret' });
    expect([s.resource, s.listPath, s.itemPath('ns', 'a b')]).toEqual(['secrets', '/api/v1/secrets', '/api/v1/namespaces/ns/secrets/a%20b']);
    const w = resolvedResource('example.com', 'v1beta1', { name: 'widgets', namespaced: false, kind: 'Widget' });
    expect([w.resource, w.listPath, w.itemPath(undefined, 'w1')]).toEqual([
      'widgets.example.com',
      '/apis/example.com/v1beta1/widgets',
      '/apis/example.com/v1beta1/widgets/w1',
    ]);
  });
});

describe('loadKubeconfig', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-kc-'));
    await writeFile(join(dir, 'ca.crt'), 'CA-PEM');
    await writeFile(
      join(dir, 'admin.conf'),
      `apiVersion: v1
kind: Config
clusters:
- name: lb
  cluster: { server: 'https://10.0.0.1:6443', certificate-authority: ca.crt }
users:
- name: admin
  user: { token: abc123 }
contexts:
- name: admin@lb
  context: { cluster: lb, user: admin }
current-context: admin@lb
`,
    );
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('keeps the credentials and CA (relative paths resolved) and takes --server over the kubeconfig', async () => {
    const t = await loadKubeconfig(join(dir, 'admin.conf'), { server: 'https://127.0.0.1:6443' });
    expect(t.server).toBe('https://127.0.0.1:6443');
    expect(String(t.ca)).toBe('CA-PEM');
    expect(t.headers?.Authorization).toBe('Bearer abc123');
    expect((await loadKubeconfig(join(dir, 'admin.conf'))).server).toBe('https://10.0.0.1:6443');
  });

  it('hands exec-plugin users to client-node, which runs the plugin for a token', async () => {
    const cred = JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: { token: 'from-exec' } });
    await writeFile(
      join(dir, 'exec.conf'),
      `apiVersion: v1
kind: Config
clusters: [{ name: lb, cluster: { server: 'https://10.0.0.1:6443' } }]
users:
- name: ex
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: sh
      args: ['-c', ${JSON.stringify(`echo '${cred}'`)}]
      interactiveMode: Never
contexts: [{ name: c, context: { cluster: lb, user: ex } }]
current-context: c
`,
    );
    const t = await loadKubeconfig(join(dir, 'exec.conf'));
    expect(t.headers?.Authorization).toBe('Bearer from-exec');
  });

  it('reads client certificate files relative to the kubeconfig without client-node', async () => {
    await writeFile(join(dir, 'admin.crt'), 'CERT');
    await writeFile(join(dir, 'admin.key'), 'KEY');
    await writeFile(
      join(dir, 'certs.conf'),
      `apiVersion: v1
kind: Config
clusters: [{ name: lb, cluster: { server: 'https://10.0.0.1:6443', certificate-authority-data: ${Buffer.from('CA2').toString('base64')} } }]
users: [{ name: a, user: { client-certificate: admin.crt, client-key: admin.key } }]
contexts: [{ name: c, context: { cluster: lb, user: a } }]
current-context: c
`,
    );
    const t = await loadKubeconfig(join(dir, 'certs.conf'));
    expect([String(t.ca), String(t.cert), String(t.key)]).toEqual(['CA2', 'CERT', 'KEY']);
    expect(t.headers).toEqual({});
  });

  it.each([
    [{ context: 'nope' }, /has no context "nope"/],
    [{ server: 'not a url' }, /is not a URL/],
    [{ server: 'ftp://x' }, /must be an https/],
  ])('rejects %o', async (opts, msg) => {
    await expect(loadKubeconfig(join(dir, 'admin.conf'), opts)).rejects.toThrow(msg);
  });

  it('a missing kubeconfig is a usage error with a hint', async () => {
    const err = await loadKubeconfig(join(dir, 'missing.conf')).catch((e) => e);
    expect(err).toBeInstanceOf(CliError);
    expect(err.exitCode).toBe(ExitCode.Usage);
    expect(err.message).toMatch(/missing\.conf: it does not exist/);
  });

  it.each([
    ['not YAML', 'a: [\n', 'deficient indentation at line 2, column 1'],
    ['empty', '', 'expected a document, but the input is empty'],
  ])('a kubeconfig that is %s is a one-line usage error', async (what, text, reason) => {
    const path = join(dir, `${what.replace(/ /g, '-')}.conf`);
    await writeFile(path, text, { mode: 0o600 });
    const err = await loadKubeconfig(path).catch((e) => e);
    expect(err).toBeInstanceOf(CliError);
    expect(err.exitCode).toBe(ExitCode.Usage);
    // The YAML parser's message carries a code frame on the lines after the first.
    expect(err.message).toBe(`cannot parse kubeconfig ${path}: ${reason}`);
    expect(err.hint).toMatch(/valid kubeconfig/);
  });

  it('a kubeconfig that does not parse: nothing of the file in the error, its cause or its stack', async () => {
    const token = 'tok-7f3a9c2e1b5d4a6f8e0c';
    const path = join(dir, 'broken-token.conf');
    // The error is on the line after the token: a parser's code frame would quote it.
    await writeFile(path, `users:\n- name: u\n  user:\n    token: ${token}\n   bad: [\n`, { mode: 0o600 });
    const err = await loadKubeconfig(path).catch((e) => e);
    expect(err).toBeInstanceOf(CliError);
    expect(err.message).toBe(`cannot parse kubeconfig ${path}: bad indentation of a mapping entry at line 5, column 4`);
    const printable: string[] = [];
    for (let e: any = err; e; e = e.cause) printable.push(String(e.message), String(e.stack), String(e.hint ?? ''));
    expect(printable.join('\n')).not.toContain(token);
  });

  it.each([
    // The parser's reason itself names an alias or a tag: here the secret is that name.
    ['an alias', (t: string) => `    password: *${t}\n`, 'unidentified alias "..." at line 5, column 16'],
    ['a tag', (t: string) => `    token: !${t}\n`, 'unknown scalar tag !... at line 5, column 12'],
    ['a verbatim tag', (t: string) => `    token: !<${t}> x\n`, 'unknown scalar tag !... at line 5, column 12'],
  ])('a secret written as %s: the error does not name it', async (what, line, reason) => {
    const secret = 'sec-4b1e9d7a2c6f8e03';
    const path = join(dir, `named-${what.replace(/ /g, '-')}.conf`);
    await writeFile(path, `apiVersion: v1\nusers:\n- name: u\n  user:\n${line(secret)}`, { mode: 0o600 });
    const err = await loadKubeconfig(path).catch((e) => e);
    expect(err).toBeInstanceOf(CliError);
    expect(err.message).toBe(`cannot parse kubeconfig ${path}: ${reason}`);
    expect(`${err.message}\n${err.hint}\n${err.stack}`).not.toContain(secret);
  });

  it('yamlReason keeps the reason and the place, and nothing quoted, tagged or after a colon', () => {
    expect(yamlReason({ reason: 'duplicated mapping key', mark: { line: 1, column: 0 } })).toBe('duplicated mapping key at line 2, column 1');
    expect(yamlReason({ reason: 'undeclared tag handle "!f!"', mark: { line: 2, column: 7 } })).toBe('undeclared tag handle "..." at line 3, column 8');
    expect(yamlReason({ reason: "tag name cannot contain such characters: s3cr3t", mark: { line: 0, column: 3 } })).toBe('tag name cannot contain such characters at line 1, column 4');
    expect(yamlReason(new Error('end of the stream or a document separator is expected (3:1)\n\n 2 | token: s3cr3t\n'))).toBe('end of the stream or a document separator is expected');
    expect(yamlReason(new Error(': s3cr3t'))).toBe('not valid YAML');
  });
});
