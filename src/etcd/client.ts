/**
 * Raw access to the apiserver's etcd, the way kube-apiserver connects to it (--etcd-servers,
 * --etcd-cafile, --etcd-certfile, --etcd-keyfile, --etcd-prefix). Reads page by key range so that
 * a scan never holds more than one page.
 */
import { readFile } from 'node:fs/promises';
import { Channel, Code, dialAddress, Scratch, type GrpcError } from './grpc';
import * as codec from './rpc-codec';
import { CliError, ExitCode, fsError, usageError } from '../ui/errors';

export interface EtcdConnection {
  endpoints: string[];
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  /** kube-apiserver's --etcd-prefix (default /registry). */
  prefix?: string;
}

export const DEFAULT_ETCD_PREFIX = '/registry';

export interface ScanOptions {
  /** Keys in the first request (default 500); later requests are sized from the bytes seen. */
  pageSize?: number;
  /**
   * Reply size later pages aim at (default 1 MiB; 0 keeps every page at pageSize). etcd counts
   * every remaining key of the range for each limited request, so 200 pages of 500 over 100,000
   * keys cost it ~4 s where 20 pages of 5,000 cost under 1 s; sizing by bytes keeps that win for
   * small values without letting a page of large Secrets grow past this.
   */
  pageBytes?: number;
  /** The most keys one request asks for (default 5,000). */
  maxPageSize?: number;
  /** Leave values out (counts and names only). */
  keysOnly?: boolean;
  /** Read from the member answering without a quorum round trip (may lag the leader slightly). */
  serializable?: boolean;
}

export interface EtcdEntry {
  key: string;
  /**
   * Absent with keysOnly. A view into the scan's receive buffer: valid until the loop asks for
   * the next entry (copy it to keep it longer).
   */
  value?: Buffer;
  modRevision: string;
}

export interface EtcdReader {
  readonly connection: EtcdConnection;
  get(key: string): Promise<Buffer | undefined>;
  put(key: string, value: Uint8Array | string): Promise<void>;
  /**
   * Every key under a prefix in key order, one page in memory at a time. The first page fixes
   * the revision so later pages read the same snapshot (as a paged LIST does); if etcd compacts
   * that revision mid-scan the rest is read at the newest revision.
   */
  scan(prefix: string, opts?: ScanOptions): AsyncIterable<EtcdEntry>;
  close(): void;
}

const flagValue = (flags: Map<string, string>, name: string): string | undefined =>
  flags.get(name) ?? flags.get(`--${name}`);

/** The etcd connection from kube-apiserver's flags (keys with or without the leading `--`). */
export function etcdConnectionFromFlags(flags: Map<string, string>): EtcdConnection {
  const servers = flagValue(flags, 'etcd-servers');
  const endpoints = (servers ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (endpoints.length === 0) {
    throw usageError(
      'kube-apiserver has no --etcd-servers flag',
      'check the manifest (kube-apiserver.yaml); k8s-encrypt reads etcd from the same endpoints',
    );
  }
  return {
    endpoints,
    caFile: flagValue(flags, 'etcd-cafile'),
    certFile: flagValue(flags, 'etcd-certfile'),
    keyFile: flagValue(flags, 'etcd-keyfile'),
    prefix: flagValue(flags, 'etcd-prefix') || DEFAULT_ETCD_PREFIX,
  };
}

/** The smallest key greater than every key with this prefix (etcd's "range_end" for a prefix). */
export function prefixRangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // all 0xff: to the end of the keyspace
}

const DEFAULT_PAGE_BYTES = 1024 * 1024;
const DEFAULT_MAX_PAGE_SIZE = 5000;

/** Keys for the next request: as many as fit in `pageBytes` at the last page's bytes per key. */
export function nextPageSize(kvs: readonly { key: Uint8Array; value?: Uint8Array }[], pageBytes: number, maxPageSize: number): number {
  let bytes = 0;
  for (const kv of kvs) bytes += kv.key.length + (kv.value?.length ?? 0) + 16; // + framing
  const perKey = bytes / kvs.length;
  return Math.max(1, Math.min(maxPageSize, Math.floor(pageBytes / perKey)));
}

