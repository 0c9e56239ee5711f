/**
 * `npm run bench:reencrypt -- --help`: k8s-encrypt re-encrypt-all against the raw PUT ceiling at
 * several levels in flight and the kubectl pipeline, in one run on the same data (USAGE below).
 * Peak RSS is VmHWM polled from /proc (summed over a pipeline); the tool also runs with the
 * bench/mem-sample.ts preload, which says what its memory was at the peak.
 * (kubectl replace runs with --validate=false: the bed serves no OpenAPI document.)
 *
 * The helpers that make a bed's Secrets stale are exported for the rewrite tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { loadavg as loadavg1, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { createApiClient, loadKubeconfig } from '../src/cluster/api';
import { writeFileAtomic } from '../src/state/atomic';
import type { Bed, BedNode, TestApi } from '../test/bed/index';
import { silenceIpServernameWarning } from '../src/ui/warnings';

silenceIpServernameWarning();

// ---------------------------------------------------------------------------------------------
// Helpers shared with test/integration/rewrite*.test.ts and test/e2e/re-encrypt-all*.test.ts

export const CONFIG_REL = 'etc/kubernetes/encryption/config.yaml';

export interface WriteKey {
  name: string;
  /** base64 of 32 bytes */
  secret: string;
}

export const newKey = (name: string): WriteKey => ({ name, secret: randomBytes(32).toString('base64') });

/** aescbc with `write` first and the `readers` after it, for Secrets. */
export function aescbcConfig(write: WriteKey, readers: WriteKey[] = []): string {
  const keys = [write, ...readers].map((k) => `          - name: ${k.name}\n            secret: ${k.secret}\n`).join('');
  return `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - aescbc:
          keys:
${keys}      - identity: {}
`;
}

/**
 * Puts `configText` in the node's config file, makes the manifest carry the flag and the
 * hostPath mount, and bumps an annotation so the kubelet restarts the apiserver; waits until the
 * new apiserver is ready. What `init` does, minus the safety; enough to make stored data stale.
 */
export async function applyEncryptionConfig(node: BedNode, configText: string, timeoutMs = 30_000): Promise<void> {
  const configPath = join(node.root, CONFIG_REL);
  const dir = join(configPath, '..');
  await writeFileAtomic(configPath, configText, { mode: 0o600 });
  const doc = parseDocument(await readFile(node.manifest, 'utf8'));
  const pod = doc.toJS() as any;
  const c = pod.spec.containers[0];
  c.command = (c.command as string[]).filter((a) => !a.startsWith('--encryption-provider-config='));
  c.command.push(`--encryption-provider-config=${configPath}`);
  c.volumeMounts = (c.volumeMounts ?? []).filter((m: any) => m.name !== 'encryption-config');
  c.volumeMounts.push({ name: 'encryption-config', mountPath: dir, readOnly: true });
  pod.spec.volumes = (pod.spec.volumes ?? []).filter((v: any) => v.name !== 'encryption-config');
  pod.spec.volumes.push({ name: 'encryption-config', hostPath: { path: dir, type: 'DirectoryOrCreate' } });
  const gen = Number(pod.metadata.annotations?.['bench.k8s-encrypt/generation'] ?? 0) + 1;
  pod.metadata.annotations = { ...(pod.metadata.annotations ?? {}), 'bench.k8s-encrypt/generation': String(gen) };
  const before = node.apiserverStarts();
  const { stringify } = await import('yaml');
  await writeFileAtomic(node.manifest, stringify(pod), { mode: 0o600 });
  const deadline = Date.now() + timeoutMs;
  while (node.apiserverStarts() <= before) {
    if (Date.now() > deadline) throw new Error(`${node.name}: the apiserver did not restart after the config change`);
    await new Promise((r) => setTimeout(r, 50));
  }
  await node.waitReady(Math.max(1000, deadline - Date.now()));
}

