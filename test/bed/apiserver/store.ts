/**
 * The registry: objects in the real etcd under <prefix>/<resource>/<namespace>/<name>, written
 * through the first transformer of the resource and read through any, with upstream's
 * optimistic concurrency (resourceVersion = etcd mod revision) and GuaranteedUpdate's rule that
 * an unchanged object is rewritten only when it was read through a non-first transformer.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Etcd3, IKeyValue, IRangeResponse } from 'etcd3';
import type { StoredResource } from './encryption';
import { encodeObject, matchesLabels, nowTimestamp, type KObject, type LabelSelector } from './objects';
import { decodeProtobufObject, PROTOBUF_MAGIC } from './protobuf';
import { alreadyExists, badRequest, conflict, expired, internalError, invalidObject, notFound } from './status';
import { encryptCheckTransformer, type Transformer } from './value/transformer';

export interface ResourceInfo {
  resource: StoredResource;
  kind: string;
  namespaced: boolean;
  /** The directory under the etcd prefix (nodes live under "minions", as upstream). */
  etcdDir: string;
}

export const RESOURCES: Record<StoredResource, ResourceInfo> = {
  secrets: { resource: 'secrets', kind: 'Secret', namespaced: true, etcdDir: 'secrets' },
  configmaps: { resource: 'configmaps', kind: 'ConfigMap', namespaced: true, etcdDir: 'configmaps' },
  namespaces: { resource: 'namespaces', kind: 'Namespace', namespaced: false, etcdDir: 'namespaces' },
  pods: { resource: 'pods', kind: 'Pod', namespaced: true, etcdDir: 'pods' },
  nodes: { resource: 'nodes', kind: 'Node', namespaced: false, etcdDir: 'minions' },
};

export interface ListOptions {
  limit?: number;
  continueToken?: string;
  selector: LabelSelector;
}

export interface ListResult {
  items: KObject[];
  resourceVersion: string;
  continueToken?: string;
  remainingItemCount?: number;
}

/** Thrown when a stored value cannot be read back (wrong key, unknown prefix, bad plaintext). */
export class TransformError extends Error {
  constructor(
    readonly etcdKey: string,
    reason: string,
  ) {
    super(`unable to transform key ${JSON.stringify(etcdKey)}: ${reason}`);
  }
}

interface Current {
  obj: KObject;
  rv: string;
  stale: boolean;
}

const INTERNAL_PAGE = 1000;
const toBuf = (s: string) => Buffer.from(s, 'utf8');

