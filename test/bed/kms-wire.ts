/**
 * The KMS plugin gRPC APIs as the bed's plugin serves them, written by hand from upstream's protos
 * (k8s.io/kms apis/v2/api.proto and apis/v1beta1/api.proto): every message as a table of field
 * numbers and kinds, encoded and decoded with the bed's own protobuf helpers. Nothing here comes
 * from src/kms, so a wrong field number or type in the CLI's descriptors makes the CLI and the bed
 * disagree instead of agreeing with itself.
 */
import type * as grpc from '@grpc/grpc-js';
import { encodeMessage, fields, mapEntry, type OutField } from './apiserver/protobuf';

type Kind = 'string' | 'bytes' | 'map';
type Schema = Record<string, readonly [no: number, kind: Kind]>;
type Message = Record<string, string | Buffer | Record<string, Buffer>>;

const WIRE_LEN = 2;

/** v2: StatusRequest {} ... (upstream numbers; names as the handlers use them). */
export const KMS_V2_MESSAGES = {
  StatusRequest: {},
  StatusResponse: { version: [1, 'string'], healthz: [2, 'string'], keyId: [3, 'string'] },
  DecryptRequest: { ciphertext: [1, 'bytes'], uid: [2, 'string'], keyId: [3, 'string'], annotations: [4, 'map'] },
  DecryptResponse: { plaintext: [1, 'bytes'] },
  EncryptRequest: { plaintext: [1, 'bytes'], uid: [2, 'string'] },
  EncryptResponse: { ciphertext: [1, 'bytes'], keyId: [2, 'string'], annotations: [3, 'map'] },
} as const satisfies Record<string, Schema>;

export const KMS_V1BETA1_MESSAGES = {
  VersionRequest: { version: [1, 'string'] },
  VersionResponse: { version: [1, 'string'], runtimeName: [2, 'string'], runtimeVersion: [3, 'string'] },
  DecryptRequest: { version: [1, 'string'], cipher: [2, 'bytes'] },
  DecryptResponse: { plain: [1, 'bytes'] },
  EncryptRequest: { version: [1, 'string'], plain: [2, 'bytes'] },
  EncryptResponse: { cipher: [1, 'bytes'] },
} as const satisfies Record<string, Schema>;

/** proto3 decoding: absent fields get their zero value, unknown fields are skipped. */
export function decodeKms(schema: Schema, buf: Buffer): Message {
  const out: Message = {};
  const byNo = new Map(Object.entries(schema).map(([name, [no, kind]]) => [no, { name, kind }]));
  for (const [name, [, kind]] of Object.entries(schema)) out[name] = kind === 'string' ? '' : kind === 'bytes' ? Buffer.alloc(0) : {};
  for (const f of fields(buf)) {
    const spec = byNo.get(f.no);
    if (!spec) continue;
    if (f.wire !== WIRE_LEN || !f.bytes) throw new Error(`field ${f.no} (${spec.name}) has wire type ${f.wire}, not length-delimited`);
    if (spec.kind === 'string') out[spec.name] = f.bytes.toString('utf8');
    else if (spec.kind === 'bytes') out[spec.name] = Buffer.from(f.bytes);
    else {
      const [k, v] = mapEntry(f.bytes);
      (out[spec.name] as Record<string, Buffer>)[k] = Buffer.from(v);
    }
  }
  return out;
}

export function encodeKms(schema: Schema, msg: Record<string, unknown>): Buffer {
  const out: OutField[] = [];
  for (const [name, [no, kind]] of Object.entries(schema)) {
    const v = msg[name];
    if (v === undefined || v === null) continue;
    if (kind === 'map') out.push({ no, map: v as Record<string, Uint8Array> });
    else out.push({ no, bytes: v as string | Uint8Array });
  }
  return encodeMessage(out);
}

/** A unary-only grpc-js service definition for `pkg.KeyManagementService`. */
export function kmsServiceDefinition(
  pkg: 'v2' | 'v1beta1',
  methods: Record<string, readonly [request: Schema, response: Schema]>,
): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<Record<string, unknown>, Record<string, unknown>>> = {};
  for (const [method, [req, res]] of Object.entries(methods)) {
    def[method] = {
      path: `/${pkg}.KeyManagementService/${method}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: (m: Record<string, unknown>) => encodeKms(req, m),
      requestDeserialize: (b: Buffer) => decodeKms(req, b),
      responseSerialize: (m: Record<string, unknown>) => encodeKms(res, m),
      responseDeserialize: (b: Buffer) => decodeKms(res, b),
      originalName: method,
    };
  }
  return def;
}

export const KMS_V2_SERVICE = kmsServiceDefinition('v2', {
  Status: [KMS_V2_MESSAGES.StatusRequest, KMS_V2_MESSAGES.StatusResponse],
  Decrypt: [KMS_V2_MESSAGES.DecryptRequest, KMS_V2_MESSAGES.DecryptResponse],
  Encrypt: [KMS_V2_MESSAGES.EncryptRequest, KMS_V2_MESSAGES.EncryptResponse],
});

export const KMS_V1BETA1_SERVICE = kmsServiceDefinition('v1beta1', {
  Version: [KMS_V1BETA1_MESSAGES.VersionRequest, KMS_V1BETA1_MESSAGES.VersionResponse],
  Decrypt: [KMS_V1BETA1_MESSAGES.DecryptRequest, KMS_V1BETA1_MESSAGES.DecryptResponse],
  Encrypt: [KMS_V1BETA1_MESSAGES.EncryptRequest, KMS_V1BETA1_MESSAGES.EncryptResponse],
});
