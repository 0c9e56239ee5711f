import { parseEncryptionConfig, sha256Hex } from '../config/parse';
import { firstProvider, resourcesOf, withIdentityFirst, withPromoted, withPruned, withReader, writeResourceOf } from '../config/model';
import { renderEncryptionConfig } from '../config/render';
import { LOCAL_PROVIDERS } from '../config/keys';
import { providerKinds, writePrefix, type EncryptionConfiguration, type ProviderConfig } from '../config/schema';
import { errorsOf, validateEncryptionConfig, warningsOf, type FeatureGates } from '../config/validate';
import { transformerLabel, transformersForResource } from '../etcd/codec';
import { planKubeadmChange, printableKubeadmChange, type KubeadmChange, type KubeadmConfigRead } from '../manifest/kubeadm-config';
import { unifiedDiff } from '../manifest/patch';
import { planInstallChange, planUnpatchChange, type ManifestChange } from './manifest-change';
import { CliError, ExitCode } from '../ui/errors';
import { redactConfigText } from '../ui/redact';

/**
 * Every change of an EncryptionConfiguration (enable, rotate a key, change provider, disable) as a
 * list of safe stages, planned as data from the config the transition started from (enable: an
 * identity-only config, which is what an apiserver without the flag does):
 *
 * 1. add-reader: the new key/provider (disable: identity) is readable everywhere before anyone
 *    writes with it (only with several control planes: with one it protects nothing); enable's
 *    first stage also adds the flag and mount to the manifest and records them in kubeadm-config;
 * 2. promote:    it becomes the writer;
 * 3. rewrite:    every covered object is rewritten, then etcd must hold nothing under another label;
 * 4. prune:      readers no longer needed are removed (disable: the flag, mount, kubeadm-config
 *                entries and finally the file). enable has none: identity stays the last reader.
 *
 * Pure: the new key comes in as input, and the printable forms are redacted. The same base and the
 * same new element always give the same bytes (and sha256), so a resumed run recognises its files.
 */

export const STAGES = ['add-reader', 'promote', 'rewrite', 'prune'] as const;
export type StageName = (typeof STAGES)[number];
export type TransitionKind = 'enable' | 'rotate' | 'disable';

export interface StageConfig {
  /** The exact file text (holds keys: never print it, use `redacted`). */
  text: string;
  redacted: string;
  sha256: string;
  /** Label new Secrets get under this config (`aescbc:key-…`, `kms:v2:name`, `plaintext`). */
  writeLabel: string;
  /** Prefix a canary Secret must carry in etcd; undefined: plaintext. */
  writePrefix?: string;
}

export interface PlannedStage {
  name: StageName;
  title: string;
  /** The config the stage installs on every control plane (rewrite installs none; disable's prune removes it). */
  config?: StageConfig;
  /** Redacted unified diff from the config before the stage. */
  diff: string;
  /** Labels the config after this stage can no longer read: etcd must hold nothing under them. */
  removes: string[];
  /** disable's prune: the flag, the mount, the kubeadm-config entries and the file go. */
  unpatch?: boolean;
  /** enable's first stage: the flag and the mount come in with it (and go into kubeadm-config). */
  patch?: boolean;
  /** The exact manifest change of this stage, planned from the manifest as the stage before
   * leaves it (undefined when the plan was made without the manifest, or for the rewrite). */
  manifest?: ManifestChange;
  /** The exact kube-system/kubeadm-config change of the stage whose manifest change turns the
   * flag on (enable) or off (disable's prune), planned from the ConfigMap as read. */
  kubeadm?: KubeadmChange;
}

export interface TransitionPlan {
  kind: TransitionKind;
  controlPlanes: number;
  configPath: string;
  /** Resources the rewrite and the etcd checks cover (wildcards are not listed here). */
  resources: string[];
  /** Wildcard rules (`*.*`, `*.group`): the etcd checks cannot enumerate them. */
  wildcards: string[];
  base: StageConfig;
  /** The new writer: provider kind and key (or KMS) name; `identity` for disable. */
  target: { provider: string; name: string; label: string };
  stages: PlannedStage[];
  /** What prune keeps and why, one line each. */
  kept: string[];
  warnings: string[];
  /** Said once in the plan and the summary (e.g. that aescbc, the default, is the weakest). */
  notes: string[];
}

