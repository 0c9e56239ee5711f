import { resolve } from 'node:path';
import type { Context } from '../context';
import { loadEncryptionConfig, parseEncryptionConfig } from '../config/parse';
import { openBundleFile } from '../escrow/command';
import { ExitCode, usageError } from '../ui/errors';
import { drillSnapshot, type SnapshotDrill } from './verify';

export interface VerifySnapshotOpts {
  config?: string;
  bundle?: string;
  identity?: string;
  passphraseFile?: string;
  passphraseStdin?: boolean;
  etcdPrefix: string;
}

const SHOWN = 20;

export async function runVerifySnapshot(ctx: Context, opts: VerifySnapshotOpts, snapshotPath: string): Promise<void> {
  if (Boolean(opts.config) === Boolean(opts.bundle)) throw usageError('verify-snapshot needs --config FILE or --bundle FILE (with --identity or a passphrase), one of them');
  if (opts.config && (opts.identity || opts.passphraseFile || opts.passphraseStdin)) throw usageError('--identity and the passphrase options open a --bundle; with --config they do not apply');
  let cfg;
  let keysFrom: string;
  if (opts.config) {
    cfg = (await loadEncryptionConfig(resolve(opts.config))).config;
    keysFrom = resolve(opts.config);
  } else {
    const b = await openBundleFile(ctx, resolve(opts.bundle!), opts);
    cfg = parseEncryptionConfig(b.config, `the config inside ${opts.bundle}`);
    keysFrom = `${resolve(opts.bundle!)} (exported ${b.createdAt} from ${b.source})`;
  }
  const drill = await drillSnapshot(resolve(snapshotPath), cfg, opts.etcdPrefix);
  if (!drill.snapshot.hasHash) ctx.out.warn(`${snapshotPath} has no etcd sha256 trailer (a copied db file?): its integrity was not checked`);
  for (const w of drill.skippedWildcards) ctx.out.warn(`the rule "${w}" is a wildcard: its resources are not listed here, only named ones are checked`);
  const kms = drill.resources.reduce((n, r) => n + r.kmsNotChecked, 0);
  if (kms) ctx.out.warn(`${kms} object(s) are under KMS: they need the KMS plugin to decrypt and were counted, not checked`);
  if (drill.unreadable > 0) ctx.out.exitCode = ExitCode.Verification;
  ctx.out.result({ snapshot: drill.snapshot, keysFrom, revision: drill.revision, resources: drill.resources, unreadable: drill.unreadable, readable: drill.unreadable === 0 }, (c) => render(drill, keysFrom, c));
}

function render(d: SnapshotDrill, keysFrom: string, c: import('chalk').ChalkInstance): string {
  const s = d.snapshot;
  const lines = [
    `snapshot ${s.path}: ${s.bytes} bytes, sha256 ${s.sha256.slice(0, 12)}…, ${s.hasHash ? 'etcd integrity check ok' : 'no integrity trailer'}, revision ${d.revision}`,
    `keys from ${keysFrom}`,
  ];
  for (const r of d.resources) {
    const by = Object.entries(r.readableBy).map(([k, n]) => `${n} ${k}`).join(', ');
    const mark = r.unreadable.length ? c.red('✗') : c.green('✓');
    lines.push(`${mark} ${r.resource}: ${r.readable} of ${r.total} readable${by ? ` (${by})` : ''}${r.kmsNotChecked ? `, ${r.kmsNotChecked} under KMS not checked` : ''}`);
    for (const u of r.unreadable.slice(0, SHOWN)) lines.push(`    ${u.namespace ? `${u.namespace}/` : ''}${u.name} (${u.storedAs}): ${u.error}`);
    if (r.unreadable.length > SHOWN) lines.push(`    … and ${r.unreadable.length - SHOWN} more (--json lists all)`);
  }
  lines.push(d.unreadable ? `${c.red('✗')} ${d.unreadable} object(s) cannot be read with these keys: a restore from this snapshot would lose them` : `${c.green('✓')} every object is readable with these keys`);
  return lines.join('\n');
}
