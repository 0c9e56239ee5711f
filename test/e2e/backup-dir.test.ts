// A backup dir inside the kubelet's manifests directory would have the kubelet run a backup copy of
// the manifest as a second apiserver. Every command that writes backups refuses it (exit 2) before
// it writes anything, dry runs included (a dry run that passes where the real run fails misleads).
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli';

async function hashTree(root: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (dir: string): Promise<void> => {
    for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(dir, e.name);
      h.update(`${relative(root, p)}\0${(await stat(p)).mode}\0`);
      if (e.isDirectory()) await walk(p);
      else h.update(await readFile(p));
    }
  };
  await walk(root);
  return h.digest('hex');
}

describe('--backup-dir inside the manifests directory', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'k8s-encrypt-backup-dir-'));
    await mkdir(join(root, 'etc/kubernetes/manifests'), { recursive: true });
    const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/manifests/${name}`, import.meta.url));
    await copyFile(fixture('kubeadm-1.32.yaml'), join(root, 'etc/kubernetes/manifests/kube-apiserver.yaml'));
    await mkdir(join(root, 'configured/manifests'), { recursive: true });
    await copyFile(fixture('already-configured.yaml'), join(root, 'configured/manifests/kube-apiserver.yaml'));
  });
  afterAll(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  const cases: { name: string; manifests: string; args: string[] }[] = [
    { name: 'init --yes', manifests: 'etc/kubernetes/manifests', args: ['--yes', 'init'] },
    { name: 'init --dry-run', manifests: 'etc/kubernetes/manifests', args: ['init', '--dry-run'] },
    { name: 'rotate-key --yes', manifests: 'configured/manifests', args: ['--yes', 'rotate-key'] },
    { name: 'disable --dry-run', manifests: 'configured/manifests', args: ['disable', '--dry-run'] },
    { name: 'rollback --yes', manifests: 'configured/manifests', args: ['--yes', 'rollback'] },
  ];
  for (const c of cases) {
    it(`${c.name} is refused with exit 2 and nothing written`, async () => {
      const manifestsDir = join(root, c.manifests);
      const h0 = await hashTree(root);
      const r = await runCli([
        '--root', root, '--json', '--backup-dir', join(manifestsDir, 'backups'),
        ...c.args, '--manifest', join(manifestsDir, 'kube-apiserver.yaml'),
      ]);
      expect(r.exitCode, String(r.stdout)).toBe(2);
      const j = jsonOf(r);
      expect(j.error.message).toMatch(/backup dir .*\/backups lies inside the kubelet's manifests directory/);
      expect(j.error.hint).toMatch(/--backup-dir/);
      expect(await hashTree(root)).toBe(h0);
    });
  }
});
