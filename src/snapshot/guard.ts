/**
 * The snapshot step of init, rotate-key and disable: after every check and before the first
 * change, an etcd snapshot through this node's etcd connection (the apiserver's --etcd-servers and
 * client certificates), verified, journaled (file, size, sha256). Journaled once per operation: a
 * resumed run keeps the first run's snapshot. Refused before any change when the snapshot
 * directory has less than twice the database size free; --no-snapshot skips it with a warning.
 */
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Context } from '../context';
import { etcdConnectionFromFlags, openEtcd, type EtcdConnection } from '../etcd/client';
import type { JsonObject } from '../state/journal';
import { CliError, ExitCode, usageError } from '../ui/errors';
import { checkEscrowOptions, escrowDirOf, escrowNewKey, ESCROW_STEP, type EscrowOptions } from '../escrow/export';
import { parseTimeoutMs } from '../transition/front';
import { assertRoomFor, checkSnapshotFile, DEFAULT_STALL_TIMEOUT_MS, pruneSnapshots, snapshotName, sweepPartials, takeSnapshot, type SnapshotSource } from './take';

interface SnapshotOptions {
  /** false with --no-snapshot. */
  snapshot?: boolean;
  snapshotDir?: string;
  keepSnapshots?: number;
  /** A Go duration (or seconds): how long the snapshot stream may go without data. */
  snapshotStallTimeout?: string;
}

export const SNAPSHOT_STEP = 'snapshot';
const DEFAULT_KEEP_SNAPSHOTS = 5;

const snapshotDirOf = (ctx: Context, opts: SnapshotOptions) => opts.snapshotDir ?? join(ctx.paths.stateDir, 'snapshots');

function checkSnapshotOptions(opts: SnapshotOptions): void {
  if (opts.snapshot === false && (opts.snapshotDir !== undefined || opts.keepSnapshots !== undefined || opts.snapshotStallTimeout !== undefined)) {
    throw usageError('--no-snapshot takes no snapshot: --snapshot-dir, --keep-snapshots and --snapshot-stall-timeout do not apply');
  }
  stallTimeoutOf(opts);
}

const stallTimeoutOf = (opts: SnapshotOptions) =>
  opts.snapshotStallTimeout === undefined ? DEFAULT_STALL_TIMEOUT_MS : parseTimeoutMs(opts.snapshotStallTimeout, '--snapshot-stall-timeout');

interface StepJournalLike {
  done(step: string): boolean;
  output(step: string): JsonObject | undefined;
  complete(step: string, output: JsonObject): Promise<void>;
}

/** Opens etcd the way the apiserver reaches it; overridable for tests. */
type OpenSource = (conn: EtcdConnection) => Promise<SnapshotSource & { close(): void }>;

const defaultOpen: OpenSource = (conn) => openEtcd(conn);

/**
 * Takes (or, on a resumed run, recalls) the snapshot before the first change. Returns the
 * journaled record: `{skipped: true}` with --no-snapshot.
 */
async function snapshotBeforeChange(
  ctx: Context,
  journal: StepJournalLike,
  apiserverFlags: Map<string, string>,
  opts: SnapshotOptions,
  operation: string,
  openSource: OpenSource = defaultOpen,
): Promise<JsonObject> {
  if (journal.done(SNAPSHOT_STEP)) return journal.output(SNAPSHOT_STEP)!;
  if (opts.snapshot === false) {
    ctx.out.warn(`--no-snapshot: no etcd snapshot is taken before ${operation} changes this node; take one yourself (etcdctl snapshot save)`);
    const rec = { skipped: true };
    await journal.complete(SNAPSHOT_STEP, rec);
    return rec;
  }
  const dir = snapshotDirOf(ctx, opts);
  const conn = etcdConnectionFromFlags(apiserverFlags);
  let etcd: (SnapshotSource & { close(): void }) | undefined;
  try {
    etcd = await openSource(conn);
    const { dbSize } = await etcd.status();
    // First: what a killed run left may be as large as the database, and is not a reason to refuse.
    for (const p of await sweepPartials(dir)) ctx.out.info(`removed ${p}, left by an interrupted snapshot`);
    const free = await assertRoomFor(dir, dbSize);
    ctx.out.step(`taking an etcd snapshot (${(dbSize / 1048576).toFixed(1)} MiB database) into ${dir}`);
    const taken = await takeSnapshot(etcd, dir, snapshotName(operation, ctx.now()), ctx.signal, stallTimeoutOf(opts));
    // What is on disk, read back: the file etcd's restore would check.
    const check = await checkSnapshotFile(taken.path);
    if (!check.hashOk || check.sha256 !== taken.sha256) {
      // Not a snapshot to keep: retention would count it as a good one and prune an older good one.
      await unlink(taken.path).catch(() => {});
      throw new CliError(`the snapshot ${taken.path} does not read back as written`, { exitCode: ExitCode.Verification, hint: `check the disk under ${dir}; nothing was changed` });
    }
    const removed = await pruneSnapshots(dir, opts.keepSnapshots ?? DEFAULT_KEEP_SNAPSHOTS);
    const rec = { path: taken.path, bytes: taken.bytes, sha256: taken.sha256, etcdSha256: taken.etcdSha256, dbSize, freeBefore: free, integrity: 'etcd sha256 trailer verified', pruned: removed };
    await journal.complete(SNAPSHOT_STEP, rec);
    ctx.out.success(`etcd snapshot ${taken.path} (0600, ${taken.bytes} bytes, sha256 ${taken.sha256.slice(0, 12)}…, integrity verified)`);
    return rec;
  } catch (err) {
    if (err instanceof CliError && err.exitCode === ExitCode.Cluster) {
      throw new CliError(`${err.message} (the snapshot before ${operation})`, {
        exitCode: ExitCode.Cluster,
        hint: `nothing was changed; fix etcd access, or pass --no-snapshot to go on without a snapshot${err.hint ? ` (${err.hint})` : ''}`,
        cause: err,
      });
    }
    throw err;
  } finally {
    etcd?.close();
  }
}

