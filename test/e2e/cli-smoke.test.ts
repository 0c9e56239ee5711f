// What an operator meets first, through whichever CLI is under test: node + dist by default, the
// single executable with K8S_ENCRYPT_BIN (CI runs this file that way, with no node on PATH).
// help, usage errors, version, the kubectl plugin name, the offline commands, then init and
// status on the bed.
import { execa } from 'execa';
import { mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBed, type Bed } from '../bed/index';
import { BIN, cliCommand, EXE, jsonOf, NODE, runCli } from '../helpers/cli';

const fixture = (p: string) => fileURLToPath(new URL(`../fixtures/${p}`, import.meta.url));
let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'k8s-encrypt-smoke-'));
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

describe('the CLI under test', () => {
  it('runs without node on PATH when it is the single executable', () => {
    const { env } = cliCommand([]);
    const nodeIn = (path: string) => path.split(delimiter).filter((d) => d && existsSync(join(d, 'node')));
    expect(nodeIn(process.env.PATH ?? '').length).toBeGreaterThan(0); // vitest itself runs on one
    if (EXE) expect(nodeIn(env.PATH ?? '')).toEqual([]);
    else expect(env.PATH).toBeUndefined();
  });

  it('--help lists the commands, exit 0', async () => {
    const r = await runCli(['--help']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^Usage: k8s-encrypt \[options\] \[command\]/);
    for (const c of ['init', 'status', 'rotate-key', 'validate-config', 'version']) expect(r.stdout).toContain(`  ${c}`);
  });

  it('a usage error is one line and exit 2', async () => {
    const r = await runCli(['status', '--no-such-flag']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr).split('\n')[0]).toBe("error: unknown option '--no-such-flag'");
    const j = await runCli(['--json', 'frobnicate']);
    expect(j.exitCode).toBe(2);
    expect(jsonOf(j)).toMatchObject({ ok: false, error: { kind: 'usage', exitCode: 2 } });
  });

  it('version --json names the version, the commit, the Node.js it runs on and the platform', async () => {
    const r = await runCli(['version', '--json']);
    expect(r.exitCode).toBe(0);
    const j = jsonOf(r);
    const pkg = JSON.parse(await readFile(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8'));
    expect(j).toMatchObject({ ok: true, version: pkg.version, platform: `linux-${process.arch}` });
    expect(j.commit).toMatch(/^([0-9a-f]{12}(-dirty)?|unknown)$/);
    expect(j.node).toMatch(/^v\d+\.\d+\.\d+$/);
    // The Node.js that ran it: this one, or K8S_ENCRYPT_NODE's (CI's run on the oldest supported).
    if (!EXE) expect(j.node).toBe(NODE === process.execPath ? process.version : String((await execa(NODE, ['--version'])).stdout).trim());
    const human = await runCli(['version']);
    expect(String(human.stdout).trim()).toBe(
      `k8s-encrypt ${pkg.version} (commit ${j.commit}, ${EXE ? 'embedded Node.js' : 'Node.js'} ${j.node}, ${j.platform})`,
    );
  });

  it('run through a link named kubectl-encrypt it is the kubectl plugin "kubectl encrypt"', async () => {
    const link = join(tmp, 'kubectl-encrypt');
    await symlink(EXE ?? BIN, link);
    const { env } = cliCommand([]);
    const r = EXE ? await execa(link, ['--help'], { reject: false, env }) : await execa(NODE, [link, '--help'], { reject: false, env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^Usage: kubectl encrypt \[options\] \[command\]/);
    const v = await (EXE ? execa(link, ['version', '--json'], { reject: false, env }) : execa(NODE, [link, 'version', '--json'], { reject: false, env }));
    expect(jsonOf(v).ok).toBe(true);
  });

  it('generate-key, validate-config and write-config --dry-run work offline', async () => {
    const k = await runCli(['generate-key', '--provider', 'secretbox']);
    expect(k.exitCode).toBe(0);
    expect(Buffer.from(String(k.stdout).trim(), 'base64')).toHaveLength(32);
    const good = await runCli(['validate-config', fixture('configs/aescbc-two-keys.yaml')]);
    expect(good.exitCode, String(good.stderr)).toBe(0);
    const bad = await runCli(['validate-config', fixture('configs/bad-keys.yaml')]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stdout).toContain('secrets must be base64 encoded');
    const out = join(tmp, 'enc.yaml');
    const w = await runCli(['write-config', '--dry-run', '--out', out, '--provider', 'aesgcm', '--key-name', 'k1']);
    expect(w.exitCode, String(w.stderr)).toBe(0);
    expect(w.stdout).toContain('secret: <redacted>');
  });

  it('patch-manifest --dry-run shows the diff and leaves the manifest alone', async () => {
    const manifest = fixture('manifests/kubeadm-1.32.yaml');
    const before = await readFile(manifest, 'utf8');
    const r = await runCli(['--root', tmp, 'patch-manifest', '--manifest', manifest, '--config-path', '/etc/kubernetes/encryption/config.yaml', '--dry-run']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(r.stdout).toContain('+    - --encryption-provider-config=/etc/kubernetes/encryption/config.yaml');
    expect(await readFile(manifest, 'utf8')).toBe(before);
  });

  it('kms plugin-manifest renders its template (embedded in the single executable)', async () => {
    const r = await runCli(['kms', 'plugin-manifest', '--plugin', 'aws-encryption-provider', '--region', 'us-west-2', '--key-arn', 'arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab', '--image', 'registry.example.com/aws-encryption-provider:v0.4.0', '--instance-role']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(r.stdout).toContain('kind: Pod');
  });
});

describe('init and status on the bed', () => {
  let bed: Bed;
  beforeAll(async () => {
    bed = await startBed({ secrets: 10 });
  }, 120_000);
  afterAll(() => bed?.stop());

  it('init --yes encrypts, proven from etcd; status then reports everything under the key', async () => {
    const n = bed.nodes[0]!;
    const r = await runCli([...n.cliArgs, '--yes', '--json', 'init']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const j = jsonOf(r);
    expect(j).toMatchObject({ ok: true, state: 'done', proof: { method: 'etcd', weaker: false } });
    const s = await runCli([...n.cliArgs, '--json', 'status', '--exit-code']);
    expect(s.exitCode, String(s.stdout)).toBe(0);
    const report = jsonOf(s);
    const secrets = report.etcd.resources.find((x: { resource: string }) => x.resource === 'secrets');
    expect(secrets.writeLabel).toBe(`aescbc:${j.keyName}`);
    expect(secrets.counts.plaintext ?? 0).toBe(0);
  });
});
