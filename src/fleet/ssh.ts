import { lstat, readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
// ssh2 is CommonJS without static named exports: Node's ESM loader needs the default import.
import ssh2, { type ConnectConfig, type SFTPWrapper } from 'ssh2';
import { fileExists, readText, writeFileAtomic } from '../state/atomic';
import { CliError, ExitCode } from '../ui/errors';
import { describeNode, type FleetNode } from './inventory';
import { checkHostKey, fingerprint, knownHostsLine, parseKnownHosts } from './known-hosts';
import { MAX_LINE, printable } from './relay';

const { Client, utils } = ssh2;

/**
 * One SSH connection to a control plane through ssh2 (no ssh binary): public-key or agent
 * authentication only, the host key checked against known_hosts before anything is sent, connect
 * and command timeouts, keepalive. What flows through a channel (a config file on stdin, a JSON
 * result on stdout) stays in memory.
 */

export interface SshSettings {
  knownHostsFile: string;
  acceptNewHostKeys: boolean;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  /** SSH_AUTH_SOCK, if any. */
  agentSocket?: string;
  /** Identities tried when the inventory names none and there is no agent (~/.ssh/id_*). */
  defaultIdentities: string[];
  /** Notes for the operator (a recorded host key). */
  notice: (m: string) => void;
}

export interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: Buffer;
  /** The last 64 KiB of stderr, control characters but tab and newline dropped. */
  stderr: string;
}

/** Bad input about one node (its key): exit 2, named. */
const nodeUsage = (node: FleetNode, what: string, hint: string) => new CliError(`${node.nodeName}: ${what}`, { exitCode: ExitCode.Usage, hint, details: { node: node.nodeName } });
const sshError = (node: FleetNode, what: string, hint: string) => new CliError(`${node.nodeName}: ${what}`, { exitCode: ExitCode.Cluster, hint, details: { node: node.nodeName } });

// Appending to known_hosts from several connections at once must not lose a line.
let knownHostsWrites: Promise<void> = Promise.resolve();

export type Credentials = Pick<ConnectConfig, 'privateKey' | 'agent'>;

const unreadable: Record<string, string> = { ENOENT: 'no such file', EACCES: 'permission denied', EISDIR: 'it is a directory', ENOTDIR: 'a parent is not a directory', ELOOP: 'too many symbolic links' };

/**
 * How this node is logged in to: its identityFile (read and parsed here, so that a missing,
 * unreadable or locked key is one line naming the node and the path, before any connection),
 * else the agent, else the first usable default identity.
 */
export async function nodeCredentials(node: FleetNode, s: Pick<SshSettings, 'agentSocket' | 'defaultIdentities'>): Promise<Credentials> {
  if (node.identityFile) {
    const key = await readFile(node.identityFile).catch((err: NodeJS.ErrnoException) => {
      throw nodeUsage(node, `cannot read identityFile ${node.identityFile}: ${(err.code && unreadable[err.code]) ?? err.code ?? err.message}`, 'give a readable private key, or leave identityFile out to use the SSH agent');
    });
    const parsed = utils.parseKey(key);
    if (parsed instanceof Error) {
      const locked = /encrypted|passphrase/i.test(parsed.message);
      throw nodeUsage(
        node,
        `identityFile ${node.identityFile} ${locked ? 'is protected by a passphrase' : `is not a private key ssh2 can read (${parsed.message})`}`,
        locked ? 'add it to ssh-agent (ssh-add) and leave identityFile out: k8s-encrypt never prompts for a passphrase or password' : 'use an OpenSSH or PEM private key',
      );
    }
    return { privateKey: key };
  }
  if (s.agentSocket) return { agent: s.agentSocket };
  for (const f of s.defaultIdentities) {
    if (!(await fileExists(f))) continue;
    const key = await readFile(f);
    if (!(utils.parseKey(key) instanceof Error)) return { privateKey: key };
  }
  throw nodeUsage(node, `no SSH identity: no identityFile in the inventory, no SSH_AUTH_SOCK, no usable ${s.defaultIdentities.join(', ')}`, 'set identityFile for the node or start ssh-agent; passwords are never used');
}

