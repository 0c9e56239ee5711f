import { randomBytes } from 'node:crypto';
import { CliError, ExitCode } from '../ui/errors';
import type { ApiClient } from './api';
import { describeError } from './errors';
import { metric, parseMetrics, type MetricSample } from './wait';

/**
 * Proof that new writes are encrypted: a short-lived canary Secret is created through the
 * apiserver and its raw value read from etcd; it must start with the expected prefix
 * (`k8s:enc:aescbc:v1:key-...:`, `k8s:enc:kms:v2:NAME:`). The canary is deleted afterwards, also
 * when the proof fails. When etcd cannot be reached, the apiserver's own transformation counter
 * for that prefix must move with the canary write: weaker (it proves the apiserver used the
 * transformer, not what landed on disk), and said so.
 */

export const CANARY_PREFIX = 'k8s-encrypt-canary-';
const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'k8s-encrypt' } as const;
const TRANSFORMATION_METRIC = 'apiserver_storage_transformation_operations_total';

/** What proof needs from etcd: one raw read. */
interface RawReader {
  get(key: string): Promise<Buffer | Uint8Array | undefined>;
  close(): Promise<void> | void;
}

export interface ProofDeps<C> {
  api: Pick<ApiClient, 'post' | 'delete' | 'getText'>;
  /** Opens etcd with the connection from the manifest's --etcd-* flags. */
  openEtcd: (conn: C) => Promise<RawReader>;
  onProgress?: (msg: string) => void;
}

interface ProofOptions<C> {
  /** The prefix new writes must carry, e.g. `k8s:enc:aescbc:v1:key-20261126T140200Z:` ('' for plaintext). */
  expectedPrefix: string;
  etcd: C;
  /** --etcd-prefix of the apiserver (default /registry). */
  etcdKeyPrefix?: string;
  namespace?: string;
  /** A fixed canary name (e.g. per node and config): one left by an interrupted proof under this
   * name is deleted first, however young. Default: a random name. */
  name?: string;
}

interface ProofResult {
  method: 'etcd' | 'metrics';
  /** true when only the metrics fallback was available. */
  weaker: boolean;
  canary: string;
  expectedPrefix: string;
  /** What the canary's raw value starts with (the `k8s:enc:...:` header, or `plaintext`). */
  observed: string;
  detail: string;
}

/** The header of a raw etcd value, never more (the rest is ciphertext or, worse, plaintext). */
export function observedPrefix(raw: Uint8Array): string {
  const b = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  const head = b.subarray(0, 256).toString('latin1');
  const m = /^k8s:enc:[a-z0-9]+:v[0-9a-z]+:[^:]*:/.exec(head);
  if (m) return m[0];
  if (head.startsWith('k8s\u0000')) return 'plaintext (protobuf)';
  if (head.trimStart().startsWith('{')) return 'plaintext (json)';
  return 'unrecognised';
}

/** Transformation operations counted for a prefix (label values may omit the key name). */
function transformationCount(samples: readonly MetricSample[], expectedPrefix: string): number {
  return metric(samples, TRANSFORMATION_METRIC)
    .filter((s) => {
      const p = s.labels.transformer_prefix ?? '';
      return p !== '' && (p === expectedPrefix || expectedPrefix.startsWith(p));
    })
    .filter((s) => !s.labels.transformation_type || s.labels.transformation_type === 'to_storage')
    .filter((s) => !s.labels.status || s.labels.status === 'OK')
    .reduce((n, s) => n + s.value, 0);
}