/** The first key after every key that starts with `prefix` (etcd's range_end for a prefix). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

export class Store {
  constructor(
    private readonly etcd: Etcd3,
    private readonly prefix: string,
    /** Undefined: no rule covers the resource (identity, not counted in the metrics). */
    private readonly transformerFor: (r: StoredResource) => Transformer | undefined,
  ) {}

  dirKey(info: ResourceInfo, namespace?: string): string {
    return namespace !== undefined && info.namespaced
      ? `${this.prefix}/${info.etcdDir}/${namespace}/`
      : `${this.prefix}/${info.etcdDir}/`;
  }

  key(info: ResourceInfo, namespace: string | undefined, name: string): string {
    return info.namespaced ? `${this.prefix}/${info.etcdDir}/${namespace}/${name}` : `${this.prefix}/${info.etcdDir}/${name}`;
  }

  // ---- reading ----

  /** Stored bytes -> object, through the resource's transformers, counted as upstream does. */
  async decode(info: ResourceInfo, kv: IKeyValue): Promise<{ obj: KObject; stale: boolean }> {
    const etcdKey = kv.key.toString('utf8');
    const transformer = this.transformerFor(info.resource) ?? encryptCheckTransformer();
    let plaintext: Buffer;
    let stale: boolean;
    try {
      ({ out: plaintext, stale } = await transformer.fromStorage(kv.value, kv.key));
    } catch (err) {
      throw new TransformError(etcdKey, (err as Error).message);
    }
    let obj: KObject;
    try {
      obj = plaintext.subarray(0, 4).equals(PROTOBUF_MAGIC)
        ? decodeProtobufObject(plaintext)
        : (JSON.parse(plaintext.toString('utf8')) as KObject);
    } catch (err) {
      throw new TransformError(etcdKey, `cannot decode the stored object: ${(err as Error).message}`);
    }
    obj.metadata = { ...(obj.metadata ?? {}), resourceVersion: String(kv.mod_revision) };
    return { obj, stale };
  }

  private async readOne(key: string): Promise<IKeyValue | undefined> {
    // Serializable: no ReadIndex round trip through raft. The txn that follows compares the mod
    // revision, so a stale read can only turn into a conflict, never into a lost update (the real
    // apiserver reads this state from its watch cache, not from etcd, for the same reason).
    const res = await this.etcd.kv.range({ key: toBuf(key), serializable: true });
    return res.kvs[0];
  }

  private async current(info: ResourceInfo, namespace: string | undefined, name: string): Promise<Current> {
    const key = this.key(info, namespace, name);
    const kv = await this.readOne(key);
    if (!kv) throw notFound(info.resource, name);
    try {
      const { obj, stale } = await this.decode(info, kv);
      return { obj, rv: String(kv.mod_revision), stale };
    } catch (err) {
      if (err instanceof TransformError) throw internalError(err.message);
      throw err;
    }
  }

  async get(info: ResourceInfo, namespace: string | undefined, name: string): Promise<KObject> {
    return (await this.current(info, namespace, name)).obj;
  }

  async exists(info: ResourceInfo, namespace: string | undefined, name: string): Promise<boolean> {
    const res = await this.etcd.kv.range({ key: toBuf(this.key(info, namespace, name)), count_only: true, serializable: true });
    return Number(res.count) > 0;
  }

  async list(info: ResourceInfo, namespace: string | undefined, opts: ListOptions): Promise<ListResult> {
    const dir = this.dirKey(info, namespace);
    const rangeEnd = prefixEnd(toBuf(dir));
    let revision = 0;
    let start = toBuf(dir);
    if (opts.continueToken) {
      const t = decodeContinue(opts.continueToken);
      if (!t.start.startsWith(dir)) throw badRequest('continue key is not valid: key does not match the listed prefix');
      revision = t.rv;
      start = toBuf(t.start);
    }
    const limit = opts.limit && opts.limit > 0 ? opts.limit : undefined;
    const items: KObject[] = [];
    let lastKey: Buffer | undefined;
    let more = false;
    let remaining: number | undefined;
    for (;;) {
      const want = limit ? Math.min(INTERNAL_PAGE, Math.max(limit - items.length, 1)) : INTERNAL_PAGE;
      let res: IRangeResponse;
      try {
        res = await this.etcd.kv.range({ key: start, range_end: rangeEnd, limit: want, revision });
      } catch (err) {
        if (/compacted/i.test((err as Error).message)) throw expired();
        if (/future rev/i.test((err as Error).message)) throw expired();
        throw err;
      }
      if (revision === 0) revision = Number(res.header.revision);
      for (const kv of res.kvs) {
        lastKey = kv.key;
        let obj: KObject;
        try {
          obj = (await this.decode(info, kv)).obj;
        } catch (err) {
          if (err instanceof TransformError) throw internalError(err.message);
          throw err;
        }
        if (matchesLabels(obj, opts.selector)) items.push(listItem(obj));
      }
      more = res.more;
      if (!opts.selector.length) remaining = Number(res.count) - res.kvs.length;
      if (!more || !lastKey) break;
      start = Buffer.concat([lastKey, Buffer.from([0])]);
      if (limit && items.length >= limit) break;
    }
    const out: ListResult = { items, resourceVersion: String(revision) };
    if (more && lastKey) {
      out.continueToken = encodeContinue(revision, Buffer.concat([lastKey, Buffer.from([0])]).toString('utf8'));
      if (remaining !== undefined && remaining > 0) out.remainingItemCount = remaining;
    }
    return out;
  }

  /**
   * Reads every stored object of a resource at one revision, as the watch cache's initial list
   * does; returns the first value that cannot be decoded, or undefined when all can.
   */
  async scan(info: ResourceInfo): Promise<TransformError | undefined> {
    const dir = toBuf(this.dirKey(info));
    const end = prefixEnd(dir);
    let start = dir;
    let revision = 0;
    for (;;) {
      const res = await this.etcd.kv.range({ key: start, range_end: end, limit: INTERNAL_PAGE, revision });
      if (revision === 0) revision = Number(res.header.revision);
      for (const kv of res.kvs) {
        try {
          await this.decode(info, kv);
        } catch (err) {
          if (err instanceof TransformError) return err;
          throw err;
        }
      }
      const last = res.kvs.at(-1);
      if (!res.more || !last) return undefined;
      start = Buffer.concat([last.key, Buffer.from([0])]);
    }
  }

  // ---- writing ----

  private async encode(info: ResourceInfo, etcdKey: string, obj: KObject): Promise<Buffer> {
    const plain = encodeObject(obj);
    const transformer = this.transformerFor(info.resource);
    if (!transformer) return plain;
    try {
      return await transformer.toStorage(plain, Buffer.from(etcdKey, 'utf8'));
    } catch (err) {
      throw internalError(`unable to transform key ${JSON.stringify(etcdKey)}: ${(err as Error).message}`);
    }
  }

  async create(info: ResourceInfo, namespace: string | undefined, body: KObject): Promise<KObject> {
    const obj = normalize(info, namespace, body);
    const meta = obj.metadata!;
    if (!meta.name && meta.generateName) meta.name = `${String(meta.generateName)}${randomBytes(3).toString('hex').slice(0, 5)}`;
    const name = String(meta.name ?? '');
    if (!name) throw invalidObject(info.kind, '', 'metadata.name', 'Required value: name or generateName is required');
    if (info.namespaced && !(await this.exists(RESOURCES.namespaces, undefined, namespace!))) {
      throw notFound('namespaces', namespace!);
    }
    meta.uid = randomUUID();
    meta.creationTimestamp = nowTimestamp();
    delete meta.resourceVersion;
    const key = this.key(info, namespace, name);
    const value = await this.encode(info, key, obj);
    const res = await this.etcd.kv.txn({
      compare: [{ key: toBuf(key), target: 'Create', result: 'Equal', create_revision: 0 }],
      success: [{ request_put: { key: toBuf(key), value } }],
    });
    if (!res.succeeded) throw alreadyExists(info.resource, name);
    meta.resourceVersion = String(res.header.revision);
    return obj;
  }

  /**
   * PUT. `bodyRv` empty means an unconditional update (allowed for these resources). Returns the
   * object as stored; its resourceVersion is unchanged when nothing had to be written.
   */
  async update(info: ResourceInfo, namespace: string | undefined, name: string, body: KObject): Promise<KObject> {
    const bodyRv = String(body.metadata?.resourceVersion ?? '');
    for (;;) {
      const cur = await this.current(info, namespace, name);
      if (bodyRv && bodyRv !== cur.rv) throw conflict(info.resource, name);
      const obj = normalize(info, namespace, body);
      const meta = obj.metadata!;
      // Set by the server on create and kept on update (rest.BeforeUpdate).
      meta.uid = cur.obj.metadata?.uid;
      meta.creationTimestamp = cur.obj.metadata?.creationTimestamp;
      delete meta.resourceVersion;
      const unchanged = encodeObject(obj).equals(encodeObject(cur.obj));
      if (unchanged && !cur.stale) return cur.obj;
      const key = this.key(info, namespace, name);
      const value = await this.encode(info, key, obj);
      const res = await this.etcd.kv.txn({
        compare: [{ key: toBuf(key), target: 'Mod', result: 'Equal', mod_revision: cur.rv }],
        success: [{ request_put: { key: toBuf(key), value } }],
      });
      if (res.succeeded) {
        meta.resourceVersion = String(res.header.revision);
        return obj;
      }
      if (bodyRv) throw conflict(info.resource, name);
      // Unconditional update raced with another writer: GuaranteedUpdate retries on fresh state.
    }
  }

  async delete(info: ResourceInfo, namespace: string | undefined, name: string): Promise<KObject> {
    const key = this.key(info, namespace, name);
    const kv = await this.readOne(key);
    if (!kv) throw notFound(info.resource, name);
    const res = await this.etcd.kv.txn({
      compare: [{ key: toBuf(key), target: 'Mod', result: 'Equal', mod_revision: kv.mod_revision }],
      success: [{ request_delete_range: { key: toBuf(key) } }],
    });
    if (!res.succeeded) throw conflict(info.resource, name);
    try {
      return (await this.decode(info, kv)).obj;
    } catch {
      // Deleting an undecodable object is allowed (that is how operators clean up after a lost key).
      return { metadata: { name } };
    }
  }
}

