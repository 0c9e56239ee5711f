/**
 * The part of etcd's v3 gRPC API that k8s-encrypt uses, encoded and decoded by hand: KV.Range,
 * KV.Put, Maintenance.Status and Maintenance.Snapshot (etcd-io/etcd api/etcdserverpb/rpc.proto
 * and api/mvccpb/kv.proto, v3.4+; field numbers below are upstream's). Fields not listed are
 * skipped, as protobuf allows.
 *
 * Why not proto-loader with a JSON descriptor, as src/kms/ does: loading proto-loader and
 * protobufjs costs about 9 MB of RSS, and decoding a page built a message object and four
 * int64 conversions per key; here a page of 5,000 keys is one pass over the reply with key and
 * value as views into it. A scan of 100,000 Secrets is where that shows (status, --verify).
 */
import { ProtoWriter } from './protobuf';

export const KV_RANGE = '/etcdserverpb.KV/Range';
export const KV_PUT = '/etcdserverpb.KV/Put';
export const MAINTENANCE_STATUS = '/etcdserverpb.Maintenance/Status';
export const MAINTENANCE_SNAPSHOT = '/etcdserverpb.Maintenance/Snapshot';

export interface RangeRequest {
  key: Buffer;
  range_end?: Buffer;
  limit?: number;
  /** int64 as a decimal string, as responses carry it. */
  revision?: string;
  serializable?: boolean;
  keys_only?: boolean;
  count_only?: boolean;
}

export interface KeyValue {
  key: Buffer;
  /** Empty with keys_only. */
  value: Buffer;
  mod_revision: string;
}

export interface RangeResponse {
  /** The store revision the reply was read at. */
  revision: string;
  kvs: KeyValue[];
  more: boolean;
  count: string;
}

export interface StatusResponse {
  memberId: string;
  revision: string;
  version: string;
  dbSize: string;
  leader: string;
  errors: string[];
  dbSizeInUse: string;
}

const bool = (w: ProtoWriter, field: number, v: boolean | undefined) => (v ? w.uint(field, 1) : w);

export function encodeRangeRequest(r: RangeRequest): Buffer {
  const w = new ProtoWriter().bytes(1, r.key).bytes(2, r.range_end).uint(3, r.limit ?? 0).uint(4, BigInt(r.revision ?? 0));
  bool(w, 7, r.serializable);
  bool(w, 8, r.keys_only);
  bool(w, 9, r.count_only);
  return w.finish();
}

export function encodePutRequest(key: Buffer, value: Buffer): Buffer {
  return new ProtoWriter().bytes(1, key).bytes(2, value).finish();
}

export const encodeEmpty = (): Buffer => Buffer.alloc(0);

/** A cursor over one message; length-delimited fields come back as views into the input. */
class Reader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }

  /** A varint as a JS number (field keys, lengths, booleans, revisions below 2^53). */
  uint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new Error('truncated protobuf varint');
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 0x80;
    }
    throw new Error('malformed protobuf varint');
  }

  /** A 64-bit varint as a decimal string, exact beyond 2^53 (member ids are random uint64s). */
  uint64(): string {
    const start = this.pos;
    const n = this.uint();
    if (Number.isSafeInteger(n)) return String(n);
    let v = 0n;
    let shift = 0n;
    for (let p = start; p < this.pos; p++, shift += 7n) v |= BigInt(this.buf[p]! & 0x7f) << shift;
    return BigInt.asIntN(64, v) < 0n ? String(BigInt.asIntN(64, v)) : String(v);
  }

  /** The end offset of a length-delimited field whose length comes next. */
  lengthEnd(): number {
    const len = this.uint();
    const end = this.pos + len;
    if (end > this.end) throw new Error('truncated protobuf field');
    return end;
  }

  bytes(): Buffer {
    const end = this.lengthEnd();
    const b = this.buf.subarray(this.pos, end);
    this.pos = end;
    return b;
  }

  skip(wire: number): void {
    if (wire === 0) this.uint();
    else if (wire === 2) this.pos = this.lengthEnd();
    else if (wire === 1) this.pos += 8;
    else if (wire === 5) this.pos += 4;
    else throw new Error(`unsupported protobuf wire type ${wire}`);
    if (this.pos > this.end) throw new Error('truncated protobuf field');
  }

  /** Calls `field` for each field of the message, which reads the value or returns false to skip it. */
  fields(field: (num: number, wire: number) => boolean): void {
    while (this.pos < this.end) {
      const key = this.uint();
      const num = Math.floor(key / 8);
      const wire = key & 7;
      if (!field(num, wire)) this.skip(wire);
    }
  }

  /** A nested message: a reader over its bytes, and this one moved past it. */
  message(): Reader {
    const end = this.lengthEnd();
    const r = new Reader(this.buf, this.pos, end);
    this.pos = end;
    return r;
  }
}

/** ResponseHeader: member_id (2), revision (3). */
function readHeader(r: Reader, into: { memberId?: string; revision: string }): void {
  r.fields((n, w) => {
    if (n === 2 && w === 0) into.memberId = r.uint64();
    else if (n === 3 && w === 0) into.revision = r.uint64();
    else return false;
    return true;
  });
}

const EMPTY: Buffer = Buffer.alloc(0);

export function decodeRangeResponse(buf: Buffer): RangeResponse {
  const out: RangeResponse = { revision: '0', kvs: [], more: false, count: '0' };
  const r = new Reader(buf);
  r.fields((n, w) => {
    if (w === 2 && n === 1) readHeader(r.message(), out);
    else if (w === 2 && n === 2) {
      // mvccpb.KeyValue: key (1), mod_revision (3), value (5)
      const m = r.message();
      const kv: KeyValue = { key: EMPTY, value: EMPTY, mod_revision: '0' };
      m.fields((f, fw) => {
        if (f === 1 && fw === 2) kv.key = m.bytes();
        else if (f === 5 && fw === 2) kv.value = m.bytes();
        else if (f === 3 && fw === 0) kv.mod_revision = m.uint64();
        else return false;
        return true;
      });
      out.kvs.push(kv);
    } else if (w === 0 && n === 3) out.more = r.uint() !== 0;
    else if (w === 0 && n === 4) out.count = r.uint64();
    else return false;
    return true;
  });
  return out;
}

export function decodeStatusResponse(buf: Buffer): StatusResponse {
  const out: StatusResponse = { memberId: '0', revision: '0', version: '', dbSize: '0', leader: '0', errors: [], dbSizeInUse: '0' };
  const r = new Reader(buf);
  r.fields((n, w) => {
    if (n === 1 && w === 2) readHeader(r.message(), out);
    else if (n === 2 && w === 2) out.version = r.bytes().toString('utf8');
    else if (n === 3 && w === 0) out.dbSize = r.uint64();
    else if (n === 4 && w === 0) out.leader = r.uint64();
    else if (n === 8 && w === 2) out.errors.push(r.bytes().toString('utf8'));
    else if (n === 9 && w === 0) out.dbSizeInUse = r.uint64();
    else return false;
    return true;
  });
  return out;
}

/** SnapshotResponse: blob (3), a view into the message (one message per chunk). */
export function decodeSnapshotResponse(buf: Buffer): Buffer {
  let blob = EMPTY;
  const r = new Reader(buf);
  r.fields((n, w) => {
    if (n !== 3 || w !== 2) return false;
    blob = r.bytes();
    return true;
  });
  return blob;
}

/** PutResponse carries nothing the caller needs. */
export const decodeIgnored = (): undefined => undefined;
