import { CliError, ExitCode } from '../ui/errors';
import { LOCAL_PROVIDERS, type LocalProvider } from './keys';
import { canonicalConfig, canonicalProvider } from './render';
import {
  providerKinds,
  writePrefix,
  type EncryptionConfiguration,
  type ProviderConfig,
  type ProviderKind,
  type ResourceConfig,
} from './schema';
import { effectiveKmsApiVersion, parseGroupResource, type GroupResource } from './validate';

/**
 * Pure questions about a config and the transitions the rotation engine, status and disable
 * build on. Every transition returns a new config and leaves its input alone.
 */

const sameGr = (a: GroupResource, b: GroupResource) => a.group === b.group && a.resource === b.resource;
const localKind = (p: ProviderConfig): LocalProvider | undefined =>
  LOCAL_PROVIDERS.find((k) => p[k] !== undefined);
const kindOf = (p: ProviderConfig): ProviderKind | undefined => providerKinds(p)[0];

export { parseResources, resourceList } from './resources';

/** Every resource named by the config's rules, in order, once each. */
export function resourcesOf(cfg: EncryptionConfiguration): string[] {
  return [...new Set(cfg.resources.flatMap((r) => r.resources))];
}

/**
 * The providers the apiserver uses for a resource ("secrets", "deployments.apps"), in the order it
 * tries them: the one rule for this in the project (the codec, status, the planners and the
 * prune gate all come here). As k8s.io/apiserver server/options/encryptionconfig/config.go does:
 * every rule's providers are appended under each group/resource it names
 * (`schema.ParseGroupResource`, so `secrets` and `secrets.` are one key), and a lookup
 * (`transformerFromOverrides`) takes the exact group/resource, else `*.group` (`*.` is the core
 * group), else `*.*`. So two rules naming `secrets` both serve it, in file order; a wildcard
 * names one rule only (a second one is "masked by earlier rule" and refused at start-up).
 * Empty: no rule covers it and it is stored unencrypted. Before 1.27 wildcards named no
 * resource at all (config validation warns about that for the version it is told).
 */
export function providersFor(cfg: EncryptionConfiguration, resource: string): ProviderConfig[] {
  const gr = parseGroupResource(resource);
  const rulesFor = (want: GroupResource) =>
    cfg.resources.filter((r) => r.resources.some((x) => sameGr(parseGroupResource(x), want)));
  for (const want of [gr, { group: gr.group, resource: '*' }, { group: '*', resource: '*' }]) {
    const rules = rulesFor(want);
    if (rules.length > 0) return rules.flatMap((r) => r.providers);
  }
  return [];
}

/** The provider that encrypts new writes of a resource; undefined when none applies (plaintext). */
export function firstProvider(cfg: EncryptionConfiguration, resource: string): ProviderConfig | undefined {
  return providersFor(cfg, resource)[0];
}

/**
 * The resource a config's writer is read from (its write key, prefix and label): Secrets when a rule
 * serves them, else the first resource the config names.
 */
export function writeResourceOf(cfg: EncryptionConfiguration): string {
  return firstProvider(cfg, 'secrets') ? 'secrets' : (resourcesOf(cfg)[0] ?? 'secrets');
}

interface ProviderSummary {
  kind: ProviderKind | 'invalid';
  /** Key names of aescbc/aesgcm/secretbox, the write key first. */
  keys?: string[];
  kms?: { name: string; apiVersion: string; endpoint: string };
  /** The etcd value prefix this provider writes with; absent for identity. */
  prefix?: string;
}

export interface RuleSummary {
  index: number;
  resources: string[];
  /** Readers in the order tried; the first one also writes. */
  providers: ProviderSummary[];
}

/** What status and --json may show: kinds, key names, KMS names and prefixes; never a secret. */
export function summarizeConfig(cfg: EncryptionConfiguration): RuleSummary[] {
  return cfg.resources.map((rule, index) => ({
    index,
    resources: [...rule.resources],
    providers: rule.providers.map((p): ProviderSummary => {
      const kinds = providerKinds(p);
      if (kinds.length !== 1) return { kind: 'invalid' };
      const kind = kinds[0]!;
      const prefix = writePrefix(p);
      const local = localKind(p);
      if (local) return { kind, keys: p[local]!.keys.map((k) => k.name), ...(prefix ? { prefix } : {}) };
      if (p.kms) {
        const kms = { name: p.kms.name, apiVersion: effectiveKmsApiVersion(p.kms), endpoint: p.kms.endpoint };
        return { kind, kms, ...(prefix ? { prefix } : {}) };
      }
      return { kind };
    }),
  }));
}

/** Same meaning (key order and formatting aside). */
export function configsEqual(a: EncryptionConfiguration, b: EncryptionConfiguration): boolean {
  return JSON.stringify(canonicalConfig(a)) === JSON.stringify(canonicalConfig(b));
}

const sameProvider = (a: ProviderConfig, b: ProviderConfig) =>
  JSON.stringify(canonicalProvider(a)) === JSON.stringify(canonicalProvider(b));

const refused = (message: string, hint?: string) => new CliError(message, { exitCode: ExitCode.Refused, hint });

/** The names a provider element stands for: its key names, or its KMS name. */
function namesOf(p: ProviderConfig): string[] {
  const local = localKind(p);
  if (local) return p[local]!.keys.map((k) => k.name);
  return p.kms ? [p.kms.name] : [];
}

function mapRules(cfg: EncryptionConfiguration, fn: (r: ResourceConfig, i: number) => ResourceConfig) {
  const copy = structuredClone(cfg);
  return { ...copy, resources: copy.resources.map(fn) };
}

