import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Decrypter, armor, generateIdentity, identityToRecipient } from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli';

/**
 * keys export / import through the built CLI. The bundle is opened here with the age library
 * directly (not the project's escrow code) to check what is really inside and that nothing is
 * plaintext on disk.
 */
// The rotation fixture: key2 (0x22 x 32) writes, key1 (0x11 x 32) reads.
const CONFIG = readFileSync(fileURLToPath(new URL('../fixtures/configs/aescbc-two-keys.yaml', import.meta.url)), 'utf8');
const KEY1 = Buffer.alloc(32, 0x22).toString('base64');

describe('k8s-encrypt keys export / import', () => {
  let dir: string;
  let identity: string;
  let recipient: string;
  const cfg = () => join(dir, 'config.yaml');

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-keys-'));
    await writeFile(cfg(), CONFIG, { mode: 0o600 });
    identity = await generateIdentity();
    recipient = await identityToRecipient(identity);
    await writeFile(join(dir, 'id.txt'), `# created: test\n# public key: ${recipient}\n${identity}\n`, { mode: 0o600 });
    await writeFile(join(dir, 'pass.txt'), 'correct horse battery staple\n', { mode: 0o600 });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('round trip with an age identity: 0600 bundle, no key bytes on disk or in output, config back byte for byte', async () => {
    const out = join(dir, 'bundle.age');
    const r = await runCli(['--json', '--state-dir', join(dir, 'state'), 'keys', 'export', '--config', cfg(), '--recipient', recipient, '--out', out]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const j = jsonOf(r);
    expect(j.keys.map((k: { name: string }) => k.name)).toEqual(['key2', 'key1']);
    expect(j.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(`${r.stdout}${r.stderr}`).not.toContain(KEY1);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    const sealed = await readFile(out, 'utf8');
    expect(sealed).toMatch(/^-----BEGIN AGE ENCRYPTED FILE-----/);
    expect(sealed).not.toContain(KEY1);
    expect(sealed).not.toContain('key2');
    // What age itself reads from it.
    const d = new Decrypter();
    d.addIdentity(identity);
    const inside = JSON.parse(await d.decrypt(armor.decode(sealed), 'text'));
    expect(inside.config).toBe(CONFIG);
    expect(inside.keys[0]).toMatchObject({ provider: 'aescbc', name: 'key2', secret: KEY1 });
    // The state dir records the escrow (no key bytes).
    const records = await readFile(join(dir, 'state', 'escrow.json'), 'utf8');
    expect(JSON.parse(records).records[0]).toMatchObject({ bundle: out, fingerprint: j.fingerprint, keys: [{ name: 'key2' }, { name: 'key1' }] });
    expect(records).not.toContain(KEY1);

    const back = join(dir, 'recovered.yaml');
    const imp = await runCli(['--json', 'keys', 'import', out, '--identity', join(dir, 'id.txt'), '--out', back]);
    expect(imp.exitCode, String(imp.stderr)).toBe(0);
    expect(await readFile(back, 'utf8')).toBe(CONFIG);
    expect((await stat(back)).mode & 0o777).toBe(0o600);
    expect(imp.stdout).not.toContain(KEY1);

    // A second import over it is refused without --force.
    const again = await runCli(['keys', 'import', out, '--identity', join(dir, 'id.txt'), '--out', back]);
    expect(again.exitCode).toBe(6);
  });

  it('an identity with a typo is one usage line (exit 2) that does not quote the almost-right private key', async () => {
    const out = join(dir, 'bundle-typo.age');
    expect((await runCli(['keys', 'export', '--config', cfg(), '--recipient', recipient, '--out', out])).exitCode).toBe(0);
    // One character changed: the prefix is right, the checksum is not.
    const last = identity.at(-1) === 'Q' ? 'P' : 'Q';
    const typo = `${identity.slice(0, -1)}${last}`;
    await writeFile(join(dir, 'typo.txt'), `${typo}\n`, { mode: 0o600 });
    for (const json of [[], ['--json']]) {
      const r = await runCli([...json, 'keys', 'import', out, '--identity', join(dir, 'typo.txt'), '--out', join(dir, 'never.yaml')]);
      expect(r.exitCode, String(r.stderr)).toBe(2);
      expect(`${r.stdout}${r.stderr}`).toMatch(/not a valid age identity/);
      expect(`${r.stdout}${r.stderr}`).not.toContain(typo.slice(20, 40));
      expect(`${r.stdout}${r.stderr}`).not.toContain(typo.slice(20, 40).toLowerCase());
    }
    await expect(stat(join(dir, 'never.yaml'))).rejects.toThrow();
  });

  it('round trip with a passphrase from a file and from stdin; a wrong passphrase writes nothing', async () => {
    const out = join(dir, 'pass.age');
    const r = await runCli(['--state-dir', join(dir, 'state'), 'keys', 'export', '--config', cfg(), '--passphrase-file', join(dir, 'pass.txt'), '--out', out], { timeoutMs: 180_000 });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    // age's scrypt stanza: a passphrase bundle, not one sealed to a recipient.
    expect(Buffer.from(armor.decode(await readFile(out, 'utf8'))).toString('latin1')).toMatch(/^age-encryption.org\/v1\n-> scrypt /);

    const back = join(dir, 'from-pass.yaml');
    const imp = await runCli(['keys', 'import', out, '--passphrase-stdin', '--out', back], { input: 'correct horse battery staple\n', timeoutMs: 180_000 });
    expect(imp.exitCode, String(imp.stderr)).toBe(0);
    expect(await readFile(back, 'utf8')).toBe(CONFIG);

    const wrong = join(dir, 'wrong.yaml');
    const bad = await runCli(['keys', 'import', out, '--passphrase-stdin', '--out', wrong], { input: 'not it\n', timeoutMs: 180_000 });
    expect(bad.exitCode).toBe(2);
    expect(String(bad.stderr)).toMatch(/cannot decrypt/);
    expect((await readdir(dir)).includes('wrong.yaml')).toBe(false);
  });

  it.each([
    [['keys', 'export'], /needs --recipient/],
    [['keys', 'export', '--recipient', 'ssh-rsa AAAA'], /is not an age recipient/],
    [['keys', 'export', '--recipient', 'age1x', '--passphrase-stdin'], /give one of/],
  ])('refuses %j with exit 2 and writes nothing', async (args, msg) => {
    const state = join(dir, 'state-refused');
    const r = await runCli(['--state-dir', state, ...args, '--config', join(dir, 'config.yaml')]);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr).split('\n')[0]).toMatch(msg);
    await expect(stat(state)).rejects.toThrow();
  });
});
