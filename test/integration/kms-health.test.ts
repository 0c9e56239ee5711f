import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectKmsV1, connectKmsV2 } from '../../src/kms/client';
import { assertKmsHealthy, checkKmsHealth, type KmsHealthReport } from '../../src/kms/health';
import { CliError, ExitCode } from '../../src/ui/errors';
import { startKmsPlugin, type KmsPlugin, type KmsPluginApi, type KmsPluginKnobs } from '../bed/kms-plugin';

let dir: string;
let plugin: KmsPlugin | undefined;
let n = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-kms-'));
});
afterEach(async () => {
  await plugin?.stop();
  plugin = undefined;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function start(knobs: KmsPluginKnobs = {}, api: KmsPluginApi = 'v2'): Promise<KmsPlugin> {
  plugin = await startKmsPlugin({ socketPath: join(dir, `p${n++}`, 'grpc.sock'), api, ...knobs });
  return plugin;
}

const check = (r: KmsHealthReport, name: string) => r.checks.find((c) => c.name === name);

describe('kms health against the bed plugin', () => {
  it('passes every v2 check on a healthy plugin and reports the key id', async () => {
    const p = await start();
    const r = await checkKmsHealth(p.endpoint, { apiVersion: 'v2', timeoutMs: 3000 });
    expect(r.ok).toBe(true);
    expect(r.keyId).toBe('bed-kek-1');
    expect(r.checks.map((c) => [c.name, c.ok])).toEqual([
      ['status', true],
      ['healthz', true],
      ['version', true],
      ['key-id', true],
      ['round-trip', true],
    ]);
    expect(p.stats()).toMatchObject({ status: 1, encrypt: 1, decrypt: 1 });
    await expect(assertKmsHealthy(p.endpoint)).resolves.toMatchObject({ ok: true });
  });

  it('passes the v1 checks on a v1 plugin', async () => {
    const p = await start({}, 'v1');
    const r = await checkKmsHealth(p.endpoint, { apiVersion: 'v1', timeoutMs: 3000 });
    expect(r.ok).toBe(true);
    expect(r.pluginVersion).toBe('v1beta1');
    expect(r.runtime).toBe('k8s-encrypt-bed-kms 0.1.0');
    expect(r.checks.map((c) => [c.name, c.ok])).toEqual([
      ['version', true],
      ['round-trip', true],
    ]);
  });

  it('fails, naming the socket, when the plugin is down', async () => {
    const p = await start({ down: true });
    const r = await checkKmsHealth(p.endpoint, { timeoutMs: 2000 });
    expect(r.ok).toBe(false);
    expect(r.checks).toHaveLength(1);
    expect(check(r, 'status')!.detail).toBe(`KMS plugin at ${p.endpoint} is not running: the socket does not exist`);
  });

  it('fails with a timeout when the plugin answers slower than the timeout', async () => {
    const p = await start({ delayMs: 1500 });
    const r = await checkKmsHealth(p.endpoint, { timeoutMs: 300 });
    expect(r.ok).toBe(false);
    expect(check(r, 'status')!.detail).toBe(`KMS plugin at ${p.endpoint} did not answer within 300ms (v2 Status)`);
    expect(check(r, 'status')!.ms).toBeGreaterThanOrEqual(250);
  });

  it('passes when the plugin is slow but within the timeout', async () => {
    const p = await start({ delayMs: 100 });
    expect((await checkKmsHealth(p.endpoint, { timeoutMs: 3000 })).ok).toBe(true);
  });

  const failures: Array<[string, KmsPluginKnobs, string, string]> = [
    ['unhealthy', { unhealthy: true }, 'healthz', 'healthz is "err", expected "ok"'],
    ['wrong version', { wrongVersion: true }, 'version', 'version is "v1", expected "v2"'],
    ['broken round trip', { brokenRoundTrip: true }, 'round-trip', 'Decrypt did not return the value that was encrypted'],
  ];
  it.each(failures)('fails on a plugin that is %s, and only that check fails', async (_what, knobs, name, detail) => {
    const p = await start(knobs);
    const r = await checkKmsHealth(p.endpoint, { timeoutMs: 3000 });
    expect(r.ok).toBe(false);
    expect(r.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual([name]);
    expect(check(r, name)!.detail).toContain(detail);
    const err = await assertKmsHealthy(p.endpoint).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Cluster);
    expect((err as CliError).message).toContain(`${name}: ${detail}`);
    expect((err as CliError).message).not.toContain('\n');
  });

  it('fails a v2 check against a v1-only plugin with a hint about the API version', async () => {
    const p = await start({}, 'v1');
    const r = await checkKmsHealth(p.endpoint, { apiVersion: 'v2', timeoutMs: 3000 });
    expect(r.ok).toBe(false);
    expect(check(r, 'status')!.detail).toBe(`KMS plugin at ${p.endpoint} does not implement v2 Status`);
  });

  it('fails the v1 version check on a plugin answering another version', async () => {
    const p = await start({ wrongVersion: true }, 'v1');
    const r = await checkKmsHealth(p.endpoint, { apiVersion: 'v1', timeoutMs: 3000 });
    expect(r.ok).toBe(false);
    expect(check(r, 'version')!.detail).toBe('version is "v2", expected "v1beta1"');
  });

  it('refuses endpoints that are not unix://', async () => {
    for (const bad of ['tcp://127.0.0.1:1234', '/var/run/kmsplugin/grpc.sock', 'unix://relative/grpc.sock']) {
      const err = await checkKmsHealth(bad).catch((e: unknown) => e);
      expect(err, bad).toBeInstanceOf(CliError);
      expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    }
  });
});

describe('kms clients against the bed plugin', () => {
  it('keeps data wrapped under an old key id readable after a key id rotation (v2)', async () => {
    const p = await start();
    const c = connectKmsV2(p.endpoint);
    try {
      const before = await c.encrypt('uid-1', Buffer.from('seed-one'));
      expect(before.keyId).toBe('bed-kek-1');
      await p.setKnobs({ keyId: 'bed-kek-2' });
      expect((await c.status()).keyId).toBe('bed-kek-2');
      const after = await c.encrypt('uid-2', Buffer.from('seed-two'));
      expect(after.keyId).toBe('bed-kek-2');
      expect(Buffer.from(await c.decrypt('uid-3', before)).toString()).toBe('seed-one');
      expect(Buffer.from(await c.decrypt('uid-4', after)).toString()).toBe('seed-two');
    } finally {
      c.close();
    }
  });

  it('keeps data readable across a key id rotation (v1) and serves both APIs on one socket', async () => {
    const p = await start({}, 'both');
    const v1 = connectKmsV1(p.endpoint);
    try {
      const old = await v1.encrypt(Buffer.from('dek-one'));
      await p.setKnobs({ keyId: 'bed-kek-2' });
      expect(Buffer.from(await v1.decrypt(old)).toString()).toBe('dek-one');
      expect((await checkKmsHealth(p.endpoint, { apiVersion: 'v2' })).keyId).toBe('bed-kek-2');
    } finally {
      v1.close();
    }
  });

  it('comes back after being down', async () => {
    const p = await start();
    await p.setKnobs({ down: true });
    expect((await checkKmsHealth(p.endpoint, { timeoutMs: 1000 })).ok).toBe(false);
    await p.setKnobs({ down: false });
    expect((await checkKmsHealth(p.endpoint, { timeoutMs: 3000 })).ok).toBe(true);
  });
});