/** Every Secret's data hash by namespace/name, paging through the list like a client would. */
export async function secretHashes(api: TestApi): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let cont: string | undefined;
  do {
    const path = `/api/v1/secrets?limit=500${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`;
    let r = await api.get(path);
    // The bed may be injecting 429s: retry those, fail on anything else.
    for (let i = 0; r.status === 429 && i < 50; i++) {
      await new Promise((res) => setTimeout(res, 50));
      r = await api.get(path);
    }
    if (r.status !== 200) throw new Error(`list secrets: HTTP ${r.status}`);
    for (const s of r.body.items) {
      const h = createHash('sha256').update(JSON.stringify({ type: s.type, data: s.data ?? {} })).digest('hex');
      out.set(`${s.metadata.namespace}/${s.metadata.name}`, h);
    }
    cont = r.body.metadata?.continue || undefined;
  } while (cont);
  return out;
}

/** Counts raw etcd values under /registry/secrets/ by prefix (`k8s:enc:aescbc:v1:key2`, `plaintext`). */
export async function etcdPrefixCounts(bed: Bed, keys: string[]): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const k of keys) {
    const v = await bed.etcdGet(`/registry/secrets/${k}`);
    if (!v) continue;
    const s = v.subarray(0, 64).toString('latin1');
    const m = s.match(/^k8s:enc:[a-z0-9]+:v[12]:[^:]+/);
    const label = m ? m[0] : 'plaintext';
    counts[label] = (counts[label] ?? 0) + 1;
  }
  return counts;
}

/**
 * A Secret of realistic size: small opaque ones, some a few KB, some TLS-like. One name pattern
 * for all, so the kinds interleave in key order as they would in a cluster (a page of 1000
 * TLS Secrets in a row is over gRPC's 4 MB message limit for the bed's etcd reads).
 */
export function realisticSecret(namespace: string, i: number) {
  const b64 = (n: number) => randomBytes(n).toString('base64');
  const kind = i % 10;
  if (kind === 0) {
    const pem = (label: string, n: number) =>
      Buffer.from(`-----BEGIN ${label}-----\n${b64(n).replace(/.{64}/g, '$&\n')}\n-----END ${label}-----\n`).toString('base64');
    return {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: `secret-${i}`, namespace, labels: { app: `app-${i % 50}` } },
      type: 'kubernetes.io/tls',
      data: { 'tls.crt': pem('CERTIFICATE', 1200), 'tls.key': pem('PRIVATE KEY', 1700) },
    };
  }
  const size = kind < 7 ? 64 + ((i * 37) % 400) : 1024 + ((i * 131) % 3000);
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: `secret-${i}`, namespace, labels: { app: `app-${i % 50}` } },
    type: 'Opaque',
    data: { username: Buffer.from(`user-${i}`).toString('base64'), password: b64(24), blob: b64(size) },
  };
}

