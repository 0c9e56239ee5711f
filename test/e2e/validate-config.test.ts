import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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
    // aescbc, the tool's default, draws no warning.
    expect(String(r.stdout).trim()).toBe(`✓ ${fixture('aescbc-two-keys.yaml')} is valid for Kubernetes 1.34`);
    const w = await cli(['validate-config', fixture('kms-v2-wildcard.json')]);
    expect(w.stdout).toContain('is valid for Kubernetes 1.34 (1 warning)');
    expect(w.stdout).toMatch(/! warning resources\[1\]\.providers\[0\]\.identity: identity is the only provider/);
  });

  it('lists every error with its path and exits 2', async () => {
    const r = await cli(['validate-config', fixture('bad-keys.yaml')]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toContain('is not valid for Kubernetes 1.34: 4 errors, 0 warnings');
    for (const line of [
      '✗ error   resources[0].providers[0].aescbc.keys[0].secret: Invalid value: "REDACTED": secret is not of the expected length, got 20, expected one of [16 24 32]',
      '✗ error   resources[0].providers[0].aescbc.keys[1].secret: Invalid value: "REDACTED": secrets must be base64 encoded',
      '✗ error   resources[0].providers[1].kms.endpoint: Invalid value: "tcp://127.0.0.1:9000": unsupported scheme "tcp" for KMS provider, only unix is supported',
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
    expect(r.stdout).toContain('! warning resources[1].resources[0]: wildcards match nothing before 1.27: a 1.26 apiserver accepts "*.*" and encrypts nothing with it');
    expect(r.stdout).toContain('✗ error   resources[0].providers[0].kms.apiVersion: could not configure KMSv2 plugin "vault", KMSv2 feature is not enabled');
    // With the alpha gate on, a 1.26 apiserver starts with it: valid, the wildcard still a warning.
    const gated = await cli(['validate-config', '--kube-version', '1.26', '--feature-gates', 'KMSv2=true', fixture('kms-v2-wildcard.json')]);
    expect(gated.exitCode).toBe(0);
    expect(gated.stdout).toContain('is valid for Kubernetes 1.26 with --feature-gates=KMSv2=true (3 warnings)');
  });

  it.each([
    ['not-yaml.yaml', /does not parse as YAML or JSON: Nested mappings are not allowed in compact mappings at line 9, column \d+/],
    ['unknown-field.yaml', /resources\[0\]\.providers\[0\]\.aescbc\.keys\[0\]\.secrt: strict decoding error: unknown field "resources\[0\]\.providers\[0\]\.aescbc\.keys\[0\]\.secrt"/],
  ])('reports a file that is not an EncryptionConfiguration (%s) as an error', async (name, message) => {
    const r = await cli(['validate-config', fixture(name)]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toMatch(message);
  });

  it('says a file that is no EncryptionConfiguration is not one, and what was expected', async () => {
    const passwd = join(root, 'passwd');
    await writeFile(passwd, 'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n');
    const r = await cli(['validate-config', passwd]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toContain(
      '✗ error   the file is not an EncryptionConfiguration: it holds a string (expected a mapping with apiVersion: apiserver.config.k8s.io/v1 and kind: EncryptionConfiguration)',
    );
  });

  it('drops an unknown field with a warning before strict decoding (1.31)', async () => {
    const r = await cli(['validate-config', '--kube-version', '1.28', fixture('unknown-field.yaml')]);
    expect(r.stdout).toContain(
      '! warning resources[0].providers[0].aescbc.keys[0].secrt: unknown field: a 1.28 apiserver decodes without strict checks, so the field is dropped (from 1.31 the apiserver refuses the file)',
    );
  });

  it('takes the legacy form with a warning naming the current one', async () => {
    const r = await cli(['validate-config', fixture('legacy-form.yaml')]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/! warning "apiVersion: v1" with "kind: EncryptionConfig" is a legacy form the apiserver still loads; the current form is apiVersion: apiserver.config.k8s.io\/v1 and kind: EncryptionConfiguration/);
  });

  it('reads --feature-gates from this node\'s manifest, and --feature-gates overrides it', async () => {
    const node = await mkdtemp(join(tmpdir(), 'k8s-encrypt-validate-gates-'));
    try {
      const manifests = join(node, 'etc/kubernetes/manifests');
      await mkdir(manifests, { recursive: true });
      const manifest = await readFile(join(FIXTURES, '../manifests/kubeadm-1.29.yaml'), 'utf8');
      await writeFile(join(manifests, 'kube-apiserver.yaml'), manifest.replace(/(\n(\s+)- --etcd-servers)/, '\n$2- --feature-gates=KMSv1=true$1'));
      const onNode = (args: string[]) => runCli(['--root', node, ...args]);
      const withGate = await onNode(['--json', 'validate-config', '--kube-version', '1.30', fixture('kms-v1.yaml')]);
      expect(jsonOf(withGate)).toMatchObject({ ok: true, featureGates: { KMSv1: true }, featureGatesFrom: join(manifests, 'kube-apiserver.yaml') });
      const overridden = await onNode(['validate-config', '--kube-version', '1.30', '--feature-gates', 'KMSv1=false', fixture('kms-v1.yaml')]);
      expect(overridden.exitCode).toBe(2);
      expect(overridden.stdout).toContain('KMSv1 is deprecated and will only receive security updates going forward. Use KMSv2 instead.  Set --feature-gates=KMSv1=true');
      const junk = await onNode(['validate-config', '--feature-gates', 'KMSv1', fixture('kms-v1.yaml')]);
      expect(junk.exitCode).toBe(2);
      expect(junk.stderr).toMatch(/--feature-gates: "KMSv1" is not NAME=true\|false/);
    } finally {
      await rm(node, { recursive: true, force: true });
    }
  });

  it('agrees with upstream corpus files across versions (see test/unit/config-upstream.test.ts)', async () => {
    const up = (name: string) => join(FIXTURES, 'upstream', name);
    const typo = up('invalid/invalid-typo.yaml');
    const cases: [string[], number, string][] = [
      [['--kube-version', '1.28', typo], 0, 'unknown field: a 1.28 apiserver decodes without strict checks, so the field is dropped'],
      [['--kube-version', '1.32', '--feature-gates', 'KMSv1=true', typo], 2, 'strict decoding error: unknown field "resources[0].providers[3].kms.pandas"'],
      [['--kube-version', '1.32', up('valid/kms/multiple-providers.yaml')], 2, 'Set --feature-gates=KMSv1=true to use the deprecated KMSv1 feature.'],
      [['--kube-version', '1.32', '--feature-gates', 'KMSv1=true', up('valid/kms/multiple-providers.yaml')], 0, 'KMS v1 is deprecated (enabled here with --feature-gates=KMSv1=true)'],
      [['--kube-version', '1.24', up('valid/legacy.yaml')], 0, 'is a legacy form the apiserver still loads'],
    ];
    for (const [args, code, line] of cases) {
      const r = await cli(['validate-config', ...args]);
      expect([r.exitCode, String(r.stdout)]).toEqual([code, expect.stringContaining(line)]);
    }
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
