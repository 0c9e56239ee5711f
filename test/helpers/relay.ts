import { createServer, connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A TCP relay on loopback in front of `port` that can drop everything in both directions while
 * keeping its connections open, as a vanished node, a VIP gone or a firewall's DROP does.
 */
export async function startRelay(port: number) {
  let silent = false;
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createServer((down) => {
    connections++;
    const up = connect(port, '127.0.0.1');
    sockets.add(down).add(up);
    down.on('data', (d) => silent || up.write(d));
    up.on('data', (d) => silent || down.write(d));
    const end = () => {
      down.destroy();
      up.destroy();
    };
    down.on('close', end).on('error', end);
    up.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    /** From now on nothing passes, either way, until set back. */
    silence(on: boolean) {
      silent = on;
    },
    /** Connections accepted so far. */
    get connections() {
      return connections;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A listener that accepts TCP and never says a word: a stopped process behind a live kernel. */
export async function startBlackHole() {
  const held = new Set<Socket>();
  const server = createServer((s) => {
    held.add(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return held.size;
    },
    async close() {
      for (const s of held) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