/** aescbc is the default (kubeadm's docs show it), but upstream recommends against it. */
const AESCBC_NOTE =
  'aescbc is the default provider, and the weakest of them (CBC, open to padding-oracle attacks); secretbox, aesgcm (rotated often) and KMS v2 are stronger: pass --provider';

export interface TransitionInput {
  kind: TransitionKind;
  /** Text of the config the transition starts from. */
  baseText: string;
  configPath: string;
  /** enable, rotate: the new provider element (one key, or one KMS provider). */
  element?: ProviderConfig;
  controlPlanes: number;
  kubeVersion: string;
  /** The apiserver's --feature-gates (KMSv1/KMSv2 change what it accepts). */
  featureGates?: FeatureGates;
  /** The manifest as read: each stage then carries its exact manifest change. */
  manifest?: { text: string; path: string };
  /** kube-system/kubeadm-config as read (undefined: not read, or --no-kubeadm-config): the stage
   * that turns the flag on or off then carries its exact change. */
  kubeadm?: KubeadmConfigRead;
}

const refused = (message: string, hint?: string) => new CliError(message, { exitCode: ExitCode.Refused, hint });

const isWildcard = (r: string) => r.startsWith('*.') || r === '*';

/** The labels a config reads for a resource, in the order tried (identity reads `plaintext`). Pure. */
export function readersOf(cfg: EncryptionConfiguration, resource: string): string[] {
  return transformersForResource(cfg, resource).map(transformerLabel);
}

/** Labels present in etcd (count > 0) that `cfg` cannot read, per resource. Pure. */
export function unreadableLabels(
  cfg: EncryptionConfiguration,
  counts: readonly { resource: string; counts: Record<string, number> }[],
): { resource: string; label: string; count: number }[] {
  const out: { resource: string; label: string; count: number }[] = [];
  for (const r of counts) {
    const readers = readersOf(cfg, r.resource);
    // A resource no rule covers is stored and read as plaintext.
    const readable = new Set(readers.length ? readers : ['plaintext']);
    for (const [label, count] of Object.entries(r.counts)) {
      if (count > 0 && label !== 'unknown' && !readable.has(label)) out.push({ resource: r.resource, label, count });
    }
  }
  return out;
}

function labelsOf(cfg: EncryptionConfiguration, resources: readonly string[]): Set<string> {
  return new Set(resources.flatMap((r) => readersOf(cfg, r)));
}

function stageConfig(cfg: EncryptionConfiguration): StageConfig {
  const text = renderEncryptionConfig(cfg);
  return describeConfigText(text, cfg);
}

/** What a config writes with (for Secrets, the canary's resource; else the first rule). */
export function describeConfigText(text: string, cfg: EncryptionConfiguration): StageConfig {
  // One resource for both, so the prefix and the label cannot name two writers.
  const probe = writeResourceOf(cfg);
  const first = firstProvider(cfg, probe);
  const prefix = first ? writePrefix(first) : undefined;
  const writeLabel = readersOf(cfg, probe)[0] ?? 'plaintext';
  return { text, redacted: redactConfigText(text), sha256: sha256Hex(text), writeLabel, ...(prefix ? { writePrefix: prefix } : {}) };
}

function namesOf(el: ProviderConfig): string[] {
  const local = LOCAL_PROVIDERS.find((k) => el[k] !== undefined);
  if (local) return el[local]!.keys.map((k) => k.name);
  return el.kms ? [el.kms.name] : [];
}

/** Refuses a config this apiserver version would reject; collects its warnings once each. Pure. */
export function checkStageConfig(
  cfg: EncryptionConfiguration,
  kubeVersion: string,
  what: string,
  warnings: string[],
  featureGates: FeatureGates = {},
): void {
  const findings = validateEncryptionConfig(cfg, { kubeVersion, featureGates });
  const errors = errorsOf(findings);
  if (errors.length) {
    const first = errors.slice(0, 3).map((f) => (f.path ? `${f.path}: ${f.message}` : f.message)).join('; ');
    throw new CliError(`${what} would not be accepted by kube-apiserver ${kubeVersion}: ${first}`, {
      exitCode: ExitCode.Usage,
      hint: 'check the current config with "k8s-encrypt validate-config"',
      details: { problems: errors },
    });
  }
  for (const w of warningsOf(findings)) {
    if (w.path?.endsWith('.identity')) continue; // identity first is the point of disable
    // The same finding in several stage configs is one warning.
    const line = `${w.path ? `${w.path}: ` : ''}${w.message}`;
    if (!warnings.includes(line)) warnings.push(line);
  }
}

