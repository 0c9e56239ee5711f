// `k8s-encrypt init` through the built CLI against the bed: the whole flow on one node with a few
// hundred Secrets, --dry-run that writes nothing, a second run with nothing to do, rollback when the
// apiserver crashes with the new flag, and kill -9 mid-run then a resume that keeps the same key.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { join, relative } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdPrefixCounts, secretHashes } from '../../bench/reencrypt';
import { startBed, type Bed, type TestApi } from '../bed/index';
import { BIN, jsonOf, NODE, runCli } from '../helpers/cli';
import { unifiedDiff } from '../../src/manifest/patch';

const CONFIG_REL = 'etc/kubernetes/encryption/config.yaml';
const JOURNAL_REL = 'var/lib/k8s-encrypt/journals/init.json';

/** sha256 over every file (path, mode, bytes) under root, except the pods' logs (they grow). */
async function hashTree(root: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (dir: string): Promise<void> => {
    for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(dir, e.name);
      const rel = relative(root, p);
      if (rel === 'var/log' || rel.startsWith('bed')) continue;
      const st = await stat(p);
      h.update(`${rel}\0${st.mode}\0`);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) h.update(await readFile(p));
    }
  };
  await walk(root);
  return h.digest('hex');
}

const keyOf = (configText: string) => parse(configText).resources[0].providers[0].aescbc.keys[0].secret as string;

const KUBEADM_CM = '/api/v1/namespaces/kube-system/configmaps/kubeadm-config';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