export class SshSession {
  private constructor(
    readonly node: FleetNode,
    private readonly client: ssh2.Client,
    private readonly settings: SshSettings,
  ) {}

  /** Connects, refusing an unknown or changed host key (unless recording new ones is allowed). */
  static async open(node: FleetNode, s: SshSettings, given?: Credentials): Promise<SshSession> {
    const creds = given ?? (await nodeCredentials(node, s));
    const knownText = (await fileExists(s.knownHostsFile)) ? await readText(s.knownHostsFile, 'read known_hosts') : '';
    const entries = parseKnownHosts(knownText);
    let refusal: CliError | undefined;
    let toRecord: Buffer | undefined;
    const client = new Client();
    const where = describeNode(node);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        client.end();
        reject(sshError(node, `cannot connect to ${where}: no answer within ${Math.round(s.connectTimeoutMs / 1000)} s`, 'check the host, the port and the network; nothing was changed'));
      }, s.connectTimeoutMs + 1000);
      client.once('ready', () => {
        clearTimeout(timer);
        resolve();
      });
      // `on`, not `once`: a failed handshake can be followed by a second error (a handshake
      // timeout, then "Connection lost before handshake" as the socket closes), and an 'error'
      // with no listener would crash the process. Once settled, reject does nothing.
      client.on('error', (err: Error & { level?: string; code?: string }) => {
        clearTimeout(timer);
        if (refusal) return reject(refusal);
        if (err.level === 'client-authentication') {
          return reject(sshError(node, `${where} refused our public key (${err.message})`, `authorize the key for ${node.user} on ${node.host} (or load the right one into ssh-agent); passwords are never used`));
        }
        const why = err.code ? `${err.code}${err.message.includes(err.code) ? '' : `: ${err.message}`}` : err.message;
        reject(sshError(node, `cannot connect to ${where}: ${why}`, 'check the host, the port and that sshd runs there; nothing was changed'));
      });
      client.connect({
        host: node.host,
        port: node.port,
        username: node.user,
        ...creds,
        tryKeyboard: false,
        readyTimeout: s.connectTimeoutMs,
        keepaliveInterval: 15_000,
        keepaliveCountMax: 4,
        authHandler: creds.agent ? ['agent'] : ['publickey'],
        hostVerifier: (key: Buffer) => {
          const v = checkHostKey(entries, node.host, node.port, key);
          if (v.verdict === 'known') return true;
          const fp = fingerprint(key);
          if (v.verdict === 'unknown' && s.acceptNewHostKeys) {
            toRecord = key;
            return true;
          }
          refusal = new CliError(
            v.verdict === 'unknown'
              ? `${node.nodeName}: the host key of ${where} (${fp}) is not in ${s.knownHostsFile}: refusing to connect`
              : v.verdict === 'revoked'
                ? `${node.nodeName}: the host key of ${where} (${fp}) is revoked in ${s.knownHostsFile}: refusing to connect`
                : `${node.nodeName}: the host key of ${where} (${fp}) differs from the one in ${s.knownHostsFile}: refusing to connect (it may have been reinstalled, or someone is in between)`,
            {
              exitCode: ExitCode.Refused,
              hint:
                v.verdict === 'unknown'
                  ? `check the fingerprint on the node (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and add it to ${s.knownHostsFile}, or pass --accept-new-host-keys to record new keys; nothing was changed`
                  : `if the change is expected, remove the old line (ssh-keygen -R ${node.port === 22 ? node.host : `'[${node.host}]:${node.port}'`} -f ${s.knownHostsFile}) and check the new fingerprint; nothing was changed`,
              details: { node: node.nodeName, fingerprint: fp, verdict: v.verdict },
            },
          );
          return false;
        },
      });
    });
    // After the handshake an error (a dropped connection) must not be an unhandled 'error' event:
    // the command running on the channel fails and says so; the process must not crash.
    client.on('error', () => {});
    if (toRecord) {
      const key = toRecord;
      const record = async () => {
        if ((await lstat(s.knownHostsFile).catch(() => undefined))?.isSymbolicLink()) {
          throw sshError(node, `${s.knownHostsFile} is a symbolic link: not recording the new host key of ${where} through it`, `add the key yourself, or give --known-hosts a regular file`);
        }
        const now = (await fileExists(s.knownHostsFile)) ? await readText(s.knownHostsFile, 'read known_hosts') : '';
        const line = knownHostsLine(node.host, node.port, key);
        if (!now.split('\n').includes(line)) {
          await writeFileAtomic(s.knownHostsFile, `${now}${now && !now.endsWith('\n') ? '\n' : ''}${line}\n`, { mode: 0o600, dirMode: 0o700 });
        }
      };
      knownHostsWrites = knownHostsWrites.then(record, record);
      try {
        await knownHostsWrites;
      } catch (err) {
        client.end();
        throw err;
      }
      s.notice(`${node.nodeName}: recorded the new host key of ${where} (${fingerprint(key)}) in ${s.knownHostsFile}`);
    }
    return new SshSession(node, client, s);
  }

  /**
   * Runs one command (a single string, as ssh does: the node's login shell parses it) with
   * `stdin` on its standard input. Never rejects on a non-zero exit: the caller reads the code.
   */
  exec(command: string, o: { stdin?: string | Buffer; timeoutMs?: number; onStderr?: (chunk: string) => void } = {}): Promise<ExecResult> {
    const timeoutMs = o.timeoutMs ?? this.settings.commandTimeoutMs;
    return new Promise((resolve, reject) => {
      this.client.exec(command, (err, stream) => {
        if (err) return reject(sshError(this.node, `cannot run a command over SSH: ${err.message}`, 'check the node and re-run'));
        const out: Buffer[] = [];
        let errText = '';
        // A character split between two chunks is decoded whole.
        const decoder = new StringDecoder('utf8');
        let code: number | null = null;
        let signal: string | null = null;
        const timer = setTimeout(() => {
          stream.close();
          reject(sshError(this.node, `the command did not finish within ${Math.round(timeoutMs / 1000)} s`, 'raise --command-timeout; a re-run continues from the node journals'));
        }, timeoutMs);
        stream.on('data', (c: Buffer) => out.push(c));
        (stream.stderr as Readable).on('data', (c: Buffer) => {
          const t = decoder.write(c);
          // Kept for an error message: its last MAX_LINE characters, printable.
          errText = (errText + printable(t, true)).slice(-MAX_LINE);
          o.onStderr?.(t);
        });
        stream.on('exit', (c: number | null, sig?: string) => {
          code = c;
          signal = sig ?? null;
        });
        stream.on('close', () => {
          clearTimeout(timer);
          resolve({ code, signal, stdout: Buffer.concat(out), stderr: errText });
        });
        stream.end(o.stdin ?? '');
      });
    });
  }

  /** An SFTP channel (closed by the caller with `end()`). */
  sftp(): Promise<SFTPWrapper> {
    return new Promise((resolve, reject) => {
      this.client.sftp((err, sftp) => {
        if (err) return reject(sshError(this.node, `cannot open SFTP: ${err.message}`, 'enable the sftp subsystem in sshd, or install k8s-encrypt on the node and pass --node-bin'));
        // ssh2 drops its own 'error' listener once the channel is ready; a fatal SFTP error later
        // (a malformed packet from the server) would then crash the process. The operations in
        // flight fail through their own callbacks, which is how the upload reports it.
        sftp.on('error', () => {});
        resolve(sftp);
      });
    });
  }

  close(): void {
    this.client.end();
  }
}

/** One word for a POSIX shell, whatever it holds. */
export const shellQuote = (s: string) => (/^[A-Za-z0-9_\-./=:@%+,]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
