import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli';

const FIXTURES = fileURLToPath(new URL('../fixtures/configs/', import.meta.url));
const fixture = (name: string) => join(FIXTURES, name);
/** The fixed test keys of the fixtures (see test/fixtures/configs/README.md). */
const FIXTURE_KEYS = [0x11, 0x22].map((b) => Buffer.alloc(32, b)).concat([Buffer.alloc(20, 0x33)]);

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'k8s-encrypt-validate-config-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});
const cli = (args: string[], input?: string) => runCli(['--root', root, ...args], { input });

describe('k8s-encrypt validate-config', () => {
  it('accepts a valid file: exit 0, warnings shown with their paths', async () => {
    const r = await cli(['validate-config', fixture('aescbc-two-keys.yaml')]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`✓ ${fixture('aescbc-two-keys.yaml')} is valid for Kubernetes 1.34 (1 warning)`);
    expect(r.stdout).toMatch(/! warning resources\[0\]\.providers\[0\]\.aescbc: aescbc meets the CIS benchmark/);
  });

  it('lists every error with its path and exits 2', async () => {
    const r = await cli(['validate-config', fixture('bad-keys.yaml')]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toContain('is not valid for Kubernetes 1.34: 4 errors, 1 warning');
    for (const line of [
      '✗ error   resources[0].providers[0].aescbc.keys[0].secret: secret is not of the expected length, got 20, expected one of [16 24 32]',
      '✗ error   resources[0].providers[0].aescbc.keys[1].secret: secrets must be base64 encoded',
      '✗ error   resources[0].providers[1].kms.endpoint: unsupported scheme "tcp" for KMS provider, only unix is supported',
    ]) {
      expect(r.stdout).toContain(line);
    }
    expect(r.stdout).toMatch(/resources\[0\]\.providers\[1\]\.kms\.apiVersion: apiVersion is not set, so it defaults to v1/);
  });

  it('gives the findings as JSON', async () => {
    const r = await cli(['--json', 'validate-config', fixture('bad-keys.yaml'), '--kube-version', '1.28']);
    expect(r.exitCode).toBe(2);
    const j = jsonOf(r);
    expect(j).toMatchObject({ ok: false, path: fixture('bad-keys.yaml'), kubeVersion: '1.28', valid: false });
    expect(j.errors.map((f: { path: string }) => f.path)).toEqual([
      'resources[0].providers[0].aescbc.keys[0].secret',
      'resources[0].providers[0].aescbc.keys[1].secret',
      'resources[0].providers[1].kms.endpoint',
    ]);
    // On 1.28 a KMS provider without apiVersion still starts: a warning, not an error.
    expect(j.warnings).toContainEqual({
      level: 'warning',
      path: 'resources[0].providers[1].kms.apiVersion',
      message: expect.stringMatching(/defaults to v1/),
    });
    expect(r.stderr).toBe('');

    const ok = jsonOf(await cli(['--json', 'validate-config', fixture('kms-v2-wildcard.json')]));
    expect(ok).toMatchObject({ ok: true, valid: true, kubeVersion: '1.34', errors: [] });
  });

  it('applies the rules of an older release with --kube-version', async () => {
    const r = await cli(['validate-config', '--kube-version', '1.26', fixture('kms-v2-wildcard.json')]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toContain('resources[1].resources[0]: wildcards need Kubernetes 1.27 or newer');
    expect(r.stdout).toContain('resources[0].providers[0].kms.apiVersion: KMS v2 is alpha in 1.26');
  });

  it.each([
    ['not-yaml.yaml', /does not parse as YAML or JSON: Nested mappings are not allowed in compact mappings at line 9, column \d+/],
    ['unknown-field.yaml', /resources\[0\]\.providers\[0\]\.aescbc\.keys\[0\]\.secrt: unknown field "secrt"/],
  ])('reports a file that is not an EncryptionConfiguration (%s) as an error', async (name, message) => {
    const r = await cli(['validate-config', fixture(name)]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toMatch(message);
  });

  it('reads ROOT/etc/kubernetes/encryption/config.yaml when no path is given', async () => {
    const r = await cli(['validate-config']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr).trim()).toMatch(new RegExp(`^error: cannot read ${join(root, 'etc/kubernetes/encryption/config.yaml')}: it does not exist`));
  });

  it('refuses a junk --kube-version', async () => {
    const r = await cli(['validate-config', '--kube-version', 'one.thirty', fixture('aescbc-two-keys.yaml')]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/"one\.thirty" is not a Kubernetes version/);
  });
});

describe('no output of write-config or validate-config contains a key', () => {
  const key32 = Buffer.from('0123456789abcdef0123456789ABCDEF'); // recognisable in any encoding
  const key16 = Buffer.from('fedcba9876543210');
  const forms = (b: Buffer) => [b.toString('base64'), b.toString('base64').replace(/=+$/, ''), b.toString('hex'), b.toString('latin1')];

  it('holds for every run, human and --json, success and failure', async () => {
    const dir = join(root, 'leak');
    const keyFile = join(root, 'leak.key');
    const shortFile = join(root, 'short.key');
    await writeFile(keyFile, `${key32.toString('base64')}\n`);
    await writeFile(shortFile, key16.toString('base64'));
    const out = join(dir, 'config.yaml');
    const bad = join(root, 'leak-bad.yaml');

    const runs: string[][] = [];
    for (const json of [[], ['--json']]) {
      runs.push(
        [...json, 'write-config', '--out', join(dir, `dry${json.length}.yaml`), '--key-file', keyFile, '--dry-run'],
        [...json, 'write-config', '--out', join(dir, `k${json.length}.yaml`), '--key-file', keyFile],
        [...json, '--yes', 'write-config', '--out', join(dir, `k${json.length}.yaml`), '--key-file', keyFile, '--force'],
        [...json, 'write-config', '--out', join(dir, `s${json.length}.yaml`), '--provider', 'secretbox', '--key-file', shortFile],
        [...json, 'write-config', '--out', join(dir, `x${json.length}.yaml`), '--key-file', keyFile, '--resources', 'Secrets'],
      );
    }
    const results = [];
    for (const args of runs) results.push(await cli(args));
    // stdin as the key source
    results.push(await cli(['write-config', '--out', out, '--key-stdin'], key32.toString('base64')));
    results.push(await cli(['--json', '--yes', 'write-config', '--out', out, '--key-stdin', '--provider', 'secretbox', '--force'], key16.toString('base64')));

    // validate-config on a good file and on files where the key is malformed in different ways
    await copyFile(join(dir, 'k0.yaml'), bad);
    const text = await readFile(bad, 'utf8');
    const variants = [
      text,
      text.replace(/secret: (\S+)/, `secret: ${key16.toString('base64')}`).replace('aescbc', 'secretbox'),
      text.replace(/secret: (\S+)/, `secret: ${key32.toString('base64').replace(/=+$/, '')}`),
      text.replace(/secret: (\S+)/, `secret: ${key32.toString('hex')}`),
      text.replace(/secret: (\S+)/, `secret: ${key32.toString('base64')}: broken`),
      text.replace(/secret: (\S+)/, `secrt: ${key32.toString('base64')}`),
    ];
    for (const [i, v] of variants.entries()) {
      const f = join(root, `leak-${i}.yaml`);
      await writeFile(f, v);
      results.push(await cli(['validate-config', f]), await cli(['--json', 'validate-config', f]));
    }

    expect(results.some((r) => r.exitCode === 0)).toBe(true);
    expect(results.some((r) => r.exitCode === 2)).toBe(true);
    for (const r of results) {
      const all = `${r.stdout}\n${r.stderr}`;
      for (const k of [key32, key16, ...FIXTURE_KEYS]) {
        for (const form of forms(k)) expect(all, `output of a run leaked a key: ${all.slice(0, 300)}`).not.toContain(form);
      }
    }
  });
});