/** identity as the last reader of every rule that lacks it (disable's add-reader). */
function withIdentityReader(cfg: EncryptionConfiguration): EncryptionConfiguration {
  const copy = structuredClone(cfg);
  return { ...copy, resources: copy.resources.map((r) => (r.providers.some((p) => p.identity) ? r : { ...r, providers: [...r.providers, { identity: {} }] })) };
}

/** What an apiserver without --encryption-provider-config does: enable's starting point. Pure. */
export function identityConfigText(resources: readonly string[]): string {
  return renderEncryptionConfig({ apiVersion: 'apiserver.config.k8s.io/v1', kind: 'EncryptionConfiguration', resources: [{ resources: [...resources], providers: [{ identity: {} }] }] });
}

export function planTransition(input: TransitionInput): TransitionPlan {
  const stages = planStages(input);
  const plan = { ...stages, notes: stages.kind !== 'disable' && stages.target.provider === 'aescbc' ? [AESCBC_NOTE] : [] };
  return input.manifest ? withManifestChanges(plan, input.manifest, input.kubeadm) : plan;
}

/**
 * Each stage's manifest change, planned from the manifest as the stage before leaves it: the
 * first install turns the flag on (or annotates), later ones annotate (or reload), disable's
 * prune unpatches. Pure.
 */
function withManifestChanges(plan: TransitionPlan, m: { text: string; path: string }, kubeadm: KubeadmConfigRead | undefined): TransitionPlan {
  let text = m.text;
  let cfg = parseEncryptionConfig(plan.base.text, plan.configPath);
  // The flag comes (or goes) with one stage: kubeadm-config records that one.
  const withKubeadm = (st: PlannedStage, change: ManifestChange): PlannedStage =>
    kubeadm && change.kubeadm && (change.turnsOn || change.turnsOff) ? { ...st, manifest: change, kubeadm: planKubeadmChange(kubeadm, change.kubeadm) } : { ...st, manifest: change };
  const stages = plan.stages.map((st): PlannedStage => {
    if (st.unpatch) {
      const change = planUnpatchChange(text, m.path, plan.configPath, cfg);
      text = change.newText;
      return withKubeadm(st, change);
    }
    if (!st.config) return st;
    const change = planInstallChange(text, { manifestPath: m.path, configPath: plan.configPath, config: st.config });
    text = change.newText;
    cfg = parseEncryptionConfig(st.config.text, plan.configPath);
    return withKubeadm(st, change);
  });
  return { ...plan, stages };
}

