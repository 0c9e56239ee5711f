// A kubeconfig whose client certificate or key does not load: one line naming the field, exit 2,
// at once (nothing is sent, nothing retried), and never the material itself.
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { generatePki } from '../bed/pki';
import { jsonOf, runCli } from '../helpers/cli';

let dir: string;
let adminCrt: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-bad-credentials-'));
  adminCrt = readFileSync((await generatePki(join(dir, 'pki'))).adminCrt).toString('base64');
}, 60_000);
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const b64 = (s: string) => Buffer.from(s).toString('base64');

async function kubeconfig(user: Record<string, string>, path = join(dir, `kubeconfig-${Object.keys(user).join('-')}-${Date.now()}`)): Promise<string> {
  const fields = Object.entries(user)
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
  await writeFile(
    path,
    [
      'apiVersion: v1',
      'kind: Config',
      // Port 1: nothing listens there, so a request that went out would fail as a connection.
      'clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]',
      `users: [{name: u, user: {${fields}}}]`,
      'contexts: [{name: x, context: {cluster: c, user: u}}]',
      'current-context: x',
      '',
    ].join('\n'),
  );
  return path;
}

describe('a kubeconfig with credentials that do not load', () => {
  it.each([
    ['a client certificate that is not one', () => ({ 'client-certificate-data': b64('not a cert SECRETCERT'), 'client-key-data': b64('SECRETKEY') }), /: cannot load the client certificate \(client-certificate-data or client-certificate\): PEM routines::no start line$/],
    ['a client key that is not one', () => ({ 'client-certificate-data': adminCrt, 'client-key-data': b64('SECRETKEY') }), /: cannot load the client key \(client-key-data or client-key\): DECODER routines::unsupported$/],
  ] as const)('%s: exit 2, one line naming it, nothing sent', async (_, user, message) => {
    const path = await kubeconfig(user());
    const t0 = Date.now();
    const r = await runCli(['--root', join(dir, 'empty-root'), '--kubeconfig', path, '--json', 're-encrypt-all', '--dry-run', '--state-dir', join(dir, 'state')]);
    expect(r.exitCode, String(r.stderr)).toBe(2);
    const err = jsonOf(r).error;
    expect(err.message).toMatch(message);
    expect(err.message).toMatch(new RegExp(`^kubeconfig ${path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
    expect(err.message.split('\n')).toHaveLength(1);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/SECRETKEY|SECRETCERT|ECONNREFUSED/);
    expect(Date.now() - t0).toBeLessThan(20_000); // not 12 retries of a connection
  });

  it.each([
    ['a token written as a tag', 'token: !SECRETTOKEN', 'unknown scalar tag !... at line 4, column 33'],
    ['a password written as an alias', 'username: admin, password: *SECRETPASSWORD', 'unidentified alias "..." at line 4, column 54'],
  ] as const)('a kubeconfig with %s: one line, exit 2, the secret neither in the error nor in a warning', async (_, fields, reason) => {
    const path = join(dir, `kubeconfig-unparsed-${Date.now()}`);
    await kubeconfig({}, path);
    const { readFile } = await import('node:fs/promises');
    await writeFile(path, (await readFile(path, 'utf8')).replace('user: {}', `user: {${fields}}`));
    for (const json of [true, false]) {
      const r = await runCli(['--root', join(dir, 'empty-root'), '--kubeconfig', path, ...(json ? ['--json'] : ['--verbose']), 're-encrypt-all', '--dry-run', '--state-dir', join(dir, 'state')]);
      expect(r.exitCode, String(r.stderr)).toBe(2);
      if (json) expect(jsonOf(r).error.message).toBe(`cannot parse kubeconfig ${path}: ${reason}`);
      else {
        expect(String(r.stderr)).toContain(`error: cannot parse kubeconfig ${path}: ${reason} (`);
        // --verbose names the EncryptionConfiguration it looked for: under the temp root.
        expect(String(r.stderr)).not.toMatch(/ \/etc\/kubernetes\//);
      }
      expect(`${r.stdout}${r.stderr}`).not.toMatch(/SECRETTOKEN|SECRETPASSWORD/);
    }
  });

  it('init waits for no apiserver: the version probe fails at once with the same line, nothing written', async () => {
    // A temporary root laid out as kubeadm's (never this machine's own).
    const root = join(dir, 'root');
    await mkdir(join(root, 'etc/kubernetes/manifests'), { recursive: true });
    await copyFile(fileURLToPath(new URL('../fixtures/manifests/kubeadm-1.32.yaml', import.meta.url)), join(root, 'etc/kubernetes/manifests/kube-apiserver.yaml'));
    await kubeconfig({ 'client-certificate-data': adminCrt, 'client-key-data': b64('SECRETKEY') }, join(root, 'etc/kubernetes/admin.conf'));
    const t0 = Date.now();
    const r = await runCli(['--root', root, '--yes', '--json', 'init', '--timeout', '60s']);
    expect(r.exitCode, String(r.stderr)).toBe(2);
    expect(jsonOf(r).error.message).toMatch(/: cannot load the client key \(client-key-data or client-key\): DECODER routines::unsupported$/);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/SECRETKEY|waiting for this node/);
    expect(Date.now() - t0).toBeLessThan(20_000); // the probe would otherwise wait its minute
    const files = (await readdir(root, { recursive: true })).map(String).sort();
    expect(files).toEqual(['etc', 'etc/kubernetes', 'etc/kubernetes/admin.conf', 'etc/kubernetes/manifests', 'etc/kubernetes/manifests/kube-apiserver.yaml']);
  });
});