export async function proveEncryption<C>(deps: ProofDeps<C>, o: ProofOptions<C>): Promise<ProofResult> {
  const ns = o.namespace ?? 'kube-system';
  const name = o.name ?? `${CANARY_PREFIX}${randomBytes(5).toString('hex')}`;
  const etcdKey = canaryKey(o.etcdKeyPrefix, ns, name);
  if (o.name) await deps.api.delete(`/api/v1/namespaces/${ns}/secrets/${name}`).catch(() => undefined);

  const before = await readCount(deps, o.expectedPrefix);
  await createCanary(deps, ns, name);
  try {
    const read = await readCanary(deps, o.etcd, etcdKey);
    const raw = read.raw;
    const etcdProblem = read.etcdProblem ?? (raw === undefined ? `the canary ${etcdKey} is not in etcd (another --etcd-prefix?)` : undefined);

    if (raw !== undefined) {
      const observed = observedPrefix(raw);
      const ok = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength)
        .subarray(0, o.expectedPrefix.length)
        .equals(Buffer.from(o.expectedPrefix, 'latin1'));
      if (!ok) {
        throw new CliError(`a Secret written now is stored as "${observed}", not under "${o.expectedPrefix}"`, {
          exitCode: ExitCode.Verification,
          hint: 'the apiserver is not writing with the new config: check its --encryption-provider-config and "k8s-encrypt status"',
          details: { canary: `${ns}/${name}`, expectedPrefix: o.expectedPrefix, observed },
        });
      }
      return {
        method: 'etcd',
        weaker: false,
        canary: `${ns}/${name}`,
        expectedPrefix: o.expectedPrefix,
        observed,
        detail: `canary ${ns}/${name} is stored in etcd as ${observed}`,
      };
    }

    deps.onProgress?.(`${etcdProblem}; falling back to the apiserver's metrics (weaker evidence)`);
    const after = await readCount(deps, o.expectedPrefix);
    if (before !== undefined && after !== undefined && after > before) {
      return {
        method: 'metrics',
        weaker: true,
        canary: `${ns}/${name}`,
        expectedPrefix: o.expectedPrefix,
        observed: o.expectedPrefix,
        detail: `${etcdProblem}; ${TRANSFORMATION_METRIC}{transformer_prefix="${o.expectedPrefix}"} rose from ${before} to ${after} with the canary write (weaker: the apiserver's count, not etcd's bytes)`,
      };
    }
    throw new CliError(`encryption could not be proven: ${etcdProblem}, and the apiserver's metrics show no write under ${o.expectedPrefix}`, {
      exitCode: ExitCode.Verification,
      hint: 'check the etcd client certificates named by the manifest (--etcd-certfile/--etcd-keyfile/--etcd-cafile), then run "k8s-encrypt status"',
      details: { canary: `${ns}/${name}`, expectedPrefix: o.expectedPrefix, before: before ?? null, after: after ?? null },
    });
  } finally {
    await deps.api.delete(`/api/v1/namespaces/${ns}/secrets/${name}`).catch((err) => {
      deps.onProgress?.(`could not delete the canary ${ns}/${name}: ${describeError(err)} (delete it by hand)`);
    });
  }
}

/** to_storage transformations the apiserver counted: under `k8s:enc:` prefixes, and under any other (identity). */
export function toStorageCounts(samples: readonly MetricSample[]): { encrypted: number; identity: number } {
  const counts = { encrypted: 0, identity: 0 };
  for (const s of samples) {
    if (s.name !== TRANSFORMATION_METRIC) continue;
    if (s.labels.transformation_type && s.labels.transformation_type !== 'to_storage') continue;
    if (s.labels.status && s.labels.status !== 'OK') continue;
    // Upstream labels identity with its empty prefix (transformer_prefix="").
    if ((s.labels.transformer_prefix ?? '').startsWith('k8s:enc:')) counts.encrypted += s.value;
    else counts.identity += s.value;
  }
  return counts;
}

/**
 * The weaker proof of plaintext writes, from the counts before and after the canary write: the
 * identity transformer counted a write and no encrypting one did. Every stage that writes
 * plaintext puts identity first for every resource it covers, so any encrypted write here means
 * this apiserver does not run that config; an apiserver without any config counts nothing.
 */
export function plaintextByMetrics(before: { encrypted: number; identity: number }, after: { encrypted: number; identity: number }): 'plaintext' | 'encrypted' | 'unproven' {
  if (after.encrypted > before.encrypted) return 'encrypted';
  return after.identity > before.identity ? 'plaintext' : 'unproven';
}

interface PlaintextProofOptions<C> {
  etcd: C;
  etcdKeyPrefix?: string;
  namespace?: string;
  /** The canary's name (per node and config): a leftover under it is deleted first. */
  name: string;
  signal?: AbortSignal;
}

/**
 * identity writes: a canary must be stored without any `k8s:enc:` prefix. When etcd cannot be
 * read, the apiserver's transformation counts stand in (weaker, and said so): the canary write
 * must be counted under identity and nothing under an encrypting prefix.
 */
