// --node-name, --manifest and --config are taken before the subcommand as well as after it (like
// --root), so `k8s-encrypt --root /srv/cp-1 --node-name cp-1 init` works; a command that has no
// such option says so in one line (exit 2) instead of ignoring it.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli';

const MANIFEST = fileURLToPath(new URL('../fixtures/manifests/kubeadm-1.32.yaml', import.meta.url));
const CONFIG = fileURLToPath(new URL('../fixtures/configs/aescbc-two-keys.yaml', import.meta.url));
const offline = ['--no-etcd', '--no-cluster'];

describe('node-level options in either place', () => {
  it('status reads the same manifest and config whether they come before or after the command', async () => {
    const before = await runCli(['--json', '--manifest', MANIFEST, '--config', CONFIG, 'status', ...offline]);
    const after = await runCli(['--json', 'status', '--manifest', MANIFEST, '--config', CONFIG, ...offline]);
    for (const r of [before, after]) expect(r.exitCode, String(r.stderr)).toBe(0);
    const [b, a] = [jsonOf(before), jsonOf(after)];
    expect(b.node.manifest.path).toBe(MANIFEST);
    expect(b.node.manifest.kubeVersion).toBe('1.32.6');
    expect(JSON.stringify(b.node.config)).toContain(CONFIG);
    expect({ ...b, generatedAt: 0 }).toEqual({ ...a, generatedAt: 0 });
  });

  it('init --dry-run takes --node-name and --manifest before the command', async () => {
    const r = await runCli(['--root', '/nonexistent-root', '--node-name', 'cp-1', '--manifest', '/nonexistent/kube-apiserver.yaml', 'init', '--dry-run']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr).trim()).toMatch(/^error: cannot read manifest \/nonexistent\/kube-apiserver\.yaml: it does not exist/);
    expect(r.stderr).not.toContain('unknown option');
  });

  it('a command without the option refuses it in one line, exit 2', async () => {
    const r = await runCli(['--node-name', 'cp-1', 'generate-key']);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(String(r.stderr).trim().split('\n')).toEqual(['error: generate-key takes no --node-name (see: k8s-encrypt generate-key --help)']);
  });
});
