import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { jsonOf, runCli } from '../helpers/cli';

const PLUGIN_BIN = fileURLToPath(new URL('../../dist/test/bed/bin/kms-plugin.js', import.meta.url));

let dir: string;
let proc: ChildProcess | undefined;
let knobsFile: string;
let endpoint: string;

/** Starts the bed plugin process and waits for its `ready` line. */
async function startPluginProcess(args: string[]): Promise<ChildProcess> {
  const p = spawn(process.execPath, [PLUGIN_BIN, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('kms plugin did not start')), 10_000);
    p.stdout!.on('data', (b: Buffer) => {
      if (b.toString().startsWith('ready ')) {
        clearTimeout(timer);
        resolve();
      }
    });
    p.on('exit', (code) => reject(new Error(`kms plugin exited with ${code}`)));
  });
  return p;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-kms-e2e-'));
  knobsFile = join(dir, 'knobs.json');
  await writeFile(knobsFile, '{}');
  const socket = join(dir, 'kmsplugin', 'grpc.sock');
  endpoint = `unix://${socket}`;
  proc = await startPluginProcess(['--socket', socket, '--knobs-file', knobsFile]);
});

afterAll(async () => {
  if (proc && proc.exitCode === null) {
    const exited = new Promise((r) => proc!.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  }
  await rm(dir, { recursive: true, force: true });
});

/** Writes the knobs and waits until the plugin says they are in force (it polls every 200 ms). */
async function setKnobs(knobs: object): Promise<void> {
  const text = JSON.stringify({ ...knobs, seq: ++seq });
  await writeFile(knobsFile, text);
  for (let i = 0; i < 100; i++) {
    if ((await readFile(`${knobsFile}.applied`, 'utf8').catch(() => '')) === text) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the kms plugin did not apply the knobs within 5s');
}
let seq = 0;

describe('k8s-encrypt kms health (built CLI, plugin process)', () => {
  it('exits 0 with a ✓ report for a healthy plugin', async () => {
    await setKnobs({});
    const r = await runCli(['kms', 'health', '--endpoint', endpoint]);
    expect(r.exitCode).toBe(0);
    expect(String(r.stdout)).toContain('(v2): healthy');
    for (const name of ['status', 'healthz', 'version', 'key-id', 'round-trip']) expect(String(r.stdout)).toMatch(new RegExp(`✓ ${name}`));
    expect(String(r.stdout)).toContain('key id: bed-kek-1');
  });

  it('--json gives the report with every check', async () => {
    const r = await runCli(['--json', 'kms', 'health', '--endpoint', endpoint, '--timeout', '2s']);
    expect(r.exitCode).toBe(0);
    const j = jsonOf(r);
    expect(j.ok).toBe(true);
    expect(j.kmsHealth.keyId).toBe('bed-kek-1');
    expect(j.kmsHealth.checks.map((c: any) => c.name)).toEqual(['status', 'healthz', 'version', 'key-id', 'round-trip']);
  });

  it('exits 3 with ✗ on the failed check when the plugin answers the wrong version', async () => {
    await setKnobs({ wrongVersion: true });
    const r = await runCli(['kms', 'health', '--endpoint', endpoint]);
    expect(r.exitCode).toBe(3);
    expect(String(r.stdout)).toContain('✗ version');
    expect(String(r.stdout)).toContain('✓ healthz');
    expect(String(r.stderr)).toMatch(/error: KMS plugin at unix:\/\/.* is not healthy: version: version is "v1", expected "v2"/);
  });

  it('exits 3 with a timeout message when the plugin is slower than --timeout, as one JSON error', async () => {
    await setKnobs({ delayMs: 2000 });
    const r = await runCli(['--json', 'kms', 'health', '--endpoint', endpoint, '--timeout', '300ms']);
    expect(r.exitCode).toBe(3);
    const j = jsonOf(r);
    expect(j.ok).toBe(false);
    expect(j.error.kind).toBe('cluster');
    expect(j.error.message).toContain(`did not answer within 300ms`);
    expect(j.error.details.kmsHealth.checks[0]).toMatchObject({ name: 'status', ok: false });
  });

  it('exits 3 when the plugin is down (no socket)', async () => {
    await setKnobs({ down: true });
    const r = await runCli(['kms', 'health', '--endpoint', endpoint]);
    expect(r.exitCode).toBe(3);
    expect(String(r.stderr)).toContain('is not running: the socket does not exist');
    await setKnobs({});
  });

  it('exits 2 for an endpoint that is not unix://, and for a bad --timeout', async () => {
    const a = await runCli(['kms', 'health', '--endpoint', 'tcp://127.0.0.1:9']);
    expect(a.exitCode).toBe(2);
    expect(String(a.stderr).trim().split('\n')).toHaveLength(1);
    const b = await runCli(['kms', 'health', '--endpoint', endpoint, '--timeout', 'soon']);
    expect(b.exitCode).toBe(2);
    expect(String(b.stderr)).toContain('--timeout must be a duration');
    const c = await runCli(['kms', 'health']);
    expect(c.exitCode).toBe(2);
    expect(String(c.stderr)).toContain("required option '--endpoint");
  });
});

describe('k8s-encrypt kms plugin-manifest (built CLI)', () => {
  it('prints a static pod for ack-kms-plugin on stdout and notes on stderr', async () => {
    const r = await runCli([
      'kms', 'plugin-manifest', '--plugin', 'ack-kms-plugin', '--region', 'cn-hangzhou',
      '--key-id', 'key-hzz62f1cb0c3ad1d1a2b3c', '--credentials-file', '/etc/kubernetes/kmsplugin/credentials',
    ]);
    expect(r.exitCode).toBe(0);
    const doc = parse(String(r.stdout));
    expect(doc.kind).toBe('Pod');
    expect(doc.spec.volumes[0].hostPath.type).toBe('DirectoryOrCreate');
    expect(String(r.stderr)).toContain('save it as /etc/kubernetes/manifests/ack-kms-plugin.yaml');
  });

  it('prints a Deployment for aws-encryption-provider, warning about the reboot deadlock', async () => {
    const r = await runCli([
      'kms', 'plugin-manifest', '--plugin', 'aws-encryption-provider', '--variant', 'deployment', '--replicas', '3',
      '--region', 'us-west-2', '--key-arn', 'arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab',
      '--image', 'registry.example.com/aws-encryption-provider:v1.2.0', '--credentials-secret', 'aws-kms-creds',
    ]);
    expect(r.exitCode).toBe(0);
    const doc = parse(String(r.stdout));
    expect(doc.kind).toBe('Deployment');
    expect(doc.spec.template.spec.tolerations[0].key).toBe('node-role.kubernetes.io/control-plane');
    expect(String(r.stdout)).toContain('can deadlock a control-plane reboot');
    expect(String(r.stderr)).toMatch(/warning: .*deadlock a control-plane reboot/);
  });

  it('--json carries the manifest and the endpoint', async () => {
    const r = await runCli([
      '--json', 'kms', 'plugin-manifest', '--plugin', 'ack-kms-plugin', '--region', 'cn-hangzhou',
      '--key-id', 'key-hzz62f1cb0c3ad1d1a2b3c', '--instance-role',
    ]);
    expect(r.exitCode).toBe(0);
    const j = jsonOf(r);
    expect(j).toMatchObject({ ok: true, plugin: 'ack-kms-plugin', variant: 'static-pod', endpoint: 'unix:///var/run/kmsplugin/grpc.sock' });
    expect(parse(j.manifest).kind).toBe('Pod');
  });

  it('exits 2 with one line for a missing option and prints no manifest', async () => {
    const r = await runCli(['kms', 'plugin-manifest', '--plugin', 'ack-kms-plugin', '--region', 'cn-hangzhou', '--instance-role']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stdout)).toBe('');
    expect(String(r.stderr).trim().split('\n')).toEqual([expect.stringMatching(/^error: missing required option for ack-kms-plugin --variant static-pod: --key-id/)]);
  });

  it('exits 2 for an unknown plugin (commander choices)', async () => {
    const r = await runCli(['kms', 'plugin-manifest', '--plugin', 'vault']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toContain('vault');
  });
});
