import type { Context } from '../context';
import { printableTransition, type TransitionPlan } from './plan';
import type { TransitionResult } from './engine';
import type { CommandSpec, TransitionJournalInputs } from './command';
import type { Journal } from '../state/journal';
import { safetyNetLines, SNAPSHOT_STEP } from '../snapshot/guard';
import { ESCROW_STEP } from '../escrow/export';
import { manifestLine } from './manifest-change';
import { kubeadmLine } from '../manifest/kubeadm-config';
import { keyHolderLines, type KeyHolder } from './front';

/** What the transition commands print: the dry-run plan and the result. */

export function printDryRun(ctx: Context, plan: TransitionPlan): void {
  for (const w of plan.warnings) ctx.out.warn(w);
  ctx.out.result({ dryRun: true, ...printableTransition(plan) }, (c) =>
    [
      c.bold(`${plan.kind} plan for ${plan.configPath}, ${plan.controlPlanes} control plane(s) — dry run, nothing is written (keys redacted)`),
      ...plan.stages.flatMap((s, i) => [
        '',
        c.bold(`${i + 1}. ${s.name}: ${s.title}`),
        ...(s.removes.length ? [`   refused while etcd holds objects under: ${s.removes.join(', ')}`] : []),
        ...(s.diff ? [s.diff.trimEnd()] : []),
        ...(s.manifest ? [`   ${manifestLine(s.manifest, ctx.paths.manifest)}`] : []),
        ...(s.kubeadm ? [`   kube-system/kubeadm-config: ${kubeadmLine(s.kubeadm)}`] : []),
      ]),
      ...(plan.kept.length ? ['', c.bold('kept:'), ...plan.kept.map((k) => `  ${k}`)] : []),
      ...plan.notes.map((n) => `note: ${n}`),
    ].join('\n'),
  );
}

export function printResult(ctx: Context, spec: CommandSpec, plan: TransitionPlan, r: TransitionResult, j: Journal<TransitionJournalInputs>, holders?: KeyHolder[]): void {
  const id = j.id;
  const body = { state: r.state, journal: id, snapshot: j.output(SNAPSHOT_STEP) ?? null, escrow: j.output(ESCROW_STEP) ?? null, kind: plan.kind, target: plan.target, stage: r.stage, sha256: r.sha256, stages: r.stages, lagging: r.lagging, next: r.next, kept: plan.kept, ...(plan.notes.length ? { notes: plan.notes } : {}), ...(holders ? { keyFiles: holders } : {}) };
  ctx.out.result(body, (c) => {
    const lines: string[] = [];
    if (r.state === 'done') {
      lines.push(spec.kind === 'rotate' ? `${c.green('✓')} rotated: ${plan.target.provider} "${plan.target.name}" writes, every object rewritten, the old keys removed from the config` : `${c.green('✓')} encryption at rest is off: every object is plaintext, the flag, mount and config are gone`);
      for (const k of plan.kept) lines.push(`  kept: ${k}`);
    } else {
      lines.push(`${c.yellow('…')} this control plane finished stage "${r.stage}" (sha256 ${r.sha256?.slice(0, 12)}…)`);
      for (const l of r.lagging) lines.push(`  ${l.node}: ${l.reports}`);
    }
    for (const s of r.stages) lines.push(`  ${s.stage}: ${s.verified ?? s.proof ?? s.evidence ?? ''}`);
    lines.push(...safetyNetLines(j));
    if (r.next) lines.push(`next: ${r.next}`);
    for (const n of plan.notes) lines.push(`note: ${n}`);
    if (holders) lines.push(...keyHolderLines(holders));
    return lines.join('\n');
  });
}

