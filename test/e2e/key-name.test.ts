// A key name ends up in every etcd value prefix (k8s:enc:aescbc:v1:NAME:), so init and rotate-key
// accept exactly the names write-config accepts: a ':' or '/' in it would make the prefix ambiguous.
import { copyFile, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli';

describe('--key-name that cannot be part of an etcd prefix', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'k8s-encrypt-key-name-'));
    const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/manifests/${name}`, import.meta.url));
    await mkdir(join(root, 'plain'), { recursive: true });
    await copyFile(fixture('kubeadm-1.32.yaml'), join(root, 'plain/kube-apiserver.yaml'));
    await mkdir(join(root, 'configured'), { recursive: true });
    await copyFile(fixture('already-configured.yaml'), join(root, 'configured/kube-apiserver.yaml'));
  });
  afterAll(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  const commands: [string, (r: string) => string[]][] = [
    ['write-config', (r) => ['write-config', '--dry-run', '--out', join(r, 'out/config.yaml')]],
    ['init', (r) => ['init', '--dry-run', '--manifest', join(r, 'plain/kube-apiserver.yaml')]],
    ['rotate-key', (r) => ['rotate-key', '--dry-run', '--manifest', join(r, 'configured/kube-apiserver.yaml')]],
  ];
  const names = ['a:b', 'a/b', 'a b', '-a'];
  for (const [cmd, args] of commands) {
    it.each(names)(`${cmd} refuses %j with exit 2 before reading anything else`, async (name) => {
      const before = await readdir(root, { recursive: true });
      const r = await runCli(['--root', root, '--json', ...args(root), '--key-name', name]);
      expect(r.exitCode, String(r.stdout)).toBe(2);
      expect(jsonOf(r).error).toEqual({
        message: `--key-name "${name}" is not a usable key name`,
        hint: 'use letters, digits, ".", "_" or "-" (at most 63)',
        exitCode: 2,
        kind: 'usage',
      });
      expect(await readdir(root, { recursive: true })).toEqual(before);
    });
  }
});
