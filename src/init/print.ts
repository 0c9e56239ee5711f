import type { Context } from '../context';
import type { TransitionReporter } from '../transition/engine';
import type { Output } from '../ui/output';
import type { InitPlan } from './plan';
import { printablePlan } from './plan';
import type { InitJournalInputs, InitResult } from './run';
import type { Journal } from '../state/journal';
import { safetyNetLines, SNAPSHOT_STEP } from '../snapshot/guard';
import { ESCROW_STEP } from '../escrow/export';
import { keyHolderLines, type KeyHolder } from '../transition/front';
import { kubeadmLine } from '../manifest/kubeadm-config';

/** What init prints: the dry-run plan, the step lines (a spinner on a terminal) and the result. */

/** Step lines; on a terminal the waits show a spinner with what they currently see. */
export function initReporter(out: Output): TransitionReporter & { close(): void } {
  const plain = { step: (m: string) => out.step(m), info: (m: string) => out.info(m), warn: (m: string) => out.warn(m), success: (m: string) => out.success(m) };
  if (!out.interactive) return { ...plain, progress: (m: string) => out.info(`  … ${m}`), close() {} };
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  let text = '';
  let frame = 0;
  let timer: NodeJS.Timeout | undefined;
  const draw = () => void out.stderr.write(`\r\x1b[K${out.c.cyan(frames[frame++ % frames.length]!)} ${text}`);
  const close = () => {
    if (!timer) return;
    clearInterval(timer);
    timer = undefined;
    out.stderr.write('\r\x1b[K');
  };
  const cleared = (f: (m: string) => void) => (m: string) => {
    close();
    f(m);
  };
  return {
    step: cleared(plain.step),
    info: cleared(plain.info),
    warn: cleared(plain.warn),
    success: cleared(plain.success),
    progress(m: string) {
      text = m;
      if (!timer) {
        timer = setInterval(draw, 100);
        timer.unref();
      }
      draw();
    },
    close,
  };
}



export async function printDryRun(ctx: Context, plan: InitPlan): Promise<void> {
  const kubeadm = plan.kubeadmSkipped ? { status: 'skipped' as const, reason: plan.kubeadmSkipped } : plan.kubeadmChange;
  const printable = { dryRun: true, ...printablePlan(plan) };
  for (const w of plan.warnings) ctx.out.warn(w);
  ctx.out.result(printable, (c) => {
    const lines = [
      c.bold(`init plan (${plan.mode}) for kube-apiserver ${plan.kubeVersion} (${plan.kubeVersionSource}), ${plan.controlPlanes} control plane(s) — dry run, nothing is written`),
      '',
      c.bold(`${plan.configPath} (mode 0600, key redacted):`),
      plan.config.redacted.trimEnd(),
      '',
      c.bold(`${plan.manifest.changed ? 'manifest diff' : 'manifest: no change'}:`),
      plan.manifest.diff.trimEnd() || '(none)',
      ...(plan.restart?.changed ? ['', c.bold('restart annotation:'), plan.restart.diff.trimEnd()] : []),
      '',
      c.bold('kube-system/kubeadm-config:'),
      !kubeadm ? 'not checked (apiserver unreachable)' : kubeadm.status === 'skipped' ? `skipped (${kubeadm.reason})` : kubeadmLine(kubeadm),
      '',
      c.bold('steps:'),
      ...plan.steps.map((s, i) => `  ${i + 1}. ${s.name}: ${s.title}`),
      ...(plan.kept.length ? ['', c.bold('kept:'), ...plan.kept.map((k) => `  ${k}`)] : []),
      ...plan.notes.map((n) => `note: ${n}`),
    ];
    if (plan.writeConfig) lines.splice(5, 0, '', c.bold('then, once every control plane reads the key (key redacted):'), plan.writeConfig.redacted.trimEnd());
    return lines.join('\n');
  });
}