describe('init on one control plane with a few hundred Secrets', () => {
  let bed: Bed;
  let api: TestApi;
  let before: Map<string, string>;
  /** What the dry run printed, and the ClusterConfiguration it was planned from. */
  let dry: { kubeadmConfig: { inputSha256: string; outputSha256: string; resourceVersion: string; diff: string }; manifest: { outputSha256: string } };
  let ccBefore: string;
  beforeAll(async () => {
    bed = await startBed({ secrets: 300 });
    api = await bed.api();
    before = await secretHashes(api);
  }, 120_000);
  afterAll(() => bed?.stop());

  it('--dry-run prints the whole plan with the key redacted and writes nothing', async () => {
    const n = bed.nodes[0]!;
    const h0 = await hashTree(n.root);
    const r = await runCli([...n.cliArgs, '--json', 'init', '--dry-run']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const j = jsonOf(r);
    expect(j).toMatchObject({ ok: true, dryRun: true, mode: 'single', provider: 'aescbc', kubeadmConfig: { status: 'update', apiVersion: 'kubeadm.k8s.io/v1beta4' } });
    expect(j.kubeadmConfig.diff).toContain('+    - name: encryption-provider-config');
    expect(j.config.text).toContain('secret: <redacted>');
    expect(String(r.stdout) + String(r.stderr)).not.toMatch(/secret"?: *"?(?!<redacted>)[A-Za-z0-9+/]{20,}/);
    expect(j.manifest.diff).toContain('+        - --encryption-provider-config=');
    // The exact kubeadm-config change, tied to the ConfigMap it was planned from.
    const cm = (await api.get(KUBEADM_CM)).body;
    ccBefore = cm.data.ClusterConfiguration;
    expect(j.kubeadmConfig).toMatchObject({ inputSha256: sha256(ccBefore), resourceVersion: cm.metadata.resourceVersion });
    expect(j.kubeadmConfig.outputSha256).toMatch(/^[0-9a-f]{64}$/);
    dry = j;
    // The transition engine's stages: promote (flag, mount, wait, proof, kubeadm-config), rewrite; no prune.
    expect(j.steps.map((s: { name: string }) => s.name)).toEqual(['promote', 'rewrite']);
    expect(j.kept.join('\n')).toMatch(/identity stays as the last reader/);
    expect(await hashTree(n.root)).toBe(h0);
    expect(n.apiserverStarts()).toBe(1);
  });

  it('init --yes encrypts every Secret, proves it from etcd and leaves the data as it was', async () => {
    const n = bed.nodes[0]!;
    const original = await readFile(n.manifest, 'utf8');
    const r = await runCli([...n.cliArgs, '--yes', '--json', 'init']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const j = jsonOf(r);
    expect(j).toMatchObject({ ok: true, state: 'done', mode: 'single', provider: 'aescbc', proof: { method: 'etcd', weaker: false } });
    expect(['mirror-pod', 'config-info-metric']).toContain(j.evidence.evidence);
    expect(j.rewrite).toMatchObject({ failed: 0 });
    expect(j.rewrite.rewritten).toBeGreaterThanOrEqual(300);
    // The engine's rewrite stage checks etcd afterwards; identity stays as the last reader.
    expect(j.verified).toMatch(new RegExp(`all \\d+ object\\(s\\) of secrets are under aescbc:${j.keyName}`));
    expect(j.kept.join('\n')).toMatch(/identity stays as the last reader/);

    const configText = await readFile(join(n.root, CONFIG_REL), 'utf8');
    const key = keyOf(configText);
    expect(String(r.stdout) + String(r.stderr)).not.toContain(key);
    expect((await stat(join(n.root, CONFIG_REL))).mode & 0o777).toBe(0o600);
    expect(await readFile(join(n.root, JOURNAL_REL), 'utf8')).not.toContain(key);

    const prefix = `k8s:enc:aescbc:v1:${j.keyName}`;
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ [prefix]: before.size });
    const after = await secretHashes(api);
    expect([...after.keys()].filter((k) => k.includes('k8s-encrypt-canary'))).toEqual([]);
    expect(after).toEqual(before);

    // The manifest gained the flag and the mount, nothing else.
    const now = parse(await readFile(n.manifest, 'utf8'));
    const c = now.spec.containers[0];
    c.command = c.command.filter((f: string) => !f.startsWith('--encryption-provider-config='));
    c.volumeMounts = c.volumeMounts.filter((m: { name: string }) => m.name !== 'encryption-config');
    now.spec.volumes = now.spec.volumes.filter((v: { name: string }) => v.name !== 'encryption-config');
    expect(now).toEqual(parse(original));
    expect(await readFile(j.manifestBackup, 'utf8')).toBe(original);

    const cm = await api.get(KUBEADM_CM);
    expect(cm.body.data.ClusterConfiguration).toContain(`encryption-provider-config`);
    expect(cm.body.data.ClusterConfiguration).toContain(join(n.root, 'etc/kubernetes/encryption'));
    // What the dry run printed is what was written: the manifest, and the kubeadm-config change.
    const ccAfter: string = cm.body.data.ClusterConfiguration;
    expect(sha256(ccAfter)).toBe(dry.kubeadmConfig.outputSha256);
    expect(unifiedDiff(ccBefore, ccAfter, 'kube-system/kubeadm-config/ClusterConfiguration')).toBe(dry.kubeadmConfig.diff);
    expect(sha256(await readFile(n.manifest, 'utf8'))).toBe(dry.manifest.outputSha256);
    const step = JSON.parse(await readFile(join(n.root, JOURNAL_REL), 'utf8')).steps.find((s: { name: string }) => s.name === 'promote:kubeadm-config');
    expect(step.output).toEqual({ status: 'updated', apiVersion: 'kubeadm.k8s.io/v1beta4', sha256: dry.kubeadmConfig.outputSha256, replanned: false });
  });

  it('a second init has nothing to do (exit 0) and changes nothing', async () => {
    const n = bed.nodes[0]!;
    const starts = n.apiserverStarts();
    const r = await runCli([...n.cliArgs, '--yes', 'init']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toMatch(/nothing to do/);
    expect(n.apiserverStarts()).toBe(starts);
  });

  it('without our journal, an encrypted node is refused (exit 6) and pointed at status/rotate-key', async () => {
    const n = bed.nodes[0]!;
    const r = await runCli([...n.cliArgs, '--state-dir', join(bed.dir, 'other-state'), '--yes', 'init']);
    expect(r.exitCode).toBe(6);
    expect(String(r.stderr)).toMatch(/already configured.*rotate-key/s);
  });
});

describe('init rollback and resume', () => {
  let bed: Bed;
  beforeAll(async () => {
    bed = await startBed({ secrets: 20 });
  }, 120_000);
  afterAll(() => bed?.stop());

  it('without --yes and without a terminal it asks for confirmation (exit 2) and changes nothing', async () => {
    const n = bed.nodes[0]!;
    const h0 = await hashTree(n.root);
    const r = await runCli([...n.cliArgs, 'init']);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toMatch(/confirmation needed: turn on encryption at rest on cp-0 .*--yes/s);
    expect(await hashTree(n.root)).toBe(h0);
  });

  it('an apiserver that crashes with the new flag is rolled back: exit 5, old manifest, healthy, key kept in a backup', async () => {
    const n = bed.nodes[0]!;
    const original = await readFile(n.manifest, 'utf8');
    await n.setKnobs({ crashOnStartIfFlag: '--encryption-provider-config' });
    const r = await runCli([...n.cliArgs, '--yes', '--json', 'init', '--timeout', '8s']);
    expect(r.exitCode, String(r.stderr)).toBe(5);
    const j = jsonOf(r);
    expect(j.error.kind).toBe('rolled-back');
    expect(j.error.message).toMatch(/did not run the promote config within 8 s.*rolled back.*from .*kube-apiserver\.yaml.*removed .*config\.yaml \(kept as .*\).*healthy again/);
    expect(j.error.hint).toContain('crictl logs');
    expect(await readFile(n.manifest, 'utf8')).toBe(original);
    expect(existsSync(join(n.root, CONFIG_REL))).toBe(false);
    const kept = /kept as (\S+?)\)/.exec(j.error.message)![1]!;
    expect((await stat(kept)).mode & 0o777).toBe(0o600);
    const readyz = await (await bed.api()).get('/readyz');
    expect(readyz.status).toBe(200);
    await n.setKnobs({});
  }, 90_000);

  it('after a rollback, init starts over and succeeds', async () => {
    const n = bed.nodes[0]!;
    const r = await runCli([...n.cliArgs, '--yes', '--json', 'init']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(jsonOf(r).state).toBe('done');
  }, 90_000);
});

describe('kill -9 mid-run, then a re-run', () => {
  let bed: Bed;
  beforeAll(async () => {
    // A slow restart leaves time to kill the CLI while it waits for the apiserver.
    bed = await startBed({ secrets: 40, knobs: { startDelayMs: 4000 } });
  }, 120_000);
  afterAll(() => bed?.stop());

  it('resumes at the first unfinished step with the same key', async () => {
    const n = bed.nodes[0]!;
    const before = await secretHashes(await bed.api());
    const child = spawn(NODE, [BIN, ...n.cliArgs, '--yes', 'init'], { stdio: 'ignore', env: { ...process.env, NO_COLOR: '1', CI: 'true' } });
    const exited = new Promise<void>((res) => child.on('exit', () => res()));
    const journal = join(n.root, JOURNAL_REL);
    const deadline = Date.now() + 30_000;
    let steps: string[] = [];
    while (Date.now() < deadline) {
      try {
        steps = JSON.parse(await readFile(journal, 'utf8')).steps.map((s: { name: string }) => s.name);
      } catch {
        steps = [];
      }
      if (steps.includes('promote:apply')) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    child.kill('SIGKILL');
    await exited;
    expect(steps).toContain('promote:apply');
    expect(steps).not.toContain('promote:wait');
    const keyBefore = keyOf(await readFile(join(n.root, CONFIG_REL), 'utf8'));

    const r = await runCli([...n.cliArgs, '--yes', '--json', 'init']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const j = jsonOf(r);
    expect(j.state).toBe('done');
    expect(j.warnings.join('\n')).toContain('stale lock');
    expect(keyOf(await readFile(join(n.root, CONFIG_REL), 'utf8'))).toBe(keyBefore);
    const rec = JSON.parse(await readFile(journal, 'utf8'));
    expect(rec.status).toBe('done');
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ [`k8s:enc:aescbc:v1:${j.keyName}`]: before.size });
    expect(await secretHashes(await bed.api())).toEqual(before);
  }, 120_000);
});

describe('kill -9 after the manifest patch, before its journal entry', () => {
  let bed: Bed;
  beforeAll(async () => {
    bed = await startBed({ secrets: 20, knobs: { startDelayMs: 4000 } });
  }, 120_000);
  afterAll(() => bed?.stop());

  it('the re-run executes the plan the journal recorded and ends byte-identical to the plan an uninterrupted run writes', async () => {
    const n = bed.nodes[0]!;
    const api = await bed.api();
    const before = await secretHashes(api);
    const keyFile = join(bed.dir, 'resume.key');
    await writeFile(keyFile, `${Buffer.alloc(32, 11).toString('base64')}\n`, { mode: 0o600 });
    const keyArgs = ['--key-file', keyFile, '--key-name', 'key-resume'];
    const original = await readFile(n.manifest, 'utf8');
    // The plan of an uninterrupted run: what it writes, by sha256.
    const d = await runCli([...n.cliArgs, '--json', 'init', '--dry-run', ...keyArgs]);
    expect(d.exitCode, String(d.stderr)).toBe(0);
    const dry = jsonOf(d);

    const child = spawn(NODE, [BIN, ...n.cliArgs, '--yes', 'init', ...keyArgs], { stdio: 'ignore', env: { ...process.env, NO_COLOR: '1', CI: 'true' } });
    const exited = new Promise<void>((res) => child.on('exit', () => res()));
    const journal = join(n.root, JOURNAL_REL);
    const deadline = Date.now() + 30_000;
    let rec: { steps: { name: string }[] } = { steps: [] };
    while (Date.now() < deadline) {
      try {
        rec = JSON.parse(await readFile(journal, 'utf8'));
      } catch {
        rec = { steps: [] };
      }
      if (rec.steps.some((s) => s.name === 'promote:apply')) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    child.kill('SIGKILL');
    await exited;
    const names = rec.steps.map((s) => s.name);
    expect(names).toContain('plan');
    expect(names).toContain('promote:apply');
    expect(names).not.toContain('promote:kubeadm-config');
    const patched = await readFile(n.manifest, 'utf8');
    expect(sha256(patched)).toBe(dry.manifest.outputSha256);
    // A kill one step earlier leaves this journal: the manifest patched, its step not recorded.
    const full = JSON.parse(await readFile(journal, 'utf8'));
    full.steps = full.steps.filter((s: { name: string }) => s.name !== 'promote:apply');
    await writeFile(journal, JSON.stringify(full, null, 2));

    // The resumed run's dry run shows the recorded changes it then executes (not a plan made again
    // from the manifest it already patched), and changes nothing.
    const h0 = await hashTree(n.root);
    const rd = await runCli([...n.cliArgs, '--json', 'init', '--dry-run']);
    expect(rd.exitCode, String(rd.stderr)).toBe(0);
    const resumedDry = jsonOf(rd);
    expect(await hashTree(n.root)).toBe(h0);
    expect(resumedDry.manifest).toMatchObject({ changed: true, inputSha256: dry.manifest.inputSha256, outputSha256: dry.manifest.outputSha256, diff: dry.manifest.diff });
    expect(resumedDry.kubeadmConfig.outputSha256).toBe(dry.kubeadmConfig.outputSha256);
    expect(JSON.stringify(resumedDry.notes ?? [])).not.toMatch(/would re-plan/);

    // Without --json: the lines on stderr say what the re-run does.
    const r = await runCli([...n.cliArgs, '--yes', 'init']);
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(String(r.stdout)).toMatch(/encryption at rest is on: aescbc, key key-resume/);
    expect(String(r.stderr)).toContain('resumed from the plan recorded in the journal');
    expect(String(r.stderr)).toContain('already holds the planned change');
    expect(String(r.stderr)).not.toMatch(/planned again/);
    // Byte for byte what the uninterrupted run's plan writes: the manifest (no restart annotation
    // on top), the config, and the kubeadm-config change (recorded, not skipped).
    const manifest = await readFile(n.manifest, 'utf8');
    expect(manifest).toBe(patched);
    expect(manifest).not.toBe(original);
    expect(sha256(await readFile(join(n.root, CONFIG_REL), 'utf8'))).toBe(dry.config.sha256);
    const cc: string = (await api.get(KUBEADM_CM)).body.data.ClusterConfiguration;
    expect(sha256(cc)).toBe(dry.kubeadmConfig.outputSha256);
    const done = JSON.parse(await readFile(journal, 'utf8'));
    expect(done.status).toBe('done');
    expect(done.steps.find((s: { name: string }) => s.name === 'promote:kubeadm-config').output).toMatchObject({ status: 'updated', sha256: dry.kubeadmConfig.outputSha256, replanned: false });
    // What the resumed dry run showed is what the run wrote and journaled.
    expect(sha256(manifest)).toBe(resumedDry.manifest.outputSha256);
    const recorded = done.steps.find((s: { name: string }) => s.name === 'plan').output.stages.find((s: { manifest?: unknown }) => s.manifest).manifest;
    expect(recorded).toMatchObject({ inputSha256: resumedDry.manifest.inputSha256, outputSha256: resumedDry.manifest.outputSha256, diff: resumedDry.manifest.diff });
    expect(sha256(cc)).toBe(resumedDry.kubeadmConfig.outputSha256);
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ 'k8s:enc:aescbc:v1:key-resume': before.size });
    expect(await secretHashes(api)).toEqual(before);
  }, 120_000);
});

