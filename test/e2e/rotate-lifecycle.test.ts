// One control plane, a few hundred Secrets: init, rotate-key twice, a provider change to secretbox,
// then disable. After each command every Secret reads back with its original data and its raw etcd
// value carries exactly the expected prefix.
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdPrefixCounts, secretHashes } from '../../bench/reencrypt';
import { startBed, type Bed } from '../bed/index';
import { jsonOf, runCli } from '../helpers/cli';

const CONFIG_REL = 'etc/kubernetes/encryption/config.yaml';
const SECRETS = 300;

let bed: Bed;
let before: Map<string, string>;
const root = () => bed.nodes[0]!.root;
const cli = (...args: string[]) => runCli([...bed.nodes[0]!.cliArgs, '--json', ...args]);
const writeKey = async () => {
  const cfg = parse(await readFile(join(root(), CONFIG_REL), 'utf8'));
  const first = cfg.resources[0].providers[0];
  const kind = Object.keys(first)[0]!;
  return `k8s:enc:${kind}:v1:${first[kind].keys[0].name}`;
};

/** Every Secret reads back unchanged, and its raw value is under exactly `label`. */
async function allUnder(label: string): Promise<void> {
  expect(await secretHashes(await bed.api(0))).toEqual(before);
  expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ [label]: before.size });
}

/** sha256 over every file (path, mode, bytes) of the node's etc/ and state dir. */
async function hashTree(): Promise<string> {
  const h = createHash('sha256');
  for (const top of ['etc', 'var/lib']) {
    const dir = join(root(), top);
    const names = (await readdir(dir, { recursive: true }).catch(() => [] as string[])).sort();
    for (const n of names) {
      const p = join(dir, n);
      const s = await stat(p);
      h.update(`${relative(root(), p)}:${s.mode}:`);
      if (s.isFile()) h.update(await readFile(p));
    }
  }
  return h.digest('hex');
}

beforeAll(async () => {
  bed = await startBed({ secrets: SECRETS });
  before = await secretHashes(await bed.api(0));
  expect(before.size).toBe(SECRETS);
  const r = await cli('--yes', 'init');
  expect(r.exitCode, String(r.stdout) + String(r.stderr)).toBe(0);
}, 90_000);
afterAll(async () => bed?.stop());

