import { mkdtemp, readdir, readFile, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { parseEncryptionConfig } from '../../src/config/parse';
import { validateEncryptionConfig } from '../../src/config/validate';
import { jsonOf, runCli } from '../helpers/cli';

const dirs: string[] = [];
let root: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'k8s-encrypt-write-config-'));
  dirs.push(root);
});
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Runs the CLI against the temp root (so no default path can ever reach the real /etc or /var). */
const cli = (args: string[], input?: string) => runCli(['--root', root, ...args], { input });
const mode = async (p: string) => (await stat(p)).mode & 0o777;
const exists = (p: string) => stat(p).then(() => true, () => false);
/** Every path below a directory, temp files included. */
async function tree(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).sort();
}
const errors = (text: string) => validateEncryptionConfig(parseEncryptionConfig(text, 'out')).filter((f) => f.level === 'error');

describe('k8s-encrypt write-config', () => {
  it('writes a valid config, 0600 in a 0700 directory, with a generated key', async () => {
    const out = join(root, 'enc', 'config.yaml');
    const r = await cli(['write-config', '--out', out]);
    expect(r.exitCode).toBe(0);
    expect(await mode(out)).toBe(0o600);
    expect(await mode(join(root, 'enc'))).toBe(0o700);
    const text = await readFile(out, 'utf8');
    expect(errors(text)).toEqual([]);
    const cfg = parseEncryptionConfig(text, out);
    const key = cfg.resources[0]!.providers[0]!.aescbc!.keys[0]!;
    expect(key.name).toMatch(/^key-\d{8}T\d{6}Z$/);
    expect(Buffer.from(key.secret, 'base64')).toHaveLength(32);
    expect(cfg.resources[0]!.providers[1]).toEqual({ identity: {} });
    expect(r.stdout).toContain(`wrote ${out}`);
    expect(`${r.stdout}${r.stderr}`).not.toContain(key.secret);
    expect(await tree(join(root, 'enc'))).toEqual(['config.yaml']);
  });

  it('writes to ROOT/etc/kubernetes/encryption/config.yaml by default and reports JSON without the key', async () => {
    const r = await cli(['--json', 'write-config', '--provider', 'secretbox', '--resources', 'secrets, configmaps', '--key-name', 'first']);
    expect(r.exitCode).toBe(0);
    const path = join(root, 'etc/kubernetes/encryption/config.yaml');
    expect(jsonOf(r)).toEqual({
      ok: true,
      path,
      provider: 'secretbox',
      keyName: 'first',
      resources: ['secrets', 'configmaps'],
      kubeVersion: '1.34',
      written: true,
    });
    const text = await readFile(path, 'utf8');
    const secret = parseEncryptionConfig(text, path).resources[0]!.providers[0]!.secretbox!.keys[0]!.secret;
    expect(r.stdout).not.toContain(secret);
    expect(r.stderr).toBe('');
  });

  it('writes a KMS v2 config', async () => {
    const out = join(root, 'kms.yaml');
    const r = await cli(['write-config', '--out', out, '--provider', 'kms', '--kms-name', 'vault', '--kms-endpoint', 'unix:///var/run/kmsplugin/socket.sock', '--kms-timeout', '5s']);
    expect(r.exitCode).toBe(0);
    const cfg = parseEncryptionConfig(await readFile(out, 'utf8'), out);
    expect(cfg.resources[0]!.providers).toEqual([
      { kms: { apiVersion: 'v2', name: 'vault', endpoint: 'unix:///var/run/kmsplugin/socket.sock', timeout: '5s' } },
      { identity: {} },
    ]);
  });

  it('refuses to overwrite an existing config without --force, and changes nothing', async () => {
    const out = join(root, 'config.yaml');
    expect((await cli(['write-config', '--out', out])).exitCode).toBe(0);
    const before = await readFile(out);
    const r = await cli(['write-config', '--out', out]);
    expect(r.exitCode).toBe(6);
    expect(String(r.stderr).trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/already exists; refusing to overwrite it.*--force/);
    expect(await readFile(out)).toEqual(before);
    expect(await exists(join(root, 'var'))).toBe(false);
  });

  it('with --force keeps a 0600 backup of the old file in the backup dir first', async () => {
    const out = join(root, 'config.yaml');
    await cli(['write-config', '--out', out]);
    const before = await readFile(out);
    // Replacing removes the file's keys from where the apiserver reads them: it asks first.
    const asked = await cli(['write-config', '--out', out, '--force', '--provider', 'aesgcm']);
    expect(asked.exitCode).toBe(2);
    expect(asked.stderr).toMatch(/^error: confirmation needed: replace .*config\.yaml\? .*backup/);
    expect(await readFile(out)).toEqual(before);
    expect(await exists(join(root, 'var'))).toBe(false);
    const r = await cli(['--json', '--yes', 'write-config', '--out', out, '--force', '--provider', 'aesgcm']);
    expect(r.exitCode).toBe(0);
    const j = jsonOf(r);
    expect(j.written).toBe(true);
    expect(j.backup.startsWith(join(root, 'var/lib/k8s-encrypt/backups/config.yaml.'))).toBe(true);
    expect(await readFile(j.backup)).toEqual(before);
    expect(await mode(j.backup)).toBe(0o600);
    const after = await readFile(out, 'utf8');
    expect(after).not.toEqual(before.toString());
    expect(after).toContain('aesgcm:');
    expect(r.stdout).not.toContain(before.toString().match(/secret: (\S+)/)![1]);
  });

  it('--dry-run on an existing file shows the plan (--force needed, the backup) and exits 0, changing nothing', async () => {
    const out = join(root, 'config.yaml');
    expect((await cli(['write-config', '--out', out])).exitCode).toBe(0);
    const before = await readFile(out);
    const r = await cli(['write-config', '--out', out, '--provider', 'secretbox', '--dry-run']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('- secretbox:');
    expect(r.stdout).toContain('secret: <redacted>');
    expect(r.stderr).toContain(`dry run: would write ${out} (mode 0600), replacing the existing file after backing it up (0600) to ${join(root, 'var/lib/k8s-encrypt/backups')}`);
    expect(r.stderr).toMatch(/already exists, so this needs --force/);
    const j = jsonOf(await cli(['--json', 'write-config', '--out', out, '--dry-run']));
    expect(j).toMatchObject({ ok: true, written: false, dryRun: true, overwrite: true, needsForce: true, backupDir: join(root, 'var/lib/k8s-encrypt/backups') });
    const forced = jsonOf(await cli(['--json', 'write-config', '--out', out, '--dry-run', '--force']));
    expect(forced).toMatchObject({ ok: true, overwrite: true, needsForce: false });
    expect(await readFile(out)).toEqual(before);
    expect(await exists(join(root, 'var'))).toBe(false);
  });

  it('--dry-run prints the config with the key redacted and writes nothing', async () => {
    const out = join(root, 'new', 'config.yaml');
    const key = Buffer.alloc(32, 0x5a).toString('base64');
    await writeFile(join(root, 'key'), `${key}\n`);
    const r = await cli(['write-config', '--out', out, '--key-file', join(root, 'key'), '--dry-run']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('secret: <redacted>');
    expect(r.stdout).toContain('kind: EncryptionConfiguration');
    expect(r.stderr).toContain(`dry run: would write ${out}`);
    expect(`${r.stdout}${r.stderr}`).not.toContain(key);
    expect(await exists(join(root, 'new'))).toBe(false);
    const j = jsonOf(await cli(['--json', 'write-config', '--out', out, '--dry-run']));
    expect(j).toMatchObject({ ok: true, written: false, dryRun: true, overwrite: false });
    expect(j.content).toContain('<redacted>');
    expect(await exists(join(root, 'new'))).toBe(false);
  });

  it.each([
    ['a key that is not base64', ['--key-file', 'KEY'], 'this is not a key!', /the key in .* is not valid base64/],
    ['a key of the wrong length', ['--key-file', 'KEY'], Buffer.alloc(20).toString('base64'), /is 20 bytes; an aescbc key must be 16, 24 or 32 bytes/],
    ['a 16-byte secretbox key on stdin', ['--provider', 'secretbox', '--key-stdin'], Buffer.alloc(16).toString('base64'), /the key on stdin is 16 bytes; a secretbox key must be 32 bytes/],
    ['an unknown provider', ['--provider', 'rot13'], '', /unknown provider "rot13"/],
    ['a KMS endpoint that is not unix://', ['--provider', 'kms', '--kms-name', 'k', '--kms-endpoint', 'tcp://10.0.0.1:9000'], '', /--kms-endpoint: Invalid value: "tcp:\/\/10.0.0.1:9000": unsupported scheme "tcp" for KMS provider, only unix is supported/],
    ['KMS without an endpoint', ['--provider', 'kms', '--kms-name', 'k'], '', /--provider kms needs --kms-name and --kms-endpoint/],
    ['a key file for KMS', ['--provider', 'kms', '--kms-name', 'k', '--kms-endpoint', 'unix:///s', '--key-file', 'KEY'], 'x', /do not apply to --provider kms/],
    ['cachesize with KMS v2', ['--provider', 'kms', '--kms-name', 'k', '--kms-endpoint', 'unix:///s', '--kms-cachesize', '10'], '', /--kms-cachesize: Invalid value: 10: cachesize is not supported in v2/],
    ['a KMS flag without KMS', ['--kms-endpoint', 'unix:///s'], '', /--kms-endpoint applies to --provider kms only/],
    ['two key sources', ['--key-file', 'KEY', '--key-stdin'], 'x', /not both/],
    ['a bad key name', ['--key-name', 'a:b'], '', /--key-name "a:b" is not a usable key name/],
    ['an invalid resource list', ['--resources', 'Secrets'], '', /--resources: "Secrets" is not a resource name \(lower-case letters, digits/],
    ['an empty resource list', ['--resources', ' , '], '', /--resources names no resource/],
    ['a missing key file', ['--key-file', '/nonexistent/key'], '', /cannot read key file \/nonexistent\/key: it does not exist/],
    ['a junk --kube-version', ['--kube-version', 'latest'], '', /"latest" is not a Kubernetes version/],
  ])('refuses %s with exit 2, one line, nothing on disk', async (_name, extra, keyText, message) => {
    await writeFile(join(root, 'KEY'), keyText);
    const out = join(root, 'out', 'config.yaml');
    const args = extra.map((a) => (a === 'KEY' ? join(root, 'KEY') : a));
    const r = await cli(['write-config', '--out', out, ...args], keyText);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(String(r.stderr).trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message);
    if (keyText) expect(r.stderr).not.toContain(keyText);
    expect(await tree(root)).toEqual(['KEY']);
  });

  it('reports an output directory that cannot be created in one line and leaves nothing behind', async () => {
    await writeFile(join(root, 'file'), 'not a directory');
    const out = join(root, 'file', 'enc', 'config.yaml');
    const r = await cli(['write-config', '--out', out]);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr).trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`cannot create directory ${join(root, 'file', 'enc')}: a parent is not a directory`));
    expect(await tree(root)).toEqual(['file']);
    const j = jsonOf(await cli(['--json', 'write-config', '--out', out]));
    expect(j).toMatchObject({ ok: false, error: { exitCode: 2, kind: 'usage' } });
  });

  it('refuses an output path that is a directory, or inside the manifests directory', async () => {
    await mkdir(join(root, 'adir'));
    const r = await cli(['write-config', '--out', join(root, 'adir')]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/is a directory/);
    const m = await cli(['write-config', '--out', join(root, 'etc/kubernetes/manifests/enc.yaml')]);
    expect(m.exitCode).toBe(2);
    expect(m.stderr).toMatch(/refusing to write the config into the kubelet's manifests directory/);
    expect(await tree(root)).toEqual(['adir']);
  });
});
