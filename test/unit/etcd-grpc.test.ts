import { randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { Channel, Code, dialAddress, GrpcError, grpcTimeout, MessageReader, Scratch } from '../../src/etcd/grpc';

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

describe('dialAddress', () => {
  it.each([
    ['10.0.0.1:2379', false, 'http://10.0.0.1:2379', '10.0.0.1', 2379],
    ['etcd-0.example:2379', true, 'https://etcd-0.example:2379', 'etcd-0.example', 2379],
    ['[fd00::1]:2379', true, 'https://[fd00::1]:2379', 'fd00::1', 2379],
    // The scheme's default port, which a URL leaves out, comes back as itself (not 0, not the other's).
    ['etcd:80', false, 'http://etcd:80', 'etcd', 80],
    ['etcd:443', true, 'https://etcd:443', 'etcd', 443],
    ['etcd:80', true, 'https://etcd:80', 'etcd', 80],
    ['etcd:443', false, 'http://etcd:443', 'etcd', 443],
  ])('%s (tls %s) -> %s, %s, %i', (target, tls, origin, host, port) => {
    expect(dialAddress(target, tls)).toEqual({ origin, host, port });
  });
});

describe('Channel against a loopback HTTP/2 server', () => {
  /** A server that answers every call with `messages`, then the trailer grpc-status `status`. */
  async function server(status: string, messages: Buffer[]) {
    const srv = http2.createServer();
    srv.on('stream', (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': status }));
      stream.on('data', () => undefined);
      stream.end(framed(...messages));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    const channel = new Channel(http2, { target: `127.0.0.1:${port}`, maxReplyBytes: 1 << 20 });
    return {
      channel,
      close: async () => {
        channel.close();
        await new Promise((r) => srv.close(r));
      },
    };
  }

  it.each(['abc', '', '1.5', '99', '-1'])('a grpc-status that is not a code (%j) is UNKNOWN, not NaN', async (status) => {
    const s = await server(status, [Buffer.from('x')]);
    try {
      const err = await s.channel.unary('/x.Y/Z', Buffer.alloc(0)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(GrpcError);
      expect((err as GrpcError).code).toBe(Code.UNKNOWN);
    } finally {
      await s.close();
    }
  });

  it('a numeric grpc-status is kept', async () => {
    const s = await server('5', []);
    try {
      await expect(s.channel.unary('/x.Y/Z', Buffer.alloc(0))).rejects.toMatchObject({ code: Code.NOT_FOUND });
    } finally {
      await s.close();
    }
  });

  it('a server stream gives every message its own memory, even if handed a Scratch', async () => {
    const messages = [randomBytes(100), randomBytes(100), randomBytes(100)];
    const s = await server('0', messages);
    try {
      // @ts-expect-error a Scratch is refused for a stream: queued messages would share it
      const stream = s.channel.serverStream('/x.Y/Z', Buffer.alloc(0), { scratch: new Scratch() });
      const got: Buffer[] = [];
      for await (const m of stream) got.push(m);
      expect(got).toEqual(messages);
    } finally {
      await s.close();
    }
  });
});
