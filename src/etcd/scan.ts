/**
 * What etcd really holds, per resource: how many objects are under which provider/key, which are
 * stale (not under the key new writes use), which are plaintext, and, with a decrypt check,
 * which the configured local keys cannot read. Memory stays bounded by one page plus the capped
 * lists.
 */
import { createHash } from 'node:crypto';
import type { EtcdReader } from './client';
import {
  classifyValue,
  decodeStored,
  looksLikeStoredObject,
  storedKmsV2KeyId,
  transformerLabel,
  valueLabel,
  type ValueClass,
  type ValueTransformer,
} from './codec';

/**
 * Built-in resources whose etcd path is not their resource name (from kube-apiserver's storage
 * path test, test/integration/etcd/data.go).
 */
const SPECIAL_PATHS: Record<string, string> = {
  services: 'services/specs',
  endpoints: 'services/endpoints',
  nodes: 'minions',
  replicationcontrollers: 'controllers',
  'ingresses.networking.k8s.io': 'ingress',
  'ingresses.extensions': 'ingress',
  'podsecuritypolicies.policy': 'podsecuritypolicy',
  'podsecuritypolicies.extensions': 'podsecuritypolicy',
};

/**
 * Groups served by kube-apiserver itself: their objects live under /registry/RESOURCE/ without
 * the group. Everything else (CRDs, and the apiextensions/apiregistration objects) lives under
 * /registry/GROUP/RESOURCE/.
 */
const BUILTIN_GROUPS = new Set([
  '',
  'apps',
  'batch',
  'autoscaling',
  'policy',
  'extensions',
  'admissionregistration.k8s.io',
  'certificates.k8s.io',
  'coordination.k8s.io',
  'discovery.k8s.io',
  'events.k8s.io',
  'flowcontrol.apiserver.k8s.io',
  'internal.apiserver.k8s.io',
  'networking.k8s.io',
  'node.k8s.io',
  'rbac.authorization.k8s.io',
  'resource.k8s.io',
  'scheduling.k8s.io',
  'storage.k8s.io',
  'storagemigration.k8s.io',
]);

/**
 * The etcd key prefix of a resource (`secrets`, `deployments.apps`, `widgets.example.com`),
 * ending in '/': e.g. `/registry/secrets/`, `/registry/services/specs/`,
 * `/registry/example.com/widgets/`.
 */
export function etcdPrefixFor(resource: string, registryPrefix = '/registry'): string {
  const base = registryPrefix.replace(/\/+$/, '');
  const dot = resource.indexOf('.');
  const name = dot === -1 ? resource : resource.slice(0, dot);
  const group = dot === -1 ? '' : resource.slice(dot + 1);
  const special = SPECIAL_PATHS[resource];
  if (special) return `${base}/${special}/`;
  if (BUILTIN_GROUPS.has(group)) return `${base}/${name}/`;
  return `${base}/${group}/${name}/`;
}

export interface ObjectRef {
  /** '' for cluster-scoped objects. */
  namespace: string;
  name: string;
  label: string;
}

export interface DecryptFailure extends ObjectRef {
  error: string;
}

export interface CappedList<T> {
  count: number;
  items: T[];
}

export interface ResourceScan {
  resource: string;
  etcdPrefix: string;
  total: number;
  /** Objects per label: `aescbc:key1`, `secretbox:k2`, `kms:v2:name`, `plaintext`, `unknown`. */
  counts: Record<string, number>;
  /** The label new writes get (`plaintext` when the resource is not encrypted). */
  writeLabel: string;
  /** Objects not under the write label: a rewrite is due. */
  stale: CappedList<ObjectRef>;
  plaintext: CappedList<ObjectRef>;
  /** With decryptCheck: objects the configured local keys cannot read (or read to garbage). */
  decryptFailures?: CappedList<DecryptFailure>;
  /** With decryptCheck: KMS values, counted but not decrypted. */
  kmsNotChecked?: number;
}

export interface ScanReport {
  resources: ResourceScan[];
  total: number;
  staleTotal: number;
  plaintextTotal: number;
  decryptFailuresTotal?: number;
  durationMs: number;
}

export interface ScanProgress {
  resource: string;
  scanned: number;
}

export interface ScanOptions {
  /** kube-apiserver's --etcd-prefix (e.g. /registry): every resource's etcdPrefix must be under it. */
  prefix?: string;
  resources: { resource: string; etcdPrefix: string }[];
  transformersFor: (resource: string) => ValueTransformer[];
  decryptCheck?: boolean;
  pageSize?: number;
  /** How many objects each list keeps (counts are always complete); default 100. */
  listLimit?: number;
  onProgress?: (p: ScanProgress) => void;
  /**
   * The current key id of each KMS v2 provider (by name), as its plugin's Status reports it. A
   * value of that provider written under another key id is stale, as kube-apiserver counts it
   * (kmsv2 envelope: EncryptedObject.keyID != the current write key id), and is labelled
   * `kms:v2:NAME (key id OLD)`.
   */
  kmsKeyIds?: Readonly<Record<string, string>>;
  /** Stops between pages. */
  signal?: AbortSignal;
  now?: () => number;
}

