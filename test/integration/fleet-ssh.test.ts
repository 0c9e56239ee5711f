// The fleet's SSH layer against a real OpenSSH sshd on loopback: host keys against known_hosts
// (plain, [host]:port, hashed, changed, unknown, recorded), exec with stdin, and timeouts.
import { createHmac, randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { utils } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/etcd';
import { startSshd, type RunningSshd } from '../bed/sshd';
import { SshSession, type SshSettings } from '../../src/fleet/ssh';
import type { FleetNode } from '../../src/fleet/inventory';
import { ensureNodeBinary, installDir, installPath, runOnNode, sha256File } from '../../src/fleet/remote';
import { checkNode, nodeManifest, plannedUpload, probeNode } from '../../src/fleet/preflight';
import { PROGRESS_JSON_PREFIX } from '../../src/ui/progress';

let sshd: RunningSshd;
beforeAll(async () => {
  sshd = await startSshd();
});
afterAll(async () => sshd?.stop());

const node = (over: Partial<FleetNode> = {}): FleetNode => ({ host: '127.0.0.1', port: sshd.port, user: sshd.user, identityFile: sshd.identityFile, nodeName: 'cp-7', nameGiven: true, root: '/', ...over });
const settings = (over: Partial<SshSettings> = {}): SshSettings => ({
  knownHostsFile: sshd.knownHostsFile,
  acceptNewHostKeys: false,
  connectTimeoutMs: 5000,
  commandTimeoutMs: 10_000,
  defaultIdentities: [],
  notice: () => {},
  ...over,
});
const tempKnownHosts = async (text: string) => {
  const f = join(sshd.dir, `known_hosts-${randomBytes(4).toString('hex')}`);
  await writeFile(f, text);
  return f;
};

describe('fleet SSH', () => {
  it('connects to a known host and runs a command with stdin, exit code and stderr', async () => {
    const s = await SshSession.open(node(), settings());
    try {
      const r = await s.exec("cat; echo oops >&2; exit 3", { stdin: 'hello from stdin' });
      expect(r).toMatchObject({ code: 3, stderr: 'oops\n' });
      expect(r.stdout.toString()).toBe('hello from stdin');
    } finally {
      s.close();
    }
  });

  it('keeps only the last 64 KiB of stderr, control characters but tab and newline dropped', async () => {
    const s = await SshSession.open(node(), settings());
    try {
      const r = await s.exec("head -c 200000 /dev/zero | tr '\\0' x >&2; printf '\\n\\033[2Klast\\tline\\n' >&2");
      expect(r.stderr.length).toBe(64 * 1024);
      expect(r.stderr.endsWith('x\n[2Klast\tline\n')).toBe(true);
    } finally {
      s.close();
    }
  });

  it('accepts a hashed known_hosts entry as OpenSSH writes it', async () => {
    const salt = randomBytes(20);
    const name = `[127.0.0.1]:${sshd.port}`;
    const hashed = `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update(name).digest('base64')}`;
    const s = await SshSession.open(node(), settings({ knownHostsFile: await tempKnownHosts(`# comment\n${hashed} ${sshd.hostPublicKey}\n`) }));
    s.close();
  });

  it('refuses an unknown host key with the node name, and a [host]:port entry for another port does not count', async () => {
    const f = await tempKnownHosts(`[127.0.0.1]:1 ${sshd.hostPublicKey}\n127.0.0.1 ${sshd.hostPublicKey}\n`);
    await expect(SshSession.open(node(), settings({ knownHostsFile: f }))).rejects.toThrow(/^cp-7: the host key of cp-7 .* is not in .*: refusing to connect/);
  });

  it('--accept-new-host-keys records a new key atomically (then it is known) and still refuses a changed one', async () => {
    const f = join(sshd.dir, `known_hosts-new-${randomBytes(4).toString('hex')}`);
    const notices: string[] = [];
    const s = await SshSession.open(node(), settings({ knownHostsFile: f, acceptNewHostKeys: true, notice: (m) => notices.push(m) }));
    s.close();
    expect(notices[0]).toMatch(/recorded the new host key/);
    expect(await readFile(f, 'utf8')).toBe(`[127.0.0.1]:${sshd.port} ${sshd.hostPublicKey.split(' ').slice(0, 2).join(' ')}\n`);
    expect((await stat(f)).mode & 0o777).toBe(0o600);
    (await SshSession.open(node(), settings({ knownHostsFile: f }))).close();

    const other = utils.generateKeyPairSync('ed25519').public;
    const changed = await tempKnownHosts(`[127.0.0.1]:${sshd.port} ${other}\n`);
    const before = await readFile(changed, 'utf8');
    await expect(SshSession.open(node(), settings({ knownHostsFile: changed, acceptNewHostKeys: true }))).rejects.toThrow(/^cp-7: the host key of .* differs from the one in/);
    expect(await readFile(changed, 'utf8')).toBe(before);
  });

  it('refuses a key the server does not authorize, and an unreachable port, with the node name', async () => {
    const stranger = join(sshd.dir, 'stranger');
    await writeFile(stranger, utils.generateKeyPairSync('ed25519').private, { mode: 0o600 });
    await expect(SshSession.open(node({ identityFile: stranger }), settings())).rejects.toThrow(/^cp-7: .* refused our public key/);
    await expect(SshSession.open(node({ port: await freePort() }), settings())).rejects.toThrow(/^cp-7: cannot connect to cp-7 .*ECONNREFUSED/);
  });

  it('a command that outlives its timeout is cut off', async () => {
    const s = await SshSession.open(node(), settings());
    try {
      await expect(s.exec('sleep 5', { timeoutMs: 300 })).rejects.toThrow(/cp-7: the command did not finish within 0 s/);
    } finally {
      s.close();
    }
  });
});

describe('fleet upload of the executable', () => {
  it('uploads to ROOT/var/lib/k8s-encrypt/bin (dir and file 0700, sha256 checked there), then reuses it; another version there is refused', async () => {
    const root = join(sshd.dir, `node-${randomBytes(4).toString('hex')}`);
    const exe = join(sshd.dir, `exe-${randomBytes(4).toString('hex')}`);
    // A stand-in executable: this test checks the transfer, not what runs. The shell stops at
    // `exit`; the 3 MB of random bytes after it are more than the 64 writes of 32 KiB the transfer
    // keeps in flight, and end in a part of a write.
    const text = Buffer.concat([Buffer.from('#!/bin/sh\necho 9.8.7\nexit 0\n'), randomBytes(3 * 1024 * 1024 + 12_345)]);
    await writeFile(exe, text, { mode: 0o755 });
    const self = { version: '9.8.7', arch: process.arch, path: exe, sha256: await sha256File(exe) };
    const said: string[] = [];
    const opened: SshSession[] = [];
    const open = async (r: string) => {
      const x = await SshSession.open(node({ root: r }), settings());
      opened.push(x);
      return x;
    };
    const s = await open(root);
    try {
      const target = await ensureNodeBinary(s, self, undefined, (m) => said.push(m));
      expect(target).toBe(installPath(root, '9.8.7'));
      expect((await readFile(target!)).equals(text)).toBe(true);
      expect(await readdir(installDir(root))).toEqual([`k8s-encrypt-9.8.7`]);
      expect((await stat(target!)).mode & 0o777).toBe(0o700);
      expect((await stat(installDir(root))).mode & 0o777).toBe(0o700);
      expect(said).toEqual([`cp-7: uploading k8s-encrypt 9.8.7 to ${target}`]);
      // The same build is there: nothing uploaded again.
      expect(await ensureNodeBinary(s, self, undefined, (m) => said.push(m))).toBe(target);
      expect(said).toHaveLength(1);
      // A dry run on a fresh node uploads nothing.
      const fresh = join(sshd.dir, `node-${randomBytes(4).toString('hex')}`);
      expect(await ensureNodeBinary(await open(fresh), self, undefined, () => {}, { dryRun: true })).toBeUndefined();
      await expect(stat(installDir(fresh))).rejects.toThrow(/ENOENT/);
      // --node-bin at another version is refused with the hint to install the same one.
      await expect(ensureNodeBinary(s, { ...self, version: '9.8.8' }, target, () => {})).rejects.toMatchObject({ message: /^cp-7: .* is k8s-encrypt 9\.8\.7, this is 9\.8\.8$/, exitCode: 6, hint: /same version/ });
      // A group- or world-accessible install dir is not ours: refused, nothing uploaded.
      const loose = join(sshd.dir, `node-${randomBytes(4).toString('hex')}`);
      await mkdir(installDir(loose), { recursive: true, mode: 0o755 });
      await chmod(installDir(loose), 0o755);
      await expect(ensureNodeBinary(await open(loose), self, undefined, () => {})).rejects.toThrow(/is not a 0700 directory/);
      expect(await readdir(installDir(loose))).toEqual([]);
    } finally {
      for (const x of opened) x.close();
    }
  });
});

describe('fleet preflight without k8s-encrypt on the node, and the relay of a run\'s stderr', () => {
  it('checks root, the manifest, the architecture and the free space read-only; a dry run plans the upload and writes nothing', async () => {
    const root = join(sshd.dir, `node-${randomBytes(4).toString('hex')}`);
    const manifest = join(root, 'etc/kubernetes/manifests/kube-apiserver.yaml');
    const exe = join(sshd.dir, `exe-${randomBytes(4).toString('hex')}`);
    await writeFile(exe, '#!/bin/sh\necho 9.8.7\n', { mode: 0o755 });
    const self = { version: '9.8.7', arch: process.arch, path: exe, sha256: await sha256File(exe) };
    const n = node({ root });
    const s = await SshSession.open(n, settings());
    try {
      await mkdir(root);
      let f = await probeNode(s, nodeManifest(n, undefined));
      expect(f).toMatchObject({ uid: process.getuid!(), manifest, hasManifest: false, arch: process.arch, freeAt: root });
      expect(f.freeBytes).toBeGreaterThan(0);
      expect(() => checkNode(n, f)).toThrow(new RegExp(`^cp-7: no kube-apiserver manifest at ${manifest}$`));
      await mkdir(join(manifest, '..'), { recursive: true });
      await writeFile(manifest, 'kind: Pod\n');
      f = await probeNode(s, nodeManifest(n, undefined));
      expect(checkNode(n, f)).toEqual([`logged in as ${sshd.user} (uid ${process.getuid!()})`, `manifest ${manifest}`]);
      // --manifest given: that file is the one looked for.
      expect((await probeNode(s, join(root, 'elsewhere.yaml'))).hasManifest).toBe(false);

      // The dry run: no executable there, the upload planned (path, sha256, size), nothing written.
      expect(await ensureNodeBinary(s, self, undefined, () => {}, { dryRun: true })).toBeUndefined();
      expect(await plannedUpload(n, f, self)).toEqual({ path: installPath(root, '9.8.7'), sha256: self.sha256, bytes: (await stat(exe)).size, freeBytes: f.freeBytes });
      await expect(plannedUpload(n, { ...f, freeBytes: 1000 }, self)).rejects.toThrow(/^cp-7: 0\.0 MiB free at .*, the upload to .* needs 1\.0 MiB$/);
      await expect(stat(installDir(root))).rejects.toThrow(/ENOENT/);
      expect(await readdir(root)).toEqual(['etc']);
    } finally {
      s.close();
    }
  });

  it('a node run\'s stderr is relayed as it comes: progress lines parsed, other lines as text, the result from stdout', async () => {
    // A stand-in for the node's k8s-encrypt: this checks the channel, not what runs.
    const bin = join(sshd.dir, `bin-${randomBytes(4).toString('hex')}`);
    const progress = (done: number) => `${PROGRESS_JSON_PREFIX}{"resource":"secrets","done":${done},"total":3,"rewritten":${done},"unchanged":0,"deleted":0,"failed":0,"conflictsRetried":0,"elapsedSeconds":0.1,"concurrency":8}`;
    await writeFile(bin, `#!/bin/sh\necho "$@" > "$0.args"\necho '${progress(1)}' >&2\necho 'warning: a line of text' >&2\nsleep 0.2\necho '${progress(3)}' >&2\necho '{"ok":true,"state":"done"}'\n`, { mode: 0o700 });
    const s = await SshSession.open(node(), settings());
    const got: string[] = [];
    try {
      const r = await runOnNode(s, bin, ['rotate-key'], { onProgress: (p) => got.push(`progress ${p.done}/${p.total}`), onText: (t) => got.push(`text ${t}`) });
      expect(r).toEqual({ exitCode: 0, body: { ok: true, state: 'done' }, stderrTail: 'warning: a line of text' });
    } finally {
      s.close();
    }
    expect(got).toEqual(['progress 1/3', 'text warning: a line of text', 'progress 3/3']);
    expect((await readFile(`${bin}.args`, 'utf8')).trim()).toBe('--root / --json --yes --progress-json rotate-key');
  });
});
