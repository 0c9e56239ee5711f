/**
 * The restore drill: read an etcd snapshot offline (bbolt, no etcd binary) and decrypt every
 * object of every resource the config covers with the given keys, the way the apiserver would
 * read it after a restore. Per resource: how many objects, how many readable under which key, and
 * the names of those that are not.
 */
import { liveKeyValues, type SnapshotSummary } from '../bbolt/etcd';
import { BoltDb, BoltFormatError } from '../bbolt/reader';
import { resourcesOf } from '../config/model';
import type { EncryptionConfiguration } from '../config/schema';
import { classifyValue, decodeStored, looksLikeStoredObject, transformerLabel, transformersForResource, valueLabel } from '../etcd/codec';
import { etcdPrefixFor } from '../etcd/scan';
import { CliError, ExitCode } from '../ui/errors';
import { checkSnapshotFile, type SnapshotCheck } from './take';

interface UnreadableObject {
  namespace: string;
  name: string;
  /** How it is stored (`aescbc:key1`, `plaintext`, ...). */
  storedAs: string;
  error: string;
}

interface ResourceDrill {
  resource: string;
  etcdPrefix: string;
  total: number;
  readable: number;
  /** Readable objects per key label (`aescbc:key1`, `plaintext`). */
  readableBy: Record<string, number>;
  /** KMS values: counted, not decrypted (offline there is no plugin). */
  kmsNotChecked: number;
  unreadable: UnreadableObject[];
}

export interface SnapshotDrill {
  snapshot: SnapshotCheck;
  revision: string;
  records: number;
  resources: ResourceDrill[];
  /** Wildcard rules of the config: not expanded into prefixes. */
  skippedWildcards: string[];
  unreadable: number;
}

const isWildcard = (r: string) => r.startsWith('*');

function splitName(rest: string): { namespace: string; name: string } {
  const i = rest.indexOf('/');
  return i === -1 ? { namespace: '', name: rest } : { namespace: rest.slice(0, i), name: rest.slice(i + 1) };
}

export async function drillSnapshot(path: string, cfg: EncryptionConfiguration, registryPrefix = '/registry'): Promise<SnapshotDrill> {
  const snapshot = await checkSnapshotFile(path);
  if (snapshot.hasHash && !snapshot.hashOk) {
    throw new CliError(`${path} fails etcd's integrity check: its trailing sha256 does not match the data (the file is damaged)`, {
      exitCode: ExitCode.Verification,
      hint: 'a restore from it would fail too ("etcdutl snapshot restore" checks the same hash): use another snapshot',
      details: { path, sha256: snapshot.sha256 },
    });
  }
  const all = resourcesOf(cfg);
  const resources = all.filter((r) => !isWildcard(r));
  const drills: ResourceDrill[] = resources.map((resource) => ({
    resource,
    etcdPrefix: etcdPrefixFor(resource, registryPrefix),
    total: 0,
    readable: 0,
    readableBy: {},
    kmsNotChecked: 0,
    unreadable: [],
  }));
  const transformers = new Map(resources.map((r) => [r, transformersForResource(cfg, r)]));
  // Longest prefix first, so a key goes to the most specific resource that matches it.
  const byPrefix = [...drills].sort((a, b) => b.etcdPrefix.length - a.etcdPrefix.length);
  let db: BoltDb;
  try {
    db = await BoltDb.open(path);
  } catch (err) {
    if (err instanceof BoltFormatError) throw new CliError(`${path} is not a readable etcd snapshot: ${err.message}`, { exitCode: ExitCode.Usage, hint: 'give a file written by "etcdctl snapshot save" or by k8s-encrypt' });
    throw err;
  }
  const summary: SnapshotSummary = { revision: 0n, records: 0 };
  try {
    for await (const kv of liveKeyValues(db, { prefixes: drills.map((d) => d.etcdPrefix) }, summary)) {
      const d = byPrefix.find((x) => kv.key.startsWith(x.etcdPrefix));
      if (!d) continue;
      d.total++;
      const cls = classifyValue(kv.value);
      if (cls.kind === 'kms') {
        d.kmsNotChecked++;
        continue;
      }
      const list = transformers.get(d.resource)!;
      try {
        const r = await decodeStored(kv.value, kv.key, list);
        if (!looksLikeStoredObject(r.plaintext)) throw new Error('decrypts to something that is not a stored object (wrong key?)');
        const label = list.length ? transformerLabel(list[r.index]!) : 'plaintext';
        d.readable++;
        d.readableBy[label] = (d.readableBy[label] ?? 0) + 1;
      } catch (err) {
        d.unreadable.push({ ...splitName(kv.key.slice(d.etcdPrefix.length)), storedAs: valueLabel(cls), error: (err as Error).message });
      }
    }
  } catch (err) {
    if (err instanceof BoltFormatError) throw new CliError(`${path} is damaged: ${err.message}`, { exitCode: ExitCode.Verification, hint: 'use another snapshot' });
    throw err;
  } finally {
    await db.close();
  }
  return {
    snapshot,
    revision: summary.revision.toString(),
    records: summary.records,
    resources: drills,
    skippedWildcards: all.filter(isWildcard),
    unreadable: drills.reduce((n, d) => n + d.unreadable.length, 0),
  };
}
