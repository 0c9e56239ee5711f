// One lock order for every transition command (init, rotate-key, disable, rollback and the
// --from-config followers), through the built CLI on temp roots: bad input leaves the disk byte for
// byte as it was (no state dir created, whether it fails before the lock or after it), a held lock
// refuses every command before it reads anything that decides, and two concurrent runs of
// different commands meet at that same lock.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliCommand, runCli } from '../helpers/cli';

const MANIFEST = fileURLToPath(new URL('../fixtures/manifests/kubeadm-1.32.yaml', import.meta.url));
const CONFIG = fileURLToPath(new URL('../fixtures/configs/aescbc-two-keys.yaml', import.meta.url));
const MANIFEST_REL = 'etc/kubernetes/manifests/kube-apiserver.yaml';
const LOCK_REL = 'var/lib/k8s-encrypt/k8s-encrypt.lock';

/** Every entry under root (path, type and mode, and a file's bytes), in order. */
async function tree(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(dir, e.name);
      const st = await stat(p);
      const bytes = e.isFile() ? createHash('sha256').update(await readFile(p)).digest('hex') : '';
      out.push(`${relative(root, p)} ${st.mode.toString(8)} ${bytes}`);
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(root);
  return out;
}

/** A root with kubeadm's manifest and the inputs the cases name (no kubeconfig: nothing answers). */
async function makeRoot(prefix: string): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), prefix));
  await mkdir(join(root, 'etc/kubernetes/manifests'), { recursive: true });
  await copyFile(MANIFEST, join(root, MANIFEST_REL));
  await copyFile(CONFIG, join(root, 'good.yaml'));
  await writeFile(join(root, 'bad.yaml'), 'kind: [unclosed\n');
  await writeFile(join(root, 'not-base64.key'), 'this is not a key!\n');
  return root;
}

const oneLine = (stderr: unknown) => String(stderr).trim().split('\n').filter((l) => !/DeprecationWarning|trace-deprecation/.test(l));