/** Creates N realistic Secrets over a few namespaces, `concurrency` at a time. */
export async function createSecrets(api: TestApi, n: number, namespaces: string[], concurrency = 32): Promise<string[]> {
  for (const ns of namespaces) {
    const r = await api.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    if (r.status !== 201 && r.status !== 409) throw new Error(`create namespace ${ns}: HTTP ${r.status}`);
  }
  const keys: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const ns = namespaces[i % namespaces.length]!;
      const s = realisticSecret(ns, i);
      for (let attempt = 0; ; attempt++) {
        const r = await api.create(`/api/v1/namespaces/${ns}/secrets`, s);
        if (r.status === 201) break;
        if (attempt > 20 || (r.status !== 429 && r.status < 500)) throw new Error(`create secret ${ns}/${s.metadata.name}: HTTP ${r.status}`);
        await new Promise((res) => setTimeout(res, 100));
      }
      keys.push(`${ns}/${s.metadata.name}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return keys;
}

// ---------------------------------------------------------------------------------------------
// The benchmark

const USAGE = `usage: npm run bench:reencrypt -- [--objects N] [--levels 8,32,96,192] [--sample-namespaces K]
                                [--rounds R] [--concurrency C] [--page-size P] [--skip-kubectl]

Starts a test bed (the stand-in apiserver on a real etcd 3.4), creates N Secrets of realistic sizes
in 4 namespaces, and on that same data, re-staling everything (a new write key) before each run:
  1. k8s-encrypt re-encrypt-all, the built CLI, with no flag (adaptive in flight) unless --concurrency,
  2. a raw loop of concurrent PUTs at each of --levels in flight (all listed into memory, no retries),
  3. kubectl get secrets -o json | kubectl replace -f - (the real kubectl, --validate=false).
Prints objects/s and peak RSS (VmHWM) of each, the tool's ratio to the best raw level (target
>= 0.95) and to kubectl (target >= 4x), the level it settled on, its memory at its RSS peak (heap,
external, arrayBuffers) and the load average.

  --objects N            Secrets to create (default 10000)
  --levels L,...         raw loop levels in flight (default 8,32,96,192)
  --sample-namespaces K  the raw loops and kubectl rewrite only the first K of the 4 namespaces
                         (K/4 of the objects; their rate is what is compared); the tool always
                         rewrites all N. Default 4 up to 20,000 objects, 1 above (keeps 100k short)
  --rounds R             run the whole sequence R times, alternating its order; rates are averaged
  --concurrency C        run the tool at a fixed C in flight instead of adaptive
  --page-size P          pass --page-size to the tool
  --skip-kubectl         leave kubectl out
  --exe PATH             run the tool as this single executable instead of node + dist/ (no memory
                         breakdown: it takes no preload). On kernels that cache files in large
                         folios, a freshly built executable's pages count in whole folios (its
                         --version peaked at 97 MB as built, 66 MB extracted from its .tar.gz):
                         run an extracted copy
  --tool-trace FILE      run the tool with --progress-json and write its stderr to FILE (a line a
                         second: objects done and the limit in flight then), to see how it settled

  npm run bench:reencrypt -- --objects 10000     # 2-core machine at a load average of 15-20: 17 min
  npm run bench:reencrypt -- --objects 100000    # the tool on 100k, the others on 25k; at that load
                                                 # creating the Secrets alone took 15 min and the
                                                 # tool 10 min: a quiet machine is 3-5x faster
