/**
 * The smallest protobuf reader/writer the KMS v2 envelope needs: varints and length-delimited
 * fields. Enough for `EncryptedObject` (k8s.io/apiserver .../envelope/kmsv2/v2/api.proto) without
 * pulling a schema compiler into the CLI's start-up path.
 */

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

export class ProtoWriter {
  private readonly parts: Buffer[] = [];

  /** Lengths and tags as numbers; 64-bit values as bigint (a negative int64 as its two's complement). */
  private varint(n: number | bigint): void {
    if (typeof n === 'number' && (!Number.isSafeInteger(n) || n < 0)) throw new Error(`cannot encode varint ${n}`);
    if (typeof n === 'bigint' && (n < -(1n << 63n) || n >= 1n << 64n)) throw new Error(`cannot encode varint ${n}`);
    const bytes: number[] = [];
    let v = BigInt.asUintN(64, BigInt(n));
    while (v >= 0x80n) {
      bytes.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    bytes.push(Number(v));
    this.parts.push(Buffer.from(bytes));
  }

  private tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  /** A varint field; proto3 leaves zero values out. int64/uint64 values beyond 2^53 go as bigint. */
  uint(field: number, value: number | bigint): this {
    if (value !== 0 && value !== 0n) {
      this.tag(field, WIRE_VARINT);
      this.varint(value);
    }
    return this;
  }

  /** A bytes/string field; proto3 leaves empty values out. */
  bytes(field: number, value: Uint8Array | string | undefined): this {
    if (value === undefined || value.length === 0) return this;
    const b = typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value);
    this.tag(field, WIRE_LEN);
    this.varint(b.length);
    this.parts.push(b);
    return this;
  }

  /** An embedded message (e.g. one map entry), written even when empty. */
  message(field: number, inner: ProtoWriter): this {
    const b = inner.finish();
    this.tag(field, WIRE_LEN);
    this.varint(b.length);
    this.parts.push(b);
    return this;
  }

  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

interface ProtoField {
  field: number;
  wire: number;
  /** Set for varint fields: the 64 bits as unsigned, exact (int64 fields such as revisions and
   * lease ids are random-looking values past 2^53); BigInt.asIntN(64, int) reads them signed. */
  int?: bigint;
  /** Set for length-delimited fields (a view into the input). */
  bytes?: Buffer;
}

/** Reads every field of one message in order; throws on truncated or malformed input. */
export function readFields(data: Uint8Array): ProtoField[] {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const out: ProtoField[] = [];
  let pos = 0;
  const big = (): bigint => {
    let result = 0n;
    for (let i = 0; i < 10; i++) {
      if (pos >= buf.length) throw new Error('truncated protobuf varint');
      const b = buf[pos++]!;
      // The tenth byte holds bit 63 only (Go's protowire refuses more as an overflow).
      if (i === 9 && b > 1) throw new Error('protobuf varint overflows 64 bits');
      result |= BigInt(b & 0x7f) << BigInt(7 * i);
      if (b < 0x80) return result;
    }
    throw new Error('malformed protobuf varint');
  };
  /** Tags and lengths: past 2^53 they cannot be right for any input held in memory. */
  const varint = (): number => {
    const v = big();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error('protobuf length or tag out of range');
    return Number(v);
  };
  while (pos < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 0) throw new Error('protobuf field number 0');
    switch (wire) {
      case WIRE_VARINT:
        out.push({ field, wire, int: big() });
        break;
      case WIRE_LEN: {
        const len = varint();
        if (pos + len > buf.length) throw new Error('truncated protobuf field');
        out.push({ field, wire, bytes: buf.subarray(pos, pos + len) });
        pos += len;
        break;
      }
      case WIRE_I64:
        if (pos + 8 > buf.length) throw new Error('truncated protobuf field');
        pos += 8;
        out.push({ field, wire });
        break;
      case WIRE_I32:
        if (pos + 4 > buf.length) throw new Error('truncated protobuf field');
        pos += 4;
        out.push({ field, wire });
        break;
      default:
        throw new Error(`unsupported protobuf wire type ${wire}`);
    }
  }
  return out;
}
