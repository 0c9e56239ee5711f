// The safety net through the built CLI on the bed: init --escrow-recipient leaves a verified etcd
// snapshot and an escrow bundle (written before the first encrypted write), and verify-snapshot
// reads every Secret of the snapshots back with the bundle's keys, or names the ones it cannot.
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateIdentity, identityToRecipient } from 'age-encryption';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyCopyLine } from '../../src/init/print';
import { startBed, type Bed } from '../bed/index';
import { jsonOf, runCli } from '../helpers/cli';

const SECRETS = 40;

describe('snapshot, escrow and restore drill around init', () => {
  let bed: Bed;
  let dir: string;
  let idFile: string;
  let recipient: string;
  let init: any;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-safety-'));
    const identity = await generateIdentity();
    recipient = await identityToRecipient(identity);
    idFile = join(dir, 'escrow-id.txt');
    await writeFile(idFile, `${identity}\n`, { mode: 0o600 });
    bed = await startBed({ secrets: SECRETS });
  }, 120_000);
  afterAll(async () => {
    await bed?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a bad --escrow-recipient with exit 2 before anything happens', async () => {
    const n = bed.nodes[0]!;
    const r = await runCli([...n.cliArgs, '--yes', 'init', '--escrow-recipient', 'not-a-key']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toMatch(/--escrow-recipient "not-a-key" is not an age recipient/);
    await expect(stat(join(n.root, 'var/lib/k8s-encrypt'))).rejects.toThrow();
  });

  it('--dry-run says what the snapshot and escrow would do and writes neither', async () => {
    const n = bed.nodes[0]!;
    const r = await runCli([...n.cliArgs, 'init', '--dry-run', '--escrow-recipient', recipient]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stderr)).toMatch(/before the first change: an etcd snapshot into .*var\/lib\/k8s-encrypt\/snapshots/);
    expect(String(r.stderr)).toMatch(/before the key is written: escrow key-\d{8}T\d{6}Z to .*escrow\/key-\d{8}T\d{6}Z\.age/);
    await expect(stat(join(n.root, 'var/lib/k8s-encrypt/snapshots'))).rejects.toThrow();
  });

  it('init --yes --escrow-recipient leaves a verified snapshot and a bundle written before the first encrypted write', async () => {
    const n = bed.nodes[0]!;
    const r = await runCli([...n.cliArgs, '--yes', '--json', 'init', '--escrow-recipient', recipient]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    init = jsonOf(r);
    expect(init.state).toBe('done');
    const snap = init.snapshot;
    expect(snap.path).toMatch(/var\/lib\/k8s-encrypt\/snapshots\/etcd-init-\d{8}T\d{6}Z\.db$/);
    expect(snap.integrity).toBe('etcd sha256 trailer verified');
    const st = await stat(snap.path);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.size).toBe(snap.bytes);
    expect((await execa('sha256sum', [snap.path])).stdout.split(' ')[0]).toBe(snap.sha256);
    expect((await execa('etcdctl', ['snapshot', 'status', snap.path], { env: { ETCDCTL_API: '3' } })).exitCode).toBe(0);

    expect(init.escrow.path).toBe(join(n.root, 'var/lib/k8s-encrypt/escrow', `${init.keyName}.age`));
    expect((await stat(init.escrow.path)).mode & 0o777).toBe(0o600);
    expect(init.escrow.fingerprint).toMatch(/^sha256:/);
    // Journal order: snapshot, escrow, and only then the first config write (the key's first use).
    const journal = JSON.parse(await readFile(join(n.root, 'var/lib/k8s-encrypt/journals/init.json'), 'utf8'));
    const names: string[] = journal.steps.map((s: { name: string }) => s.name);
    const firstWrite = names.findIndex((s) => s.endsWith(':write'));
    expect(names.indexOf('snapshot')).toBe(0);
    expect(names.indexOf('escrow')).toBe(1);
    expect(firstWrite).toBeGreaterThan(1);
    expect(journal.steps[1].output.fingerprint).toBe(init.escrow.fingerprint);
    // What init then tells the operator to keep: the bundle's identity, not "a copy of the config".
    expect(keyCopyLine(init, journal.steps[1].output)).toBe(`key ${init.keyName} is escrowed in ${init.escrow.path}: keep an age identity that opens it safe, apart from this host`);
    // status finds the key escrowed: no warning about it.
    const s = await runCli([...n.cliArgs, '--json', 'status', '--no-etcd']);
    expect(String(s.stderr)).not.toMatch(/no recorded escrow/);
  });

  it('verify-snapshot on the snapshot taken before init: every Secret readable, all plaintext', async () => {
    const r = await runCli(['--json', 'verify-snapshot', init.snapshot.path, '--bundle', init.escrow.path, '--identity', idFile]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const j = jsonOf(r);
    const secrets = j.resources.find((x: { resource: string }) => x.resource === 'secrets');
    expect(secrets.total).toBeGreaterThanOrEqual(SECRETS);
    expect(secrets.readable).toBe(secrets.total);
    expect(secrets.readableBy).toEqual({ plaintext: secrets.total });
    expect(j.snapshot).toMatchObject({ hasHash: true, hashOk: true });
  });

  it('verify-snapshot after init: every Secret under the key; with a config lacking it, the unreadable ones are named', async () => {
    const after = join(dir, 'after.db');
    const e = bed.etcd;
    await execa('etcdctl', [`--endpoints=${e.endpoint}`, `--cacert=${e.caFile}`, `--cert=${e.certFile}`, `--key=${e.keyFile}`, 'snapshot', 'save', after], { env: { ETCDCTL_API: '3' } });
    const ok = await runCli(['--json', 'verify-snapshot', after, '--bundle', init.escrow.path, '--identity', idFile]);
    expect(ok.exitCode, String(ok.stderr)).toBe(0);
    const secrets = jsonOf(ok).resources.find((x: { resource: string }) => x.resource === 'secrets');
    expect(secrets.readableBy).toEqual({ [`aescbc:${init.keyName}`]: secrets.total });
    expect(secrets.total).toBeGreaterThanOrEqual(SECRETS);

    // A config with another key only (the escrowed one lost): every Secret is named as unreadable.
    const other = join(dir, 'other.yaml');
    await writeFile(
      other,
      `apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: some-other-key\n              secret: ${Buffer.alloc(32, 5).toString('base64')}\n      - identity: {}\n`,
      { mode: 0o600 },
    );
    const bad = await runCli(['--json', 'verify-snapshot', after, '--config', other]);
    expect(bad.exitCode).toBe(4);
    const b = jsonOf(bad).resources.find((x: { resource: string }) => x.resource === 'secrets');
    expect(b.readable).toBe(0);
    expect(b.unreadable).toHaveLength(secrets.total);
    expect(b.unreadable.map((u: { namespace: string; name: string }) => `${u.namespace}/${u.name}`)).toContain('default/bed-secret-0');
    expect(b.unreadable[0].storedAs).toBe(`aescbc:${init.keyName}`);
    const human = await runCli(['verify-snapshot', after, '--config', other]);
    expect(human.exitCode).toBe(4);
    expect(String(human.stdout)).toMatch(/bed-secret-\d+ \(aescbc:.*\): no matching key was found/);
  });

  it('rotate-key --escrow-recipient: snapshot and escrow before the promote write; its snapshot reads back under the old key', async () => {
    const n = bed.nodes[0]!;
    const r = await runCli([...n.cliArgs, '--yes', '--json', 'rotate-key', '--escrow-recipient', recipient]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const j = jsonOf(r);
    expect(j.escrow.path).toBe(join(n.root, 'var/lib/k8s-encrypt/escrow', `${j.target.name}.age`));
    const journal = JSON.parse(await readFile(join(n.root, 'var/lib/k8s-encrypt/journals/rotate-key.json'), 'utf8'));
    const names: string[] = journal.steps.map((s: { name: string }) => s.name);
    expect(names.slice(0, 2)).toEqual(['snapshot', 'escrow']);
    expect(names.findIndex((s) => s.endsWith(':write'))).toBeGreaterThan(1);
    // The rotation's bundle holds the new key and the old one: its snapshot (all under the old key) reads back.
    const v = await runCli(['--json', 'verify-snapshot', j.snapshot.path, '--bundle', j.escrow.path, '--identity', idFile]);
    expect(v.exitCode, String(v.stderr)).toBe(0);
    const secrets = jsonOf(v).resources.find((x: { resource: string }) => x.resource === 'secrets');
    expect(secrets.readableBy).toEqual({ [`aescbc:${init.keyName}`]: secrets.total });
    expect(jsonOf(v).keysFrom).toContain(j.escrow.path);
  });

  it('verify-snapshot refuses a damaged snapshot (exit 4) and status warns about a key with no escrow', async () => {
    const bytes = await readFile(init.snapshot.path);
    bytes[bytes.length - 100]! ^= 1;
    const damaged = join(dir, 'damaged.db');
    await writeFile(damaged, bytes, { mode: 0o600 });
    const r = await runCli(['verify-snapshot', damaged, '--bundle', init.escrow.path, '--identity', idFile]);
    expect(r.exitCode).toBe(4);
    expect(String(r.stderr)).toMatch(/fails etcd's integrity check/);

    const n = bed.nodes[0]!;
    await rm(join(n.root, 'var/lib/k8s-encrypt/escrow.json'));
    const s = await runCli([...n.cliArgs, 'status', '--no-etcd']);
    expect(String(s.stderr)).toMatch(/key aescbc:key-\d{8}T\d{6}Z in .* has no recorded escrow/);
  });
});