`;

interface Measured {
  name: string;
  kind: 'tool' | 'raw' | 'kubectl';
  level?: number;
  seconds: number;
  objects: number;
  peakRssMb?: number;
  note?: string;
  settled?: number;
  meanInFlight?: number;
}

/** Peak resident memory of a process tree member, polled from /proc (VmHWM is the high-water mark). */
function watchPeak(pids: () => number[]): { stop(): number | undefined } {
  const peaks = new Map<number, number>();
  const read = () => {
    for (const pid of pids()) {
      try {
        const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmHWM:\s+(\d+) kB/);
        if (m) peaks.set(pid, Math.max(peaks.get(pid) ?? 0, Number(m[1])));
      } catch {
        // exited
      }
    }
  };
  const t = setInterval(read, 50);
  return {
    stop() {
      read();
      clearInterval(t);
      if (peaks.size === 0) return undefined;
      return [...peaks.values()].reduce((a, b) => a + b, 0) / 1024;
    },
  };
}

function waitExit(p: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    p.on('error', reject);
    p.on('exit', (code, sig) => resolve(code ?? (sig ? 128 : 1)));
  });
}

function repoRoot(): string {
  let d = fileURLToPath(new URL('.', import.meta.url));
  while (!existsSync(join(d, 'package.json'))) d = join(d, '..');
  return d;
}

interface MemBreakdown {
  peak: Record<string, number>;
  atPeak: { rss: number; heapUsed: number; heapTotal: number; external: number; arrayBuffers: number; spaces: Record<string, number> };
  sockets?: { opened: number; peakOpen: number };
}

async function runCliBench(
  node: BedNode,
  stateDir: string,
  n: number,
  concurrency: number | undefined,
  extra: string[] = [],
  exe?: string,
  trace?: string,
): Promise<Measured & { mem?: MemBreakdown }> {
  const bin = join(repoRoot(), 'bin/k8s-encrypt.js');
  const memFile = join(stateDir, `mem-${Date.now()}.json`);
  const sampler = join(repoRoot(), 'dist/bench/mem-sample.js');
  const cli = [...node.cliArgs, '--state-dir', stateDir, '--json', ...(trace ? ['--progress-json'] : []), 're-encrypt-all', ...(concurrency ? ['--concurrency', String(concurrency)] : []), ...extra];
  const t0 = performance.now();
  const p = exe
    ? spawn(exe, cli, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', CI: 'true' } })
    : spawn(process.execPath, ['--import', sampler, bin, ...cli], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, NO_COLOR: '1', CI: 'true', K8S_ENCRYPT_MEM_SAMPLE: memFile },
      });
  const peak = watchPeak(() => (p.pid ? [p.pid] : []));
  let out = '';
  let err = '';
  p.stdout!.on('data', (c) => (out += c));
  p.stderr!.on('data', (c) => (err += c));
  const code = await waitExit(p);
  const seconds = (performance.now() - t0) / 1000;
  const rss = peak.stop();
  if (trace) await writeFileAtomic(trace, err, { mode: 0o644 });
  if (code !== 0) throw new Error(`re-encrypt-all exited ${code}: ${out}\n${trace ? '' : err}`);
  const s = JSON.parse(out);
  const c = s.concurrency as { mode: string; settled: number; peak: number; cuts: number; meanInFlight: number };
  const mem = existsSync(memFile) ? (JSON.parse(readFileSync(memFile, 'utf8')) as MemBreakdown) : undefined;
  return {
    name: `k8s-encrypt re-encrypt-all${exe ? ', executable' : ''} (${concurrency ? `${concurrency} in flight` : 'no flag'})`,
    kind: 'tool',
    seconds,
    objects: n,
    peakRssMb: rss,
    settled: c.settled,
    meanInFlight: c.meanInFlight,
    note: `${s.rewritten} rewritten, ${c.mode}: settled at ${c.settled} (peak ${c.peak}, mean in flight ${c.meanInFlight}, ${c.cuts} cuts)`,
    mem,
  };
}

async function runKubectlBench(node: BedNode, namespaces: string[] | undefined, n: number): Promise<Measured | { skipped: string }> {
  const kubectl = ['/usr/bin/kubectl', '/usr/local/bin/kubectl'].find((p) => existsSync(p));
  if (!kubectl) return { skipped: 'kubectl not found: apt-get install kubernetes-client' };
  const env = { ...process.env, KUBECONFIG: node.kubeconfig };
  const t0 = performance.now();
  // One pipeline per namespace, one after another (what the documentation's loop does), or -A.
  let peakMb = 0;
  for (const ns of namespaces ?? [undefined]) {
    const get = spawn(kubectl, ['get', 'secrets', ...(ns ? ['-n', ns] : ['-A']), '-o', 'json'], { stdio: ['ignore', 'pipe', 'pipe'], env });
    const replace = spawn(kubectl, ['replace', '--validate=false', '-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'], env });
    get.stdout!.pipe(replace.stdin!);
    let errText = '';
    get.stderr!.on('data', (c) => (errText += c));
    replace.stderr!.on('data', (c) => (errText += c));
    const peak = watchPeak(() => [get.pid, replace.pid].filter((x): x is number => !!x));
    const [c1, c2] = await Promise.all([waitExit(get), waitExit(replace)]);
    peakMb = Math.max(peakMb, peak.stop() ?? 0);
    if (c1 !== 0 || c2 !== 0) throw new Error(`kubectl pipeline exited ${c1}/${c2}: ${errText.slice(0, 2000)}`);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { name: `kubectl get secrets -o json | kubectl replace -f -${namespaces ? ` (${namespaces.length} ns)` : ''}`, kind: 'kubectl', seconds, objects: n, peakRssMb: peakMb };
}

/**
 * The ceiling in its own process (as the other two run), so it does not share an event loop with
 * the bed's kubelet stand-in: this script re-run with --raw-put-child KUBECONFIG LEVEL [NS,...].
 */
async function runRawBench(node: BedNode, namespaces: string[] | undefined, n: number, level: number): Promise<Measured> {
  const t0 = performance.now();
  const p = spawn(process.execPath, [fileURLToPath(import.meta.url), '--raw-put-child', node.kubeconfig, String(level), ...(namespaces ? [namespaces.join(',')] : [])], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, K8S_ENCRYPT_BENCH_COPY: '1' },
  });
  const peak = watchPeak(() => (p.pid ? [p.pid] : []));
  let out = '';
  p.stdout!.on('data', (c) => (out += c));
  const code = await waitExit(p);
  const seconds = (performance.now() - t0) / 1000;
  const rss = peak.stop();
  if (code !== 0) throw new Error(`raw PUT loop exited ${code}`);
  const r = JSON.parse(out) as { errors: number; objects: number };
  if (r.objects !== n) throw new Error(`raw PUT loop listed ${r.objects} objects, expected ${n}`);
  return {
    name: `raw PUT loop (${level} in flight, in memory)`,
    kind: 'raw',
    level,
    seconds,
    objects: r.objects,
    peakRssMb: rss,
    note: `${r.objects} PUT${r.errors ? `, ${r.errors} errors` : ''}`,
  };
}

/** The raw loop itself: list everything into memory, then PUT with `level` in flight, no retries. */
async function rawPutChild(kubeconfig: string, level: number, namespaces: string[] | undefined): Promise<void> {
  const api = createApiClient(await loadKubeconfig(kubeconfig), { maxSockets: level });
  const all: any[] = [];
  for (const base of namespaces ? namespaces.map((ns) => `/api/v1/namespaces/${ns}/secrets`) : ['/api/v1/secrets']) {
    let cont: string | undefined;
    do {
      const page: any = await api.list(base, { query: { limit: 500, continue: cont } });
      for (const it of page.items) all.push({ apiVersion: 'v1', kind: 'Secret', ...it });
      cont = page.metadata?.continue || undefined;
    } while (cont);
  }
  let next = 0;
  let errors = 0;
  const worker = async () => {
    while (next < all.length) {
      const o = all[next++];
      await api.put(`/api/v1/namespaces/${o.metadata.namespace}/secrets/${o.metadata.name}`, o).catch(() => errors++);
    }
  };
  await Promise.all(Array.from({ length: level }, worker));
  api.close();
  process.stdout.write(`${JSON.stringify({ objects: all.length, errors })}\n`);
}

function parseArgs(argv: string[]) {
  const known = new Set(['--objects', '--concurrency', '--levels', '--page-size', '--sample-namespaces', '--rounds', '--skip-kubectl', '--exe', '--tool-trace', '--help', '-h']);
  for (const a of argv) if (a.startsWith('-') && !known.has(a)) throw new Error(`unknown option ${a}\n${USAGE}`);
  const get = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const num = (name: string, dflt: number | undefined, min: number) => {
    const v = get(name);
    if (v === undefined) return dflt;
    const x = Number(v);
    if (!Number.isInteger(x) || x < min) throw new Error(`${name} must be a whole number >= ${min}, not ${v}`);
    return x;
  };
  const objects = num('--objects', 10_000, 1)!;
  const levels = (get('--levels') ?? '8,32,96,192').split(',').map(Number);
  if (levels.some((l) => !Number.isInteger(l) || l < 1)) throw new Error(`--levels must be whole numbers, not ${get('--levels')}`);
  const sample = num('--sample-namespaces', objects > 20_000 ? 1 : 4, 1)!;
  if (sample > 4) throw new Error('--sample-namespaces is at most 4');
  return {
    help: argv.includes('--help') || argv.includes('-h'),
    objects,
    concurrency: num('--concurrency', undefined, 1),
    levels,
    sampleNamespaces: sample,
    rounds: num('--rounds', 1, 1)!,
    skipKubectl: argv.includes('--skip-kubectl'),
    /** Passed to the CLI run as --page-size (its own default otherwise). */
    pageSize: get('--page-size'),
    exe: argv.includes('--exe') ? exePath(get('--exe')) : undefined,
    toolTrace: argv.includes('--tool-trace') ? tracePath(get('--tool-trace')) : undefined,
  };
}

function exePath(p: string | undefined): string {
  if (p === undefined || p.startsWith('-')) throw new Error('--exe needs the path of the executable (--exe PATH)');
  const abs = resolve(p);
  if (!existsSync(abs) || !statSync(abs).isFile()) throw new Error(`--exe ${p}: no such file (npm run build:exe, then tar -xzf dist/exe/k8s-encrypt-linux-x64.tar.gz)`);
  return abs;
}

function tracePath(p: string | undefined): string {
  if (p === undefined || p.startsWith('-')) throw new Error('--tool-trace needs a file to write (--tool-trace FILE)');
  return resolve(p);
}

/**
 * Others rebuild dist/ while a long bench runs (the build starts with rm -rf dist): run from a
 * private copy of the build so the CLI, the bed and this script stay the ones we started with.
 */
async function reexecFromPrivateCopy(): Promise<number | undefined> {
  if (process.env.K8S_ENCRYPT_BENCH_COPY) return undefined;
  const root = repoRoot();
  const copy = await mkdtemp(join(tmpdir(), 'k8s-encrypt-bench-build-'));
  try {
    await cp(join(root, 'dist'), join(copy, 'dist'), { recursive: true });
    await cp(join(root, 'bin'), join(copy, 'bin'), { recursive: true });
    await cp(join(root, 'package.json'), join(copy, 'package.json'));
    await symlink(join(root, 'node_modules'), join(copy, 'node_modules'));
    const child = spawn(process.execPath, [join(copy, 'dist/bench/reencrypt.js'), ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, K8S_ENCRYPT_BENCH_COPY: '1' },
    });
    return await waitExit(child);
  } finally {
    await rm(copy, { recursive: true, force: true });
  }
}

const NAMESPACES = ['bench-a', 'bench-b', 'bench-c', 'bench-d'];
const loadavg = () => loadavg1().map((x) => x.toFixed(1)).join(' ');

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

async function main(): Promise<void> {
  const child = process.argv.indexOf('--raw-put-child');
  if (child >= 0) {
    const ns = process.argv[child + 3];
    return rawPutChild(process.argv[child + 1]!, Number(process.argv[child + 2] ?? 32), ns ? ns.split(',') : undefined);
  }
  const args = parseArgs(process.argv.slice(2));
  if (args.help) {
    process.stdout.write(USAGE);
    return;
  }
  const code = await reexecFromPrivateCopy();
  if (code !== undefined) {
    process.exitCode = code;
    return;
  }
  const { startBed } = await import('../test/bed/index');
  const log = (m: string) => process.stderr.write(`${m}\n`);
  const loads: string[] = [loadavg()];
  log(`load average ${loads[0]}; starting a bed and creating ${args.objects} Secrets ...`);
  const bed = await startBed({ secrets: 0, mirrorPods: true });
  const stateDir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-bench-state-'));
  try {
    const node = bed.nodes[0]!;
    const api = await bed.api();
    const t0 = performance.now();
    await createSecrets(api, args.objects, NAMESPACES);
    log(`created in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    // Secret i is in NAMESPACES[i % 4]: the first K namespaces hold this many.
    const sampleNs = args.sampleNamespaces < 4 ? NAMESPACES.slice(0, args.sampleNamespaces) : undefined;
    const sampleN = sampleNs ? sampleNs.reduce((a, _, k) => a + Math.floor((args.objects - k + 3) / 4), 0) : args.objects;
    const keys: WriteKey[] = [];
    const restale = async () => {
      keys.unshift(newKey(`key${keys.length + 1}`));
      // The stand-in reads every object back into its cache on start: at 100,000 on a loaded
      // machine that took longer than the helper's 30 s.
      await applyEncryptionConfig(node, aescbcConfig(keys[0]!, keys.slice(1)), Math.max(30_000, args.objects * 3));
    };
    type Step = () => Promise<Measured | { skipped: string }>;
    const sequence: [string, Step][] = [
      ['k8s-encrypt re-encrypt-all', () => runCliBench(node, stateDir, args.objects, args.concurrency, args.pageSize ? ['--page-size', args.pageSize] : [], args.exe, args.toolTrace)],
      ...args.levels.map((level): [string, Step] => [`the raw PUT loop at ${level} in flight`, () => runRawBench(node, sampleNs, sampleN, level)]),
      ...(args.skipKubectl ? [] : [['the kubectl pipeline', () => runKubectlBench(node, sampleNs, sampleN)] as [string, Step]]),
    ];
    const results: (Measured & { round: number; mem?: MemBreakdown })[] = [];
    const skipped = new Set<string>();
    for (let round = 1; round <= args.rounds; round++) {
      for (const [what, step] of round % 2 ? sequence : [...sequence].reverse()) {
        await restale();
        log(`round ${round}: running ${what} (load average ${loadavg()}) ...`);
        const r = await step();
        if ('skipped' in r) skipped.add(r.skipped);
        else results.push({ ...r, round });
        log(`  ${JSON.stringify(r)}`);
      }
      loads.push(loadavg());
    }

    const rate = (r: Measured) => r.objects / r.seconds;
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const groups = new Map<string, typeof results>();
    for (const r of results) groups.set(r.name, [...(groups.get(r.name) ?? []), r]);
    const summary = [...groups.values()].map((rs) => ({
      ...rs[0]!,
      rate: mean(rs.map(rate)),
      rss: Math.max(...rs.map((r) => r.peakRssMb ?? 0)),
      runs: rs.length,
      /** Per round, for the tool: where it settled and its mean in flight. */
      settledAll: rs.map((r) => r.settled).join('/'),
      meanAll: rs.map((r) => (r.meanInFlight ?? 0).toFixed(0)).join('/'),
    }));
    const raws = summary.filter((r) => r.kind === 'raw');
    const bestRaw = raws.sort((a, b) => b.rate - a.rate)[0];
    const tool = summary.find((r) => r.kind === 'tool');
    const kubectl = summary.find((r) => r.kind === 'kubectl');
    const rows = [tool, ...args.levels.map((l) => raws.find((r) => r.level === l)), kubectl]
      .filter((r): r is NonNullable<typeof r> => !!r)
      .map((r) => [
        r.name,
        String(r.objects),
        (r.objects / r.rate).toFixed(1),
        r.rate.toFixed(0),
        r.rss.toFixed(0),
        bestRaw ? `${(r.rate / bestRaw.rate).toFixed(2)}` : '-',
        kubectl ? `${(r.rate / kubectl.rate).toFixed(2)}x` : '-',
        r.kind === 'tool' ? `settled at ${r.settledAll}, mean ${r.meanAll}` : r.kind === 'raw' ? String(r.level) : '1',
      ]);
    const out: string[] = [];
    out.push(`\nre-encrypting ${args.objects} stale Secrets on the test bed (${args.rounds} round${args.rounds > 1 ? 's' : ''}; load average ${loads.join(' -> ')})`);
    if (sampleNs) out.push(`raw loops and kubectl on ${sampleNs.join(', ')} (${sampleN} of the ${args.objects} Secrets); the tool on all`);
    out.push(table(['run', 'objects', 'wall s', 'objects/s', 'peak RSS MB', 'of best raw', 'vs kubectl', 'in flight'], rows));
    if (tool && bestRaw) {
      const ratio = tool.rate / bestRaw.rate;
      out.push(`\ntool / best raw (${bestRaw.level} in flight): ${ratio.toFixed(2)} (target >= 0.95: ${ratio >= 0.95 ? 'met' : 'NOT met'})`);
    }
    if (tool && kubectl) {
      const x = tool.rate / kubectl.rate;
      out.push(`tool / kubectl: ${x.toFixed(2)}x (target >= 4x: ${x >= 4 ? 'met' : 'NOT met'})`);
    }
    if (tool) out.push(`tool peak RSS: ${tool.rss.toFixed(0)} MB (target <= 100 MB: ${tool.rss <= 100 ? 'met' : 'NOT met'}); level settled on: ${tool.settledAll}`);
    for (const r of results.filter((x) => x.mem)) {
      const m = r.mem!.atPeak;
      out.push(
        `tool memory at its RSS peak (round ${r.round}): rss ${m.rss} MB = V8 heap ${m.heapTotal} MB (used ${m.heapUsed}; new space ${m.spaces.new_space ?? '?'}, old ${m.spaces.old_space ?? '?'}) + external ${m.external} MB (arrayBuffers ${m.arrayBuffers}) + the rest native${r.mem!.sockets ? `; sockets opened ${r.mem!.sockets.opened}, at most ${r.mem!.sockets.peakOpen} open` : ''}`,
      );
    }
    for (const s of skipped) out.push(`skipped: ${s}`);
    process.stdout.write(`${out.join('\n')}\n`);
    const counts = await etcdPrefixCounts(bed, [`bench-a/${realisticSecret('bench-a', 0).metadata.name}`]);
    log(`sample etcd value after the last run: ${Object.keys(counts).join(', ')}`);
  } finally {
    await bed.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? err}\n`);
    process.exitCode = 1;
  });
}