describe('rotate-key, provider change and disable on one control plane', () => {
  it('init leaves every Secret under the aescbc key', async () => {
    await allUnder(await writeKey());
  });

  it('--dry-run prints each stage diff with keys redacted and writes nothing', async () => {
    const tree = await hashTree();
    const starts = bed.nodes[0]!.apiserverStarts();
    const r = await cli('rotate-key', '--dry-run');
    expect(r.exitCode, String(r.stdout) + String(r.stderr)).toBe(0);
    const j = jsonOf(r);
    expect(j.stages.map((s: any) => s.name)).toEqual(['promote', 'rewrite', 'prune']);
    expect(j.stages[0].diff).toMatch(/\+.*name: key-/);
    const key = parse(await readFile(join(root(), CONFIG_REL), 'utf8')).resources[0].providers[0].aescbc.keys[0].secret;
    expect(String(r.stdout) + String(r.stderr)).not.toContain(key);
    expect(String(r.stdout)).toContain('<redacted>');
    expect(await hashTree()).toBe(tree);
    expect(bed.nodes[0]!.apiserverStarts()).toBe(starts);
  }, 30_000);

  it('rotate-key --yes twice: each time a new key writes and every Secret is under it', async () => {
    let previous = await writeKey();
    for (let i = 0; i < 2; i++) {
      const r = await cli('--yes', 'rotate-key');
      expect(r.exitCode, String(r.stdout) + String(r.stderr)).toBe(0);
      const j = jsonOf(r);
      expect(j.state).toBe('done');
      const now = await writeKey();
      expect(now).not.toBe(previous);
      // The new key is in the file only: never in the output, the journal or the logs we print.
      const secret = parse(await readFile(join(root(), CONFIG_REL), 'utf8')).resources[0].providers[0].aescbc.keys[0].secret;
      expect(String(r.stdout) + String(r.stderr)).not.toContain(secret);
      expect(await readFile(join(root(), 'var/lib/k8s-encrypt/journals/rotate-key.json'), 'utf8')).not.toContain(secret);
      expect(now).toBe(`k8s:enc:aescbc:v1:${j.target.name}`);
      await allUnder(now);
      // Pruned: only the new key is left.
      expect(parse(await readFile(join(root(), CONFIG_REL), 'utf8')).resources[0].providers).toHaveLength(1);
      // Key material left behind is named, not hidden: the config holds the new key, the backups
      // the old ones, and the transition's base copy is gone.
      const oldName = previous.split(':')[4]!;
      const files = new Map<string, string[]>(j.keyFiles.map((k: { file: string; keys: string[] }) => [k.file, k.keys]));
      expect(files.get(join(root(), CONFIG_REL))).toEqual([j.target.name]);
      expect([...files.entries()].some(([f, keys]) => f.includes('/backups/') && keys.includes(oldName))).toBe(true);
      expect(j.notes.join(' ')).toMatch(/aescbc is the default provider.*secretbox, aesgcm .* and KMS v2 are stronger/);
      expect((await readdir(join(root(), 'var/lib/k8s-encrypt/transitions'))).filter((n) => n.endsWith('.base.yaml'))).toEqual([]);
      previous = now;
    }
  }, 90_000);

  it('--if-older-than does nothing (exit 0) while the write key is younger', async () => {
    const tree = await hashTree();
    const r = await cli('--yes', 'rotate-key', '--if-older-than', '90d');
    expect(r.exitCode, String(r.stdout) + String(r.stderr)).toBe(0);
    expect(jsonOf(r)).toMatchObject({ rotated: false, reason: 'younger', ageSource: 'from its name' });
    expect(await hashTree()).toBe(tree);
  }, 30_000);

  it('--if-older-than rotates once the write key is older (dry run: the plan, nothing written)', async () => {
    await new Promise((r) => setTimeout(r, 1100));
    const tree = await hashTree();
    const r = await cli('rotate-key', '--if-older-than', '1s', '--dry-run');
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(jsonOf(r)).toMatchObject({ dryRun: true, kind: 'rotate' });
    expect(await hashTree()).toBe(tree);
  }, 30_000);

  it('a provider change to secretbox (under a name of the operator\'s choosing)', async () => {
    const r = await cli('--yes', 'rotate-key', '--provider', 'secretbox', '--key-name', 'sb-one');
    expect(r.exitCode, String(r.stdout) + String(r.stderr)).toBe(0);
    const label = await writeKey();
    expect(label).toBe('k8s:enc:secretbox:v1:sb-one');
    await allUnder(label);
    // A key not named by k8s-encrypt: its age comes from the file's mtime, and the output says so.
    const young = await cli('--yes', 'rotate-key', '--if-older-than', '90d');
    expect(young.exitCode).toBe(0);
    const j = jsonOf(young);
    expect(j).toMatchObject({ rotated: false, writeKey: 'sb-one', ageSource: "the config file's mtime" });
    expect(j.warnings.join('\n')).toMatch(/not named by k8s-encrypt.*modification time/);
  }, 60_000);

  it('disable without --yes and without a terminal is refused before anything changes', async () => {
    const tree = await hashTree();
    const r = await cli('disable');
    expect(r.exitCode).toBe(2);
    expect(jsonOf(r).error.message).toMatch(/confirmation needed/);
    expect(await hashTree()).toBe(tree);
  }, 30_000);

  it('disable --yes: every Secret plaintext, flag and mount gone, config kept as a 0600 backup', async () => {
    // The dry run's kubeadm-config change (the prune stage's) is what the run writes.
    const api = await bed.api();
    const CM = '/api/v1/namespaces/kube-system/configmaps/kubeadm-config';
    const cm = (await api.get(CM)).body;
    const d = await cli('disable', '--dry-run');
    expect(d.exitCode, String(d.stderr)).toBe(0);
    const prune = jsonOf(d).stages.find((st: { name: string }) => st.name === 'prune');
    const sha = (t: string) => createHash('sha256').update(t).digest('hex');
    expect(prune.kubeadmConfig).toMatchObject({ status: 'update', inputSha256: sha(cm.data.ClusterConfiguration), resourceVersion: cm.metadata.resourceVersion });
    expect(prune.kubeadmConfig.diff).toMatch(/^-\s+- name: encryption-provider-config$/m);
    const r = await cli('--yes', 'disable');
    expect(r.exitCode, String(r.stdout) + String(r.stderr)).toBe(0);
    expect(jsonOf(r).state).toBe('done');
    await allUnder('plaintext');
    const manifest = await readFile(bed.nodes[0]!.manifest, 'utf8');
    expect(manifest).not.toContain('--encryption-provider-config');
    expect(manifest).not.toContain('encryption-config');
    await expect(stat(join(root(), CONFIG_REL))).rejects.toThrow();
    const backups = join(root(), 'var/lib/k8s-encrypt/backups');
    const kept = (await readdir(backups)).filter((n) => n.startsWith('config.yaml.'));
    expect(kept.length).toBeGreaterThan(0);
    expect(kept.length).toBeLessThanOrEqual(10);
    for (const n of kept) expect((await stat(join(backups, n))).mode & 0o777).toBe(0o600);
    const cc: string = (await api.get(CM)).body.data.ClusterConfiguration;
    expect(cc).not.toContain('encryption-provider-config');
    expect(sha(cc)).toBe(prune.kubeadmConfig.outputSha256);
  }, 60_000);
});
