import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { freePort } from '../helpers/etcd';
import { Kubelet, readStaticPods } from '../bed/kubelet';
import { nodePaths, renderApiserverManifest } from '../bed/layout';
import { generatePki } from '../bed/pki';

/**
 * The kubelet stand-in on its own, against a throwaway HTTPS "apiserver" that only answers
 * probes: what it runs, with which env, and how it restarts. (Mirror pods need the real stand-in:
 * see bed.test.ts.)
 */

// A throwaway container: serves HTTPS on --secure-port with the manifest's cert, logs its env,
// and obeys a few env switches of the real stand-in.
const FAKE = String.raw`
import { createServer } from 'node:https';
import { readFileSync } from 'node:fs';
const flag = (n) => process.argv.find((a) => a.startsWith('--' + n + '='))?.split('=').slice(1).join('=');
console.error('ENV ' + JSON.stringify({ version: process.env.BED_KUBE_VERSION, node: process.env.BED_NODE_NAME,
  mounts: JSON.parse(process.env.BED_MOUNTS || '[]'), crash: process.env.BED_CRASH_ON_START ?? null,
  reload: process.env.BED_RELOAD_INTERVAL_MS, latency: process.env.BED_LATENCY_MS ?? null }));
console.error('ARGV ' + JSON.stringify(process.argv.slice(2)));
if (process.env.BED_CRASH_ON_START === '1') { console.error('crashing as asked'); process.exit(1); }
if (process.argv.includes('--ignore-sigterm=true')) process.on('SIGTERM', () => console.error('ignoring SIGTERM'));
createServer({ cert: readFileSync(flag('tls-cert-file')), key: readFileSync(flag('tls-private-key-file')) },
  (req, res) => res.end('ok')).listen(Number(flag('secure-port')), '127.0.0.1');
`;

let dir: string;
let script: string;
let kubelets: Kubelet[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-kubelet-'));
  script = join(dir, 'fake-apiserver.mjs');
  await writeFile(script, FAKE);
});
afterEach(async () => {
  await Promise.all(kubelets.map((k) => k.stop()));
  kubelets = [];
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function node(name: string) {
  const paths = nodePaths(join(dir, name));
  await generatePki(paths.pki);
  await mkdir(paths.manifestsDir, { recursive: true });
  await mkdir(dirname(paths.knobs), { recursive: true });
  const port = await freePort();
  const manifest = renderApiserverManifest({
    root: paths.root,
    nodeName: name,
    port,
    kubeVersion: '1.31.2',
    etcdEndpoint: 'https://127.0.0.1:1',
    caDirs: [],
  });
  const kubelet = new Kubelet({
    nodeName: name,
    manifestsDir: paths.manifestsDir,
    podLogDir: paths.podLogDir,
    knobsFile: paths.knobs,
    apiserverScript: script,
    mirrorPods: false,
    backoffInitialMs: 200,
    backoffMaxMs: 800,
    graceMs: 500,
    rescanMs: 300,
  });
  kubelets.push(kubelet);
  const log = () => readFile(join(paths.podLogDir, 'kube-apiserver.log'), 'utf8').catch(() => '');
  return { paths, port, manifest, kubelet, log };
}

const until = async (what: string, cond: () => boolean | Promise<boolean>, ms = 10_000) => {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 30));
  }
};