function planStages(input: TransitionInput): Omit<TransitionPlan, 'notes'> {
  const base = parseEncryptionConfig(input.baseText, input.configPath);
  const baseStage = describeConfigText(input.baseText, base);
  const all = resourcesOf(base);
  const resources = all.filter((r) => !isWildcard(r));
  const wildcards = all.filter(isWildcard);
  const multi = input.controlPlanes > 1;
  const warnings: string[] = [];
  const kept: string[] = [];
  const stages: PlannedStage[] = [];
  let prev = baseStage;
  let prevCfg = base;
  const push = (name: StageName, title: string, cfg: EncryptionConfiguration | undefined, extra: Partial<PlannedStage> = {}) => {
    if (cfg) checkStageConfig(cfg, input.kubeVersion, `the ${name} config`, warnings, input.featureGates);
    const config = cfg ? stageConfig(cfg) : undefined;
    const removes = cfg ? [...labelsOf(prevCfg, resources)].filter((l) => !labelsOf(cfg, resources).has(l)) : [];
    const diff = config ? unifiedDiff(prev.redacted, config.redacted, input.configPath) : '';
    stages.push({ name, title, ...(config ? { config } : {}), diff, removes, ...extra });
    if (cfg && config) {
      prev = config;
      prevCfg = cfg;
    }
  };

  if (base.resources.every((r) => r.providers[0]?.identity)) {
    if (input.kind === 'disable' && !base.resources.some((r) => r.providers.some((p) => !p.identity))) {
      throw refused('encryption at rest is already off: the config has no provider besides identity', 'nothing to disable; "k8s-encrypt status" shows the details');
    }
    if (input.kind === 'rotate') {
      throw refused('new writes are not encrypted (identity is the first provider): there is no write key to rotate', 'turn encryption on with "k8s-encrypt init", or finish the interrupted transition');
    }
  }

  if (input.kind === 'rotate' || input.kind === 'enable') {
    const el = input.element;
    const kinds = el ? providerKinds(el) : [];
    const name = el ? namesOf(el)[0] : undefined;
    if (!el || kinds.length !== 1 || kinds[0] === 'identity' || !name) {
      throw new CliError(`${input.kind} needs one new key or KMS provider`, { exitCode: ExitCode.Internal });
    }
    const label = readersOf({ ...base, resources: [{ resources: ['secrets'], providers: [el] }] }, 'secrets')[0]!;
    if (labelsOf(base, resources).has(label) || labelsOf(base, all).has(label)) {
      throw refused(`"${name}" is already a key of the config`, 'choose another name (--key-name / --kms-name)');
    }
    const enable = input.kind === 'enable';
    const turnOn = 'turn encryption on: add --encryption-provider-config and a read-only mount of its directory to the manifest (rolled back if the apiserver does not come back), record them in kube-system/kubeadm-config after the proof';
    const withNew = withReader(base, el);
    if (multi) {
      push('add-reader', enable ? `${turnOn}; identity stays first, ${kinds[0]} "${name}" is added as a reader, on every control plane` : `add ${kinds[0]} "${name}" as a reader after the current writer, on every control plane`, withNew, enable ? { patch: true } : {});
    }
    const promoted = withPromoted(withNew, name);
    push(
      'promote',
      enable && !multi ? `${turnOn}; ${kinds[0]} "${name}" writes, identity last` : `make ${kinds[0]} "${name}" the write key on every control plane (the old keys stay as readers)`,
      promoted,
      enable && !multi ? { patch: true } : {},
    );
    push('rewrite', `rewrite every object of ${resources.join(', ') || '(none)'}, then check in etcd that all are under ${label}`, undefined);
    if (enable) {
      kept.push(`identity stays as the last reader: it reads whatever was stored before encryption was turned on (no prune stage)`);
      if (wildcards.length) warnings.push(`wildcard rules (${wildcards.join(', ')}): the rewrite and the etcd checks cover only ${resources.join(', ') || 'no resource'}`);
      return { kind: 'enable', controlPlanes: input.controlPlanes, configPath: input.configPath, resources, wildcards, base: baseStage, target: { provider: kinds[0]!, name, label }, stages, kept, warnings };
    }
    const keepIdentity = wildcards.length > 0 && promoted.resources.some((r) => r.providers.some((p) => p.identity));
    const pruned = withPruned(promoted, { names: [], identity: keepIdentity });
    if (keepIdentity) kept.push(`identity stays as the last reader: wildcard rules (${wildcards.join(', ')}) cover resources no rewrite can list, which may still be plaintext`);
    kept.push(`${kinds[0]} "${name}" (the write key)`);
    const dropped = [...labelsOf(promoted, resources)].filter((l) => !labelsOf(pruned, resources).has(l));
    push('prune', `remove the readers no longer needed${dropped.length ? `: ${dropped.map((l) => (l === 'plaintext' ? 'identity' : l)).join(', ')}` : ''}`, pruned);
    if (wildcards.length) warnings.push(`wildcard rules (${wildcards.join(', ')}): the rewrite and the etcd checks cover only ${resources.join(', ') || 'no resource'}`);
    return { kind: 'rotate', controlPlanes: input.controlPlanes, configPath: input.configPath, resources, wildcards, base: baseStage, target: { provider: kinds[0]!, name, label }, stages, kept, warnings };
  }

  // disable
  if (multi && base.resources.some((r) => !r.providers.some((p) => p.identity))) {
    push('add-reader', 'add identity as the last reader on every control plane (so plaintext written by any of them stays readable)', withIdentityReader(base));
  }
  push('promote', 'put identity first on every control plane: new writes are plaintext, every key stays as a reader', withIdentityFirst(multi ? withIdentityReader(base) : base));
  push('rewrite', `rewrite every object of ${resources.join(', ') || '(none)'}, then check in etcd that none is encrypted`, undefined);
  const removes = [...labelsOf(prevCfg, resources)].filter((l) => l !== 'plaintext');
  stages.push({
    name: 'prune',
    title: `remove --encryption-provider-config, its mount and the kubeadm-config entries, then the config file (kept as a 0600 backup)`,
    diff: '',
    removes,
    unpatch: true,
  });
  if (wildcards.length) warnings.push(`wildcard rules (${wildcards.join(', ')}): the rewrite and the etcd checks cover only ${resources.join(', ') || 'no resource'}`);
  return { kind: 'disable', controlPlanes: input.controlPlanes, configPath: input.configPath, resources, wildcards, base: baseStage, target: { provider: 'identity', name: 'identity', label: 'plaintext' }, stages, kept, warnings };
}

