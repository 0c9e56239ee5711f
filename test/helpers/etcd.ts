/**
 * A real etcd (the distribution's /usr/bin/etcd) on loopback for tests, the test bed and benches:
 * free ports from the OS, its own data dir, optional TLS with client-certificate auth, healthy
 * before it is returned, killed on stop() and when the process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, createWriteStream, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export interface EtcdTls {
  caFile: string;
  /** Server certificate signed by caFile, with SAN IP 127.0.0.1. */
  certFile: string;
  keyFile: string;
}

export interface StartEtcdOptions {
  tls?: EtcdTls;
  /** Reuse a data dir (e.g. to restart a bed's etcd); default: a fresh temp dir, removed on stop. */
  dataDir?: string;
  /** How long to wait for /health (default 30 s). */
  timeoutMs?: number;
}

export interface RunningEtcd {
  /** `http://127.0.0.1:PORT`, or `https://...` with tls. */
  endpoint: string;
  dataDir: string;
  /** etcd's stderr/stdout. */
  logFile: string;
  pid: number;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of running) child.kill('SIGKILL');
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const child of running) child.kill('SIGKILL');
      process.kill(process.pid, sig);
    });
  }
}

export function findEtcd(): string {
  const candidates = ['/usr/bin/etcd', ...(process.env.PATH ?? '').split(delimiter).map((d) => join(d, 'etcd'))];
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  throw new Error('etcd is not installed (looked for /usr/bin/etcd and etcd on PATH): run scripts/setup-test-deps.sh (npm test does)');
}

/** A port the OS says is free now (another process may still take it before etcd binds). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const tail = (file: string, lines = 15) => {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
};

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
    const body = (await res.json()) as { health?: string };
    return res.ok && body.health === 'true';
  } catch {
    return false;
  }
}

async function startOnce(bin: string, dataDir: string, opts: StartEtcdOptions): Promise<RunningEtcd> {
  const [clientPort, peerPort, metricsPort] = [await freePort(), await freePort(), await freePort()];
  const scheme = opts.tls ? 'https' : 'http';
  const endpoint = `${scheme}://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const logFile = join(dataDir, 'etcd.log');
  const args = [
    '--name=test',
    `--data-dir=${join(dataDir, 'data')}`,
    `--listen-client-urls=${endpoint}`,
    `--advertise-client-urls=${endpoint}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=test=${peer}`,
    '--initial-cluster-state=new',
    // /health over plain HTTP even when clients need certificates.
    `--listen-metrics-urls=http://127.0.0.1:${metricsPort}`,
    '--logger=zap',
    '--log-outputs=stderr',
  ];
  if (opts.tls) {
    args.push(
      `--cert-file=${opts.tls.certFile}`,
      `--key-file=${opts.tls.keyFile}`,
      '--client-cert-auth=true',
      `--trusted-ca-file=${opts.tls.caFile}`,
    );
  }
  const log = createWriteStream(logFile, { flags: 'a', mode: 0o600 });
  await new Promise((r) => log.once('open', r));
  const child = spawn(bin, args, { stdio: ['ignore', log, log] });
  running.add(child);
  installExitHook();
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      running.delete(child);
      log.end();
      resolve();
    }),
  );
  child.once('error', () => undefined); // surfaced through 'exit'

  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exitPromise;
      clearTimeout(killer);
    }
  };

  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  const health = `http://127.0.0.1:${metricsPort}/health`;
  while (!exited && Date.now() < deadline) {
    if (await healthy(health)) {
      return { endpoint, dataDir, logFile, pid: child.pid!, stop };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await stop();
  const why = exited ? `exited (code ${exited.code}, signal ${exited.signal})` : 'did not become healthy in time';
  const err = new Error(`etcd ${why}; last lines of ${logFile}:\n${tail(logFile)}`);
  (err as Error & { portClash?: boolean }).portClash = /address already in use/.test(tail(logFile, 40));
  throw err;
}

/** Starts etcd and resolves once it answers /health; retries on a port taken in between. */
export async function startEtcd(opts: StartEtcdOptions = {}): Promise<RunningEtcd> {
  const bin = findEtcd();
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'k8s-encrypt-etcd-')));
  if (!existsSync(dataDir)) mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const etcd = await startOnce(bin, dataDir, opts);
      return {
        ...etcd,
        async stop() {
          await etcd.stop();
          if (ownDir) await rm(dataDir, { recursive: true, force: true });
        },
      };
    } catch (err) {
      lastErr = err;
      if (!(err as { portClash?: boolean }).portClash) break;
    }
  }
  if (ownDir) await rm(dataDir, { recursive: true, force: true });
  throw lastErr;
}