describe('kubelet stand-in', () => {
  it('runs the manifest command with the pod env, probes readiness and restarts on a change', async () => {
    const n = await node('k-a');
    await writeFile(n.paths.manifest, n.manifest);
    await writeFile(n.paths.knobs, JSON.stringify({ latencyMs: 7 }));
    await n.kubelet.start();
    await n.kubelet.readyAfterStart(1);
    expect(n.kubelet.starts()).toBe(1);
    const firstPid = n.kubelet.pid();
    expect(firstPid).toBeGreaterThan(0);
    const env = JSON.parse((await n.log()).match(/^ENV (.*)$/m)![1]!);
    expect(env).toMatchObject({ version: '1.31.2', node: 'k-a', latency: '7', crash: null, reload: '1000' });
    expect(env.mounts).toContainEqual({ hostPath: n.paths.pki, mountPath: n.paths.pki, readOnly: true });
    const argv = JSON.parse((await n.log()).match(/^ARGV (.*)$/m)![1]!);
    expect(argv).toContain(`--secure-port=${n.port}`);
    expect(argv[0]).not.toBe('kube-apiserver');

    // Edit the manifest: the kubelet kills the pod and starts the new one.
    const pod = parse(n.manifest);
    pod.spec.containers[0].command.push('--v=2');
    await writeFile(n.paths.manifest, stringify(pod));
    await n.kubelet.readyAfterStart(2);
    expect(n.kubelet.starts()).toBe(2);
    expect(n.kubelet.pid()).not.toBe(firstPid);
    expect(() => process.kill(firstPid!, 0)).toThrow();
  });

  it('crash-loops with growing back-off while the container exits, and recovers when it stops failing', async () => {
    const n = await node('k-b');
    await writeFile(n.paths.knobs, JSON.stringify({ crashOnStartIfFlag: '--encryption-provider-config' }));
    const pod = parse(n.manifest);
    pod.spec.containers[0].command.push('--encryption-provider-config=/nowhere.yaml');
    await writeFile(n.paths.manifest, stringify(pod));
    const t0 = Date.now();
    await n.kubelet.start();
    await until('4 starts', () => n.kubelet.starts() >= 4);
    // 200 + 400 + 800 ms of back-off at least between the first and the fourth start.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1300);
    const view = n.kubelet.podViews()[0]!;
    expect(view.restartCount).toBeGreaterThanOrEqual(3);
    expect(view.ready).toBe(false);
    expect(await n.log()).toContain('crashing as asked');

    // The knob is read at every start: dropping the flag from the manifest ends the loop.
    await writeFile(n.paths.manifest, n.manifest);
    const before = n.kubelet.starts();
    await n.kubelet.readyAfterStart(before + 1);
    expect(n.kubelet.podViews()).toHaveLength(1);
    expect(n.kubelet.podViews()[0]!.restartCount).toBe(0);
  });

  it('kills a container that ignores SIGTERM after the grace period', async () => {
    const n = await node('k-c');
    const pod = parse(n.manifest);
    pod.spec.containers[0].command.push('--ignore-sigterm=true');
    await writeFile(n.paths.manifest, stringify(pod));
    await n.kubelet.start();
    await n.kubelet.readyAfterStart(1);
    const pid = n.kubelet.pid()!;
    const t0 = Date.now();
    await n.kubelet.stop();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(450);
    expect(() => process.kill(pid, 0)).toThrow();
    expect(await n.log()).toContain('ignoring SIGTERM');
  });

  it('runs every non-hidden file of the manifests dir, whatever its extension', async () => {
    const n = await node('k-d');
    await writeFile(n.paths.manifest, n.manifest);
    await n.kubelet.start();
    await n.kubelet.readyAfterStart(1);
    // A pod of another name: a second pod; not an apiserver, so only recorded as running.
    const other = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'kms-plugin', namespace: 'kube-system' },
      spec: { containers: [{ name: 'kms', image: 'example.com/kms:1', command: ['/kms'] }] } };
    await writeFile(join(n.paths.manifestsDir, 'kms-plugin.yaml.bak'), stringify(other));
    await writeFile(join(n.paths.manifestsDir, '.kms-plugin.yaml.swp'), stringify({ ...other, metadata: { name: 'hidden' } }));
    await writeFile(join(n.paths.manifestsDir, 'notes.txt'), 'not a pod');
    // A rescan may see the three files in separate passes: wait for the last one's verdict too.
    await until('second pod', () => n.kubelet.podViews().length === 2);
    await until('notes.txt judged', () => n.kubelet.events.some((e) => e.includes('notes.txt: not a Pod manifest')));
    const views = n.kubelet.podViews();
    expect(views.map((v) => v.pod).sort()).toEqual(['kms-plugin-k-d', 'kube-apiserver-k-d']);
    expect(views.find((v) => v.pod === 'kms-plugin-k-d')).toMatchObject({ running: true, apiserver: false });
    expect(n.kubelet.events.join('\n')).toContain('notes.txt: not a Pod manifest');
  });
});

describe('readStaticPods (the kubelet file source)', () => {
  it('keys pods by namespace/name-node; a later file with the same name replaces an earlier one', async () => {
    const d = await mkdtemp(join(dir, 'src-'));
    const pod = (cmd: string) => stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'kube-apiserver', namespace: 'kube-system' },
      spec: { containers: [{ name: 'kube-apiserver', image: 'registry.k8s.io/kube-apiserver:v1.32.6', command: ['kube-apiserver', cmd] }] } });
    await writeFile(join(d, 'kube-apiserver.yaml'), pod('--new'));
    await writeFile(join(d, 'kube-apiserver.yaml.20260101T000000Z.bak'), pod('--old'));
    const { pods } = await readStaticPods(d, 'cp-9');
    expect([...pods.keys()]).toEqual(['kube-system/kube-apiserver-cp-9']);
    const only = pods.get('kube-system/kube-apiserver-cp-9')!;
    expect(only.file).toMatch(/\.bak$/);
    expect(only.pod.spec.containers[0].command).toEqual(['kube-apiserver', '--old']);
  });

  it('hashes content, node and file: the same manifest on another node or path hashes differently', async () => {
    const d = await mkdtemp(join(dir, 'hash-'));
    const text = stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'kube-system' }, spec: { containers: [{ name: 'c', image: 'i' }] } });
    await writeFile(join(d, 'a.yaml'), text);
    const h1 = (await readStaticPods(d, 'n1')).pods.get('kube-system/p-n1')!.hash;
    const h2 = (await readStaticPods(d, 'n2')).pods.get('kube-system/p-n2')!.hash;
    await writeFile(join(d, 'a.yaml'), text + '\n# edited\n');
    const h3 = (await readStaticPods(d, 'n1')).pods.get('kube-system/p-n1')!.hash;
    expect(new Set([h1, h2, h3]).size).toBe(3);
  });
});
