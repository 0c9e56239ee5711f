/**
 * gRPC clients for KMS plugins on a unix socket, as the apiserver talks to them: v2
 * (Status/Encrypt/Decrypt) and v1beta1 (Version/Encrypt/Decrypt). Every call carries a deadline;
 * failures become CliErrors (ExitCode.Cluster) that name the endpoint and say what went wrong,
 * never the bytes involved.
 */
import { isAbsolute } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { KmsV1Service, KmsV2DecryptRequest, KmsV2EncryptResponse, KmsV2Service } from '../etcd/codec';
import { CliError, ExitCode } from '../ui/errors';
import { KMS_V1BETA1_DESCRIPTOR, KMS_V2_DESCRIPTOR, LOADER_OPTIONS, type PackageJson } from './proto';

/** The apiserver's default KMS timeout. */
export const DEFAULT_KMS_TIMEOUT_MS = 3000;

interface KmsClientOptions {
  /** Deadline of each call (default 3s, as the apiserver's `timeout`). */
  timeoutMs?: number;
}

export type KmsV2Client = KmsV2Service & { readonly endpoint: string; close(): void };

interface KmsV1Version {
  version: string;
  runtimeName: string;
  runtimeVersion: string;
}
export type KmsV1Client = KmsV1Service & {
  readonly endpoint: string;
  version(): Promise<KmsV1Version>;
  close(): void;
};

/**
 * The socket path of a `unix:///abs/path` endpoint. The apiserver accepts nothing else
 * ("unsupported scheme ... only unix is supported"), so neither do we.
 */
export function parseKmsEndpoint(endpoint: string): string {
  const m = /^unix:\/\/(.*)$/.exec(endpoint);
  if (!m) {
    throw new CliError(`KMS endpoint "${endpoint}" is not supported: only unix:// endpoints are`, {
      hint: 'give the plugin socket as unix:///var/run/kmsplugin/grpc.sock',
      exitCode: ExitCode.Usage,
    });
  }
  const path = m[1]!;
  if (!isAbsolute(path) || path.length < 2 || /[\0\n]/.test(path)) {
    throw new CliError(`KMS endpoint "${endpoint}" must name an absolute socket path after unix://`, {
      hint: 'e.g. unix:///var/run/kmsplugin/grpc.sock (three slashes)',
      exitCode: ExitCode.Usage,
    });
  }
  return path;
}

