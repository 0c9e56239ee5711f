/**
 * A read-only reader of bbolt database files (go.etcd.io/bbolt), enough to walk an etcd snapshot
 * offline: meta pages, freelist, branch and leaf pages (any depth), overflow pages, nested and
 * inline buckets. Pages are read from the file on demand, so a snapshot of any size is walked in
 * bounded memory (one root-to-leaf path of pages at a time).
 *
 * Layout (bbolt page.go / meta / bucket): every page starts with a 16-byte header
 * `id u64 | flags u16 | count u16 | overflow u32`, little endian; a page with `overflow = n` spans
 * n + 1 pages. Branch elements are `pos u32 | ksize u32 | pgid u64`, leaf elements
 * `flags u32 | pos u32 | ksize u32 | vsize u32`, each `pos` relative to the element itself. A leaf
 * element with flag 0x01 is a nested bucket whose value is `root u64 | sequence u64`, followed by
 * an inline page when root is 0.
 */
import { open, type FileHandle } from 'node:fs/promises';

const PAGE_HEADER = 16;
const BRANCH_ELEMENT = 16;
const LEAF_ELEMENT = 16;
const BUCKET_HEADER = 16;

const BRANCH_PAGE = 0x01;
const LEAF_PAGE = 0x02;
const META_PAGE = 0x04;
const FREELIST_PAGE = 0x10;
const BUCKET_LEAF_FLAG = 0x01;

const MAGIC = 0xed0cdaed;
const VERSION = 2;
/** meta.freelist when the freelist is not persisted (etcd runs bbolt with NoFreelistSync). */
const NO_FREELIST = 0xffffffffffffffffn;

export class BoltFormatError extends Error {}

interface BoltMeta {
  pageSize: number;
  rootPgid: bigint;
  /** Undefined when the freelist is not persisted. */
  freelistPgid: bigint | undefined;
  /** The high-water mark: pages at or above it are not part of the database. */
  pgid: bigint;
  txid: bigint;
  /** Which of the two meta pages (0 or 1) is in use. */
  metaPage: 0 | 1;
}

interface BoltEntry {
  key: Buffer;
  /** The value; for a nested bucket, undefined. */
  value: Buffer | undefined;
  bucket: boolean;
}

interface Page {
  id: bigint;
  flags: number;
  count: number;
  overflow: number;
  /** The whole page, header included (inline pages: the bucket value after its 16-byte header). */
  data: Buffer;
}

