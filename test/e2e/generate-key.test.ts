import { describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli';

describe('k8s-encrypt generate-key', () => {
  it('prints a 32-byte base64 key by default and nothing on stderr', async () => {
    const r = await runCli(['generate-key']);
    expect(r.exitCode).toBe(0);
    expect(Buffer.from(String(r.stdout).trim(), 'base64')).toHaveLength(32);
    expect(r.stderr).toBe('');
  });

  it('gives a JSON result with --json', async () => {
    const r = await runCli(['--json', 'generate-key', '--provider', 'aesgcm', '--bytes', '16']);
    expect(r.exitCode).toBe(0);
    const j = jsonOf(r);
    expect(j).toMatchObject({ ok: true, provider: 'aesgcm', bytes: 16 });
    expect(Buffer.from(j.key, 'base64')).toHaveLength(16);
  });

  it.each([
    [['generate-key', '--provider', 'secretbox', '--bytes', '16'], /secretbox key must be 32 bytes/],
    [['generate-key', '--provider', 'rot13'], /Allowed choices are aescbc, aesgcm, secretbox/],
    [['generate-key', '--bytes', 'x'], /whole number/],
  ])('refuses %j with exit 2 and a one-line error', async (args, msg) => {
    const r = await runCli(args);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(String(r.stderr).split('\n')[0]).toMatch(msg);
  });

  it('reports errors as JSON on stdout with --json', async () => {
    const r = await runCli(['generate-key', '--json', '--provider', 'secretbox', '--bytes', '24']);
    expect(r.exitCode).toBe(2);
    expect(jsonOf(r)).toMatchObject({ ok: false, error: { exitCode: 2, kind: 'usage' } });
  });
});