/** Server-side defaulting and validation for a create/update body. */
function normalize(info: ResourceInfo, namespace: string | undefined, body: KObject): KObject {
  if (body.kind !== undefined && body.kind !== info.kind) {
    throw badRequest(`the API version in the data (${String(body.apiVersion)}) does not match the expected API version (v1)`);
  }
  const obj = structuredClone(body) as KObject;
  obj.kind = info.kind;
  obj.apiVersion = 'v1';
  const meta = (obj.metadata = { ...(obj.metadata ?? {}) });
  if (info.namespaced) {
    if (meta.namespace !== undefined && meta.namespace !== '' && meta.namespace !== namespace) {
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
    meta.namespace = namespace;
  } else delete meta.namespace;
  delete meta.managedFields;
  delete meta.selfLink;
  if (info.kind === 'Secret') {
    const data = { ...((obj.data as Record<string, string> | undefined) ?? {}) };
    for (const [k, v] of Object.entries(data)) {
      if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) {
        throw badRequest(`illegal base64 data in Secret data key ${JSON.stringify(k)}`);
      }
    }
    const stringData = obj.stringData as Record<string, string> | undefined;
    for (const [k, v] of Object.entries(stringData ?? {})) data[k] = Buffer.from(String(v), 'utf8').toString('base64');
    delete obj.stringData;
    if (Object.keys(data).length) obj.data = data;
    else delete obj.data;
    obj.type ??= 'Opaque';
  }
  if (info.kind === 'Namespace') {
    meta.labels = { ...((meta.labels as Record<string, string>) ?? {}), 'kubernetes.io/metadata.name': String(meta.name ?? '') };
    obj.spec ??= { finalizers: ['kubernetes'] };
    obj.status ??= { phase: 'Active' };
  }
  return obj;
}

/** List items come without kind/apiVersion, as in a real typed list response. */
function listItem(obj: KObject): KObject {
  const { kind: _k, apiVersion: _a, ...rest } = obj;
  return rest;
}

// Continue tokens: upstream's shape (base64 of {"v":"meta.k8s.io/v1","rv":N,"start":KEY}).
function encodeContinue(rv: number, start: string): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start })).toString('base64url');
}

function decodeContinue(token: string): { rv: number; start: string } {
  try {
    const t = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { v?: string; rv?: number; start?: string };
    if (t.v !== 'meta.k8s.io/v1' || typeof t.rv !== 'number' || typeof t.start !== 'string' || t.rv <= 0) throw new Error('bad token');
    return { rv: t.rv, start: t.start };
  } catch {
    throw badRequest('continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)');
  }
}
