import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Progress } from '../cluster/rewrite';
import { CliError, ExitCode } from '../ui/errors';
import type { FleetNode } from './inventory';
import { stderrRelay } from './relay';
import { shellQuote, type SshSession } from './ssh';

/**
 * The same k8s-encrypt on every node: this process's own self-contained executable uploaded to a
 * root-only path (checked by sha256 there), or one already installed at the same version. Each
 * per-node run is `BIN --root ROOT --json --yes COMMAND ...`, its one JSON document read back.
 */

export interface SelfExecutable {
  version: string;
  /** Path of this process's self-contained executable (undefined when it runs from Node.js + dist). */
  path?: string;
  sha256?: string;
  arch: string;
}

/** What a per-node run answered: its JSON document, exit code and the end of its stderr. */
export interface NodeRun {
  exitCode: number;
  body: Record<string, any>;
  stderrTail: string;
}

export const installDir = (root: string) => posix.join(root, 'var/lib/k8s-encrypt/bin');
export const installPath = (root: string, version: string) => posix.join(installDir(root), `k8s-encrypt-${version}`);

export const unameArch: Record<string, string> = { x86_64: 'x64', amd64: 'x64', aarch64: 'arm64', arm64: 'arm64' };

export const refused = (node: FleetNode, message: string, hint: string) => new CliError(`${node.nodeName}: ${message}`, { exitCode: ExitCode.Refused, hint, details: { node: node.nodeName } });

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

/** The version a k8s-encrypt binary on the node reports, or undefined when there is none. */
async function remoteVersion(s: SshSession, bin: string): Promise<string | undefined> {
  const r = await s.exec(`${shellQuote(bin)} --version`, { timeoutMs: 60_000 });
  if (r.code !== 0) return undefined;
  return r.stdout.toString('utf8').trim().split('\n').pop()?.trim();
}

/**
 * The k8s-encrypt binary to run on a node, at this orchestrator's version: `nodeBin` if given
 * (checked), else the versioned install path if it holds the same version, else this executable
 * uploaded there (dir 0700, file 0700, temp name, sha256 checked on the node, then renamed).
 */