export async function provePlaintext<C>(deps: ProofDeps<C>, o: PlaintextProofOptions<C>): Promise<ProofResult> {
  const ns = o.namespace ?? 'kube-system';
  const name = o.name;
  const canary = `${ns}/${name}`;
  await deps.api.delete(`/api/v1/namespaces/${ns}/secrets/${name}`).catch(() => undefined);
  const key = canaryKey(o.etcdKeyPrefix, ns, name);
  const counts = () => deps.api.getText('/metrics').then((t) => toStorageCounts(parseMetrics(t)), () => undefined);
  const before = await counts();
  await createCanary(deps, ns, name);
  try {
    const { raw, etcdProblem } = await readCanary(deps, o.etcd, key, o.signal);
    if (etcdProblem === undefined) {
      const observed = raw ? observedPrefix(raw) : 'missing';
      if (!observed.startsWith('plaintext')) {
        throw new CliError(`a Secret written now is stored as "${observed}", not as plaintext`, {
          exitCode: ExitCode.Verification,
          hint: 'the apiserver does not run the identity-first config: check "k8s-encrypt status"',
        });
      }
      return { method: 'etcd', weaker: false, canary, expectedPrefix: '', observed, detail: `canary ${canary} is stored in etcd as ${observed}` };
    }

    deps.onProgress?.(`${etcdProblem}; falling back to the apiserver's metrics (weaker evidence)`);
    const after = await counts();
    const verdict = before && after ? plaintextByMetrics(before, after) : 'unproven';
    if (verdict === 'plaintext') {
      const detail = `${etcdProblem}; ${TRANSFORMATION_METRIC} counted the canary ${canary} under identity (${before!.identity} -> ${after!.identity}) and no encrypted write (weaker: the apiserver's count, not etcd's bytes)`;
      return { method: 'metrics', weaker: true, canary, expectedPrefix: '', observed: 'plaintext (metrics)', detail };
    }
    throw new CliError(
      verdict === 'encrypted'
        ? `${etcdProblem}, and the apiserver's metrics count an encrypted write with the canary: new writes are not plaintext`
        : `plaintext writes could not be proven: ${etcdProblem}, and the apiserver's metrics ${before && after ? 'count no identity write with the canary' : 'could not be read'}`,
      {
        exitCode: ExitCode.Verification,
        hint: verdict === 'encrypted'
          ? 'the apiserver does not run the identity-first config: check "k8s-encrypt status"'
          : 'check the etcd client certificates named by the manifest (--etcd-certfile/--etcd-keyfile/--etcd-cafile), then re-run',
        details: { canary, before: before ?? null, after: after ?? null },
      },
    );
  } finally {
    await deps.api.delete(`/api/v1/namespaces/${ns}/secrets/${name}`).catch((err) => {
      deps.onProgress?.(`could not delete the canary ${canary}: ${describeError(err)} (delete it by hand)`);
    });
  }
}

const canaryKey = (etcdKeyPrefix: string | undefined, ns: string, name: string) =>
  `${(etcdKeyPrefix ?? '/registry').replace(/\/+$/, '')}/secrets/${ns}/${name}`;

/** The canary's bytes as etcd holds them (undefined: not there), or why etcd could not be read. */
async function readCanary<C>(deps: ProofDeps<C>, etcd: C, key: string, signal?: AbortSignal): Promise<{ raw?: Uint8Array; etcdProblem?: string }> {
  try {
    const reader = await deps.openEtcd(etcd);
    try {
      return { raw: await reader.get(key) };
    } finally {
      await reader.close();
    }
  } catch (err) {
    if (signal?.aborted) throw err;
    return { etcdProblem: `etcd could not be read: ${err instanceof CliError ? err.message : describeError(err)}` };
  }
}

async function readCount<C>(deps: ProofDeps<C>, prefix: string): Promise<number | undefined> {
  try {
    return transformationCount(parseMetrics(await deps.api.getText('/metrics')), prefix);
  } catch {
    return undefined;
  }
}

async function createCanary<C>(deps: ProofDeps<C>, ns: string, name: string): Promise<void> {
  try {
    await deps.api.post(`/api/v1/namespaces/${ns}/secrets`, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name, namespace: ns, labels: { ...MANAGED_BY } },
      type: 'Opaque',
      data: { canary: randomBytes(16).toString('base64') },
    });
  } catch (err) {
    throw new CliError(`cannot create the canary Secret ${ns}/${name}: ${describeError(err)}`, {
      exitCode: ExitCode.Cluster,
      hint: 'the credentials must allow creating Secrets in kube-system (admin.conf does)',
      cause: err,
    });
  }
}

/**
 * Deletes canaries an interrupted run (kill -9 between create and delete) left behind. Only those
 * older than `olderThanMs` (default 2 min): a canary lives for seconds, so a younger one belongs
 * to a proof running right now on another control plane. Returns the names deleted.
 */
export async function removeLeftoverCanaries(
  api: Pick<ApiClient, 'list' | 'delete'>,
  { namespace = 'kube-system', olderThanMs = 120_000, now = new Date() }: { namespace?: string; olderThanMs?: number; now?: Date } = {},
): Promise<string[]> {
  let items: { metadata?: { name?: string; creationTimestamp?: string } }[] = [];
  try {
    const list = await api.list<{ items?: typeof items }>(`/api/v1/namespaces/${namespace}/secrets`, {
      query: { labelSelector: Object.entries(MANAGED_BY).map(([k, v]) => `${k}=${v}`).join(',') },
    });
    items = list.items ?? [];
  } catch {
    return []; // not worth failing a proof over; status lists leftovers too
  }
  const deleted: string[] = [];
  for (const it of items) {
    const name = it.metadata?.name;
    const created = Date.parse(it.metadata?.creationTimestamp ?? '');
    if (!name?.startsWith(CANARY_PREFIX)) continue;
    if (!Number.isNaN(created) && now.getTime() - created < olderThanMs) continue;
    try {
      await api.delete(`/api/v1/namespaces/${namespace}/secrets/${name}`);
      deleted.push(name);
    } catch {
      // already gone, or not ours to delete: leave it
    }
  }
  return deleted;
}