/** FNV-1a 64 over the meta struct up to its checksum, as bbolt's meta.sum64 does. */
function fnv1a64(b: Buffer): bigint {
  let h = 0xcbf29ce484222325n;
  for (const byte of b) {
    h ^= BigInt(byte);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h;
}

function parseMeta(buf: Buffer, at: 0 | 1): BoltMeta | string {
  if (buf.length < PAGE_HEADER + 64) return 'too short';
  const flags = buf.readUInt16LE(8);
  if ((flags & META_PAGE) === 0) return `page ${at} is not a meta page (flags 0x${flags.toString(16)})`;
  const m = buf.subarray(PAGE_HEADER, PAGE_HEADER + 64);
  if (m.readUInt32LE(0) !== MAGIC) return 'bad magic: not a bbolt file';
  if (m.readUInt32LE(4) !== VERSION) return `unsupported bbolt version ${m.readUInt32LE(4)}`;
  const sum = m.readBigUInt64LE(56);
  if (fnv1a64(m.subarray(0, 56)) !== sum) return `meta page ${at} checksum mismatch`;
  const freelist = m.readBigUInt64LE(32);
  return {
    pageSize: m.readUInt32LE(8),
    rootPgid: m.readBigUInt64LE(16),
    freelistPgid: freelist === NO_FREELIST ? undefined : freelist,
    pgid: m.readBigUInt64LE(40),
    txid: m.readBigUInt64LE(48),
    metaPage: at,
  };
}

export class BoltDb {
  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly size: number,
    readonly meta: BoltMeta,
  ) {}

  /** Opens a bbolt file read-only and picks the valid meta page with the highest txid. */
  static async open(path: string): Promise<BoltDb> {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const head = Buffer.alloc(Math.min(size, 4096 + PAGE_HEADER + 64));
      await fh.read(head, 0, head.length, 0);
      const first = parseMeta(head, 0);
      if (typeof first === 'string' && !/checksum/.test(first)) throw new BoltFormatError(`${path}: ${first}`);
      // The second meta page sits one page further on; its size comes from the first (or 4096).
      const pageSize = typeof first === 'string' ? head.readUInt32LE(PAGE_HEADER + 8) || 4096 : first.pageSize;
      const second = Buffer.alloc(PAGE_HEADER + 64);
      await fh.read(second, 0, second.length, pageSize);
      const other = parseMeta(second, 1);
      const valid = [first, other].filter((m): m is BoltMeta => typeof m !== 'string');
      if (valid.length === 0) throw new BoltFormatError(`${path}: both meta pages are invalid (${first}; ${other})`);
      const meta = valid.reduce((a, b) => (b.txid > a.txid ? b : a));
      if (meta.pageSize < 512 || meta.pageSize > 1 << 20) throw new BoltFormatError(`${path}: implausible page size ${meta.pageSize}`);
      if (BigInt(size) < meta.pgid * BigInt(meta.pageSize)) {
        throw new BoltFormatError(`${path}: the file is ${size} bytes, shorter than its ${meta.pgid} pages of ${meta.pageSize} (truncated)`);
      }
      return new BoltDb(fh, path, size, meta);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  private async readPage(id: bigint): Promise<Page> {
    if (id < 2n || id >= this.meta.pgid) throw new BoltFormatError(`${this.path}: page ${id} is outside the database (high water ${this.meta.pgid})`);
    const ps = this.meta.pageSize;
    const offset = Number(id) * ps;
    const head = Buffer.alloc(PAGE_HEADER);
    await this.fh.read(head, 0, PAGE_HEADER, offset);
    const overflow = head.readUInt32LE(12);
    if (id + BigInt(overflow) >= this.meta.pgid) throw new BoltFormatError(`${this.path}: page ${id} overflows past the end of the database`);
    const data = Buffer.alloc((overflow + 1) * ps);
    const { bytesRead } = await this.fh.read(data, 0, data.length, offset);
    if (bytesRead !== data.length) throw new BoltFormatError(`${this.path}: page ${id} is truncated`);
    const page = { id: data.readBigUInt64LE(0), flags: data.readUInt16LE(8), count: data.readUInt16LE(10), overflow, data };
    if (page.id !== id) throw new BoltFormatError(`${this.path}: page ${id} says it is page ${page.id} (corrupted)`);
    return page;
  }

  /** The page ids of the persisted freelist (empty when etcd did not persist one). */
  async freePages(): Promise<bigint[]> {
    if (this.meta.freelistPgid === undefined) return [];
    const p = await this.readPage(this.meta.freelistPgid);
    if ((p.flags & FREELIST_PAGE) === 0) throw new BoltFormatError(`${this.path}: page ${p.id} is not the freelist`);
    let count = p.count;
    let at = PAGE_HEADER;
    if (count === 0xffff) {
      // More ids than fit in u16: the first element holds the real count.
      count = Number(p.data.readBigUInt64LE(at));
      at += 8;
    }
    if (at + count * 8 > p.data.length) throw new BoltFormatError(`${this.path}: the freelist is longer than its page`);
    const ids: bigint[] = [];
    for (let i = 0; i < count; i++) ids.push(p.data.readBigUInt64LE(at + i * 8));
    return ids;
  }

  /** The root bucket's entries: the top-level buckets. */
  root(): BoltBucket {
    return new BoltBucket(this, this.meta.rootPgid, undefined, '');
  }

  /** A top-level bucket, or undefined. */
  async bucket(name: string): Promise<BoltBucket | undefined> {
    return this.root().bucket(name);
  }

  /** @internal */
  async page(id: bigint): Promise<Page> {
    return this.readPage(id);
  }
}

function inlinePage(value: Buffer): Page {
  const data = value.subarray(BUCKET_HEADER);
  if (data.length < PAGE_HEADER) throw new BoltFormatError('an inline bucket is shorter than a page header');
  return { id: 0n, flags: data.readUInt16LE(8), count: data.readUInt16LE(10), overflow: 0, data };
}

class BoltBucket {
  constructor(
    private readonly db: BoltDb,
    private readonly rootPgid: bigint,
    private readonly inline: Page | undefined,
    readonly name: string,
  ) {}

  /** Every entry in key order, walking branch pages depth first. */
  async *entries(): AsyncGenerator<BoltEntry> {
    if (this.inline) {
      yield* leafEntries(this.inline, this.name);
      return;
    }
    yield* this.walk(this.rootPgid, 0);
  }

  private async *walk(id: bigint, depth: number, seen = new Set<bigint>()): AsyncGenerator<BoltEntry> {
    const p = await this.branchOrLeaf(id, depth, seen);
    if (p.flags & LEAF_PAGE) {
      yield* leafEntries(p, this.name);
      return;
    }
    for (const c of this.childrenOf(p)) yield* this.walk(c, depth + 1, seen);
  }

  /**
   * A page of this bucket's tree, checked: not deeper than 64 levels and not reached twice (a
   * malformed or hostile file could otherwise make a walk loop or take exponential time).
   */
  private async branchOrLeaf(id: bigint, depth: number, seen: Set<bigint>): Promise<Page> {
    if (depth > 64) throw new BoltFormatError(`bucket ${this.name}: pages nest deeper than 64 levels (a cycle?)`);
    if (seen.has(id)) throw new BoltFormatError(`bucket ${this.name}: page ${id} is reached twice in one tree`);
    seen.add(id);
    const p = await this.db.page(id);
    if ((p.flags & (LEAF_PAGE | BRANCH_PAGE)) === 0) throw new BoltFormatError(`bucket ${this.name}: page ${id} is neither a branch nor a leaf (flags 0x${p.flags.toString(16)})`);
    return p;
  }

  /** The child page ids of a branch page, bounds-checked against the page. */
  private childrenOf(p: Page): bigint[] {
    const children: bigint[] = [];
    for (let i = 0; i < p.count; i++) {
      const at = PAGE_HEADER + i * BRANCH_ELEMENT;
      if (at + BRANCH_ELEMENT > p.data.length) throw new BoltFormatError(`bucket ${this.name}: branch page ${p.id} is shorter than its ${p.count} elements`);
      children.push(p.data.readBigUInt64LE(at + 8));
    }
    return children;
  }

  /** A nested bucket by name, or undefined. */
  async bucket(name: string): Promise<BoltBucket | undefined> {
    const want = Buffer.from(name);
    for await (const e of this.rawEntries()) {
      if (e.bucket && e.key.equals(want)) return this.child(name, e.raw);
    }
    return undefined;
  }

  /** Names of the nested buckets. */
  async buckets(): Promise<string[]> {
    const out: string[] = [];
    for await (const e of this.rawEntries()) if (e.bucket) out.push(e.key.toString('utf8'));
    return out;
  }

  private child(name: string, raw: Buffer): BoltBucket {
    if (raw.length < BUCKET_HEADER) throw new BoltFormatError(`bucket ${name}: its header is shorter than 16 bytes`);
    const root = raw.readBigUInt64LE(0);
    return new BoltBucket(this.db, root, root === 0n ? inlinePage(raw) : undefined, this.name ? `${this.name}/${name}` : name);
  }

  private async *rawEntries(): AsyncGenerator<{ key: Buffer; raw: Buffer; bucket: boolean }> {
    if (this.inline) {
      yield* leafRaw(this.inline, this.name);
      return;
    }
    for await (const p of this.leaves(this.rootPgid, 0)) yield* leafRaw(p, this.name);
  }

  private async *leaves(id: bigint, depth: number, seen = new Set<bigint>()): AsyncGenerator<Page> {
    const p = await this.branchOrLeaf(id, depth, seen);
    if (p.flags & LEAF_PAGE) {
      yield p;
      return;
    }
    for (const c of this.childrenOf(p)) yield* this.leaves(c, depth + 1, seen);
  }

  /** The pages this bucket's tree spans, with their levels (for checks and tests). */
  async stats(): Promise<{ depth: number; branchPages: number; leafPages: number; overflowPages: number; pages: bigint[] }> {
    const s = { depth: 0, branchPages: 0, leafPages: 0, overflowPages: 0, pages: [] as bigint[] };
    if (this.inline) return { ...s, depth: 1, leafPages: 1 };
    const seen = new Set<bigint>();
    const visit = async (id: bigint, depth: number): Promise<void> => {
      const p = await this.branchOrLeaf(id, depth, seen);
      s.depth = Math.max(s.depth, depth + 1);
      s.overflowPages += p.overflow;
      for (let i = 0; i <= p.overflow; i++) s.pages.push(id + BigInt(i));
      if (p.flags & LEAF_PAGE) {
        s.leafPages++;
        return;
      }
      s.branchPages++;
      for (const c of this.childrenOf(p)) await visit(c, depth + 1);
    };
    await visit(this.rootPgid, 0);
    return s;
  }
}

function* leafRaw(p: Page, bucket: string): Generator<{ key: Buffer; raw: Buffer; bucket: boolean }> {
  if ((p.flags & LEAF_PAGE) === 0) throw new BoltFormatError(`bucket ${bucket}: expected a leaf page, got flags 0x${p.flags.toString(16)}`);
  for (let i = 0; i < p.count; i++) {
    const at = PAGE_HEADER + i * LEAF_ELEMENT;
    if (at + LEAF_ELEMENT > p.data.length) throw new BoltFormatError(`bucket ${bucket}: leaf page ${p.id} is shorter than its ${p.count} elements`);
    const flags = p.data.readUInt32LE(at);
    const pos = p.data.readUInt32LE(at + 4);
    const ksize = p.data.readUInt32LE(at + 8);
    const vsize = p.data.readUInt32LE(at + 12);
    const k = at + pos;
    if (k + ksize + vsize > p.data.length) throw new BoltFormatError(`bucket ${bucket}: an element of leaf page ${p.id} points past the page`);
    yield {
      key: p.data.subarray(k, k + ksize),
      raw: p.data.subarray(k + ksize, k + ksize + vsize),
      bucket: (flags & BUCKET_LEAF_FLAG) !== 0,
    };
  }
}

function* leafEntries(p: Page, bucket: string): Generator<BoltEntry> {
  for (const e of leafRaw(p, bucket)) yield { key: e.key, value: e.bucket ? undefined : e.raw, bucket: e.bucket };
}