const ENDPOINT_HINT =
  'check that --etcd-servers is reachable from this node and that the etcd CA, client certificate and key are the ones kube-apiserver uses (kubeadm: /etc/kubernetes/pki/etcd/ca.crt, apiserver-etcd-client.crt/.key)';

/** gRPC failures as one CliError line; certificates and endpoints in the hint. */
export function etcdError(conn: EtcdConnection, action: string, err: unknown): CliError {
  if (err instanceof CliError) return err;
  const raw = (err as Error | undefined)?.message ?? String(err);
  const where = conn.endpoints.join(',');
  // grpc appends diagnostics ("Last error: …. Resolution note: ") that say nothing to an operator.
  let why = raw.replace(/\s+/g, ' ').replace(/\.?\s*Resolution note:.*$/, '').slice(0, 300);
  if (/certificate|SSL|TLS|handshake|self.signed|unable to verify|altname|wrong version number/i.test(raw)) {
    why = `TLS failed (${why})`;
  } else if (/UNAVAILABLE|ECONNREFUSED|No connection established|connect|DEADLINE|deadline|circuit/i.test(raw)) {
    why = `cannot reach etcd (${why})`;
  } else if (/permission denied|Unauthenticated|PERMISSION_DENIED|UNAUTHENTICATED/i.test(raw)) {
    why = `etcd refused the client (${why})`;
  }
  return new CliError(`etcd ${action} at ${where}: ${why}`, {
    hint: ENDPOINT_HINT,
    exitCode: ExitCode.Cluster,
    cause: err,
  });
}

async function readPem(path: string | undefined, what: string): Promise<Buffer | undefined> {
  if (path === undefined) return undefined;
  try {
    return await readFile(path);
  } catch (err) {
    const e = fsError(`read the etcd ${what}`, path, err);
    throw new CliError(e.message, { hint: e.hint, exitCode: ExitCode.Cluster, cause: err });
  }
}

export interface OpenEtcdOptions {
  /** Per-call deadline (default 10 s). */
  callTimeoutMs?: number;
  /** Check the connection with one small read before returning (default true). */
  probe?: boolean;
  /** Largest reply accepted from etcd (default 64 MiB); scan() halves its page beyond it. */
  maxReplyBytes?: number;
}

interface MethodDef<Req = unknown, Res = unknown> {
  path: string;
  encode: (req: Req) => Buffer;
  decode: (buf: Buffer) => Res;
}

const RANGE: MethodDef<codec.RangeRequest, codec.RangeResponse> = { path: codec.KV_RANGE, encode: codec.encodeRangeRequest, decode: codec.decodeRangeResponse };
const PUT: MethodDef<{ key: Buffer; value: Buffer }, undefined> = { path: codec.KV_PUT, encode: (r) => codec.encodePutRequest(r.key, r.value), decode: codec.decodeIgnored };
const STATUS: MethodDef<object, codec.StatusResponse> = { path: codec.MAINTENANCE_STATUS, encode: codec.encodeEmpty, decode: codec.decodeStatusResponse };

/** `https://10.0.0.1:2379` -> `10.0.0.1:2379` (gRPC's target); no port means etcd's 2379. */
export function grpcTarget(endpoint: string): string {
  const rest = endpoint.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '');
  return /:\d+$/.test(rest) ? rest : `${rest}:2379`;
}

/** What Maintenance.Status says about the member answering. */
export interface EtcdStatus {
  version: string;
  /** Bytes of the backend database file, free pages included. */
  dbSize: number;
  /** Bytes in use (etcd 3.4+; 0 when the member does not say). */
  dbSizeInUse: number;
  leader: string;
  memberId: string;
  revision: string;
  errors: string[];
}

