import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { decodeEncryptedObject, looksLikeStoredObject } from '../../src/etcd/codec';
import { readFields } from '../../src/etcd/protobuf';
import { decodeRangeResponse, encodeRangeRequest } from '../../src/etcd/rpc-codec';

/**
 * int64 fields past 2^53 (etcd lease ids are random 63-bit values; revisions and member ids are
 * int64/uint64) read and written without losing a bit. Messages are built here byte by byte.
 */
function varint(v: bigint): Buffer {
  const out: number[] = [];
  let x = BigInt.asUintN(64, v);
  do {
    const low = Number(x & 0x7fn);
    x >>= 7n;
    out.push(x ? low | 0x80 : low);
  } while (x);
  return Buffer.from(out);
}
const vField = (no: number, v: bigint) => Buffer.concat([varint(BigInt(no << 3)), varint(v)]);
const lField = (no: number, b: Buffer | string) => Buffer.concat([varint(BigInt((no << 3) | 2)), varint(BigInt(Buffer.from(b).length)), Buffer.from(b)]);

const LEASE = 0x694d7a3e1c2b9f01n; // the shape of an etcd lease id
const MAX_INT64 = (1n << 63n) - 1n;

const kmsVector = readFileSync(fileURLToPath(new URL('../fixtures/vectors/kube-apiserver-v1.32.jsonl', import.meta.url)), 'utf8')
  .trim()
  .split('\n')
  .map((l) => JSON.parse(l) as { provider: string; keyName: string; rawBase64: string })
  .find((v) => v.provider === 'kms')!;

describe('protobuf varints past 2^53', () => {
  it('readFields gives them exactly, as unsigned 64-bit (a negative int64 as its two\'s complement)', () => {
    const msg = Buffer.concat([vField(3, 2n ** 53n + 1n), vField(6, LEASE), vField(7, MAX_INT64), vField(8, -1n), lField(1, 'k')]);
    const f = readFields(msg);
    expect(f.map((x) => x.int)).toEqual([2n ** 53n + 1n, LEASE, MAX_INT64, 2n ** 64n - 1n, undefined]);
    expect(BigInt.asIntN(64, f[3]!.int!)).toBe(-1n);
  });

  it('still refuses a varint longer than 64 bits and a truncated one', () => {
    expect(() => readFields(Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]))).toThrow(/overflows 64 bits/);
    expect(() => readFields(Buffer.from([0x08, 0xff, 0xff]))).toThrow(/truncated/);
  });

  it('a KMS v2 EncryptedObject with an unknown int64 field decodes (proto3 skips unknown fields, as Go does)', () => {
    const raw = Buffer.from(kmsVector.rawBase64, 'base64');
    const body = raw.subarray(`k8s:enc:kms:v2:${kmsVector.keyName}:`.length);
    const plain = decodeEncryptedObject(body);
    const extended = decodeEncryptedObject(Buffer.concat([body, vField(15, LEASE)]));
    expect(extended.keyId).toBe(plain.keyId);
    expect(extended.encryptedData).toEqual(plain.encryptedData);
    // An enum is int32 on the wire's 64 bits: 2^32 + 1 reads as 1 (the seed type), as in Go.
    expect(decodeEncryptedObject(Buffer.concat([body, vField(5, 2n ** 32n + 1n)])).encryptedDEKSourceType).toBe(1);
  });

  it('a stored object whose runtime.Unknown carries a large varint still looks like one', () => {
    const unknown = Buffer.concat([lField(1, Buffer.concat([lField(1, 'v1'), lField(2, 'Secret')])), lField(2, 'raw'), vField(9, LEASE)]);
    expect(looksLikeStoredObject(Buffer.concat([Buffer.from('k8s\0', 'latin1'), unknown]))).toBe(true);
  });

  it('a Range at a revision past 2^53 asks for that revision, not a rounded one', () => {
    const req = encodeRangeRequest({ key: Buffer.from('/registry/'), revision: '9007199254740993' });
    expect(req.subarray(req.length - 9)).toEqual(Buffer.concat([Buffer.from([0x20]), varint(9007199254740993n)]));
    expect(readFields(req).find((x) => x.field === 4)?.int).toBe(9007199254740993n);
  });

  it('a Range reply keeps header revision and mod_revision exact', () => {
    const kv = Buffer.concat([lField(1, '/registry/secrets/a/b'), vField(2, 2n ** 60n), vField(3, 2n ** 60n + 7n), lField(5, 'v'), vField(6, LEASE)]);
    const reply = Buffer.concat([lField(1, Buffer.concat([vField(1, 1n), vField(2, 0xfedcba9876543210n), vField(3, 2n ** 60n + 9n)])), lField(2, kv), vField(4, 1n)]);
    const r = decodeRangeResponse(reply);
    expect(r.revision).toBe(String(2n ** 60n + 9n));
    expect(r.kvs[0]!.mod_revision).toBe(String(2n ** 60n + 7n));
  });
});