// ---------------------------------------------------------------------------------------------
// Steps and resumption: the journal's step names, in order.

/** The journaled steps of one stage. `begin`/`write` bracket the commit point (the config write). */
export function stepsOf(stage: PlannedStage, controlPlanes: number): string[] {
  const s = stage.name;
  const gate = controlPlanes > 1 ? [`${s}:gate`] : [];
  if (s === 'rewrite') return [`${s}:run`, `${s}:verify`];
  const kubeadm = stage.patch ? [`${s}:kubeadm-config`] : [];
  if (stage.unpatch) return [`${s}:check`, `${s}:unpatch`, `${s}:wait`, `${s}:kubeadm-config`, `${s}:remove-config`, `${s}:record`, ...gate];
  return [...(stage.removes.length ? [`${s}:check`] : []), `${s}:begin`, `${s}:write`, `${s}:apply`, `${s}:wait`, `${s}:prove`, ...kubeadm, `${s}:record`, ...gate];
}

export function allSteps(plan: TransitionPlan): string[] {
  return plan.stages.flatMap((st) => stepsOf(st, plan.controlPlanes));
}

interface ResumePoint {
  /** undefined: every step is done. */
  stage?: StageName;
  step?: string;
  /** Stages whose every step is done. */
  done: StageName[];
}

/** Where a run continues, given the steps the journal has recorded. Pure. */
export function resumePoint(plan: TransitionPlan, doneSteps: readonly string[]): ResumePoint {
  const done = new Set(doneSteps);
  const finished: StageName[] = [];
  for (const st of plan.stages) {
    const step = stepsOf(st, plan.controlPlanes).find((x) => !done.has(x));
    if (step) return { stage: st.name, step, done: finished };
    finished.push(st.name);
  }
  return { done: finished };
}

/** The stage a config file stands for in a plan (by sha256), or 'base'; undefined if none. */
export function stageOfSha(plan: TransitionPlan, sha256: string): StageName | 'base' | undefined {
  let found: StageName | 'base' | undefined = plan.base.sha256 === sha256 ? 'base' : undefined;
  for (const st of plan.stages) if (st.config?.sha256 === sha256) found = st.name;
  return found;
}

/** Printable (redacted) plan for --dry-run and --json. */
export function printableTransition(plan: TransitionPlan): Record<string, unknown> {
  return {
    kind: plan.kind,
    controlPlanes: plan.controlPlanes,
    config: plan.configPath,
    resources: plan.resources,
    target: plan.target,
    base: { sha256: plan.base.sha256, writeLabel: plan.base.writeLabel },
    stages: plan.stages.map((s) => ({
      name: s.name,
      title: s.title,
      ...(s.config ? { sha256: s.config.sha256, writeLabel: s.config.writeLabel, config: s.config.redacted } : {}),
      diff: s.diff,
      removes: s.removes,
      ...(s.unpatch ? { unpatch: true } : {}),
      ...(s.patch ? { patch: true } : {}),
      ...(s.manifest ? { manifest: printableManifestChange(s.manifest) } : {}),
      ...(s.kubeadm ? { kubeadmConfig: printableKubeadmChange(s.kubeadm) } : {}),
    })),
    kept: plan.kept,
    warnings: plan.warnings,
    notes: plan.notes,
  };
}

/** A manifest change as --dry-run and --json show it (the manifest holds no key). */
export function printableManifestChange(c: ManifestChange): Record<string, unknown> {
  return { mode: c.mode, changed: c.changed, inputSha256: c.inputSha256, outputSha256: c.outputSha256, actions: c.actions, diff: c.diff, ...(c.turnsOn ? { turnsOn: true } : {}), ...(c.turnsOff ? { turnsOff: true } : {}) };
}
