/**
 * `status` end to end, as an operator runs it: a kubeadm-shaped root (manifest naming etcd and the
 * config, config file with two aescbc keys), N Secrets in a fresh etcd (80% under the write key,
 * 10% under the old key, 10% plaintext), then the built CLI `status --json --no-cluster` as a
 * child process: wall time, scan time and the child's peak RSS (GNU time), and the same with
 * --decrypt-check. bench/etcd-scan.ts measures the scan function alone.
 *
 *   npm run build && node dist/bench/status-scan.js [--objects 100000] [--keep DIR]
 *
 * --keep DIR keeps etcd's data, the keys and the kubeadm root in DIR: the first run loads them,
 * later runs with the same DIR and --objects reuse them (no load).
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Etcd3 } from 'etcd3';
import { execa } from 'execa';
import { localTransformer } from '../src/etcd/codec';
import { ProtoWriter } from '../src/etcd/protobuf';
import { startEtcd } from '../test/helpers/etcd';
import { repoRoot } from '../test/bed/index';
import { silenceIpServernameWarning } from '../src/ui/warnings';

silenceIpServernameWarning();

const { values } = parseArgs({ options: { objects: { type: 'string', default: '100000' }, keep: { type: 'string' } } });
const objects = Number(values.objects);
if (!Number.isInteger(objects) || objects < 1) {
  console.error('usage: status-scan [--objects N] [--keep DIR]');
  process.exit(2);
}

const keep = values.keep;
const keysFile = keep === undefined ? undefined : join(keep, 'keys.json');
const reuse = keysFile !== undefined && existsSync(keysFile);
const saved = reuse ? (JSON.parse(await readFile(keysFile!, 'utf8')) as { newKey: string; oldKey: string; objects: number }) : undefined;
if (saved && saved.objects !== objects) {
  console.error(`${keep} holds ${saved.objects} objects, not ${objects}: pass --objects ${saved.objects} or another --keep`);
  process.exit(2);
}
const newKey = saved?.newKey ?? randomBytes(32).toString('base64');
const oldKey = saved?.oldKey ?? randomBytes(32).toString('base64');
const write = localTransformer('aescbc', 'key-new', newKey);
const old = localTransformer('aescbc', 'key-old', oldKey);

function secretValue(i: number): Buffer {
  const typeMeta = new ProtoWriter().bytes(1, 'v1').bytes(2, 'Secret');
  return Buffer.concat([Buffer.from('k8s\0', 'latin1'), new ProtoWriter().message(1, typeMeta).bytes(2, randomBytes(280 + (i % 40))).finish()]);
}

async function load(endpoint: string): Promise<void> {
  const etcd = new Etcd3({ hosts: endpoint });
  try {
    for (let from = 0; from < objects; from += 100 * 8) {
      await Promise.all(
        Array.from({ length: 8 }, async (_, w) => {
          const start = from + w * 100;
          const end = Math.min(objects, start + 100); // under etcd's --max-txn-ops (128)
          if (start >= end) return;
          const ops = [];
          for (let i = start; i < end; i++) {
            const key = `/registry/secrets/ns${i % 50}/secret-${i}`;
            const value = i % 10 === 0 ? secretValue(i) : await (i % 10 === 1 ? old : write).encrypt(secretValue(i), key);
            ops.push({ request_put: { key: Buffer.from(key), value } });
          }
          await etcd.kv.txn({ success: ops });
        }),
      );
    }
  } finally {
    etcd.close();
  }
}

async function run(root: string, extra: string[]) {
  const bin = join(repoRoot(), 'bin/k8s-encrypt.js');
  const started = performance.now();
  // GNU time reports the child's peak RSS; without it, only the wall time.
  const time = await execa('sh', ['-c', 'command -v /usr/bin/time'], { reject: false });
  const args = ['--root', root, 'status', '--json', '--no-cluster', ...extra];
  const r = time.exitCode === 0
    ? await execa('/usr/bin/time', ['-f', '%M', process.execPath, bin, ...args], { reject: false, env: { NO_COLOR: '1' } })
    : await execa(process.execPath, [bin, ...args], { reject: false, env: { NO_COLOR: '1' } });
  const seconds = (performance.now() - started) / 1000;
  const report = JSON.parse(String(r.stdout));
  const rssKB = time.exitCode === 0 ? Number(String(r.stderr).trim().split('\n').pop()) : NaN;
  const s = report.etcd.resources?.[0];
  if (!s || s.total !== objects) throw new Error(`status saw ${s?.total} objects, loaded ${objects}: ${r.stderr}`);
  return {
    seconds: Number(seconds.toFixed(2)),
    scanSeconds: Number((report.etcd.durationMs / 1000).toFixed(2)),
    objectsPerSecond: Math.round(objects / (report.etcd.durationMs / 1000)),
    peakRssMB: Number.isNaN(rssKB) ? null : Math.round(rssKB / 1024),
    exitCode: r.exitCode,
    counts: s.counts,
    stale: s.stale.count,
    listed: s.stale.items.length,
    decryptFailures: report.etcd.decryptFailuresTotal,
  };
}

if (keep !== undefined) await mkdir(join(keep, 'etcd'), { recursive: true, mode: 0o700 });
const etcd = await startEtcd(keep === undefined ? {} : { dataDir: join(keep, 'etcd') });
const root = keep === undefined ? await mkdtemp(join(tmpdir(), 'k8s-encrypt-status-bench-')) : join(keep, 'root');
try {
  const loadStart = performance.now();
  if (!reuse) await load(etcd.endpoint);
  const loadSeconds = (performance.now() - loadStart) / 1000;
  if (keysFile !== undefined && !reuse) await writeFile(keysFile, JSON.stringify({ newKey, oldKey, objects }), { mode: 0o600 });

  const encDir = join(root, 'etc/kubernetes/encryption');
  await mkdir(encDir, { recursive: true, mode: 0o700 });
  const config = join(encDir, 'config.yaml');
  await writeFile(
    config,
    `apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: key-new\n              secret: ${newKey}\n            - name: key-old\n              secret: ${oldKey}\n      - identity: {}\n`,
    { mode: 0o600 },
  );
  const manifests = join(root, 'etc/kubernetes/manifests');
  await mkdir(manifests, { recursive: true });
  await writeFile(
    join(manifests, 'kube-apiserver.yaml'),
    [
      'apiVersion: v1',
      'kind: Pod',
      'metadata: {name: kube-apiserver, namespace: kube-system}',
      'spec:',
      '  containers:',
      '  - name: kube-apiserver',
      '    image: registry.k8s.io/kube-apiserver:v1.32.6',
      '    command:',
      '    - kube-apiserver',
      `    - --etcd-servers=${etcd.endpoint}`,
      `    - --encryption-provider-config=${config}`,
      '    volumeMounts:',
      `    - {name: encryption-config, mountPath: ${encDir}, readOnly: true}`,
      '  volumes:',
      `  - {name: encryption-config, hostPath: {path: ${encDir}, type: DirectoryOrCreate}}`,
      '',
    ].join('\n'),
  );

  const plain = await run(root, []);
  const decrypt = await run(root, ['--decrypt-check']);
  console.log(JSON.stringify({ objects, loadSeconds: Number(loadSeconds.toFixed(2)), status: plain, statusDecryptCheck: decrypt }, null, 2));
} finally {
  if (keep === undefined) await rm(root, { recursive: true, force: true });
  await etcd.stop();
}