function push<T>(list: CappedList<T>, item: T, limit: number): void {
  list.count++;
  if (list.items.length < limit) list.items.push(item);
}

function refOf(key: string, etcdPrefix: string, label: string): ObjectRef {
  const rest = key.startsWith(etcdPrefix) ? key.slice(etcdPrefix.length) : key;
  const slash = rest.indexOf('/');
  return slash === -1
    ? { namespace: '', name: rest, label }
    : { namespace: rest.slice(0, slash), name: rest.slice(slash + 1), label };
}

const shownKeyId = (id: string) => (id.length <= 64 && /^[\x21-\x7e]*$/.test(id) ? id : `sha256:${createHash('sha256').update(id).digest('hex').slice(0, 16)}`);

/** The label of a stored value, with the key id when a KMS v2 value's is not its plugin's current one. */
function labelOf(cls: ValueClass, value: Uint8Array, keyIds: Readonly<Record<string, string>> | undefined): string {
  const label = valueLabel(cls);
  const current = cls.kind === 'kms' && cls.kmsVersion === 'v2' && cls.keyName !== undefined ? keyIds?.[cls.keyName] : undefined;
  if (!current) return label;
  const stored = storedKmsV2KeyId(value, cls.keyName!);
  return stored === undefined || stored === current ? label : `${label} (key id ${shownKeyId(stored)})`;
}

/** Scans each resource's etcd prefix and reports how its objects are stored. */
export async function scanEncryptionState(reader: EtcdReader, opts: ScanOptions): Promise<ScanReport> {
  const now = opts.now ?? Date.now;
  const started = now();
  const limit = opts.listLimit ?? 100;
  const report: ScanReport = { resources: [], total: 0, staleTotal: 0, plaintextTotal: 0, durationMs: 0 };
  if (opts.decryptCheck) report.decryptFailuresTotal = 0;
  const pageSize = opts.pageSize ?? 500;

  const registry = opts.prefix?.replace(/\/+$/, '');
  for (const { resource, etcdPrefix } of opts.resources) {
    if (registry !== undefined && !etcdPrefix.startsWith(`${registry}/`)) {
      throw new Error(`the etcd prefix ${etcdPrefix} of ${resource} is not under ${registry}/`);
    }
    const transformers = opts.transformersFor(resource);
    const writeLabel = transformers[0] ? transformerLabel(transformers[0]) : 'plaintext';
    const r: ResourceScan = {
      resource,
      etcdPrefix,
      total: 0,
      counts: {},
      writeLabel,
      stale: { count: 0, items: [] },
      plaintext: { count: 0, items: [] },
    };
    if (opts.decryptCheck) {
      r.decryptFailures = { count: 0, items: [] };
      r.kmsNotChecked = 0;
    }
    for await (const kv of reader.scan(etcdPrefix, { pageSize })) {
      const value = kv.value ?? Buffer.alloc(0);
      const cls = classifyValue(value);
      const label = labelOf(cls, value, opts.kmsKeyIds);
      r.total++;
      r.counts[label] = (r.counts[label] ?? 0) + 1;
      if (label !== writeLabel) push(r.stale, refOf(kv.key, etcdPrefix, label), limit);
      if (label === 'plaintext') push(r.plaintext, refOf(kv.key, etcdPrefix, label), limit);
      if (opts.decryptCheck) {
        if (cls.kind === 'kms') {
          r.kmsNotChecked!++;
        } else {
          try {
            const { plaintext } = await decodeStored(value, kv.key, transformers);
            // aescbc has no MAC: a wrong key can pass the padding check and yield garbage.
            if (!looksLikeStoredObject(plaintext)) {
              throw new Error('decrypted to something that is not a Kubernetes object (wrong key?)');
            }
          } catch (err) {
            push(r.decryptFailures!, { ...refOf(kv.key, etcdPrefix, label), error: (err as Error).message }, limit);
          }
        }
      }
      if (r.total % pageSize === 0) {
        opts.onProgress?.({ resource, scanned: r.total });
        if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('aborted');
      }
    }
    opts.onProgress?.({ resource, scanned: r.total });
    report.resources.push(r);
    report.total += r.total;
    report.staleTotal += r.stale.count;
    report.plaintextTotal += r.plaintext.count;
    if (opts.decryptCheck) report.decryptFailuresTotal! += r.decryptFailures!.count;
  }
  report.durationMs = now() - started;
  return report;
}