export function printResult(ctx: Context, r: InitResult, journal: Journal<InitJournalInputs>, plan: Pick<InitPlan, 'kept' | 'notes'>, holders: KeyHolder[] | undefined): void {
  const journalId = journal.id;
  const kept = plan.kept;
  const body = {
    state: r.state,
    journal: journalId,
    mode: r.mode,
    provider: r.provider,
    keyName: r.keyName,
    config: r.config,
    configSha256: r.configSha256,
    manifestBackup: r.manifestBackup,
    evidence: r.evidence,
    proof: r.proof,
    kubeadmConfig: r.kubeadmConfig,
    rewrite: r.rewrite,
    verified: r.verified,
    multiNode: r.multiNode,
    kept,
    snapshot: journal.output(SNAPSHOT_STEP) ?? null,
    escrow: journal.output(ESCROW_STEP) ?? null,
    ...(plan.notes.length ? { notes: plan.notes } : {}),
    ...(holders ? { keyFiles: holders } : {}),
  };
  ctx.out.result(body, (c) => {
    if (r.state === 'waiting') {
      return [
        `${c.yellow('…')} this control plane is at stage "${r.multiNode.stage}" (config sha256 ${r.configSha256.slice(0, 12)}…)`,
        ...r.multiNode.nodes.map((n) => `  ${n.node}: ${n.reports}`),
        ...(r.proof?.weaker ? [`  proof: ${r.proof.detail} [weaker: metrics only]`] : []),
        `next: ${r.multiNode.next}`,
      ].join('\n');
    }
    const lines = [`${c.green('✓')} ${doneHeadline(r)}`];
    if (r.evidence) lines.push(`  apiserver: ${r.evidence.evidence} (${r.evidence.detail})`);
    if (r.proof) lines.push(`  proof: ${r.proof.detail}${r.proof.weaker ? ' [weaker: metrics only]' : ''}`);
    if (r.kubeadmConfig) lines.push(`  kubeadm-config: ${r.kubeadmConfig.status}${r.kubeadmConfig.reason ? ` (${r.kubeadmConfig.reason})` : ''}`);
    if (r.rewrite) lines.push(`  rewrite: ${r.rewrite.rewritten} rewritten, ${r.rewrite.unchanged} unchanged, ${r.rewrite.deleted} deleted meanwhile, ${r.rewrite.failed} failed`);
    if (r.verified) lines.push(`  verified: ${r.verified}`);
    if (r.manifestBackup) lines.push(`  manifest backup: ${r.manifestBackup}`);
    if (r.multiNode.next) lines.push(`  next: ${r.multiNode.next}`);
    for (const k of kept) lines.push(`  kept: ${k}`);
    lines.push(...safetyNetLines(journal));
    for (const n of plan.notes) lines.push(`  note: ${n}`);
    if (holders) lines.push(...keyHolderLines(holders).map((l) => `  ${l}`));
    if (r.mode === 'single') lines.push(`  ${keyCopyLine(r, journal.output(ESCROW_STEP))}`);
    return lines.join('\n');
  });
}

/**
 * What a re-run continues: a planned pause (this control plane waited at a stage gate for the
 * others), a stage that was rolled back, or a run that was interrupted.
 */
export function resumeNotice(id: string, status: string, message: string | undefined): string {
  if (status === 'waiting' && message?.endsWith(':gate')) {
    const stage = message.slice(0, -':gate'.length);
    return `${id} paused after stage "${stage}" to wait for the other control planes: checking whether they all run it`;
  }
  if (status === 'waiting' && message) return `continuing ${id} (${message}): retrying`;
  return `continuing the interrupted ${id} (${status}) where it stopped`;
}

/**
 * Where the only copies of the new key are, and what to keep: the config alone, the config and an
 * escrow bundle (--escrow-recipient), or nowhere on this host (a KMS key stays in the KMS).
 */
export function keyCopyLine(r: Pick<InitResult, 'provider' | 'keyName' | 'config'>, escrow: { [k: string]: unknown; path?: unknown; keys?: unknown } | undefined): string {
  if (r.provider === 'kms') return `the key encryption key stays in the KMS behind provider ${r.keyName}: without it the Secrets cannot be read`;
  const escrowed = escrow && Array.isArray(escrow.keys) && escrow.keys.includes(r.keyName);
  if (escrowed) return `key ${r.keyName} is escrowed in ${String(escrow.path)}: keep an age identity that opens it safe, apart from this host`;
  return `keep a copy of ${r.config} somewhere safe (or escrow it: keys export): without its key the Secrets cannot be read`;
}

/** The first line of a finished init: at the add-reader stage nothing is encrypted yet. */
export function doneHeadline(r: Pick<InitResult, 'mode' | 'provider' | 'keyName' | 'config' | 'multiNode'>): string {
  if (r.mode === 'from-config' && r.multiNode.stage === 'add-reader') {
    return `stage "add-reader": this apiserver can read ${r.provider} key ${r.keyName} (config ${r.config}); new writes are still plaintext until stage "promote"`;
  }
  return `encryption at rest is on${r.mode === 'from-config' ? ` at stage "${r.multiNode.stage}"` : ''}: ${r.provider}, key ${r.keyName}, config ${r.config}`;
}