describe('bad input: one clear line, exit 2, nothing changed on disk', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'k8s-encrypt-init-bad-'));
    await mkdir(join(root, 'etc/kubernetes/manifests'), { recursive: true });
    await copyFile(fileURLToPath(new URL('../fixtures/manifests/kubeadm-1.32.yaml', import.meta.url)), join(root, 'etc/kubernetes/manifests/kube-apiserver.yaml'));
    await writeFile(join(root, 'not-base64.key'), 'this is not a key!\n');
    await writeFile(join(root, 'short.key'), `${Buffer.alloc(16, 1).toString('base64')}\n`);
    await writeFile(join(root, 'bad.yaml'), 'kind: [unclosed\n');
  });
  afterAll(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  const cases: { name: string; args: (r: string) => string[]; msg: RegExp }[] = [
    { name: 'missing manifest', args: (r) => ['--manifest', join(r, 'nope.yaml')], msg: /cannot read manifest .*nope\.yaml: it does not exist/ },
    { name: 'manifest that does not parse', args: (r) => ['--manifest', join(r, 'bad.yaml')], msg: /bad\.yaml/ },
    { name: 'key that is not base64', args: (r) => ['--key-file', join(r, 'not-base64.key')], msg: /not valid base64/ },
    { name: 'key of the wrong length', args: (r) => ['--provider', 'secretbox', '--key-file', join(r, 'short.key')], msg: /16 bytes; a secretbox key must be 32 bytes/ },
    { name: 'unknown provider', args: () => ['--provider', 'rot13'], msg: /unknown provider "rot13"/ },
    { name: 'kms without its endpoint', args: () => ['--provider', 'kms', '--kms-name', 'k'], msg: /needs --kms-name and --kms-endpoint/ },
    { name: '--from-config with a key option', args: (r) => ['--from-config', join(r, 'bad.yaml'), '--key-file', join(r, 'short.key')], msg: /--from-config installs the given file as is/ },
    { name: '--from-config - with nothing on stdin', args: () => ['--from-config', '-'], msg: /--from-config -: standard input is empty/ },
    { name: 'a timeout that is not a duration', args: () => ['--timeout', 'soon'], msg: /--timeout "soon" is not a positive duration/ },
    { name: 'no kubeconfig', args: () => [], msg: /kubeconfig/ },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const h0 = await hashTree(root);
      const r = await runCli(['--root', root, '--yes', 'init', ...c.args(root)]);
      expect(r.exitCode, String(r.stderr)).toBe(2);
      const lines = String(r.stderr).trim().split('\n').filter((l) => !/DeprecationWarning|trace-deprecation/.test(l));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(c.msg);
      expect(await hashTree(root)).toBe(h0);
      expect(existsSync(join(root, 'var'))).toBe(false);
    });
  }
});