export async function ensureNodeBinary(s: SshSession, self: SelfExecutable, nodeBin: string | undefined, say: (m: string) => void, o: { dryRun?: boolean } = {}): Promise<string | undefined> {
  const node = s.node;
  if (nodeBin) {
    const v = await remoteVersion(s, nodeBin);
    if (v === undefined) throw refused(node, `${nodeBin} does not run there (or is not k8s-encrypt)`, `install k8s-encrypt ${self.version} at ${nodeBin}, or leave --node-bin out to upload this executable`);
    if (v !== self.version) throw refused(node, `${nodeBin} is k8s-encrypt ${v}, this is ${self.version}`, `install ${self.version} there (the same version must run everywhere), or leave --node-bin out to upload this executable`);
    return nodeBin;
  }
  const target = installPath(node.root, self.version);
  const dir = installDir(node.root);
  // What is already there runs as root: only from a directory and file that are ours, not links.
  const d = shellQuote(dir);
  const f = shellQuote(target);
  const owned = await s.exec(
    `if [ -e ${d} ] || [ -L ${d} ]; then [ ! -L ${d} ] && [ "$(stat -c %u:%a ${d})" = "$(id -u):700" ] || exit 3; fi; ` +
      `if [ -e ${f} ] || [ -L ${f} ]; then [ ! -L ${f} ] && [ "$(stat -c %u ${f})" = "$(id -u)" ] && [ -z "$(find ${f} -perm /022)" ] || exit 4; fi`,
    { timeoutMs: 30_000 },
  );
  if (owned.code === 3) throw refused(node, `${dir} is not a 0700 directory owned by ${node.user}`, `fix or remove ${dir} on the node; nothing was changed`);
  if (owned.code !== 0) throw refused(node, `${target} is a link, not owned by ${node.user}, or writable by others: not running it`, `remove ${target} on the node and re-run; nothing was changed`);
  const have = await remoteVersion(s, target);
  if (have !== undefined) {
    if (have !== self.version) throw refused(node, `${target} reports version ${have}, not ${self.version}`, `remove ${target} on the node and re-run`);
    if (!self.sha256) return target;
    const sum = await s.exec(`sha256sum ${shellQuote(target)}`, { timeoutMs: 60_000 });
    if (sum.code === 0 && sum.stdout.toString().split(/\s/)[0] === self.sha256) return target;
    if (!self.path) return target;
    say(`${node.nodeName}: ${target} is version ${self.version} but another build: replacing it`);
  }
  if (!self.path) {
    throw refused(
      node,
      `no k8s-encrypt ${self.version} at ${target}, and this one runs from Node.js, so it cannot upload itself`,
      'run the fleet from the self-contained executable (k8s-encrypt-linux-x64), or install the same version on every node and pass --node-bin PATH',
    );
  }
  if (o.dryRun) {
    say(`${node.nodeName}: would upload k8s-encrypt ${self.version} to ${target} (dry run: not uploaded)`);
    return undefined;
  }
  const arch = await s.exec('uname -m', { timeoutMs: 30_000 });
  const nodeArch = unameArch[arch.stdout.toString().trim()] ?? arch.stdout.toString().trim();
  if (nodeArch !== self.arch) throw refused(node, `the node is ${nodeArch}, this executable is linux-${self.arch}`, `run the fleet from k8s-encrypt-linux-${nodeArch}, or install it on the nodes and pass --node-bin PATH`);

  const tmp = posix.join(dir, `.k8s-encrypt-${self.version}.${randomBytes(6).toString('hex')}.tmp`);
  // umask 077: the directories mkdir makes are 0700; an existing one must be ours, 0700, no link.
  const prep = await s.exec(
    `umask 077 && mkdir -p ${shellQuote(dir)} && [ ! -L ${shellQuote(dir)} ] && [ "$(stat -c %u:%a ${shellQuote(dir)})" = "$(id -u):700" ]`,
    { timeoutMs: 30_000 },
  );
  if (prep.code !== 0) throw refused(node, `${dir} is not a 0700 directory owned by ${node.user} (or cannot be made)`, `fix or remove ${dir} on the node; nothing was changed`);
  say(`${node.nodeName}: uploading k8s-encrypt ${self.version} to ${target}`);
  const sftp = await s.sftp();
  try {
    // The temp file is made here, exclusively and 0700, so the transfer writes into this run's own
    // file; ssh2's fastPut then keeps 64 writes of 32 KiB in flight. A write stream sends one at a
    // time: 155 MB took 40 s on loopback that way, 1.5 s this way.
    const path = self.path;
    await new Promise<void>((res, rej) => sftp.open(tmp, 'wx', { mode: 0o700 }, (err, h) => (err ? rej(err) : sftp.close(h, (e) => (e ? rej(e) : res())))));
    await new Promise<void>((res, rej) => sftp.fastPut(path, tmp, { mode: 0o700 }, (err) => (err ? rej(err) : res()))).catch(async (err) => {
      // A transfer cut short leaves no partial file behind (best effort: the link may be gone).
      await new Promise<void>((res) => sftp.unlink(tmp, () => res()));
      throw err;
    });
  } finally {
    sftp.end();
  }
  const check = await s.exec(
    `chmod 700 ${shellQuote(tmp)} && sum=$(sha256sum ${shellQuote(tmp)}) && [ "\${sum%% *}" = ${self.sha256!} ] && sync ${shellQuote(tmp)} && mv -f ${shellQuote(tmp)} ${shellQuote(target)} || { rm -f ${shellQuote(tmp)}; exit 1; }`,
    { timeoutMs: 120_000 },
  );
  if (check.code !== 0) throw new CliError(`${node.nodeName}: the uploaded executable's sha256 on the node is not ${self.sha256!.slice(0, 12)}…`, { exitCode: ExitCode.Cluster, hint: 're-run (the upload is retried); nothing was changed', details: { node: node.nodeName } });
  return target;
}

/**
 * Runs `BIN --root ROOT --json --yes --progress-json ARGS` on the node. `stdin` carries a config
 * file (never the command line); the JSON document on stdout is the result, and its exit code is
 * kept. Its stderr streams through the relay: rewrite progress to `onProgress`, other lines to
 * `onText`, as they come.
 */
export async function runOnNode(s: SshSession, bin: string, args: string[], o: { stdin?: string; timeoutMs?: number; onProgress?: (p: Progress) => void; onText?: (line: string) => void } = {}): Promise<NodeRun> {
  const node = s.node;
  const words = [bin, '--root', node.root, '--json', '--yes', '--progress-json', ...args];
  const relay = stderrRelay({ ...(o.onProgress ? { progress: o.onProgress } : {}), ...(o.onText ? { text: o.onText } : {}) });
  const r = await s.exec(words.map(shellQuote).join(' '), { ...(o.stdin !== undefined ? { stdin: o.stdin } : {}), ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}), onStderr: (c) => relay.push(c) });
  relay.end();
  const stderrTail = relay.tail();
  let body: Record<string, any>;
  try {
    body = JSON.parse(r.stdout.toString('utf8'));
  } catch {
    throw new CliError(`${node.nodeName}: "k8s-encrypt ${args[0]}" ${r.signal ? `was killed (${r.signal})` : `exited ${r.code}`} without a JSON result${stderrTail ? `: ${stderrTail.split('\n').pop()}` : ''}`, {
      exitCode: ExitCode.Cluster,
      hint: 're-run: each node continues from its own journal',
      details: { node: node.nodeName },
    });
  }
  return { exitCode: r.code ?? ExitCode.Internal, body, stderrTail };
}
