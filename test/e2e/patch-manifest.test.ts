import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli';

const fixtures = fileURLToPath(new URL('../fixtures/manifests/', import.meta.url));

let root: string;
let manifestsDir: string;
let manifest: string;
let config: string;
let backups: string;

function install(fixture: string, name = 'kube-apiserver.yaml'): string {
  manifest = join(manifestsDir, name);
  copyFileSync(join(fixtures, fixture), manifest);
  chmodSync(manifest, 0o600);
  return readFileSync(manifest, 'utf8');
}

const modeOf = (p: string) => statSync(p).mode & 0o777;
const listBackups = () => {
  try {
    return readdirSync(backups);
  } catch {
    return [];
  }
};

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'k8s-encrypt-patch-'));
  manifestsDir = join(root, 'etc/kubernetes/manifests');
  mkdirSync(manifestsDir, { recursive: true });
  config = join(root, 'etc/kubernetes/encryption/config.yaml');
  mkdirSync(join(root, 'etc/kubernetes/encryption'), { recursive: true, mode: 0o700 });
  writeFileSync(config, 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n', { mode: 0o600 });
  backups = join(root, 'var/lib/k8s-encrypt/backups');
});

afterEach(() => rmSync(root, { recursive: true, force: true }));

describe('k8s-encrypt patch-manifest', () => {
  it('--dry-run prints the diff and leaves every byte (and the backup dir) alone', async () => {
    const before = install('kubeadm-1.29.yaml');
    const r = await runCli(['--root', root, 'patch-manifest', '--dry-run']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`+    - --encryption-provider-config=${config}`);
    expect(r.stdout).toContain('+      name: encryption-config');
    expect(r.stdout).toMatch(/dry run: .* not changed/);
    expect(readFileSync(manifest, 'utf8')).toBe(before);
    expect(listBackups()).toEqual([]);
  });

  it('patches, keeps the mode, backs up 0600 outside the manifests dir, and a re-run is a no-op', async () => {
    const before = install('kubeadm-1.29.yaml');
    const r = await runCli(['--root', root, 'patch-manifest', '--yes']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^patched .*kube-apiserver\.yaml \(backup: .*\.bak\)/);
    expect(r.stderr).toContain(`add flag --encryption-provider-config=${config} (command)`);
    const after = readFileSync(manifest, 'utf8');
    expect(after).toContain(`    - --encryption-provider-config=${config}\n`);
    expect(after).toContain(`  - hostPath:\n      path: ${join(root, 'etc/kubernetes/encryption')}\n      type: DirectoryOrCreate\n    name: encryption-config\n`);
    expect(modeOf(manifest)).toBe(0o600);
    // Nothing else in the kubelet's directory: no backup, no temp file.
    expect(readdirSync(manifestsDir)).toEqual(['kube-apiserver.yaml']);
    const [backup] = listBackups();
    expect(backup).toMatch(/^kube-apiserver\.yaml\.\d{8}T\d{6}Z\.bak$/);
    expect(readFileSync(join(backups, backup!), 'utf8')).toBe(before);
    expect(modeOf(join(backups, backup!))).toBe(0o600);

    const again = await runCli(['--root', root, 'patch-manifest', '--yes']);
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toContain('already configured, nothing to do');
    expect(readFileSync(manifest, 'utf8')).toBe(after);
    expect(listBackups()).toHaveLength(1);
  });

  it('asks before a change (it restarts the apiserver): without a terminal and --yes it fails at once with exit 2 and changes nothing', async () => {
    const before = install('kubeadm-1.29.yaml');
    const r = await runCli(['--root', root, 'patch-manifest']);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^error: confirmation needed: patch .*kube-apiserver\.yaml \(add flag --encryption-provider-config=.*\)\? The kubelet restarts the apiserver\./);
    expect(r.stderr).toContain('--yes');
    expect(readFileSync(manifest, 'utf8')).toBe(before);
    expect(listBackups()).toEqual([]);
    expect(jsonOf(await runCli(['--root', root, '--json', 'patch-manifest']))).toMatchObject({ ok: false, error: { exitCode: 2 } });
    expect(readFileSync(manifest, 'utf8')).toBe(before);

    // Nothing to change, or only a dry run: nothing to ask.
    const dry = await runCli(['--root', root, 'patch-manifest', '--dry-run']);
    expect(dry.exitCode).toBe(0);
    expect(await runCli(['--root', root, 'patch-manifest', '--yes'])).toMatchObject({ exitCode: 0 });
    const again = await runCli(['--root', root, 'patch-manifest']);
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toContain('already configured, nothing to do');
  });

  it('keeps a 0644 manifest 0644 and handles --manifest/--config-path/--backup-dir on a JSON file', async () => {
    const json = join(root, 'elsewhere');
    mkdirSync(json);
    manifestsDir = json;
    install('kube-apiserver.json', 'apiserver.json');
    chmodSync(manifest, 0o644);
    const backupDir = join(root, 'my-backups');
    const r = await runCli(['--json', '--yes', 'patch-manifest', '--manifest', manifest, '--config-path', config, '--backup-dir', backupDir]);
    expect(r.exitCode).toBe(0);
    const j = jsonOf(r);
    expect(j).toMatchObject({ ok: true, manifest, changed: true, dryRun: false, volumeName: 'encryption-config' });
    expect(j.backup.startsWith(`${backupDir}/`)).toBe(true);
    expect(j.actions).toEqual([
      `add flag --encryption-provider-config=${config} (command)`,
      `add volume encryption-config: hostPath ${join(root, 'etc/kubernetes/encryption')} (DirectoryOrCreate)`,
      `mount ${join(root, 'etc/kubernetes/encryption')} into kube-apiserver read-only (volume encryption-config)`,
    ]);
    expect(j.diff).toContain(`+          "--encryption-provider-config=${config}",`);
    expect(JSON.parse(readFileSync(manifest, 'utf8')).spec.volumes).toHaveLength(6);
    expect(modeOf(manifest)).toBe(0o644);
    expect(r.stderr).toBe('');

    const again = jsonOf(await runCli(['--json', '--yes', 'patch-manifest', '--manifest', manifest, '--config-path', config, '--backup-dir', backupDir]));
    expect(again).toMatchObject({ ok: true, changed: false, actions: [] });
    expect(again.backup).toBeUndefined();
  });

  it('refuses another config with exit 6 and changes nothing; --replace switches it', async () => {
    const before = install('different-config.yaml');
    const r = await runCli(['--root', root, 'patch-manifest', '--yes']);
    expect(r.exitCode).toBe(6);
    expect(r.stdout).toBe('');
    expect(String(r.stderr).trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/already sets --encryption-provider-config=\/etc\/kubernetes\/pki\/encryption-old\.yaml, not .*\(.*rotate-key.*--replace.*\)/);
    expect(readFileSync(manifest, 'utf8')).toBe(before);
    expect(listBackups()).toEqual([]);

    const j = jsonOf(await runCli(['--root', root, '--json', '--yes', 'patch-manifest']));
    expect(j).toMatchObject({ ok: false, error: { exitCode: 6, kind: 'refused' } });

    const rep = await runCli(['--root', root, 'patch-manifest', '--replace', '--yes']);
    expect(rep.exitCode).toBe(0);
    expect(readFileSync(manifest, 'utf8')).toContain(`--encryption-provider-config=${config}`);
  });

  it('refuses a backup dir inside the manifests dir', async () => {
    const before = install('kubeadm-1.32.yaml');
    const r = await runCli(['--root', root, 'patch-manifest', '--yes', '--backup-dir', join(manifestsDir, 'backups')]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/^error: backup dir .* lies inside the kubelet's manifests directory/);
    expect(readFileSync(manifest, 'utf8')).toBe(before);
    expect(readdirSync(manifestsDir)).toEqual(['kube-apiserver.yaml']);
  });

  it('refuses --automatic-reload on an apiserver older than 1.26', async () => {
    install('kubeadm-1.24.yaml');
    const r = await runCli(['--root', root, 'patch-manifest', '--yes', '--automatic-reload']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/needs Kubernetes 1\.26\+, the manifest runs 1\.24\.17/);
  });

  it.each([
    ['a missing manifest', () => undefined, [], /^error: cannot read manifest .*kube-apiserver\.yaml: it does not exist/],
    ['unparseable YAML', () => writeFileSync(manifest, 'apiVersion: v1\nkind: Pod\nspec:\n  containers: [\n'), [], /YAML does not parse at line \d+/],
    ['no kube-apiserver container', () => writeFileSync(manifest, 'apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: etcd\n    image: registry.k8s.io/etcd:3.5.15-0\n'), [], /no kube-apiserver container in this Pod/],
    ['a relative config path', () => install('kubeadm-1.29.yaml'), ['--config-path', 'enc/config.yaml'], /--config-path must be an absolute path, got "enc\/config.yaml"/],
  ])('fails on %s with exit 2, one line, nothing written', async (_what, prepare, extra, message) => {
    manifest = join(manifestsDir, 'kube-apiserver.yaml');
    prepare();
    const before = (() => {
      try {
        return readFileSync(manifest, 'utf8');
      } catch {
        return undefined;
      }
    })();
    const r = await runCli(['--root', root, 'patch-manifest', '--yes', ...(extra as string[])]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(String(r.stderr).trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message);
    const after = (() => {
      try {
        return readFileSync(manifest, 'utf8');
      } catch {
        return undefined;
      }
    })();
    expect(after).toBe(before);
    expect(listBackups()).toEqual([]);
  });
});
