/**
 * The KMS plugin gRPC APIs, embedded so that the bundled CLI needs no .proto files at run time.
 *
 * `KMS_V2_PROTO` / `KMS_V1BETA1_PROTO` are the upstream definitions (k8s.io/kms apis/v2/api.proto
 * and apis/v1beta1/api.proto, comments trimmed); the descriptors below are the same messages in
 * protobufjs' JSON form, which @grpc/proto-loader loads with `fromJSON`. Field names there are
 * camelCase (what protobufjs' parser makes of snake_case; `fromJSON` does not convert them), the
 * numbers and types are upstream's. A unit test checks every field against the proto text.
 */
import type { Options } from '@grpc/proto-loader';

export const KMS_V2_PROTO = `syntax = "proto3";

package v2;
option go_package = "k8s.io/kms/apis/v2";

service KeyManagementService {
    rpc Status(StatusRequest) returns (StatusResponse) {}
    rpc Decrypt(DecryptRequest) returns (DecryptResponse) {}
    rpc Encrypt(EncryptRequest) returns (EncryptResponse) {}
}

message StatusRequest {}

message StatusResponse {
    string version = 1;
    string healthz = 2;
    string key_id = 3;
}

message DecryptRequest {
    bytes ciphertext = 1;
    string uid = 2;
    string key_id = 3;
    map<string, bytes> annotations = 4;
}

message DecryptResponse {
    bytes plaintext = 1;
}

message EncryptRequest {
    bytes plaintext = 1;
    string uid = 2;
}

message EncryptResponse {
    bytes ciphertext = 1;
    string key_id = 2;
    map<string, bytes> annotations = 3;
}
`;

export const KMS_V1BETA1_PROTO = `syntax = "proto3";

package v1beta1;

service KeyManagementService {
    rpc Version(VersionRequest) returns (VersionResponse) {}
    rpc Decrypt(DecryptRequest) returns (DecryptResponse) {}
    rpc Encrypt(EncryptRequest) returns (EncryptResponse) {}
}

message VersionRequest {
    string version = 1;
}

message VersionResponse {
    string version = 1;
    string runtime_name = 2;
    string runtime_version = 3;
}

message DecryptRequest {
    string version = 1;
    bytes cipher = 2;
}

message DecryptResponse {
    bytes plain = 1;
}

message EncryptRequest {
    string version = 1;
    bytes plain = 2;
}

message EncryptResponse {
    bytes cipher = 1;
}
`;

interface FieldJson {
  type: string;
  id: number;
  keyType?: string;
}
interface MessageJson {
  fields: Record<string, FieldJson>;
}
interface ServiceJson {
  methods: Record<string, { requestType: string; responseType: string }>;
}
export interface PackageJson {
  nested: Record<string, { nested: Record<string, MessageJson | ServiceJson> }>;
}

const rpc = (name: string) => ({ requestType: `${name}Request`, responseType: `${name}Response` });

export const KMS_V2_DESCRIPTOR: PackageJson = {
  nested: {
    v2: {
      nested: {
        KeyManagementService: { methods: { Status: rpc('Status'), Decrypt: rpc('Decrypt'), Encrypt: rpc('Encrypt') } },
        StatusRequest: { fields: {} },
        StatusResponse: {
          fields: { version: { type: 'string', id: 1 }, healthz: { type: 'string', id: 2 }, keyId: { type: 'string', id: 3 } },
        },
        DecryptRequest: {
          fields: {
            ciphertext: { type: 'bytes', id: 1 },
            uid: { type: 'string', id: 2 },
            keyId: { type: 'string', id: 3 },
            annotations: { keyType: 'string', type: 'bytes', id: 4 },
          },
        },
        DecryptResponse: { fields: { plaintext: { type: 'bytes', id: 1 } } },
        EncryptRequest: { fields: { plaintext: { type: 'bytes', id: 1 }, uid: { type: 'string', id: 2 } } },
        EncryptResponse: {
          fields: {
            ciphertext: { type: 'bytes', id: 1 },
            keyId: { type: 'string', id: 2 },
            annotations: { keyType: 'string', type: 'bytes', id: 3 },
          },
        },
      },
    },
  },
};

export const KMS_V1BETA1_DESCRIPTOR: PackageJson = {
  nested: {
    v1beta1: {
      nested: {
        KeyManagementService: { methods: { Version: rpc('Version'), Decrypt: rpc('Decrypt'), Encrypt: rpc('Encrypt') } },
        VersionRequest: { fields: { version: { type: 'string', id: 1 } } },
        VersionResponse: {
          fields: {
            version: { type: 'string', id: 1 },
            runtimeName: { type: 'string', id: 2 },
            runtimeVersion: { type: 'string', id: 3 },
          },
        },
        DecryptRequest: { fields: { version: { type: 'string', id: 1 }, cipher: { type: 'bytes', id: 2 } } },
        DecryptResponse: { fields: { plain: { type: 'bytes', id: 1 } } },
        EncryptRequest: { fields: { version: { type: 'string', id: 1 }, plain: { type: 'bytes', id: 2 } } },
        EncryptResponse: { fields: { cipher: { type: 'bytes', id: 1 } } },
      },
    },
  },
};

/** proto-loader options shared by the clients and the test bed's plugin: bytes as Buffers, proto3
 * defaults filled in (an empty key_id arrives as ''). */
export const LOADER_OPTIONS: Options = { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true };
