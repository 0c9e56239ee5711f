import type { EncryptionConfiguration } from '../config/schema';
import type { StepOutput } from './steps';
import { CliError, ExitCode } from '../ui/errors';
import type { TransitionDeps, TransitionReporter } from './engine';
import { unreadableLabels } from './plan';

/**
 * What etcd holds under which label, and the one refusal built on it: a config must not lose a
 * reader of anything still stored under it (the prune gate, disable's last stage, a follower's
 * install, rollback).
 */

export type LabelCounts = {
  resource: string;
  counts: Record<string, number>;
  /** A few objects per label, `ns/name`. */
  examples: Record<string, string[]>;
  writeLabel: string;
  stale: number;
};

export async function scanLabels(
  deps: Pick<TransitionDeps, 'etcd' | 'openEtcd' | 'signal'>,
  cfg: EncryptionConfiguration,
  resources: readonly string[],
): Promise<LabelCounts[]> {
  const [{ scanEncryptionState, etcdPrefixFor }, { transformersForResource }, { etcdError }] = await Promise.all([
    import('../etcd/scan'),
    import('../etcd/codec'),
    import('../etcd/client'),
  ]);
  if (resources.length === 0) return [];
  const reader = await deps.openEtcd(deps.etcd);
  try {
    const report = await scanEncryptionState(reader, {
      prefix: deps.etcd.prefix,
      resources: resources.map((r) => ({ resource: r, etcdPrefix: etcdPrefixFor(r, deps.etcd.prefix) })),
      transformersFor: (r) => transformersForResource(cfg, r),
      listLimit: 20,
      ...(deps.signal ? { signal: deps.signal } : {}),
    });
    return report.resources.map((r) => {
      const examples: Record<string, string[]> = {};
      for (const o of r.stale.items) (examples[o.label] ??= []).length < 5 && examples[o.label]!.push(o.namespace ? `${o.namespace}/${o.name}` : o.name);
      return { resource: r.resource, counts: r.counts, examples, writeLabel: r.writeLabel, stale: r.stale.count };
    });
  } catch (err) {
    throw etcdError(deps.etcd, 'scan', err);
  } finally {
    reader.close();
  }
}

/** What to do about objects a target config could not read, for callers that take --force. */
export const REWRITE_OR_FORCE_HINT = 'rewrite them first ("k8s-encrypt re-encrypt-all --verify", or re-run this command), or pass --force if they may be lost';

/**
 * The refusal to remove what etcd still holds objects under (unless `force`). The hint is the
 * caller's: only a command that has --force may suggest it.
 */
export function assertNothingUnder(
  scan: LabelCounts[],
  target: EncryptionConfiguration,
  what: string,
  force: boolean,
  out: TransitionReporter,
  hint: string = REWRITE_OR_FORCE_HINT,
): StepOutput<'check'> {
  const bad = unreadableLabels(target, scan);
  if (bad.length === 0) return { unreadable: [] };
  const list = bad.map((b) => {
    const ex = scan.find((s) => s.resource === b.resource)?.examples[b.label] ?? [];
    return `${b.count} ${b.resource} under ${b.label}${ex.length ? ` (e.g. ${ex.join(', ')})` : ''}`;
  });
  if (force) {
    out.warn(`--force: ${what} although etcd still holds ${list.join('; ')}: those objects become unreadable`);
    return { unreadable: bad, forced: true };
  }
  throw new CliError(`refusing to ${what}: etcd still holds ${list.join('; ')}`, {
    exitCode: ExitCode.Refused,
    hint,
    details: { unreadable: bad },
  });
}

