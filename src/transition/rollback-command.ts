import { readFile } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import type { Context } from '../context';
import { parseEncryptionConfig, sha256Hex } from '../config/parse';
import { errorsOf, validateEncryptionConfig } from '../config/validate';
import { unifiedDiff } from '../manifest/patch';
import { fileExists, readText } from '../state/atomic';
import { Journal, isFinished } from '../state/journal';
import { assertReadable } from '../config/input';
import { usageError } from '../ui/errors';
import { confirm } from '../ui/prompt';
import { describeConfigText, STAGES, type StageName } from './plan';
import { MemoryJournal } from './engine';
import { installConfig } from './install';
import { manifestLine, planInstallChange } from './manifest-change';
import { printableManifestChange } from './plan';
import { assertNothingUnder, scanLabels } from './etcd-check';
import { listBackups } from '../state/backups';
import { readNode, refused, removeBaseCopy, transitionDeps, parseTimeoutMs, underLock } from './front';
import { resourcesOfBoth } from './follow';
import type { TransitionJournalInputs, TransitionOptions } from './command';
// ---------------------------------------------------------------------------------------------
// rollback

export interface RollbackOptions {
  to?: string;
  dryRun?: boolean;
  timeout: string;
  config?: string;
  nodeName?: string;
  keepBackups: number;
}

/**
 * Puts the previous config back on this node, but only one that can read every object etcd holds
 * (everything written since was written with a key the restored config must still have).
 */
export async function runRollbackCommand(ctx: Context, opts: RollbackOptions): Promise<void> {
  const topts: TransitionOptions = { timeout: opts.timeout, keepBackups: opts.keepBackups, kubeadmConfig: true, ...(opts.config ? { config: opts.config } : {}), ...(opts.nodeName ? { nodeName: opts.nodeName } : {}) };
  parseTimeoutMs(opts.timeout);
  await assertReadable([['read backup', opts.to !== undefined ? resolve(opts.to) : undefined]]);
  await underLock(ctx, 'rollback', opts.dryRun, () => rollback(ctx, opts, topts));
}

async function rollback(ctx: Context, opts: RollbackOptions, topts: TransitionOptions): Promise<void> {
  const node = await readNode(ctx, topts);
  try {
    if (!(await fileExists(node.configPath))) {
      throw refused(`there is no config at ${node.configPath} to roll back`, 'after "disable", turn encryption on again with "k8s-encrypt init --from-config BACKUP"');
    }
    const currentText = await readText(node.configPath, 'read config');
    const current = parseEncryptionConfig(currentText, node.configPath);
    const currentSha = sha256Hex(currentText);
    let source: string | undefined;
    if (opts.to) source = resolve(opts.to);
    else {
      for (const b of await listBackups(ctx.paths.backupDir, basename(node.configPath))) {
        if (sha256Hex(await readFile(b)) !== currentSha) {
          source = b;
          break;
        }
      }
    }
    if (!source) throw refused(`no earlier config of ${node.configPath} is kept in ${ctx.paths.backupDir}`, 'pass --to FILE to restore a specific copy');
    const text = await readText(source, 'read backup');
    const cfg = parseEncryptionConfig(text, source);
    const errors = errorsOf(validateEncryptionConfig(cfg, { kubeVersion: node.kubeVersion, featureGates: node.featureGates }));
    if (errors.length) throw usageError(`${source} would not be accepted by kube-apiserver ${node.kubeVersion}: ${errors[0]!.path}: ${errors[0]!.message}`);
    const deps = await transitionDeps(ctx, node, topts, '"k8s-encrypt rollback"');
    const scan = await scanLabels(deps, current, resourcesOfBoth(current, cfg));
    // rollback has no --force: it never makes an object unreadable.
    assertNothingUnder(scan, cfg, `restore ${source}`, false, ctx.out, `restore a copy that still reads them (--to FILE, e.g. a newer backup in ${ctx.paths.backupDir}), or keep the current config: rollback never makes objects unreadable`);
    const restored = describeConfigText(text, cfg);
    const diff = unifiedDiff(describeConfigText(currentText, current).redacted, restored.redacted, node.configPath);

    // Which stage of an unfinished transition the restored file is, to journal the step back.
    const journals = (await Promise.all((['rotate-key', 'disable'] as const).map((op) => Journal.load<TransitionJournalInputs>(ctx.paths.stateDir, op, { now: ctx.now })))).filter(
      (x): x is Journal<TransitionJournalInputs> => x !== undefined && !isFinished(x.status),
    );
    let stage = 'rollback';
    let owner: { j: Journal<TransitionJournalInputs>; at: StageName | 'base' } | undefined;
    for (const jj of journals) {
      const at = jj.inputs.baseSha256 === restored.sha256 ? 'base' : (Object.entries(jj.inputs.stageSha256).find(([, v]) => v === restored.sha256)?.[0] as StageName | undefined);
      if (at) {
        owner = { j: jj, at };
        if (at !== 'base') stage = at;
      }
    }
    const manifest = planInstallChange(node.manifestText, { manifestPath: ctx.paths.manifest, configPath: node.configPath, config: restored });
    if (opts.dryRun) {
      ctx.out.result({ dryRun: true, from: source, stage, diff, manifest: printableManifestChange(manifest) }, () =>
        `would restore ${source} as ${node.configPath} (stage ${stage}; keys redacted):\n${diff || '(no change)'}\n${manifestLine(manifest, ctx.paths.manifest)}`);
      return;
    }
    await confirm(ctx, `restore ${source} as ${node.configPath} on ${node.nodeName}? The apiserver restarts.`);
    const outcome = await installConfig(deps, new MemoryJournal(), { stage, config: restored, manifest, record: stage !== 'rollback' || node.controlPlanes > 1 });
    if (owner) {
      if (owner.at === 'base') {
        await owner.j.setStatus('rolled-back', `rollback restored the config ${owner.j.id} started from`);
        await removeBaseCopy(owner.j.inputs.basePath);
      }
      else {
        const later = STAGES.slice(STAGES.indexOf(owner.at) + 1);
        await owner.j.forget(owner.j.steps.map((s) => s.name).filter((n) => later.some((st) => n.startsWith(`${st}:`))));
        await owner.j.setStatus('running');
      }
    }
    ctx.out.result({ ...outcome, state: 'done', restored: source, stage, sha256: restored.sha256, journal: owner?.j.id ?? null }, (c) =>
      `${c.green('✓')} restored ${source} on ${node.nodeName} (stage ${stage}, sha256 ${restored.sha256.slice(0, 12)}…): ${outcome.proof}${owner ? `\n  ${owner.j.id}: ${owner.at === 'base' ? 'marked rolled back' : `continues after stage ${owner.at} on the next run`}` : ''}`,
    );
  } finally {
    node.api.close();
  }
}