/**
 * Adds a reader: the new key (or KMS provider) goes right after the current write provider of every
 * rule, so every apiserver can read what any of them writes with it before it is promoted. A key
 * whose kind matches the write provider joins that element as its second key; otherwise the new
 * element comes second. Adding what is already there (same name and secret) changes nothing.
 */
export function withReader(cfg: EncryptionConfiguration, element: ProviderConfig): EncryptionConfiguration {
  const kinds = providerKinds(element);
  if (kinds.length !== 1 || kinds[0] === 'identity') {
    throw refused('a reader must be one aescbc, aesgcm, secretbox or kms provider');
  }
  const kind = kinds[0]!;
  const names = namesOf(element);
  if (names.length === 0) throw refused('the new provider has no key');
  if (kind === 'kms' && cfg.resources.length > 1 && effectiveKmsApiVersion(element.kms!) !== 'v1') {
    throw refused(
      `KMS v2 provider names must be unique in the file, and this config has ${cfg.resources.length} resource rules`,
      'put the resources in one rule first, or add the KMS provider to each rule under its own name',
    );
  }
  return mapRules(cfg, (rule, i) => {
    // Already present? Then it must be identical, or this would be a second key under one name.
    for (const p of rule.providers) {
      if (kindOf(p) !== kind) continue;
      const local = localKind(p);
      if (local) {
        const incoming = element[local]!.keys;
        const clash = p[local]!.keys.filter((k) => incoming.some((n) => n.name === k.name));
        if (clash.length === 0) continue;
        if (clash.length === incoming.length && clash.every((k) => incoming.some((n) => n.name === k.name && n.secret === k.secret))) {
          return rule;
        }
        throw refused(`resources[${i}] already has a key named "${clash[0]!.name}" (${local}) with another secret`, 'choose another key name');
      }
      if (p.kms && p.kms.name === element.kms!.name) {
        if (sameProvider(p, element)) return rule;
        throw refused(`resources[${i}] already has a KMS provider named "${p.kms.name}" with other settings`, 'choose another KMS provider name');
      }
    }
    const providers = [...rule.providers];
    const first = providers[0];
    const local = localKind(element);
    if (first && local && localKind(first) === local) {
      const keys = [...first[local]!.keys];
      keys.splice(1, 0, ...structuredClone(element[local]!.keys));
      providers[0] = { ...first, [local]: { keys } };
    } else {
      providers.splice(first ? 1 : 0, 0, structuredClone(element));
    }
    return { ...rule, providers };
  });
}

/**
 * Makes a key (by key name) or a KMS provider (by its name) the writer of every rule: its element
 * moves first and, for local keys, the key moves first in its element. Everything else stays as a
 * reader. Every rule must already hold it (see withReader).
 */
export function withPromoted(cfg: EncryptionConfiguration, name: string): EncryptionConfiguration {
  return mapRules(cfg, (rule, i) => {
    const at = rule.providers.findIndex((p) => namesOf(p).includes(name));
    if (at < 0) {
      throw refused(`"${name}" is not a key or KMS provider of resources[${i}]`, 'it must first be added as a reader on every control plane');
    }
    const providers = [...rule.providers];
    let el = providers.splice(at, 1)[0]!;
    const local = localKind(el);
    if (local) {
      const keys = [...el[local]!.keys];
      const k = keys.findIndex((x) => x.name === name);
      keys.unshift(...keys.splice(k, 1));
      el = { ...el, [local]: { keys } };
    }
    return { ...rule, providers: [el, ...providers] };
  });
}

interface PruneKeep {
  /** Key names and KMS names still needed as readers (the write key is always kept). */
  names: readonly string[];
  /** Keep identity (as the last reader) where the rule has it: data not yet rewritten is plaintext. */
  identity: boolean;
}

/**
 * Drops readers no longer needed: keys and KMS providers not in `keep.names`, elements left with
 * no key, and identity unless `keep.identity`. The write provider and its write key always stay
 * (dropping them would make the newest data unreadable); a kept identity reader moves last.
 */
export function withPruned(cfg: EncryptionConfiguration, keep: PruneKeep): EncryptionConfiguration {
  const wanted = new Set(keep.names);
  return mapRules(cfg, (rule) => {
    const [first, ...rest] = rule.providers;
    if (!first) return rule;
    const kept: ProviderConfig[] = [];
    let identity = false;
    for (const p of rest) {
      if (p.identity) {
        identity = true;
        continue;
      }
      const local = localKind(p);
      if (local) {
        const keys = p[local]!.keys.filter((k) => wanted.has(k.name));
        if (keys.length > 0) kept.push({ ...p, [local]: { keys } });
      } else if (p.kms && wanted.has(p.kms.name)) kept.push(p);
    }
    let head = first;
    const local = localKind(first);
    if (local) {
      const [writeKey, ...others] = first[local]!.keys;
      head = { ...first, [local]: { keys: [...(writeKey ? [writeKey] : []), ...others.filter((k) => wanted.has(k.name))] } };
    }
    const tail = identity && keep.identity && !head.identity ? [{ identity: {} }] : [];
    return { ...rule, providers: [head, ...kept, ...tail] };
  });
}

/**
 * Turns encryption off for new writes: `identity: {}` first in every rule, every key kept as a
 * reader so that what is stored encrypted stays readable until it is rewritten.
 */
export function withIdentityFirst(cfg: EncryptionConfiguration): EncryptionConfiguration {
  return mapRules(cfg, (rule) => {
    if (rule.providers[0]?.identity) return rule;
    return { ...rule, providers: [{ identity: {} }, ...rule.providers.filter((p) => !p.identity)] };
  });
}