export interface EtcdClient extends EtcdReader {
  /** Keys under a prefix (count_only: no keys or values are sent). */
  count(prefix: string, opts?: { serializable?: boolean }): Promise<number>;
  status(): Promise<EtcdStatus>;
  /**
   * Maintenance.Snapshot as it streams: chunks of the backend database (etcd appends its sha256
   * to the last), one at a time, so a caller writes them to a file without holding the snapshot.
   * Breaking out of the loop, or the signal, cancels the stream.
   */
  snapshot(opts?: { signal?: AbortSignal }): AsyncIterable<Buffer>;
}

/**
 * Connects (TLS with client certificates when given) and proves it with one small read. One HTTP/2
 * session per endpoint (src/etcd/grpc.ts); a call that finds its endpoint unavailable moves on to
 * the next one.
 */
export async function openEtcd(conn: EtcdConnection, opts: OpenEtcdOptions = {}): Promise<EtcdClient> {
  if (conn.endpoints.length === 0) throw usageError('no etcd endpoints given', 'pass the --etcd-servers of kube-apiserver');
  if ((conn.certFile === undefined) !== (conn.keyFile === undefined)) {
    throw usageError('an etcd client certificate needs its key (and the key its certificate)', 'give both --etcd-certfile and --etcd-keyfile');
  }
  const targets = conn.endpoints.map((e) => {
    const target = grpcTarget(e);
    try {
      dialAddress(target, false); // the scheme does not change what parses
    } catch {
      // Quoted (a control character stays on the line) and without any user info (a password).
      const shown = JSON.stringify(e.replace(/\/\/[^/]*@/, '//…@'));
      throw usageError(
        `etcd endpoint ${shown} is not a URL with just a host and port`,
        "fix kube-apiserver's --etcd-servers (kube-apiserver.yaml): https://HOST:PORT, an IPv6 address in brackets (https://[fd00::1]:2379)",
      );
    }
    return target;
  });
  const [ca, cert, key] = await Promise.all([
    readPem(conn.caFile, 'CA file'),
    readPem(conn.certFile, 'client certificate'),
    readPem(conn.keyFile, 'client key'),
  ]);
  const tls = conn.endpoints.some((e) => e.startsWith('https://')) || ca !== undefined;
  const callTimeoutMs = opts.callTimeoutMs ?? 10_000;
  const maxReplyBytes = opts.maxReplyBytes ?? 64 * 1024 * 1024;
  const http2 = await import('node:http2');
  const channels = targets.map(
    (target) =>
      new Channel(http2, {
        target,
        ...(tls ? { tls: { ca, cert, key } } : {}),
        // A Secret may be up to 1.5 MiB (Helm release Secrets often are hundreds of KiB): a page
        // of them needs more than gRPC's usual 4 MiB. scan() also halves its page when a reply
        // is still too large, so memory stays bounded by this limit.
        maxReplyBytes,
      }),
  );
  let current = 0;
  const closeAll = () => {
    for (const c of channels) c.close();
  };

  /** Raw gRPC errors: scan() tells a reply over the limit and a compacted revision apart. */
  const unary = async <Req, Res>(m: MethodDef<Req, Res>, req: Req, scratch?: Scratch): Promise<Res> => {
    const body = m.encode(req);
    for (let tried = 1; ; tried++) {
      const i = current;
      try {
        return m.decode(await channels[i]!.unary(m.path, body, { deadline: Date.now() + callTimeoutMs, scratch }));
      } catch (err) {
        if ((err as GrpcError).code !== Code.UNAVAILABLE || tried >= channels.length) throw err;
        current = (i + 1) % channels.length;
      }
    }
  };
  const range = async (req: codec.RangeRequest, action: string): Promise<codec.RangeResponse> => {
    try {
      return await unary(RANGE, req);
    } catch (err) {
      throw etcdError(conn, action, err);
    }
  };
  const codeOf = (err: unknown) => (err as GrpcError | undefined)?.code;

  const client: EtcdClient = {
    connection: conn,
    async get(k) {
      const res = await range({ key: Buffer.from(k) }, `read of ${k}`);
      return res.kvs[0]?.value;
    },
    async put(k, value) {
      try {
        await unary(PUT, { key: Buffer.from(k), value: Buffer.from(value) });
      } catch (err) {
        throw etcdError(conn, `write of ${k}`, err);
      }
    },
    async count(prefix, { serializable = false } = {}) {
      const p = Buffer.from(prefix);
      const res = await range({ key: p, range_end: prefixRangeEnd(p), count_only: true, serializable }, `count of ${prefix}`);
      return Number(res.count);
    },
    async status() {
      let r: codec.StatusResponse;
      try {
        r = await unary(STATUS, {});
      } catch (err) {
        throw etcdError(conn, 'status', err);
      }
      return {
        version: r.version,
        dbSize: Number(r.dbSize),
        dbSizeInUse: Number(r.dbSizeInUse),
        leader: r.leader,
        memberId: r.memberId,
        revision: r.revision,
        errors: r.errors,
      };
    },
    async *snapshot({ signal } = {}) {
      signal?.throwIfAborted();
      try {
        // A fresh buffer per chunk: the caller may still be writing one when the next arrives.
        for await (const m of channels[current]!.serverStream(codec.MAINTENANCE_SNAPSHOT, codec.encodeEmpty(), { signal })) {
          yield codec.decodeSnapshotResponse(m);
        }
        signal?.throwIfAborted();
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        throw etcdError(conn, 'snapshot', err);
      }
    },
    async *scan(prefix, { pageSize = 500, keysOnly = false, pageBytes = DEFAULT_PAGE_BYTES, maxPageSize = DEFAULT_MAX_PAGE_SIZE, serializable = false } = {}) {
      if (!Number.isInteger(pageSize) || pageSize < 1) throw new Error(`invalid page size ${pageSize}`);
      maxPageSize = Math.max(pageSize, maxPageSize);
      // Well under the reply limit, so a grown page is not refused and halved again.
      pageBytes = Math.min(pageBytes, Math.floor(maxReplyBytes / 2));
      const rangeEnd = prefixRangeEnd(Buffer.from(prefix));
      let from = Buffer.from(prefix);
      let revision: string | undefined;
      // Every page lands in this one buffer: a page's values are views into it, and the next
      // page overwrites them (see EtcdEntry.value).
      const scratch = new Scratch();
      for (;;) {
        let res: codec.RangeResponse | undefined;
        try {
          res = await unary(RANGE, {
            key: from,
            range_end: rangeEnd,
            limit: pageSize,
            keys_only: keysOnly,
            serializable,
            revision,
          }, scratch);
        } catch (err) {
          if (pageSize > 1 && codeOf(err) === Code.RESOURCE_EXHAUSTED) {
            pageSize = Math.max(1, Math.floor(pageSize / 2));
            continue;
          }
          if (revision !== undefined && /compacted/i.test((err as Error).message)) {
            revision = undefined; // the snapshot is gone: continue at the newest revision
            continue;
          }
          throw etcdError(conn, `scan of ${prefix}`, err);
        }
        revision ??= res.revision;
        const kvs = res.kvs;
        const last = kvs[kvs.length - 1];
        const more = res.more;
        res = undefined; // the reply is not held while the caller works through the page
        if (last) from = Buffer.concat([last.key, Buffer.from([0])]);
        if (pageBytes > 0 && kvs.length > 0) pageSize = nextPageSize(kvs, pageBytes, maxPageSize);
        for (let i = 0; i < kvs.length; i++) {
          const kv = kvs[i]!;
          kvs[i] = undefined as never; // each value can be collected once the caller is done with it
          yield {
            key: kv.key.toString('utf8'),
            value: keysOnly ? undefined : kv.value,
            modRevision: kv.mod_revision,
          };
        }
        if (!more || !last) return;
      }
    },
    close: closeAll,
  };

  if (opts.probe !== false) {
    try {
      await range({ key: Buffer.from(conn.prefix ?? DEFAULT_ETCD_PREFIX), limit: 1, keys_only: true }, 'connection check');
    } catch (err) {
      closeAll();
      throw err;
    }
  }
  return client;
}