describe('bad input: every transition command leaves the disk exactly as it was', () => {
  // Some are refused before the lock (options, files named on the command line, a config that does
  // not parse), others once it is held (the key's content, the manifest, the kubeconfig): the lock
  // takes the state dir it created away again.
  const cases: { name: string; args: (r: string) => string[]; msg: RegExp }[] = [
    { name: 'init: a key file that does not exist', args: (r) => ['init', '--key-file', join(r, 'missing.key')], msg: /cannot read key file .*missing\.key: it does not exist/ },
    { name: 'init: a key that is not base64', args: (r) => ['init', '--key-file', join(r, 'not-base64.key')], msg: /not valid base64/ },
    { name: 'init --dry-run: a key that is not base64', args: (r) => ['init', '--dry-run', '--key-file', join(r, 'not-base64.key')], msg: /not valid base64/ },
    { name: 'init: a manifest that does not parse', args: (r) => ['--manifest', join(r, 'bad.yaml'), 'init'], msg: /bad\.yaml/ },
    { name: 'init: no kubeconfig', args: () => ['init'], msg: /kubeconfig/ },
    { name: 'init --from-config: a file that does not parse', args: (r) => ['init', '--from-config', join(r, 'bad.yaml')], msg: /bad\.yaml/ },
    { name: 'init --from-config -: nothing on stdin', args: () => ['init', '--from-config', '-'], msg: /standard input is empty/ },
    { name: 'rotate-key: a key file that does not exist', args: (r) => ['rotate-key', '--key-file', join(r, 'missing.key')], msg: /cannot read key file .*missing\.key: it does not exist/ },
    { name: 'rotate-key: an unknown stage', args: () => ['rotate-key', '--stage', 'nope'], msg: /unknown stage "nope"/ },
    { name: 'rotate-key: a manifest that does not parse', args: (r) => ['--manifest', join(r, 'bad.yaml'), 'rotate-key'], msg: /bad\.yaml/ },
    { name: 'rotate-key --dry-run: a manifest that does not parse', args: (r) => ['--manifest', join(r, 'bad.yaml'), 'rotate-key', '--dry-run'], msg: /bad\.yaml/ },
    { name: 'rotate-key: no kubeconfig', args: () => ['rotate-key'], msg: /kubeconfig/ },
    { name: 'disable: a manifest that does not parse', args: (r) => ['--manifest', join(r, 'bad.yaml'), 'disable'], msg: /bad\.yaml/ },
    { name: 'disable: no kubeconfig', args: () => ['disable'], msg: /kubeconfig/ },
    { name: 'rollback: a --to file that does not exist', args: (r) => ['rollback', '--to', join(r, 'missing.yaml')], msg: /cannot read backup .*missing\.yaml: it does not exist/ },
    { name: 'rollback: a manifest that does not parse', args: (r) => ['--manifest', join(r, 'bad.yaml'), 'rollback'], msg: /bad\.yaml/ },
    { name: 'rollback --dry-run: no kubeconfig', args: () => ['rollback', '--dry-run'], msg: /kubeconfig/ },
    { name: 'rotate-key --from-config: a file that does not parse', args: (r) => ['rotate-key', '--from-config', join(r, 'bad.yaml')], msg: /bad\.yaml/ },
    { name: 'rotate-key --from-config: no kubeconfig', args: (r) => ['rotate-key', '--from-config', join(r, 'good.yaml'), '--stage', 'promote'], msg: /kubeconfig/ },
    { name: 'disable --from-config: a file that does not exist', args: (r) => ['disable', '--from-config', join(r, 'missing.yaml')], msg: /cannot read --from-config file .*missing\.yaml: it does not exist/ },
    { name: 'disable --stage prune (follower): a manifest that does not parse', args: (r) => ['--manifest', join(r, 'bad.yaml'), 'disable', '--stage', 'prune'], msg: /bad\.yaml/ },
  ];

  for (const state of ['no state dir yet', 'an empty state dir'] as const) {
    describe(state, () => {
      let root: string;
      beforeAll(async () => {
        root = await makeRoot('k8s-encrypt-front-bad-');
        if (state === 'an empty state dir') await mkdir(join(root, 'var/lib/k8s-encrypt'), { recursive: true, mode: 0o700 });
      });
      afterAll(async () => {
        if (root) await rm(root, { recursive: true, force: true });
      });
      // With a state dir already there, the cases that fail once the lock is held are the ones to show.
      for (const c of state === 'no state dir yet' ? cases : cases.filter((x) => /manifest that does not parse|no kubeconfig|not base64/.test(x.name))) {
        it(c.name, async () => {
          const before = await tree(root);
          const r = await runCli(['--root', root, '--yes', ...c.args(root)]);
          expect(r.exitCode, String(r.stderr)).toBe(2);
          const lines = oneLine(r.stderr);
          expect(lines, String(r.stderr)).toHaveLength(1);
          expect(lines[0]).toMatch(c.msg);
          expect(await tree(root)).toEqual(before);
          if (state === 'no state dir yet') expect(existsSync(join(root, 'var'))).toBe(false);
        });
      }
    });
  }
});

