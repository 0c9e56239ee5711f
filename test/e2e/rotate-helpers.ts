// Shared by the rotate-key and disable e2e tests: two control planes, kill -9 at stage boundaries.
import { createHash } from 'node:crypto';
import { copyFile, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { expect } from 'vitest';
import type { Bed, BedNode, TestApi } from '../bed/index';
import { BIN, jsonOf, NODE, runCli } from '../helpers/cli';

export const CONFIG_REL = 'etc/kubernetes/encryption/config.yaml';

export const okJson = (r: Awaited<ReturnType<typeof runCli>>) => {
  expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
  return jsonOf(r);
};

/** Copies node 0's config into `dir` (what the operator copies to the other control plane). */
export async function copyConfigFrom0(bed: Bed, dir: string, name: string): Promise<string> {
  const p = join(dir, name);
  await copyFile(join(bed.nodes[0]!.root, CONFIG_REL), p);
  return p;
}

/**
 * A further control plane installs node 0's config read from standard input (`--from-config -`,
 * as fleet mode pipes it over SSH); the file it installs must be byte for byte node 0's, 0600.
 */
export async function followFromStdin(bed: Bed, node: number, command: string, ...extra: string[]) {
  const text = await readFile(join(bed.nodes[0]!.root, CONFIG_REL), 'utf8');
  const r = await runCli([...bed.nodes[node]!.cliArgs, '--yes', '--json', command, '--from-config', '-', ...extra], { input: text });
  const j = okJson(r);
  const installed = join(bed.nodes[node]!.root, CONFIG_REL);
  expect(await readFile(installed, 'utf8')).toBe(text);
  expect((await stat(installed)).mode & 0o777).toBe(0o600);
  return j;
}

/** Encryption on both nodes the staged init way: reader on both, key on both, then the rewrite. */
export async function initTwoNodes(bed: Bed, dir: string): Promise<void> {
  const cli = (node: number, ...args: string[]) => runCli([...bed.nodes[node]!.cliArgs, '--yes', '--json', ...args]);
  expect(okJson(await cli(0, 'init')).state).toBe('waiting');
  okJson(await cli(1, 'init', '--from-config', await copyConfigFrom0(bed, dir, 'init-reader.yaml')));
  expect(okJson(await cli(0, 'init')).state).toBe('waiting');
  await followFromStdin(bed, 1, 'init');
  expect(okJson(await cli(0, 'init')).state).toBe('done');
}

/** Reads every Secret from both apiservers in a loop until stopped; counts what went wrong. */
export function startReader(apis: TestApi[], before: Map<string, string>) {
  const failures: string[] = [];
  let rounds = 0;
  let unavailable = 0;
  // Rounds in which no apiserver at all answered: the control plane was down.
  let allDownRounds = 0;
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      const downBefore = unavailable;
      for (const [i, api] of apis.entries()) {
        let r;
        try {
          r = await api.get('/api/v1/secrets?limit=1000');
        } catch {
          // Connection refused while the kubelet restarts that node's apiserver: the node is
          // down, not serving unreadable data. Counted, not a failure.
          unavailable++;
          continue;
        }
        if (r.status === 429) continue;
        // 503 while the apiserver drains before a restart: also the node being down. A Secret
        // that cannot be decrypted is a 500 (InternalError), and that is what must never happen.
        if (r.status === 503) {
          unavailable++;
          continue;
        }
        if (r.status !== 200) {
          failures.push(`node ${i}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
          continue;
        }
        for (const s of r.body.items) {
          const id = `${s.metadata.namespace}/${s.metadata.name}`;
          const want = before.get(id);
          if (!want) continue; // canaries
          const h = createHash('sha256').update(JSON.stringify({ type: s.type, data: s.data ?? {} })).digest('hex');
          if (h !== want) failures.push(`node ${i}: ${id} reads back different data`);
        }
        const seen = new Set(r.body.items.map((s: any) => `${s.metadata.namespace}/${s.metadata.name}`));
        for (const id of before.keys()) if (!seen.has(id)) failures.push(`node ${i}: ${id} missing from the list`);
      }
      if (unavailable - downBefore === apis.length) allDownRounds++;
      rounds++;
      await new Promise((res) => setTimeout(res, 50));
    }
  })();
  return {
    async stop() {
      stop = true;
      await loop;
      return { failures, rounds, unavailable, allDownRounds };
    },
  };
}

/**
 * Runs `k8s-encrypt <command> --yes --json` on a node again and again, each time killing it with
 * SIGKILL as soon as its journal records the next boundary, until a run finishes by itself. After
 * every kill `afterKill` checks that nothing was lost. Returns the boundaries it killed at.
 */
export async function killAtEachBoundary(o: {
  node: BedNode;
  command: string;
  boundaries: string[];
  journal: () => Promise<{ status?: string; steps: { name: string }[] }>;
  afterKill: () => Promise<void>;
}): Promise<string[]> {
  const killedAt: string[] = [];
  for (const boundary of o.boundaries) {
    const child = execa(NODE, [BIN, ...o.node.cliArgs, '--yes', '--json', o.command], { reject: false, env: { NO_COLOR: '1', CI: 'true' } });
    let exited = false;
    void child.then(() => (exited = true));
    for (;;) {
      const j = await o.journal();
      if (j.status === 'done' || exited) break;
      if (j.steps.some((s) => s.name === boundary)) {
        child.kill('SIGKILL');
        killedAt.push(boundary);
        break;
      }
      await new Promise((r) => setTimeout(r, 15));
    }
    const r = await child;
    if ((await o.journal()).status === 'done') {
      // A kill sent at the last boundary can land after the run has finished its work (the
      // journal already says done): that run is over, not interrupted. Any other end must be 0.
      const killedAfterDone = r.signal === 'SIGKILL' && killedAt.at(-1) === boundary;
      if (!killedAfterDone) expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
      break;
    }
    expect(r.signal).toBe('SIGKILL');
    // Whatever was interrupted, the next run must find everything readable (once a restart the
    // kill interrupted is over).
    await o.node.waitReady(30_000);
    await o.afterKill();
  }
  return killedAt;
}
