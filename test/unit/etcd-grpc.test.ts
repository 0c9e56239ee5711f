import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Code, GrpcError, grpcTimeout, MessageReader, Scratch } from '../../src/etcd/grpc';

/** gRPC length-prefixed messages, as a server sends them in DATA frames. */
const framed = (...messages: Buffer[]) =>
  Buffer.concat(messages.flatMap((m) => [Buffer.from([0, m.length >>> 24, (m.length >>> 16) & 255, (m.length >>> 8) & 255, m.length & 255]), m]));

describe('MessageReader: gRPC messages out of HTTP/2 DATA chunks', () => {
  const messages = [randomBytes(300), Buffer.alloc(0), randomBytes(70_000), randomBytes(1)];
  const wire = framed(...messages);

  it.each([1, 2, 3, 4, 5, 6, 7, 13, 16_384, wire.length])('chunks of %i bytes give the same messages', (size) => {
    const got: Buffer[] = [];
    const r = new MessageReader(1 << 20, (n) => Buffer.alloc(n), (m) => got.push(Buffer.from(m)));
    for (let at = 0; at < wire.length; at += size) r.push(wire.subarray(at, at + size));
    expect(got).toEqual(messages);
    expect(r.partial).toBe(false);
  });

  it('a stream cut inside a message is partial', () => {
    const r = new MessageReader(1 << 20, (n) => Buffer.alloc(n), () => undefined);
    r.push(wire.subarray(0, 3));
    expect(r.partial).toBe(true);
  });

  it('refuses a message over the limit before allocating it, and a compressed one', () => {
    const sizes: number[] = [];
    const r = new MessageReader(1000, (n) => (sizes.push(n), Buffer.alloc(n)), () => undefined);
    const err = (() => {
      try {
        r.push(framed(randomBytes(1001)));
      } catch (e) {
        return e as GrpcError;
      }
    })();
    expect(err).toBeInstanceOf(GrpcError);
    expect(err?.code).toBe(Code.RESOURCE_EXHAUSTED);
    expect(err?.message).toBe('8 RESOURCE_EXHAUSTED: Received message larger than max (1001 vs 1000)');
    expect(sizes).toEqual([]);
    const compressed = framed(randomBytes(10));
    compressed[0] = 1;
    expect(() => new MessageReader(1000, (n) => Buffer.alloc(n), () => undefined).push(compressed)).toThrow(/^13 INTERNAL: compressed/);
  });

  it('with a Scratch, every reply lands in the same memory', () => {
    const scratch = new Scratch();
    const seen = new Set<ArrayBufferLike>();
    const got: string[] = [];
    const r = new MessageReader(1 << 20, (n) => scratch.take(n), (m) => (seen.add(m.buffer), got.push(m.toString('hex'))));
    for (const m of [randomBytes(40_000), randomBytes(50_000), randomBytes(10)]) {
      r.push(framed(m));
      expect(got.at(-1)).toBe(m.toString('hex'));
    }
    expect(seen.size).toBe(1);
  });
});

describe('Scratch', () => {
  it('grows to the largest reply and gives memory back when replies become much smaller', () => {
    const s = new Scratch();
    const big = s.take(1_000_000);
    expect(big.length).toBe(1_000_000);
    expect(s.take(600_000).buffer).toBe(big.buffer);
    expect(s.take(100_000).buffer).not.toBe(big.buffer);
  });
});

describe('grpcTimeout', () => {
  it.each([
    [0, '1m'],
    [-5, '1m'],
    [10_000, '10000m'],
    [99_999_999, '99999999m'],
    [100_000_000, '100000S'],
    [Number.MAX_SAFE_INTEGER, '99999999S'],
  ])('%i ms -> %s', (ms, header) => {
    expect(grpcTimeout(ms)).toBe(header);
  });
});
