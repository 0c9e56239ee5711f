// The rewrite engine against the local control plane (real etcd, apiserver stand-in, kubelet
// stand-in): stale Secrets get rewritten under the new key, concurrent writers and deleters do
// not lose or resurrect anything, and 429/409 storms still end with everything rewritten.
import dc from 'node:diagnostics_channel';
import type { TLSSocket } from 'node:tls';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aescbcConfig, applyEncryptionConfig, etcdPrefixCounts, newKey, secretHashes, type WriteKey } from '../../bench/reencrypt';
import { createApiClient, loadKubeconfig, type ApiClient } from '../../src/cluster/api';
import { resolveResources } from '../../src/cluster/discovery';
import { rewriteAll } from '../../src/cluster/rewrite';
import { FileCheckpointStore, rewriteRunId } from '../../src/state/checkpoint';
import { startBed, type Bed, type TestApi } from '../bed/index';

const N = 300;
let bed: Bed;
let test: TestApi;
let api: ApiClient;
let stateDir: string;
const keys: WriteKey[] = [];

async function switchKey(): Promise<string> {
  keys.unshift(newKey(`key${keys.length + 1}`));
  await applyEncryptionConfig(bed.nodes[0]!, aescbcConfig(keys[0]!, keys.slice(1)));
  return `k8s:enc:aescbc:v1:${keys[0]!.name}`;
}

async function engine(extra: Partial<Parameters<typeof rewriteAll>[0]> = {}, opts: Partial<Parameters<typeof rewriteAll>[1]> = {}) {
  const resources = await resolveResources(api, ['secrets']);
  return rewriteAll(
    {
      api,
      now: () => new Date(),
      checkpoint: new FileCheckpointStore({ stateDir, runId: rewriteRunId(['secrets'], keys[0]!.name) }),
      ...extra,
    },
    { resources, concurrency: 8, ...opts },
  );
}

const allKeys = (h: Map<string, string>) => [...h.keys()];

beforeAll(async () => {
  bed = await startBed({ secrets: N, mirrorPods: false });
  test = await bed.api();
  stateDir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-rewrite-state-'));
}, 120_000);

afterAll(async () => {
  api?.close();
  await bed?.stop();
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
});

