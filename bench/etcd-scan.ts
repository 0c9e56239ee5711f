/**
 * How fast `status` / `--verify` can read etcd: loads N Secrets into a fresh etcd (80% under the
 * write key, 10% under an old key, 10% plaintext) and times scanEncryptionState over them.
 *
 *   npm run build && node dist/bench/etcd-scan.js [--objects 100000] [--page-size 500] [--decrypt-check]
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Etcd3 } from 'etcd3';
import { openEtcd } from '../src/etcd/client';
import { identityTransformer, localTransformer } from '../src/etcd/codec';
import { ProtoWriter } from '../src/etcd/protobuf';
import { scanEncryptionState } from '../src/etcd/scan';
import { startEtcd } from '../test/helpers/etcd';
import { silenceIpServernameWarning } from '../src/ui/warnings';

silenceIpServernameWarning();

const { values } = parseArgs({
  options: {
    objects: { type: 'string', default: '100000' },
    'page-size': { type: 'string', default: '500' },
    'decrypt-check': { type: 'boolean', default: false },
  },
});
const objects = Number(values.objects);
const pageSize = Number(values['page-size']);
if (!Number.isInteger(objects) || objects < 1 || !Number.isInteger(pageSize) || pageSize < 1) {
  console.error('usage: etcd-scan [--objects N] [--page-size N] [--decrypt-check]');
  process.exit(2);
}

/** A Secret-sized protobuf envelope: k8s\0 + runtime.Unknown{typeMeta, raw}. */
function fakeSecret(): Buffer {
  const typeMeta = new ProtoWriter().bytes(1, 'v1').bytes(2, 'Secret');
  const unknown = new ProtoWriter().message(1, typeMeta).bytes(2, randomBytes(300)).finish();
  return Buffer.concat([Buffer.from('k8s\0', 'latin1'), unknown]);
}

const writeKey = localTransformer('aescbc', 'new', randomBytes(32).toString('base64'));
const oldKey = localTransformer('aescbc', 'old', randomBytes(32).toString('base64'));
const transformers = [writeKey, oldKey, identityTransformer()];

const etcd = await startEtcd();
try {
  const loadStart = performance.now();
  const raw = new Etcd3({ hosts: etcd.endpoint });
  const batch = 100; // under etcd's --max-txn-ops (128)
  const inFlight = 8;
  let next = 0;
  const worker = async () => {
    while (next < objects) {
      const from = next;
      const to = Math.min(objects, from + batch);
      next = to;
      const ops = [];
      for (let i = from; i < to; i++) {
        const key = `/registry/secrets/ns${i % 100}/s${i}`;
        const plain = fakeSecret();
        const value = i % 10 === 0 ? plain : await (i % 10 === 1 ? oldKey : writeKey).encrypt(plain, key);
        ops.push({ request_put: { key: Buffer.from(key), value } });
      }
      await raw.kv.txn({ success: ops });
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  raw.close();
  const loadSeconds = (performance.now() - loadStart) / 1000;

  const reader = await openEtcd({ endpoints: [etcd.endpoint] }, { callTimeoutMs: 60_000 });
  const rssBeforeScan = process.memoryUsage().rss;
  let scanPeakRss = rssBeforeScan;
  const start = performance.now();
  const report = await scanEncryptionState(reader, {
    resources: [{ resource: 'secrets', etcdPrefix: '/registry/secrets/' }],
    transformersFor: () => transformers,
    decryptCheck: values['decrypt-check'],
    pageSize,
    onProgress: () => (scanPeakRss = Math.max(scanPeakRss, process.memoryUsage().rss)),
  });
  const seconds = (performance.now() - start) / 1000;
  reader.close();
  const r = report.resources[0]!;
  if (r.total !== objects) throw new Error(`scanned ${r.total} objects, loaded ${objects}`);
  console.log(
    JSON.stringify(
      {
        objects,
        pageSize,
        decryptCheck: values['decrypt-check'],
        loadSeconds: Number(loadSeconds.toFixed(2)),
        scanSeconds: Number(seconds.toFixed(2)),
        objectsPerSecond: Math.round(objects / seconds),
        // maxRSS covers the load phase too; the scan's own high-water mark is sampled per page.
        peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
        rssBeforeScanMB: Math.round(rssBeforeScan / 2 ** 20),
        scanPeakRssMB: Math.round(scanPeakRss / 2 ** 20),
        counts: r.counts,
        stale: r.stale.count,
        decryptFailures: report.decryptFailuresTotal,
      },
      null,
      2,
    ),
  );
} finally {
  await etcd.stop();
}