describe('the lock comes before anything that decides', () => {
  let root: string;
  beforeAll(async () => {
    root = await makeRoot('k8s-encrypt-front-held-');
    // Whatever reads the manifest or a journal before the lock would fail on these (exit 2).
    await writeFile(join(root, MANIFEST_REL), 'kind: [unclosed\n');
    await mkdir(join(root, 'var/lib/k8s-encrypt/journals'), { recursive: true, mode: 0o700 });
    for (const op of ['init', 'rotate-key', 'disable']) await writeFile(join(root, `var/lib/k8s-encrypt/journals/${op}.json`), '{ not json');
    // Held by a live process on this host (this test's).
    await writeFile(join(root, LOCK_REL), JSON.stringify({ pid: process.pid, host: hostname(), startedAt: new Date().toISOString(), operation: 'rotate-key', token: 'held' }), { mode: 0o600 });
  });
  afterAll(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  const commands: string[][] = [
    ['init'],
    ['init', '--dry-run'],
    ['init', '--from-config', 'good.yaml'],
    ['rotate-key'],
    ['rotate-key', '--dry-run'],
    ['rotate-key', '--from-config', 'good.yaml', '--stage', 'promote'],
    ['disable'],
    ['disable', '--dry-run'],
    ['disable', '--stage', 'prune'],
    ['disable', '--from-config', 'good.yaml', '--stage', 'promote', '--dry-run'],
    ['rollback'],
    ['rollback', '--dry-run'],
  ];
  for (const args of commands) {
    it(`${args.join(' ')}: refused by the lock (exit 6), nothing read or changed`, async () => {
      const before = await tree(root);
      const r = await runCli(['--root', root, '--yes', '--json', ...args.map((a) => (a === 'good.yaml' ? join(root, a) : a))]);
      expect(r.exitCode, String(r.stdout)).toBe(6);
      const j = JSON.parse(String(r.stdout));
      expect(j.error.message).toBe(`another k8s-encrypt run holds the lock: rotate-key (pid ${process.pid} on ${hostname()}, started ${j.error.details.holder.startedAt})`);
      expect(await tree(root)).toEqual(before);
    });
  }
});

describe('two runs of different commands at once', () => {
  let root: string;
  let port: number;
  beforeAll(async () => {
    root = await makeRoot('k8s-encrypt-front-race-');
    // This node's apiserver is a port nobody listens on: a run waits for it, holding the lock.
    port = await new Promise<number>((res) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => res(p));
      });
    });
    const manifest = (await readFile(MANIFEST, 'utf8')).replace('--advertise-address=172.18.0.2', '--advertise-address=127.0.0.1').replace('--secure-port=6443', `--secure-port=${port}`);
    await writeFile(join(root, MANIFEST_REL), manifest);
    await writeFile(
      join(root, 'etc/kubernetes/admin.conf'),
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]',
        'users: [{name: u, user: {token: not-a-real-token}}]',
        'contexts: [{name: x, context: {cluster: c, user: u}}]',
        'current-context: x',
        '',
      ].join('\n'),
    );
  });
  afterAll(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('the second meets the first one\'s lock, whatever the commands; the first leaves no state dir behind', async () => {
    const before = await tree(root);
    const c = cliCommand(['--root', root, '--yes', 'rotate-key', '--timeout', '60s']);
    const first = spawn(c.file, c.args, { env: { ...process.env, ...c.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    first.stderr.on('data', (d) => (stderr += String(d)));
    const exited = new Promise<number | null>((res) => first.on('exit', (code) => res(code)));
    try {
      // The first run holds the lock while it waits for its apiserver (it has decided nothing yet).
      const t0 = Date.now();
      while (!stderr.includes('waiting for this node')) {
        if (Date.now() - t0 > 60_000) throw new Error(`the first run never waited for its apiserver:\n${stderr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(JSON.parse(await readFile(join(root, LOCK_REL), 'utf8'))).toMatchObject({ pid: first.pid, operation: 'rotate-key' });
      const others = [['init'], ['init', '--dry-run'], ['rollback'], ['disable', '--dry-run'], ['rotate-key', '--from-config', join(root, 'good.yaml'), '--stage', 'promote']];
      const rs = await Promise.all(others.map((args) => runCli(['--root', root, '--yes', '--json', ...args])));
      for (const [i, r] of rs.entries()) {
        expect(r.exitCode, `${others[i]!.join(' ')}: ${r.stdout}${r.stderr}`).toBe(6);
        expect(JSON.parse(String(r.stdout)).error.message).toMatch(new RegExp(`^another k8s-encrypt run holds the lock: rotate-key \\(pid ${first.pid} on `));
      }
    } finally {
      first.kill('SIGTERM');
    }
    // Interrupted before it changed anything: it stops at the next safe point and takes its lock and
    // the state dir it created away.
    expect(await exited).toBe(130);
    expect(await tree(root)).toEqual(before);
    expect(existsSync(join(root, 'var'))).toBe(false);
  }, 120_000);
});