describe('rewriteAll on the bed', () => {
  it('rewrites every stale Secret under the new key, data unchanged, while a writer and a deleter are busy', async () => {
    const before = await secretHashes(test);
    expect(before.size).toBeGreaterThanOrEqual(N);
    const prefix = await switchKey();
    // New client after the restart: the apiserver address is the same, connections are not.
    api = createApiClient(await loadKubeconfig(bed.nodes[0]!.kubeconfig), { maxSockets: 16 });
    expect(await etcdPrefixCounts(bed, allKeys(before))).toEqual({ plaintext: before.size });

    // The last 10 Secrets in key order get deleted, and 10 others get new values repeatedly,
    // while the rewrite runs.
    const ordered = allKeys(before).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const doomed = ordered.slice(-10);
    const written = ordered.filter((_, i) => i % 29 === 3).slice(0, 10);
    const lastValue = new Map<string, string>();
    let writing = true;
    let started = false;
    const writer = (async () => {
      for (let round = 0; writing || round < 3; round++) {
        for (const k of written) {
          const [ns, name] = k.split('/');
          const cur = await test.get(`/api/v1/namespaces/${ns}/secrets/${name}`);
          const v = Buffer.from(`writer-${round}`).toString('base64');
          const r = await test.put(`/api/v1/namespaces/${ns}/secrets/${name}`, { ...cur.body, data: { ...cur.body.data, writer: v } });
          if (r.status === 200) lastValue.set(k, v);
        }
      }
    })();
    const deleter = async () => {
      for (const k of doomed) {
        const [ns, name] = k.split('/');
        await test.delete(`/api/v1/namespaces/${ns}/secrets/${name}`);
      }
    };
    let deleting: Promise<void> | undefined;
    const s = await engine(
      {
        onProgress: (p) => {
          if (!started && p.done >= 20) {
            started = true;
            deleting = deleter();
          }
        },
      },
      { pageSize: 1000, concurrency: 4 },
    );
    writing = false;
    await writer;
    await deleting;

    expect(s.failed).toBe(0);
    expect(s.deleted).toBeGreaterThan(0); // listed, then gone before its PUT: not an error
    expect(s.rewritten + s.unchanged + s.deleted).toBe(s.listed);

    const after = await secretHashes(test);
    for (const k of doomed) expect(after.has(k)).toBe(false);
    for (const [k, h] of before) {
      if (doomed.includes(k) || written.includes(k)) continue;
      expect(after.get(k), k).toBe(h);
    }
    for (const k of written) {
      const [ns, name] = k.split('/');
      const cur = await test.get(`/api/v1/namespaces/${ns}/secrets/${name}`);
      expect(cur.body.data.writer, k).toBe(lastValue.get(k));
    }
    expect(await etcdPrefixCounts(bed, allKeys(after))).toEqual({ [prefix]: after.size });
  }, 60_000);

  it('429 storms and injected 409s: everything is still rewritten, data unchanged', async () => {
    const before = await secretHashes(test);
    await bed.nodes[0]!.setKnobs({ rate429: 0.15, retryAfterSeconds: 1, rate409: 0.15 });
    const prefix = await switchKey();
    api.close();
    api = createApiClient(await loadKubeconfig(bed.nodes[0]!.kubeconfig), { maxSockets: 32 });
    const s = await engine({}, { concurrency: 24, pageSize: 100 });
    await bed.nodes[0]!.setKnobs({});
    expect(s.failed).toBe(0);
    expect(s.conflictsRetried).toBeGreaterThan(0);
    // A PUT retried after a dropped connection may find its first attempt applied: then the
    // fresh copy is already current (unchanged). etcd below is the real proof.
    expect(s.rewritten + s.unchanged).toBe(before.size);
    expect(s.rewritten).toBeGreaterThan(before.size * 0.9);
    const after = await secretHashes(test);
    expect(after).toEqual(before);
    expect(await etcdPrefixCounts(bed, allKeys(after))).toEqual({ [prefix]: after.size });

    // A second run finds nothing stale: every PUT is a no-op.
    const again = await engine({}, { concurrency: 24 });
    expect(again).toMatchObject({ rewritten: 0, unchanged: before.size, failed: 0 });
  }, 60_000);
  it('over HTTP/2 the run is one connection; an apiserver that speaks HTTP/1.1 only gets the agent, same result', async () => {
    // HTTP/2 connections this process made (the in-process kubelet stand-in's probes and mirror
    // pods are HTTP/1.1 connections of its own, so only h2 is counted).
    const h2Connections = () => {
      let n = 0;
      const onSocket = (m: unknown) => {
        const sock = (m as { socket: TLSSocket }).socket;
        sock.once('secureConnect', () => {
          if (sock.alpnProtocol === 'h2') n++;
        });
      };
      dc.subscribe('net.client.socket', onSocket);
      return () => {
        dc.unsubscribe('net.client.socket', onSocket);
        return n;
      };
    };
    const before = await secretHashes(test);
    try {
      for (const [knobs, h2] of [
        [{ maxStreams: 16 }, 1],
        [{ http1Only: true }, 0],
      ] as const) {
        await bed.nodes[0]!.setKnobs(knobs);
        const prefix = await switchKey();
        api.close();
        const counted = h2Connections();
        api = createApiClient(await loadKubeconfig(bed.nodes[0]!.kubeconfig), { maxSockets: 32 });
        // More in flight than the HTTP/2 server's stream limit: the rest wait for a stream.
        const s = await engine({}, { concurrency: 24, pageSize: 50 });
        expect(counted()).toBe(h2);
        expect(s).toMatchObject({ rewritten: before.size, failed: 0 });
        const after = await secretHashes(test);
        expect(after).toEqual(before);
        expect(await etcdPrefixCounts(bed, allKeys(after))).toEqual({ [prefix]: after.size });
      }
    } finally {
      await bed.nodes[0]!.setKnobs({});
    }
  }, 90_000);

  it('adaptive concurrency: climbs where latency leaves room, cuts on 429s, never above the maximum, 0 lost', async () => {
    const before = await secretHashes(test);
    // 100 ms per request: throughput grows with every request in flight.
    await bed.nodes[0]!.setKnobs({ latencyMs: 100 });
    let prefix = await switchKey();
    api.close();
    api = createApiClient(await loadKubeconfig(bed.nodes[0]!.kubeconfig), { maxSockets: 70 });
    const climbed: number[] = [];
    const s = await engine({ onConcurrency: (l) => climbed.push(l) }, { concurrency: undefined, initialConcurrency: 8, maxConcurrency: 64, pageSize: 50 });
    expect(s.failed).toBe(0);
    expect(s.concurrency.mode).toBe('adaptive');
    expect(climbed.slice(0, 2)).toEqual([16, 32]);
    expect(s.concurrency.peak).toBeLessThanOrEqual(64);
    expect(await etcdPrefixCounts(bed, allKeys(before))).toEqual({ [prefix]: before.size });

    // A third of the requests throttled: the limit comes down, everything still lands.
    await bed.nodes[0]!.setKnobs({ rate429: 0.3, retryAfterSeconds: 1 });
    prefix = await switchKey();
    api.close();
    api = createApiClient(await loadKubeconfig(bed.nodes[0]!.kubeconfig), { maxSockets: 70 });
    const cuts: [number, string][] = [];
    const t = await engine({ onConcurrency: (l, why) => cuts.push([l, why]) }, { concurrency: undefined, initialConcurrency: 32, maxConcurrency: 64 });
    await bed.nodes[0]!.setKnobs({});
    expect(t.failed).toBe(0);
    expect(t.concurrency.cuts).toBeGreaterThan(0);
    expect(cuts[0]).toEqual([22, 'overload']);
    expect(t.concurrency.peak).toBeLessThanOrEqual(32);
    expect(t.rewritten + t.unchanged).toBe(before.size);
    const after = await secretHashes(test);
    expect(after).toEqual(before);
    expect(await etcdPrefixCounts(bed, allKeys(after))).toEqual({ [prefix]: after.size });
  }, 120_000);
});
