/**
 * The stand-in's own gRPC calls to a KMS plugin, as the apiserver's envelope services make them:
 * unary calls on a unix socket with a deadline of the provider's `timeout`, messages written by hand
 * from upstream's protos (k8s.io/kms apis/v2/api.proto, apis/v1beta1/api.proto) so that they
 * cannot share a mistake with src/kms's descriptors.
 */
import * as grpc from '@grpc/grpc-js';
import { encodeMessage, fields, mapEntry, type OutField } from './protobuf';

export interface StatusResponse {
  version: string;
  healthz: string;
  keyId: string;
}
export interface EncryptResponse {
  ciphertext: Buffer;
  keyId: string;
  annotations: Record<string, Buffer>;
}
/** kmsservice.Service (v2). */
export interface KmsV2Plugin {
  status(): Promise<StatusResponse>;
  encrypt(uid: string, plaintext: Buffer): Promise<EncryptResponse>;
  decrypt(uid: string, req: { ciphertext: Buffer; keyId: string; annotations: Record<string, Buffer> }): Promise<Buffer>;
  close(): void;
}
/** envelope.Service (v1beta1). */
export interface KmsV1Plugin {
  encrypt(plain: Buffer): Promise<Buffer>;
  decrypt(cipher: Buffer): Promise<Buffer>;
  close(): void;
}

type Decoded = Map<number, Buffer[]>;

function decode(buf: Buffer): Decoded {
  const out: Decoded = new Map();
  for (const f of fields(buf)) if (f.bytes) out.set(f.no, [...(out.get(f.no) ?? []), f.bytes]);
  return out;
}
const str = (d: Decoded, no: number) => (d.get(no)?.at(-1) ?? Buffer.alloc(0)).toString('utf8');
const bytes = (d: Decoded, no: number) => Buffer.from(d.get(no)?.at(-1) ?? Buffer.alloc(0));

function unaryCaller(endpoint: string, service: string, timeoutMs: number) {
  const client = new grpc.Client(endpoint, grpc.credentials.createInsecure(), {
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 1000,
  });
  const call = (method: string, request: OutField[]): Promise<Decoded> =>
    new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        `/${service}/${method}`,
        (fs: OutField[]) => encodeMessage(fs),
        (b: Buffer) => decode(b),
        request,
        new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, res) => (err ? reject(new Error(`rpc error: code = ${grpc.status[err.code]} desc = ${err.details}`)) : resolve(res!)),
      );
    });
  return { call, close: () => client.close() };
}

export function kmsV2Plugin(endpoint: string, timeoutMs: number): KmsV2Plugin {
  const { call, close } = unaryCaller(endpoint, 'v2.KeyManagementService', timeoutMs);
  return {
    async status() {
      const r = await call('Status', []);
      return { version: str(r, 1), healthz: str(r, 2), keyId: str(r, 3) };
    },
    async encrypt(uid, plaintext) {
      const r = await call('Encrypt', [
        { no: 1, bytes: plaintext },
        { no: 2, bytes: uid },
      ]);
      const annotations = Object.fromEntries((r.get(3) ?? []).map((e) => mapEntry(e)));
      return { ciphertext: bytes(r, 1), keyId: str(r, 2), annotations };
    },
    async decrypt(uid, req) {
      const r = await call('Decrypt', [
        { no: 1, bytes: req.ciphertext },
        { no: 2, bytes: uid },
        { no: 3, bytes: req.keyId },
        { no: 4, map: req.annotations },
      ]);
      return bytes(r, 1);
    },
    close,
  };
}

const V1_API_VERSION = 'v1beta1';

/** The v1 gRPCService: its interceptor asks Version once before the first other call. */
export function kmsV1Plugin(endpoint: string, timeoutMs: number): KmsV1Plugin {
  const { call, close } = unaryCaller(endpoint, 'v1beta1.KeyManagementService', timeoutMs);
  let versionChecked: Promise<void> | undefined;
  const checkVersion = () =>
    (versionChecked ??= call('Version', [{ no: 1, bytes: V1_API_VERSION }]).then(
      (r) => {
        if (str(r, 1) !== V1_API_VERSION) throw new Error(`KMS provider api version ${str(r, 1)} is not supported, only ${V1_API_VERSION} is supported now`);
      },
      (err: Error) => {
        throw new Error(`failed get version from remote KMS provider: ${err.message}`);
      },
    )).catch((err: Error) => {
      versionChecked = undefined;
      throw err;
    });
  const v1call = async (method: 'Encrypt' | 'Decrypt', payload: Buffer) => {
    await checkVersion();
    return bytes(await call(method, [{ no: 1, bytes: V1_API_VERSION }, { no: 2, bytes: payload }]), 1);
  };
  return { encrypt: (plain) => v1call('Encrypt', plain), decrypt: (cipher) => v1call('Decrypt', cipher), close };
}
