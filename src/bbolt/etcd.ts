/**
 * etcd's MVCC store inside a bbolt file (a snapshot or a member's db): bucket `key` maps a
 * revision (`main u64 BE | '_' | sub u64 BE`, plus `t` for a tombstone) to an mvccpb.KeyValue
 * protobuf (key = 1, create_revision = 2, mod_revision = 3, version = 4, value = 5, lease = 6).
 * Keys are sorted by revision, so the newest record of a key is its last one; a key whose newest
 * record is a tombstone was deleted.
 */
import { readFields } from '../etcd/protobuf';
import { BoltDb, BoltFormatError } from './reader';

const KEY_BUCKET = 'key';
const REVISION_BYTES = 17;
const TOMBSTONE = 0x74; // 't'

interface SnapshotKeyValue {
  key: string;
  value: Buffer;
  modRevision: bigint;
}

interface Revision {
  main: bigint;
  sub: bigint;
  tombstone: boolean;
}

function parseRevision(k: Buffer): Revision {
  if ((k.length !== REVISION_BYTES && k.length !== REVISION_BYTES + 1) || k[8] !== 0x5f) {
    throw new BoltFormatError(`not an etcd revision key: ${k.toString('hex')}`);
  }
  if (k.length === REVISION_BYTES + 1 && k[REVISION_BYTES] !== TOMBSTONE) throw new BoltFormatError(`bad revision mark in ${k.toString('hex')}`);
  return { main: k.readBigUInt64BE(0), sub: k.readBigUInt64BE(9), tombstone: k.length === REVISION_BYTES + 1 };
}

/** The fields of an mvccpb.KeyValue that matter here; a malformed one is a format error. */
function decodeKeyValue(b: Buffer): { key: Buffer; value: Buffer; modRevision: bigint } {
  let fields;
  try {
    fields = readFields(b);
  } catch (err) {
    throw new BoltFormatError(`a malformed mvccpb.KeyValue (${(err as Error).message})`);
  }
  let key: Buffer | undefined;
  let value: Buffer = Buffer.alloc(0);
  let modRevision = 0n;
  for (const f of fields) {
    if (f.field === 1 && f.bytes) key = f.bytes;
    else if (f.field === 3 && f.int !== undefined) modRevision = f.int;
    else if (f.field === 5 && f.bytes) value = f.bytes;
  }
  if (!key) throw new BoltFormatError('an mvccpb.KeyValue without a key');
  return { key, value, modRevision };
}

interface LiveKeysOptions {
  /** Only keys starting with one of these (default: every key). */
  prefixes?: readonly string[];
}

export interface SnapshotSummary {
  /** The newest revision in the snapshot. */
  revision: bigint;
  /** Records in bucket `key` (every kept revision, tombstones included). */
  records: number;
}

/**
 * The live keys of an etcd bbolt file (newest revision of each, deleted ones left out), in
 * revision order of their newest write. Two passes over bucket `key`: the first remembers only
 * which revision is newest per key, the second yields those records, so memory holds key names,
 * never the values of older revisions.
 */
export async function* liveKeyValues(db: BoltDb, opts: LiveKeysOptions = {}, summary?: SnapshotSummary): AsyncGenerator<SnapshotKeyValue> {
  const bucket = await db.bucket(KEY_BUCKET);
  if (!bucket) throw new BoltFormatError(`${db.path} has no bucket "${KEY_BUCKET}": not an etcd v3 database`);
  const prefixes = (opts.prefixes ?? []).map((p) => Buffer.from(p));
  const wanted = (k: Buffer) => prefixes.length === 0 || prefixes.some((p) => k.length >= p.length && k.subarray(0, p.length).equals(p));
  const newest = new Map<string, string>(); // etcd key (latin1) -> revision key (hex), or '' when deleted
  let records = 0;
  let revision = 0n;
  for await (const e of bucket.entries()) {
    if (e.bucket || !e.value) continue;
    const rev = parseRevision(e.key);
    records++;
    if (rev.main > revision) revision = rev.main;
    const kv = decodeKeyValue(e.value);
    if (!wanted(kv.key)) continue;
    newest.set(kv.key.toString('latin1'), rev.tombstone ? '' : e.key.toString('hex'));
  }
  if (summary) {
    summary.revision = revision;
    summary.records = records;
  }
  const live = new Set<string>();
  for (const v of newest.values()) if (v) live.add(v);
  newest.clear();
  for await (const e of bucket.entries()) {
    if (e.bucket || !e.value || !live.has(e.key.toString('hex'))) continue;
    const kv = decodeKeyValue(e.value);
    yield { key: kv.key.toString('utf8'), value: Buffer.from(kv.value), modRevision: kv.modRevision };
  }
}
