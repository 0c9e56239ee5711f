/**
 * The part of etcd's v3 gRPC API (etcd-io/etcd api/etcdserverpb/rpc.proto and
 * api/mvccpb/kv.proto, v3.4+) that k8s-encrypt uses, embedded as protobufjs JSON so that the
 * bundled CLI needs no .proto files at run time (as src/kms/proto.ts does for KMS). Only the
 * fields read or sent are declared; protobuf skips the others on the wire. Numbers and types are
 * upstream's; field names keep upstream's snake_case (proto-loader's keepCase).
 */
import type { Options } from '@grpc/proto-loader';

interface FieldJson {
  type: string;
  id: number;
  rule?: 'repeated';
}
interface MethodJson {
  requestType: string;
  responseType: string;
  responseStream?: boolean;
}
type NestedJson = { fields: Record<string, FieldJson> } | { methods: Record<string, MethodJson> };
export interface EtcdPackageJson {
  nested: { etcdserverpb: { nested: Record<string, NestedJson> } };
}

const f = (type: string, id: number, rule?: 'repeated'): FieldJson => (rule ? { type, id, rule } : { type, id });

export const ETCD_DESCRIPTOR: EtcdPackageJson = {
  nested: {
    etcdserverpb: {
      nested: {
        KV: {
          methods: {
            Range: { requestType: 'RangeRequest', responseType: 'RangeResponse' },
            Put: { requestType: 'PutRequest', responseType: 'PutResponse' },
          },
        },
        Maintenance: {
          methods: {
            Status: { requestType: 'StatusRequest', responseType: 'StatusResponse' },
            Snapshot: { requestType: 'SnapshotRequest', responseType: 'SnapshotResponse', responseStream: true },
          },
        },
        ResponseHeader: {
          fields: { cluster_id: f('uint64', 1), member_id: f('uint64', 2), revision: f('int64', 3), raft_term: f('uint64', 4) },
        },
        // mvccpb.KeyValue
        KeyValue: {
          fields: {
            key: f('bytes', 1),
            create_revision: f('int64', 2),
            mod_revision: f('int64', 3),
            version: f('int64', 4),
            value: f('bytes', 5),
            lease: f('int64', 6),
          },
        },
        RangeRequest: {
          fields: {
            key: f('bytes', 1),
            range_end: f('bytes', 2),
            limit: f('int64', 3),
            revision: f('int64', 4),
            serializable: f('bool', 7),
            keys_only: f('bool', 8),
            count_only: f('bool', 9),
          },
        },
        RangeResponse: {
          fields: { header: f('ResponseHeader', 1), kvs: f('KeyValue', 2, 'repeated'), more: f('bool', 3), count: f('int64', 4) },
        },
        PutRequest: { fields: { key: f('bytes', 1), value: f('bytes', 2), lease: f('int64', 3) } },
        PutResponse: { fields: { header: f('ResponseHeader', 1) } },
        StatusRequest: { fields: {} },
        StatusResponse: {
          fields: {
            header: f('ResponseHeader', 1),
            version: f('string', 2),
            dbSize: f('int64', 3),
            leader: f('uint64', 4),
            raftIndex: f('uint64', 5),
            raftTerm: f('uint64', 6),
            raftAppliedIndex: f('uint64', 7),
            errors: f('string', 8, 'repeated'),
            dbSizeInUse: f('int64', 9),
            isLearner: f('bool', 10),
          },
        },
        SnapshotRequest: { fields: {} },
        SnapshotResponse: {
          fields: { header: f('ResponseHeader', 1), remaining_bytes: f('uint64', 2), blob: f('bytes', 3) },
        },
      },
    },
  },
};

/** int64 as decimal strings (revisions pass through unchanged), bytes as Buffers, defaults
 * filled in (an empty page has `kvs: []`, `more: false`). */
export const ETCD_LOADER_OPTIONS: Options = { keepCase: true, longs: String, enums: String, defaults: true };
