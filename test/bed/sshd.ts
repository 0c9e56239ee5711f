/**
 * A real OpenSSH sshd for fleet tests: on a free loopback port, with a throwaway host key and one
 * authorized client key, everything in a temp dir (never port 22, never ~/.ssh). Logins run as the
 * user running the tests; the inventory's `root` then selects the bed node.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../helpers/etcd';

export const SSHD = '/usr/sbin/sshd';

/** An ed25519 key pair made by OpenSSH's own ssh-keygen (what sshd is sure to load). */
async function keygen(file: string): Promise<{ private: string; public: string }> {
  await promisify(execFile)('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'k8s-encrypt-test', '-f', file]);
  return { private: await readFile(file, 'utf8'), public: (await readFile(`${file}.pub`, 'utf8')).trim() };
}

export interface RunningSshd {
  port: number;
  user: string;
  /** The client's private key (authorized for `user`). */
  identityFile: string;
  /** A known_hosts file with this sshd's host key under `[127.0.0.1]:port`. */
  knownHostsFile: string;
  /** The host key's public line (`ssh-ed25519 AAAA...`). */
  hostPublicKey: string;
  dir: string;
  log(): string;
  stop(): Promise<void>;
}

async function waitListening(port: number, timeoutMs: number, log: () => string, exited: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy();
        res(true);
      });
      s.on('error', () => res(false));
    });
    if (ok) return;
    if (exited()) throw new Error(`sshd exited:\n${log()}`);
    if (Date.now() > deadline) throw new Error(`sshd did not listen on 127.0.0.1:${port} within ${timeoutMs} ms:\n${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startSshd(): Promise<RunningSshd> {
  if (!existsSync(SSHD)) throw new Error(`${SSHD} is missing: install openssh-server (scripts/setup-sshd.sh)`);
  const dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-sshd-'));
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  const identityFile = join(dir, 'id_ed25519');
  const authorized = join(dir, 'authorized_keys');
  const knownHostsFile = join(dir, 'known_hosts');
  const [host, client] = await Promise.all([keygen(hostKey), keygen(identityFile)]);
  await writeFile(authorized, `${client.public}\n`, { mode: 0o600 });
  const port = await freePort();
  await writeFile(knownHostsFile, `[127.0.0.1]:${port} ${host.public}\n`, { mode: 0o600 });
  const user = userInfo().username;
  const config = join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${authorized}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      // The temp dir's parents (/tmp) are world-writable, which StrictModes refuses.
      'StrictModes no',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'PermitRootLogin prohibit-password',
      `AllowUsers ${user}`,
      'Subsystem sftp internal-sftp',
      'LogLevel VERBOSE',
      // Sessions get this dir as HOME: the login shell then reads no ~/.bashrc of this machine's
      // user (bash reads it for a command sent over SSH; root's runs pyenv init here, 150 ms a
      // command), and nothing a test runs there writes into the real home.
      // The test run's compile cache (vitest.config.ts) too, for the CLI runs on the nodes: only an
      // absolute path (a session starts in HOME) with nothing sshd would read as a quote or escape.
      `SetEnv HOME=${dir}${/^\/[^\s"'\\]*$/.test(process.env.NODE_COMPILE_CACHE ?? '') ? ` NODE_COMPILE_CACHE=${process.env.NODE_COMPILE_CACHE}` : ''}`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  // sshd refuses to start without its privilege separation directory (the service unit makes it).
  if (!existsSync('/run/sshd')) await mkdir('/run/sshd', { mode: 0o755 }).catch(() => {});
  let logText = '';
  const proc: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr!.on('data', (c: Buffer) => {
    logText = (logText + c.toString('utf8')).slice(-20_000);
  });
  const log = () => logText;
  let exited = false;
  proc.once('exit', () => (exited = true));
  try {
    await waitListening(port, 10_000, log, () => exited);
  } catch (err) {
    proc.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    port,
    user,
    identityFile,
    knownHostsFile,
    hostPublicKey: host.public,
    dir,
    log,
    async stop() {
      if (!exited) {
        const gone = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
        if (!exited) proc.kill('SIGKILL');
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
