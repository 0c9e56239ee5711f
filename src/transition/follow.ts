import type { Context } from '../context';
import { readStages } from '../cluster/nodes';
import { parseEncryptionConfig, sha256Hex } from '../config/parse';
import type { ConfigSource } from '../config/input';
import { type EncryptionConfiguration } from '../config/schema';
import { errorsOf, validateEncryptionConfig } from '../config/validate';
import { CONFIG_FLAG, unifiedDiff } from '../manifest/patch';
import { fileExists, readText } from '../state/atomic';
import { usageError } from '../ui/errors';
import { confirm } from '../ui/prompt';
import { describeConfigText, printableManifestChange, STAGES, type StageName } from './plan';
import { MemoryJournal } from './engine';
import { installConfig } from './install';
import { manifestLine, planInstallChange, planUnpatchChange } from './manifest-change';
import { unpatchStage } from './unpatch';
import { assertNothingUnder, scanLabels } from './etcd-check';
import { assertFollowerReads, checkKmsPlugin, readNode, refused, transitionDeps } from './front';
import type { CommandSpec, TransitionOptions } from './command';
// ---------------------------------------------------------------------------------------------
// Further control planes: install the first node's file for a stage.

/** The --from-config file as the command read and parsed it (before the lock). */
export type GivenConfig = ConfigSource & { cfg: EncryptionConfiguration };

/** Runs under the command's lock (src/transition/command.ts), as every follower does. */
export async function follow(ctx: Context, spec: CommandSpec, opts: TransitionOptions, only: StageName | undefined, source: GivenConfig): Promise<void> {
  const { text, label: file, cfg } = source;
  const sha = sha256Hex(text);
  const node = await readNode(ctx, opts);
  try {
    const errors = errorsOf(validateEncryptionConfig(cfg, { kubeVersion: node.kubeVersion, featureGates: node.featureGates }));
    if (errors.length) throw usageError(`${file} would not be accepted by kube-apiserver ${node.kubeVersion}: ${errors[0]!.path}: ${errors[0]!.message}`);
    if (node.flags.get(CONFIG_FLAG) === undefined) throw refused(`${ctx.paths.manifest} has no --${CONFIG_FLAG}`, 'turn encryption on here first ("k8s-encrypt init --from-config FILE")');
    let stage: string | undefined = only;
    if (!stage) {
      const records = await readStages(node.api, node.found);
      stage = records.find((r) => r.record?.sha256 === sha && (STAGES as readonly string[]).includes(r.record.stage))?.record?.stage;
      if (!stage) throw usageError(`no control plane reports a stage for ${file} (sha256 ${sha.slice(0, 12)}…)`, `say which stage it is with --stage ${STAGES.join('|')}`);
    }
    const current = (await fileExists(node.configPath)) ? await readText(node.configPath, 'read config') : undefined;
    const currentCfg = current !== undefined ? parseEncryptionConfig(current, node.configPath) : undefined;
    const deps = await transitionDeps(ctx, node, opts, `"k8s-encrypt ${spec.operation} --from-config FILE"`);
    const diff = unifiedDiff(describeConfigText(current ?? '', currentCfg ?? cfg).redacted, describeConfigText(text, cfg).redacted, node.configPath);
    const manifest = planInstallChange(node.manifestText, { manifestPath: ctx.paths.manifest, configPath: node.configPath, config: describeConfigText(text, cfg) });
    if (opts.dryRun) {
      ctx.out.result({ dryRun: true, stage, sha256: sha, diff, manifest: printableManifestChange(manifest) }, () =>
        `stage ${stage}: install ${file} as ${node.configPath} (dry run, keys redacted)\n${diff || '(no change)'}\n${manifestLine(manifest, ctx.paths.manifest)}`);
      return;
    }
    // A follower restarts this node's apiserver as the first node's run does: it asks the same way.
    await confirm(ctx, `install ${file} as ${node.configPath} on ${node.nodeName} (${spec.operation}, stage ${stage})? The apiserver restarts.`);
    if (current !== text) {
      for (const k of cfg.resources.flatMap((r) => r.providers.flatMap((p) => (p.kms ? [p.kms] : [])))) await checkKmsPlugin(ctx, k);
    }
    if (currentCfg && current !== text) {
      // The other control planes run what this one ran (or one stage on): a writer this node could
      // not read before may be one they cannot read either (a stale or skipped file).
      assertFollowerReads({ label: file, text, cfg, current: currentCfg, configPath: node.configPath, force: deps.force, warn: (m) => ctx.out.warn(m) });
      const scan = await scanLabels(deps, currentCfg, resourcesOfBoth(currentCfg, cfg));
      assertNothingUnder(scan, cfg, `install ${file}`, deps.force, ctx.out);
    }
    const outcome = await installConfig(deps, new MemoryJournal(), { stage, config: describeConfigText(text, cfg), manifest });
    ctx.out.result({ ...outcome, state: 'done', stage, sha256: sha, node: node.nodeName }, (c) => `${c.green('✓')} ${node.nodeName} runs stage "${stage}" (sha256 ${sha.slice(0, 12)}…): ${outcome.proof}\nnext: re-run the command on the first control plane`);
  } finally {
    node.api.close();
  }
}


export function resourcesOfBoth(a: EncryptionConfiguration, b: EncryptionConfiguration): string[] {
  const all = [...a.resources, ...b.resources].flatMap((r) => r.resources);
  return [...new Set(all)].filter((r) => !r.startsWith('*'));
}

/** `disable --stage prune` on a further control plane: nothing may be encrypted, then unpatch here (under disable's lock). */
export async function followDisablePrune(ctx: Context, opts: TransitionOptions): Promise<void> {
  const node = await readNode(ctx, opts);
  try {
    if (node.flags.get(CONFIG_FLAG) === undefined) {
      ctx.out.result({ state: 'done', nothingToDo: true }, () => `nothing to do: ${ctx.paths.manifest} has no --${CONFIG_FLAG}`);
      return;
    }
    const text = (await fileExists(node.configPath)) ? await readText(node.configPath, 'read config') : undefined;
    const cfg = text !== undefined ? parseEncryptionConfig(text, node.configPath) : undefined;
    const manifest = planUnpatchChange(node.manifestText, ctx.paths.manifest, node.configPath, cfg);
    if (opts.dryRun) {
      ctx.out.result({ dryRun: true, stage: 'prune', manifest: printableManifestChange(manifest) }, () => `would remove --${CONFIG_FLAG}, its mount, the kubeadm-config entries and ${node.configPath} (dry run)\n${manifest.diff.trimEnd()}`);
      return;
    }
    await confirm(ctx, `turn encryption at rest OFF on ${node.nodeName} (remove the flag, the mount and the config)?`);
    const deps = await transitionDeps(ctx, node, opts, '"k8s-encrypt disable --stage prune"');
    if (cfg) {
      const scan = await scanLabels(deps, cfg, resourcesOfBoth(cfg, cfg));
      assertNothingUnder(scan, { ...cfg, resources: [] }, 'turn encryption off', deps.force, ctx.out);
    }
    const outcome = await unpatchStage(deps, new MemoryJournal(), cfg, manifest);
    ctx.out.result({ ...outcome, state: 'done', stage: 'prune', node: node.nodeName }, (c) => `${c.green('✓')} encryption at rest is off on ${node.nodeName}; ${outcome.proof}`);
  } finally {
    node.api.close();
  }
}