/** A line for results: where the snapshot is, or that there is none. */
function describeSnapshot(rec: JsonObject | undefined): string | undefined {
  if (!rec) return undefined;
  if (rec.skipped) return 'none (--no-snapshot)';
  return `${rec.path} (${rec.bytes} bytes, sha256 ${String(rec.sha256)})`;
}

interface SafetyNetTarget {
  operation: string;
  /** The new key and the config text that first holds it (init, rotate-key); absent for disable. */
  newKey?: { keyName: string; configText: string; configPath: string };
}

/**
 * The two steps that come before the first change of init, rotate-key and disable: the etcd
 * snapshot, then (with --escrow-recipient) the escrow of the new key. Returns both records.
 */
export async function runSafetyNet(
  ctx: Context,
  journal: StepJournalLike & { readonly steps: readonly { name: string }[] },
  apiserverFlags: Map<string, string>,
  opts: SnapshotOptions & EscrowOptions,
  target: SafetyNetTarget,
): Promise<{ snapshot: JsonObject; escrow: JsonObject | undefined }> {
  const snapshot = await snapshotBeforeChange(ctx, journal, apiserverFlags, opts, target.operation);
  const escrow = target.newKey ? await escrowNewKey(ctx, journal, opts, { ...target.newKey, operation: target.operation }) : undefined;
  return { snapshot, escrow: escrow ?? journal.output(ESCROW_STEP) };
}

/** Bad --snapshot / --escrow options: exit 2 before anything is read or changed. */
export function checkSafetyOptions(opts: SnapshotOptions & EscrowOptions): void {
  checkSnapshotOptions(opts);
  checkEscrowOptions(opts);
}

/** Result lines for the snapshot and escrow records. */
export function safetyNetLines(journal: { output(step: string): JsonObject | undefined }): string[] {
  const s = describeSnapshot(journal.output(SNAPSHOT_STEP));
  const e = journal.output(ESCROW_STEP);
  return [...(s ? [`  etcd snapshot: ${s}`] : []), ...(e ? [`  key escrow: ${e.path} (${e.fingerprint})`] : [])];
}

/** What --dry-run says the safety net would do before the first change. */
export function safetyNetPreview(ctx: Context, opts: SnapshotOptions & EscrowOptions, newKeyName?: string): string[] {
  const lines = [
    opts.snapshot === false
      ? 'before the first change: no etcd snapshot (--no-snapshot)'
      : `before the first change: an etcd snapshot into ${snapshotDirOf(ctx, opts)} (0600, etcd's sha256 verified; needs twice the database size free; keeps ${opts.keepSnapshots ?? DEFAULT_KEEP_SNAPSHOTS})`,
  ];
  if (newKeyName && opts.escrowRecipient?.length) lines.push(`before the key is written: escrow ${newKeyName} to ${join(escrowDirOf(ctx, opts), `${newKeyName}.age`)} (sealed to ${opts.escrowRecipient.length} age recipient(s))`);
  return lines;
}
