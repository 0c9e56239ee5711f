/**
 * The apiserver stand-in's life: validate like kube-apiserver (refuse to start on a bad flag or
 * EncryptionConfiguration), connect to etcd, serve HTTPS, sync "watch caches" (decode every stored
 * object) before /readyz turns ok, reload the encryption config when asked to, and stop cleanly on
 * SIGTERM.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { createSecureServer, type Http2Session } from 'node:http2';
import { createServer as createHttpsServer } from 'node:https';
import { Etcd3 } from 'etcd3';
import { loadEncryption, STORED_RESOURCES, type LoadedEncryption, type LoadOptions, type StoredResource } from './encryption';
import { parseFlags, StartupError, type ApiserverFlags } from './flags';
import { knobsFromEnv, type Knobs } from './knobs';
import { klog } from './log';
import { Metrics } from './metrics';
import { PodFs } from './mounts';
import { createHandler, type HealthState } from './server';
import { KmsPlugins } from './kms';
import { ApiError } from './status';
import { RESOURCES, Store } from './store';
import { parseKubeVersion, type KubeVersion } from './version';

const SYSTEM_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];
const CACHE_RETRY_MS = 1000;
const SHUTDOWN_GRACE_MS = 1500;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs until SIGTERM/SIGINT; returns the process exit code. */
export async function runApiserver(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  let version: KubeVersion;
  let knobs: Knobs;
  try {
    version = parseKubeVersion(env.BED_KUBE_VERSION);
    knobs = knobsFromEnv(env);
  } catch (err) {
    klog('E', 'bed.go:1', `"bed configuration" err="${(err as Error).message}"`);
    return 1;
  }
  if (knobs.crashOnStart) {
    klog('E', 'run.go:72', '"command failed" err="crashing on start as asked (BED_CRASH_ON_START=1)"');
    return 1;
  }

  let flags: ApiserverFlags;
  let fs: PodFs;
  let tls: { cert: Buffer; key: Buffer; ca?: Buffer };
  let etcdTls: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  let encryption: LoadedEncryption | undefined;
  let loadOpts: LoadOptions;
  let kms: KmsPlugins;
  const apiserverId = `apiserver-${randomUUID()}`;
  const metrics = new Metrics(version, `sha256:${createHash('sha256').update(apiserverId).digest('hex')}`);
  try {
    flags = parseFlags(argv, version);
    fs = PodFs.fromEnv(env.BED_MOUNTS);
    if (!flags.tlsCertFile || !flags.tlsPrivateKeyFile) {
      throw new StartupError('the stand-in needs --tls-cert-file and --tls-private-key-file (it does not self-sign)');
    }
    tls = {
      cert: await fs.readFile(flags.tlsCertFile),
      key: await fs.readFile(flags.tlsPrivateKeyFile),
      ca: flags.clientCaFile ? await fs.readFile(flags.clientCaFile) : undefined,
    };
    etcdTls = {
      ca: flags.etcdCaFile ? await fs.readFile(flags.etcdCaFile) : undefined,
      cert: flags.etcdCertFile ? await fs.readFile(flags.etcdCertFile) : undefined,
      key: flags.etcdKeyFile ? await fs.readFile(flags.etcdKeyFile) : undefined,
    };
    kms = new KmsPlugins(fs);
    loadOpts = { version, featureGates: flags.featureGates, reload: flags.automaticReload, kms, record: (type, prefix, failed) => metrics.transformation(type, prefix, failed ? 'Unknown' : 'OK') };
    if (flags.encryptionProviderConfig) {
      const file = flags.encryptionProviderConfig;
      let data: Buffer;
      try {
        data = await fs.readFile(file);
      } catch (err) {
        throw new StartupError(
          `error while parsing file: error while loading file: error reading encryption provider configuration file "${file}": ${(err as Error).message}`,
        );
      }
      encryption = await loadEncryption(file, data, loadOpts);
    }
  } catch (err) {
    const e = err as Error;
    if (err instanceof StartupError && err.style === 'cobra') {
      process.stderr.write(`Error: ${e.message}\nUsage:\n  kube-apiserver [flags]\n\nrun "kube-apiserver --help" for the full usage\n`);
    } else {
      klog('E', 'run.go:72', `"command failed" err=${JSON.stringify(e.message)}`);
    }
    return 1;
  }

  // Until it serves there is nothing in flight: a SIGTERM ends the process at once.
  let onSignal: (signal: string) => void = () => process.exit(0);
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  if (knobs.startDelayMs > 0) {
    klog('I', 'bed.go:1', `slow start: serving in ${knobs.startDelayMs} ms (BED_START_DELAY_MS)`);
    await sleep(knobs.startDelayMs);
  }

  metrics.lastConfigHash = encryption?.hash;
  let current = encryption;
  const transformerFor = (r: StoredResource) => current?.transformers[r];

  const etcd = new Etcd3({
    hosts: flags.etcdServers,
    ...(etcdTls.ca ? { credentials: { rootCertificate: etcdTls.ca, certChain: etcdTls.cert, privateKey: etcdTls.key } } : {}),
    dialTimeout: 5000,
    // Pages of 1,000 large Secrets exceed gRPC's default 4 MiB reply limit.
    grpcOptions: { 'grpc.max_receive_message_length': 512 * 1024 * 1024 },
  });
  const store = new Store(etcd, flags.etcdPrefix.replace(/\/+$/, ''), transformerFor);
  const health: HealthState = { cachesSynced: false, shuttingDown: false, extraChecks: new Map() };
  const setKmsChecks = () => {
    health.extraChecks = kms.healthChecks(current?.probes ?? [], flags.automaticReload);
  };
  setKmsChecks();
  const host = flags.bindAddress === '0.0.0.0' || flags.bindAddress === '::' ? '127.0.0.1' : flags.bindAddress;
  const handler = createHandler({
    store,
    metrics,
    knobs,
    version,
    health,
    serverAddress: `${flags.advertiseAddress ?? host}:${flags.securePort}`,
  });

  let stopped = false;
  // HTTP/2 with HTTP/1.1 for clients that do not offer h2, as a Go apiserver serves: ALPN picks.
  // (BED_HTTP1_ONLY: node:https, which offers no h2; http2's server always offers it.)
  const serverTls = { cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: false };
  const server = knobs.http1Only
    ? createHttpsServer(serverTls, handler)
    : createSecureServer(
        { ...serverTls, allowHTTP1: true, settings: { maxConcurrentStreams: knobs.maxStreams } },
        // The handler is written to the HTTP/1.1 request and response; the compatibility API has
        // the parts it uses (url, method, headers, the body as a stream, socket.authorized, writeHead).
        handler as never,
      );
  // What a graceful shutdown closes: HTTP/2 sessions get a GOAWAY (streams in flight finish),
  // HTTP/1.1 connections are closed once idle.
  const sessions = new Set<Http2Session>();
  server.on('session', (s: Http2Session) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
    s.on('error', () => {});
  });
  const http1 = new Map<Socket, number>(); // socket -> requests in flight on it
  server.on('request', (req, res) => {
    if (req.httpVersionMajor !== 1) return;
    const sock = req.socket as Socket;
    http1.set(sock, (http1.get(sock) ?? 0) + 1);
    res.on('finish', () => {
      if (!http1.has(sock)) return; // the connection closed first
      const n = http1.get(sock)! - 1;
      http1.set(sock, n);
      if (n === 0 && stopped) sock.destroySoon();
    });
  });
  const closeIdle = () => {
    for (const s of sessions) s.close();
    for (const [sock, n] of http1) if (n === 0) sock.destroy();
  };
  const closeAll = () => {
    for (const s of sessions) s.destroy();
    for (const sock of http1.keys()) sock.destroy();
  };
  server.on('secureConnection', (sock: TLSSocket) => {
    // An HTTP/1.1 connection before its first request is idle too.
    if (sock.alpnProtocol !== 'h2') http1.set(sock, http1.get(sock) ?? 0);
    sock.on('close', () => http1.delete(sock));
  });
  // HTTP/1.1 keep-alive as the Go server keeps it (its idle timeout is 90 s, the kubeconfig clients' 30 s).
  Object.assign(server, { keepAliveTimeout: 65_000, headersTimeout: 70_000 });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(flags.securePort, flags.bindAddress, () => resolve());
    });
  } catch (err) {
    klog('E', 'run.go:72', `"command failed" err="failed to listen on ${flags.bindAddress}:${flags.securePort}: ${(err as Error).message}"`);
    await etcd.close();
    return 1;
  }
  klog('I', 'secure_serving.go:213', `Serving securely on ${flags.bindAddress}:${flags.securePort}`);

  let generation = 0;

  // The watch caches: list and decode everything; not ready until every resource decodes.
  const syncCaches = async (): Promise<void> => {
    const mine = ++generation;
    for (;;) {
      if (stopped || mine !== generation) return;
      let failure: string | undefined;
      try {
        await ensureSystemNamespaces(store);
        for (const r of STORED_RESOURCES) {
          const bad = await store.scan(RESOURCES[r]);
          if (bad) {
            failure = `"Unhandled Error" err="k8s.io/client-go/tools/cache/reflector.go:251: Failed to watch *core.${RESOURCES[r].kind}: failed to list *core.${RESOURCES[r].kind}: ${bad.message}" logger="UnhandledError"`;
            break;
          }
        }
      } catch (err) {
        failure = `"Unhandled Error" err="storage: ${(err as Error).message}"`;
      }
      if (mine !== generation) return;
      if (!failure) {
        if (!health.cachesSynced) klog('I', 'cache.go:39', 'Caches are synced');
        health.cachesSynced = true;
        return;
      }
      health.cachesSynced = false;
      klog('E', 'reflector.go:166', failure);
      await sleep(CACHE_RETRY_MS);
    }
  };
  void syncCaches();

  // Automatic reload of the encryption config (poll the file; swap on a valid change).
  let reloadTimer: NodeJS.Timeout | undefined;
  if (flags.automaticReload && flags.encryptionProviderConfig) {
    const file = flags.encryptionProviderConfig;
    let lastSeenHash = current?.hash;
    const poll = async () => {
      let data: Buffer;
      try {
        data = await fs.readFile(file);
      } catch (err) {
        if (lastSeenHash !== 'unreadable') {
          lastSeenHash = 'unreadable';
          metrics.reload('failure');
          klog('E', 'controller.go:162', `"Failed to process encryption config" err="error reading encryption provider configuration file \\"${file}\\": ${(err as Error).message}"`);
        }
        return;
      }
      const hash = `sha256:${createHash('sha256').update(data).digest('hex')}`;
      if (hash === lastSeenHash) return;
      lastSeenHash = hash;
      if (hash === current?.hash) return;
      try {
        const previous = current;
        current = await loadEncryption(file, data, loadOpts);
        kms.retireUnused(current.kmsNames);
        // upstream closes the old transformers after a grace period (in-flight requests)
        if (previous) setTimeout(() => previous.close(), 10_000).unref();
        setKmsChecks();
        metrics.lastConfigHash = current.hash;
        metrics.reload('success');
        klog('I', 'controller.go:200', `"Loaded new kms encryption config content" name="${file}"`);
        void syncCaches();
      } catch (err) {
        metrics.reload('failure');
        klog('E', 'controller.go:162', `"Failed to process encryption config" err=${JSON.stringify((err as Error).message)}`);
      }
    };
    const tick = () => {
      reloadTimer = setTimeout(() => {
        poll().finally(() => {
          if (!stopped) tick();
        });
      }, knobs.reloadIntervalMs);
    };
    tick();
  }

  // SIGTERM: stop accepting, let in-flight requests finish, exit 0 quickly.
  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      if (stopped) return;
      stopped = true;
      health.shuttingDown = true;
      klog('I', 'genericapiserver.go:695', `"[graceful-termination] shutdown event" name="${signal}"`);
      clearTimeout(reloadTimer);
      const force = setTimeout(closeAll, SHUTDOWN_GRACE_MS);
      server.close(() => {
        clearTimeout(force);
        etcd.close();
        current?.close();
        kms.closeAll();
        resolve(0);
      });
      closeIdle();
    };
    onSignal = stop;
  });
}

/** The namespaces a real apiserver's system controller makes sure of. */
async function ensureSystemNamespaces(store: Store): Promise<void> {
  for (const name of SYSTEM_NAMESPACES) {
    if (await store.exists(RESOURCES.namespaces, undefined, name)) continue;
    try {
      await store.create(RESOURCES.namespaces, undefined, { metadata: { name } });
    } catch (err) {
      if (!(err instanceof ApiError && err.reason === 'AlreadyExists')) throw err;
    }
  }
}
