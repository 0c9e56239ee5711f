/**
 * A diagnostic preload for the benchmarks: `node --import dist/bench/mem-sample.js ...` with
 * K8S_ENCRYPT_MEM_SAMPLE=FILE samples process.memoryUsage() and V8's heap spaces every
 * K8S_ENCRYPT_MEM_SAMPLE_MS (default 100 ms) and writes, at exit, the peak of each figure, the
 * breakdown at the moment RSS peaked and (with K8S_ENCRYPT_MEM_SAMPLE_SERIES=1) every sample, as
 * JSON to FILE. With K8S_ENCRYPT_MEM_SNAPSHOT_AT=MS it also writes a V8 heap snapshot MS after
 * start, to FILE.heapsnapshot (the process pauses while it is written). It also counts the client
 * sockets (TCP and TLS) the process opens, and the most open at once, through the
 * `net.client.socket` diagnostics channel. It changes nothing in the process it watches beyond
 * one timer and a close listener on each socket.
 */
import dc from 'node:diagnostics_channel';
import { writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import v8 from 'node:v8';

interface Sample {
  t: number;
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  spaces: Record<string, number>;
}

const file = process.env.K8S_ENCRYPT_MEM_SAMPLE;
if (file) {
  const every = Number(process.env.K8S_ENCRYPT_MEM_SAMPLE_MS ?? 100);
  const series = process.env.K8S_ENCRYPT_MEM_SAMPLE_SERIES === '1';
  const t0 = performance.now();
  const samples: Sample[] = [];
  const peak: Record<string, number> = {};
  let atPeak: Sample | undefined;
  const mb = (n: number) => Math.round((n / 1048576) * 10) / 10;
  const take = () => {
    const m = process.memoryUsage();
    const spaces: Record<string, number> = {};
    for (const s of v8.getHeapSpaceStatistics()) spaces[s.space_name] = mb(s.space_size);
    const s: Sample = {
      t: Math.round(performance.now() - t0),
      rss: mb(m.rss),
      heapTotal: mb(m.heapTotal),
      heapUsed: mb(m.heapUsed),
      external: mb(m.external),
      arrayBuffers: mb(m.arrayBuffers),
      spaces,
    };
    for (const k of ['rss', 'heapTotal', 'heapUsed', 'external', 'arrayBuffers'] as const) peak[k] = Math.max(peak[k] ?? 0, s[k]);
    if (!atPeak || s.rss > atPeak.rss) atPeak = s;
    if (series) samples.push(s);
  };
  const sockets = { opened: 0, open: 0, peakOpen: 0 };
  dc.subscribe('net.client.socket', (m) => {
    sockets.opened++;
    sockets.peakOpen = Math.max(sockets.peakOpen, ++sockets.open);
    (m as { socket: Socket }).socket.once('close', () => sockets.open--);
  });
  take();
  setInterval(take, every).unref();
  const snapAt = Number(process.env.K8S_ENCRYPT_MEM_SNAPSHOT_AT ?? 0);
  if (snapAt > 0) setTimeout(() => v8.writeHeapSnapshot(`${file}.heapsnapshot`), snapAt).unref();
  process.on('exit', () => {
    take();
    writeFileSync(file, JSON.stringify({ peak, atPeak, sockets: { opened: sockets.opened, peakOpen: sockets.peakOpen }, ...(series ? { samples } : {}) }));
  });
}