/** 3000 -> "3s", 500 -> "500ms", 1500 -> "1.5s" (the way the apiserver's config writes timeouts). */
export function formatDurationMs(ms: number): string {
  if (ms >= 1000 && ms % 100 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

interface ServiceCtor {
  new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions): grpc.Client;
}

const ctorCache = new Map<PackageJson, ServiceCtor>();
function serviceCtor(descriptor: PackageJson, pkg: string): ServiceCtor {
  let ctor = ctorCache.get(descriptor);
  if (!ctor) {
    const def = protoLoader.fromJSON(descriptor as never, LOADER_OPTIONS);
    const loaded = grpc.loadPackageDefinition(def) as Record<string, Record<string, ServiceCtor>>;
    ctor = loaded[pkg]!.KeyManagementService!;
    ctorCache.set(descriptor, ctor);
  }
  return ctor;
}

/** What a failed call means for an operator, in one line. */
function describeCallError(endpoint: string, method: string, timeoutMs: number, err: unknown): CliError {
  const e = err as grpc.ServiceError;
  const details = (e?.details || e?.message || String(err)).replace(/\s+/g, ' ').trim();
  let message: string;
  let hint: string;
  switch (e?.code) {
    case grpc.status.DEADLINE_EXCEEDED:
      message = `KMS plugin at ${endpoint} did not answer within ${formatDurationMs(timeoutMs)} (${method})`;
      hint = 'check that the plugin is running and not overloaded, or raise --timeout';
      break;
    case grpc.status.UNAVAILABLE:
      message = /ENOENT/.test(details)
        ? `KMS plugin at ${endpoint} is not running: the socket does not exist`
        : /ECONNREFUSED/.test(details)
          ? `KMS plugin at ${endpoint} is not running: connection refused (stale socket)`
          : `KMS plugin at ${endpoint} is not reachable: ${details}`;
      hint = 'start the plugin (static pod or host service) and check its logs';
      break;
    case grpc.status.UNIMPLEMENTED:
      message = `KMS plugin at ${endpoint} does not implement ${method}`;
      hint = method.startsWith('v2')
        ? 'it may be a KMS v1 plugin: check its version, or pass --kms-api-version v1'
        : 'it may be a KMS v2-only plugin: pass --kms-api-version v2';
      break;
    default:
      message = `KMS plugin at ${endpoint} failed ${method}: ${details}`;
      hint = "check the plugin's logs (credentials, key id, access to the key service)";
  }
  return new CliError(message, {
    hint,
    exitCode: ExitCode.Cluster,
    cause: err,
    details: { endpoint, method, grpcCode: e?.code },
  });
}

/** The plugin is not there or did not answer at all (as opposed to answering with an error). */
export function isUnreachableError(err: unknown): boolean {
  const code = err instanceof CliError ? err.details?.grpcCode : undefined;
  return code === grpc.status.UNAVAILABLE || code === grpc.status.DEADLINE_EXCEEDED;
}

function unaryCaller(client: grpc.Client, endpoint: string, timeoutMs: number, pkg: string) {
  return <Req, Res>(method: string, request: Req): Promise<Res> =>
    new Promise<Res>((resolve, reject) => {
      const fn = (client as unknown as Record<string, Function>)[method];
      fn!.call(
        client,
        request,
        new grpc.Metadata(),
        { deadline: new Date(Date.now() + timeoutMs) },
        (err: grpc.ServiceError | null, res: Res) => {
          if (err) reject(describeCallError(endpoint, `${pkg} ${method}`, timeoutMs, err));
          else resolve(res);
        },
      );
    });
}

/** A client of one KMS package and its unary caller (deadline, errors named after the call). */
function connect(endpoint: string, opts: KmsClientOptions, descriptor: PackageJson, pkg: string) {
  const client = makeClient(endpoint, descriptor, pkg);
  return { client, call: unaryCaller(client, endpoint, opts.timeoutMs ?? DEFAULT_KMS_TIMEOUT_MS, pkg) };
}

function makeClient(endpoint: string, descriptor: PackageJson, pkg: string): grpc.Client {
  parseKmsEndpoint(endpoint);
  const Ctor = serviceCtor(descriptor, pkg);
  // The plugin is local: do not back off for long between reconnect attempts.
  return new Ctor(endpoint, grpc.credentials.createInsecure(), {
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1000,
  });
}

const toBuffers = (m: Record<string, Uint8Array> | undefined): Record<string, Buffer> =>
  Object.fromEntries(Object.entries(m ?? {}).map(([k, v]) => [k, Buffer.from(v)]));

/** A KMS v2 client; the connection is made on the first call. */
export function connectKmsV2(endpoint: string, opts: KmsClientOptions = {}): KmsV2Client {
  const { client, call } = connect(endpoint, opts, KMS_V2_DESCRIPTOR, 'v2');
  return {
    endpoint,
    async status() {
      const r = await call<object, { version: string; healthz: string; keyId: string }>('Status', {});
      return { version: r.version, healthz: r.healthz, keyId: r.keyId };
    },
    async encrypt(uid: string, plaintext: Uint8Array): Promise<KmsV2EncryptResponse> {
      const r = await call<object, { ciphertext: Buffer; keyId: string; annotations: Record<string, Buffer> }>(
        'Encrypt',
        { plaintext: Buffer.from(plaintext), uid },
      );
      const annotations = toBuffers(r.annotations);
      return {
        ciphertext: Buffer.from(r.ciphertext),
        keyId: r.keyId,
        ...(Object.keys(annotations).length ? { annotations } : {}),
      };
    },
    async decrypt(uid: string, req: KmsV2DecryptRequest): Promise<Uint8Array> {
      const r = await call<object, { plaintext: Buffer }>('Decrypt', {
        ciphertext: Buffer.from(req.ciphertext),
        uid,
        keyId: req.keyId,
        annotations: toBuffers(req.annotations),
      });
      return Buffer.from(r.plaintext);
    },
    close: () => client.close(),
  };
}

/** The version string a v1 plugin must answer (and that every v1 request carries). */
export const KMS_V1_API_VERSION = 'v1beta1';

/** A KMS v1 (v1beta1) client; the connection is made on the first call. */
export function connectKmsV1(endpoint: string, opts: KmsClientOptions = {}): KmsV1Client {
  const { client, call } = connect(endpoint, opts, KMS_V1BETA1_DESCRIPTOR, 'v1beta1');
  return {
    endpoint,
    async version() {
      const r = await call<object, KmsV1Version>('Version', { version: KMS_V1_API_VERSION });
      return { version: r.version, runtimeName: r.runtimeName, runtimeVersion: r.runtimeVersion };
    },
    async encrypt(plaintext: Uint8Array) {
      const r = await call<object, { cipher: Buffer }>('Encrypt', { version: KMS_V1_API_VERSION, plain: Buffer.from(plaintext) });
      return Buffer.from(r.cipher);
    },
    async decrypt(ciphertext: Uint8Array) {
      const r = await call<object, { plain: Buffer }>('Decrypt', { version: KMS_V1_API_VERSION, cipher: Buffer.from(ciphertext) });
      return Buffer.from(r.plain);
    },
    close: () => client.close(),
  };
}
