import { usageError } from '../ui/errors';
import { decodeBase64Strict, formatGoDuration, goQuote, parseGoDuration, parseGoUrl } from './go';
import { KEY_LENGTHS, type LocalProvider } from './keys';
import type { Finding } from './parse';
import { providerKinds, type EncryptionConfiguration, type EncryptionKey, type KmsConfig } from './schema';

export { findingLine, type Finding } from './parse';
export { decodeBase64Strict, parseGoDuration } from './go';

/**
 * The upstream rules an apiserver applies when it loads an EncryptionConfiguration
 * (k8s.io/apiserver pkg/apis/apiserver/validation/validation_encryption.go and
 * pkg/server/options/encryptionconfig), with upstream's wording, plus the traps that depend on the
 * Kubernetes version (a config an old apiserver accepts but does not honour). Pure.
 */

/** The newest Kubernetes minor whose rules apply when no version is given. */
export { NEWEST_KUBE_VERSION } from './versions';
import { NEWEST_KUBE_VERSION } from './versions';

/** kube-apiserver's --feature-gates as name -> enabled. */
export type FeatureGates = Record<string, boolean>;

/** Parses `--feature-gates=KMSv1=true,Foo=false` (the value only); junk entries are ignored, as
 * they are not this tool's to judge. */
export function parseFeatureGates(value: string | undefined): FeatureGates {
  const gates: FeatureGates = {};
  for (const part of (value ?? '').split(',')) {
    const m = /^\s*([A-Za-z0-9]+)\s*=\s*(true|false)\s*$/i.exec(part);
    if (m) gates[m[1]!] = m[2]!.toLowerCase() === 'true';
  }
  return gates;
}

export interface KubeVersion {
  major: number;
  minor: number;
}

/** "1.29", "v1.29" or "1.29.3" -> { major: 1, minor: 29 }; anything else is refused. */
export function parseKubeVersion(s: string): KubeVersion {
  const m = /^v?(\d+)\.(\d+)(?:\.\d+)?$/.exec(s.trim());
  const major = m ? Number(m[1]) : NaN;
  const minor = m ? Number(m[2]) : NaN;
  if (!m || major !== 1 || minor > 99) {
    throw usageError(`"${s}" is not a Kubernetes version`, 'give it as MAJOR.MINOR, e.g. 1.30');
  }
  return { major, minor };
}

const atLeast = (v: KubeVersion, minor: number) => v.minor >= minor;

/** Kubernetes minors where a rule or a behaviour arrived. */
export const SINCE = {
  /** KMS apiVersion (v2 alpha, behind --feature-gates=KMSv2=true). */
  kmsV2Alpha: 25,
  /** Wildcards and the resource-list rules (KEP-3299); KMS v2 beta, on by default. */
  resourceRules: 27,
  /** KMS v1 deprecated. */
  kmsV1Deprecated: 28,
  /** KMS v2 GA; KMS v1 off unless --feature-gates=KMSv1=true. */
  kmsV1Off: 29,
  /** Strict decoding: an unknown or duplicate field makes the apiserver refuse the file. */
  strictDecoding: 31,
} as const;

// Upstream messages (validation_encryption.go, encryptionconfig/config.go).
const MSG = {
  moreThanOne: 'more than one provider specified in a single element, should split into different list elements',
  noProvider: 'provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity',
  keyLen: (got: number, want: readonly number[]) =>
    `secret is not of the expected length, got ${got}, expected one of [${want.join(' ')}]`,
  scheme: (s: string) => `unsupported scheme ${goQuote(s)} for KMS provider, only unix is supported`,
  kmsApiVersion: 'unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported',
  invalidUrl: (err: string) => `invalid endpoint for kms provider, error: ${err}`,
  atLeastOne: (what: string) => `at least one ${what} is required`,
  mandatory: (field: string, of: string) => `${field} is a mandatory field for a ${of}`,
  base64: 'secrets must be base64 encoded',
  positive: (field: string) => `${field} should be a positive value`,
  positiveOrNegative: (field: string) => `${field} should be a positive value, or negative to disable`,
  kmsNameColon: (n: string) => `invalid KMS provider name ${n}, must not contain ':'`,
  kmsNameDup: (n: string) => `duplicate KMS provider name ${n}, names must be unique`,
  cachesizeV2: 'cachesize is not supported in v2',
  kmsV1Off:
    'KMSv1 is deprecated and will only receive security updates going forward. Use KMSv2 instead.  Set --feature-gates=KMSv1=true to use the deprecated KMSv1 feature.',
  kmsV2Off: (n: string) => `could not configure KMSv2 plugin ${goQuote(n)}, KMSv2 feature is not enabled`,
  events:
    "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file",
  extensions: "'extensions' group has been removed and cannot be used for encryption",
  star: "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources",
  overlap:
    "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked",
  nonREST: 'resources which do not have REST API/s cannot be encrypted',
  capital: 'resource name should not contain capital letters',
  acrossGroups: 'encrypting the same resource across groups is not supported',
  duplicate: 'the same resource cannot be specified multiple times',
  masked: (r: string, by: string) => `resource ${goQuote(r)} is masked by earlier rule ${goQuote(by)}`,
} as const;

// field.ErrorList wording: `Required value: DETAIL`, `Invalid value: VALUE: DETAIL`.
const required = (detail: string) => `Required value: ${detail}`;
const invalid = (value: string | number, detail: string) =>
  `Invalid value: ${typeof value === 'number' ? String(value) : goQuote(value)}: ${detail}`;
const invalidList = (values: readonly string[], detail: string) =>
  `Invalid value: []string{${values.map(goQuote).join(', ')}}: ${detail}`;

/** schema.ParseGroupResource: the part before the first dot is the resource, the rest the group. */
export interface GroupResource {
  group: string;
  resource: string;
}
export function parseGroupResource(s: string): GroupResource {
  const i = s.indexOf('.');
  return i < 0 ? { group: '', resource: s } : { group: s.slice(i + 1), resource: s.slice(0, i) };
}
/** How upstream prints a group/resource in its masking error. */
function groupResourceString(gr: GroupResource): string {
  if (gr.group === '' && gr.resource === '*') return '*.';
  return gr.group === '' ? gr.resource : `${gr.resource}.${gr.group}`;
}
const grKey = (gr: GroupResource) => `${gr.resource}\u0000${gr.group}`;

/** KMS apiVersion after upstream defaulting (an omitted apiVersion means v1). */
export function effectiveKmsApiVersion(kms: KmsConfig): string {
  return kms.apiVersion === undefined || kms.apiVersion === '' ? 'v1' : kms.apiVersion;
}

const NON_REST = new Set(['apiserveripinfo', 'serviceipallocations', 'servicenodeportallocations']);
/** Singular names that match nothing (the apiserver keys rules by the plural resource). */
const SINGULAR: Record<string, string> = { secret: 'secrets', configmap: 'configmaps' };

class Findings {
  readonly list: Finding[] = [];
  error(path: string, message: string) {
    this.list.push({ level: 'error', path, message });
  }
  warning(path: string, message: string) {
    this.list.push({ level: 'warning', path, message });
  }
}

interface Ctx {
  f: Findings;
  v: KubeVersion;
  gates: FeatureGates;
  reload: boolean;
  noEffect: 'error' | 'warning';
}

/** A rule that arrived in 1.27: an error from then on, before it a warning saying what happens. */
function resourceRule(c: Ctx, path: string, message: string, before: string): void {
  if (atLeast(c.v, SINCE.resourceRules)) c.f.error(path, message);
  else noEffect(c, path, `${before} (from 1.27 the apiserver refuses it: ${message.replace(/^Invalid value: .*?: /, '')})`);
}

/** A config that starts but does not do what it says on this version (see ValidateOptions.noEffect). */
function noEffect(c: Ctx, path: string, message: string): void {
  if (c.noEffect === 'error') c.f.error(path, message);
  else c.f.warning(path, message);
}

function validateResourceList(resources: string[], path: string, c: Ctx): void {
  const { f, v } = c;
  if (resources.length === 0) f.error(path, required(MSG.atLeastOne(path)));
  const rules = atLeast(v, SINCE.resourceRules);

  // Overlap and duplicates within one list (validateResourceOverlap). Before 1.27 wildcards match
  // nothing, so only a repeated name is worth a word.
  if (resources.length >= 2) {
    const grs = resources.map(parseGroupResource);
    let dup = false;
    let overlap = false;
    grs.forEach((r1, i) =>
      grs.forEach((r2, j) => {
        if (i === j) return;
        if (grKey(r1) === grKey(r2)) dup = true;
        else if (r1.group === '*' && r1.resource === '*') overlap = true;
        else if (r1.group === r2.group && (r1.resource === '*' || r2.resource === '*')) overlap = true;
      }),
    );
    if (dup) resourceRule(c, path, invalidList(resources, MSG.duplicate), `a resource is listed twice (the repeat has no effect on 1.${v.minor})`);
    if (overlap && rules) f.error(path, invalidList(resources, MSG.overlap));
  }

  // Names (validateResourceNames): the first matching rule wins, as upstream.
  const nothing = `has no effect on 1.${v.minor}`;
  resources.forEach((res, j) => {
    const p = `${path}[${j}]`;
    const gr = parseGroupResource(res);
    const wildcard = `wildcards match nothing before 1.27: a 1.${v.minor} apiserver accepts "${res}" and encrypts nothing with it`;
    if (res.toLowerCase() !== res) resourceRule(c, p, invalid(res, MSG.capital), `"${res}" matches no resource (names are lower case), so it ${nothing}`);
    else if (res === '*') resourceRule(c, p, invalid(res, MSG.star), wildcard);
    else if (NON_REST.has(res)) resourceRule(c, p, invalid(res, MSG.nonREST), `"${res}" has no REST API, so the rule ${nothing}`);
    else if (gr.group === 'events.k8s.io') resourceRule(c, p, invalid(res, MSG.events), `events are stored in the "events" group, so "${res}" ${nothing}`);
    else if (gr.group === 'extensions') resourceRule(c, p, invalid(res, MSG.extensions), `"${res}" ${nothing}`);
    else if (gr.group === '*' && gr.resource !== '*') resourceRule(c, p, invalid(res, MSG.acrossGroups), wildcard);
    else if (res.includes('*') && !rules) noEffect(c, p, wildcard);
    else if (res === '') f.warning(p, 'an empty resource name matches no resource');
    else if (SINGULAR[res]) {
      f.warning(p, `"${res}" matches no resource (rules name the plural): did you mean "${SINGULAR[res]}"?`);
    }
  });
}

/**
 * `seen`: key name -> path of its first use, per provider kind within one rule. The etcd prefix is
 * `k8s:enc:KIND:v1:NAME:`, so two keys of one kind and name cannot be told apart.
 */
function validateKeys(kind: LocalProvider, keys: EncryptionKey[], path: string, seen: Map<string, string>, f: Findings): void {
  if (keys.length === 0) {
    f.error(path, required(MSG.atLeastOne('keys')));
    return;
  }
  const want = KEY_LENGTHS[kind];
  keys.forEach((key, k) => {
    const p = `${path}[${k}]`;
    if (key.name === '') f.error(`${p}.name`, required(MSG.mandatory('name', 'key')));
    else if (seen.has(key.name)) {
      f.error(
        `${p}.name`,
        `duplicate key name "${key.name}" (also ${seen.get(key.name)}): the apiserver only tries the first key of a name, so data written with the other is unreadable`,
      );
    } else seen.set(key.name, p);
    if (key.secret === '') {
      f.error(`${p}.secret`, required(MSG.mandatory('secret', 'key')));
      return;
    }
    const bytes = decodeBase64Strict(key.secret);
    if (!bytes) f.error(`${p}.secret`, invalid('REDACTED', MSG.base64));
    else if (!want.includes(bytes.length)) f.error(`${p}.secret`, invalid('REDACTED', MSG.keyLen(bytes.length, want)));
  });
}

function validateEndpoint(endpoint: string, path: string, f: Findings): void {
  if (endpoint === '') {
    f.error(path, invalid('', MSG.mandatory('endpoint', 'kms')));
    return;
  }
  const parsed = parseGoUrl(endpoint);
  if ('error' in parsed) {
    f.error(path, invalid(endpoint, MSG.invalidUrl(parsed.error)));
    return;
  }
  const { scheme, host, path: socket } = parsed.url;
  if (scheme !== 'unix') f.error(path, invalid(endpoint, MSG.scheme(scheme)));
  else if (socket === '' || socket === '/') f.error(path, 'the endpoint names no socket path (write it as unix:///path/to/socket)');
  else if (host !== '') {
    f.warning(path, `the plugin socket is ${socket}: "${host}" after unix:// is a host name, which is ignored (for ${`/${host}${socket}`} write unix:///${host}${socket})`);
  }
}

function validateKms(kms: KmsConfig, path: string, names: Set<string>, c: Ctx): void {
  const { f, v, gates } = c;
  // Before 1.25 KMSConfiguration has no apiVersion: the decoder drops it and the provider is v1.
  const hasApiVersionField = atLeast(v, SINCE.kmsV2Alpha);
  if (!hasApiVersionField && kms.apiVersion !== undefined && kms.apiVersion !== '') {
    if (kms.apiVersion === 'v1') f.warning(`${path}.apiVersion`, `apiVersion is not a field before 1.25: a 1.${v.minor} apiserver drops it (KMS v1 is all it has)`);
    else {
      f.error(
        `${path}.apiVersion`,
        `KMS ${kms.apiVersion} does not exist before 1.25: a 1.${v.minor} apiserver drops apiVersion and talks KMS v1 to this plugin, so every read and write through it fails`,
      );
    }
  }
  const api = hasApiVersionField ? effectiveKmsApiVersion(kms) : 'v1';

  // name (validateKMSConfigName)
  if (kms.name === '') f.error(`${path}.name`, required(MSG.mandatory('name', 'provider')));
  if (api !== 'v1' && kms.name.includes(':')) f.error(`${path}.name`, invalid(kms.name, MSG.kmsNameColon(kms.name)));
  if (names.has(kms.name)) {
    if (api !== 'v1' || c.reload) f.error(`${path}.name`, invalid(kms.name, MSG.kmsNameDup(kms.name)));
    else {
      f.warning(
        `${path}.name`,
        `${MSG.kmsNameDup(kms.name)} (a KMS v1 duplicate is refused once --encryption-provider-config-automatic-reload is on)`,
      );
    }
  }
  names.add(kms.name);

  // timeout (metav1.Duration: decoded with time.ParseDuration; defaults to 3s)
  if (kms.timeout !== undefined) {
    const ns = parseGoDuration(kms.timeout);
    if (ns === undefined) f.error(`${path}.timeout`, `cannot be decoded: time: invalid duration ${goQuote(kms.timeout)}`);
    else if (ns <= 0) f.error(`${path}.timeout`, `Invalid value: ${formatGoDuration(ns)}: ${MSG.positive('timeout')}`);
  }

  validateEndpoint(kms.endpoint, `${path}.endpoint`, f);

  // cachesize (validateKMSCacheSize; upstream defaults it to 1000 for v1 only)
  if (api !== 'v1' && kms.cachesize !== undefined) f.error(`${path}.cachesize`, invalid(kms.cachesize, MSG.cachesizeV2));
  if (api === 'v1' && kms.cachesize === 0) f.error(`${path}.cachesize`, invalid(0, MSG.positiveOrNegative('cachesize')));

  // apiVersion (validateKMSAPIVersion) and what each version of Kubernetes does with it
  if (api !== 'v1' && api !== 'v2') {
    f.error(`${path}.apiVersion`, invalid(api, MSG.kmsApiVersion));
    return;
  }
  if (api === 'v1') {
    if (!hasApiVersionField) return;
    const unset = kms.apiVersion === undefined || kms.apiVersion === '';
    if (atLeast(v, SINCE.kmsV1Off) && gates.KMSv1 === true) {
      // The operator turned the gate on: the apiserver starts; v1 is still on its way out.
      f.warning(`${path}.apiVersion`, `KMS v1 is deprecated (enabled here with --feature-gates=KMSv1=true)${unset ? ': apiVersion is not set, so it defaults to v1' : ''}: move to apiVersion: v2`);
    } else if (atLeast(v, SINCE.kmsV1Off)) {
      f.error(`${path}.apiVersion`, `${unset ? 'apiVersion is not set, so it defaults to v1: ' : ''}${MSG.kmsV1Off}`);
    } else if (unset) {
      f.warning(`${path}.apiVersion`, 'apiVersion is not set, so it defaults to v1 (deprecated, off by default from 1.29): set apiVersion: v2');
    } else if (atLeast(v, SINCE.kmsV1Deprecated)) {
      f.warning(`${path}.apiVersion`, 'KMS v1 is deprecated since 1.28 and off by default from 1.29: move to apiVersion: v2');
    }
    return;
  }
  if (!atLeast(v, SINCE.resourceRules) && gates.KMSv2 === true) f.warning(`${path}.apiVersion`, `KMS v2 is alpha in 1.${v.minor} (enabled here with --feature-gates=KMSv2=true)`);
  else if (!atLeast(v, SINCE.resourceRules)) {
    f.error(`${path}.apiVersion`, `${MSG.kmsV2Off(kms.name)} (KMS v2 is alpha in 1.${v.minor}: --feature-gates=KMSv2=true; beta from 1.27, GA in 1.29)`);
  } else if (!atLeast(v, SINCE.kmsV1Off)) f.warning(`${path}.apiVersion`, `KMS v2 is beta in 1.${v.minor} (GA in 1.29)`);
}

interface ValidateOptions {
  kubeVersion?: string;
  featureGates?: FeatureGates;
  /** --encryption-provider-config-automatic-reload is on (KMS v1 names must then be unique too). */
  reload?: boolean;
  /**
   * A rule the apiserver of this version accepts but that does nothing there (a wildcard before
   * 1.27, a name refused only from 1.27): an error by default, so that the tool never writes one,
   * or a warning when judging what an apiserver would do with a file (validate-config).
   */
  noEffect?: 'error' | 'warning';
}

/**
 * Every problem of a parsed config, errors (the apiserver would refuse it, or it would not do what
 * it says) and warnings (legal but probably not what you want), in document order. Messages name
 * keys and resources, never key material.
 */
export function validateEncryptionConfig(cfg: EncryptionConfiguration, opts: ValidateOptions = {}): Finding[] {
  const v = parseKubeVersion(opts.kubeVersion ?? NEWEST_KUBE_VERSION);
  const c: Ctx = { f: new Findings(), v, gates: opts.featureGates ?? {}, reload: opts.reload === true, noEffect: opts.noEffect ?? 'error' };
  const { f } = c;
  if (cfg.resources.length === 0) {
    f.error('resources', required(MSG.atLeastOne('resources')));
    return f.list;
  }

  const kmsNames = new Set<string>();
  // group/resource -> index of the rule that first configured it, to find masking across rules.
  const configured = new Map<string, number>();

  cfg.resources.forEach((rule, i) => {
    const rPath = `resources[${i}].resources`;
    const pPath = `resources[${i}].providers`;
    validateResourceList(rule.resources, rPath, c);

    // Masking by an earlier rule (getTransformerOverridesAndKMSPluginProbes); only wildcards mask,
    // and they mean nothing before 1.27. Within one list the overlap rule above already speaks.
    rule.resources.forEach((res, j) => {
      const gr = parseGroupResource(res);
      const earlier = (g: GroupResource) => {
        const at = configured.get(grKey(g));
        return at !== undefined && at < i ? at : undefined;
      };
      const anyInGroup = { group: gr.group, resource: '*' };
      const anyAny = { group: '*', resource: '*' };
      const masks = atLeast(v, SINCE.resourceRules);
      if (masks && earlier(anyInGroup) !== undefined) {
        f.error(`${rPath}[${j}]`, MSG.masked(groupResourceString(gr), groupResourceString(anyInGroup)));
      } else if (masks && earlier(anyAny) !== undefined) {
        f.error(`${rPath}[${j}]`, MSG.masked(groupResourceString(gr), groupResourceString(anyAny)));
      } else if (earlier(gr) !== undefined && (masks || !res.includes('*'))) {
        f.warning(
          `${rPath}[${j}]`,
          `"${res}" is already configured by resources[${earlier(gr)}]: this rule's providers only add readers after that rule's, they never encrypt`,
        );
      }
      if (!configured.has(grKey(gr))) configured.set(grKey(gr), i);
    });

    if (rule.providers.length === 0) f.error(pPath, required(MSG.atLeastOne(pPath)));
    const keyNames = new Map<LocalProvider, Map<string, string>>();
    rule.providers.forEach((p, j) => {
      const path = `${pPath}[${j}]`;
      const kinds = providerKinds(p);
      if (kinds.length === 0) f.error(path, MSG.noProvider);
      if (kinds.length > 1) f.error(path, MSG.moreThanOne);
      for (const kind of kinds) {
        if (kind === 'kms') validateKms(p.kms!, `${path}.kms`, kmsNames, c);
        else if (kind !== 'identity') {
          if (!keyNames.has(kind)) keyNames.set(kind, new Map());
          validateKeys(kind, p[kind]!.keys, `${path}.${kind}.keys`, keyNames.get(kind)!, f);
        }
      }
    });

    // What the first provider means for new writes. (aescbc, the tool's default, draws no warning:
    // init and rotate-key say once in their plan which providers are stronger.)
    const first = rule.providers[0];
    const kinds = first ? providerKinds(first) : [];
    if (kinds.length === 1) {
      const fp = `${pPath}[0]`;
      if (kinds[0] === 'identity') {
        f.warning(
          `${fp}.identity`,
          rule.providers.length === 1
            ? 'identity is the only provider: these resources are stored unencrypted'
            : 'identity is the first provider: new writes are stored unencrypted, the other providers only read (this is how encryption is turned off)',
        );
      } else if (kinds[0] === 'aesgcm') {
        f.warning(
          `${fp}.aesgcm`,
          'aesgcm keys must be rotated well before 2^32 writes with one key (the docs suggest every 200,000 writes): plan "k8s-encrypt rotate-key"',
        );
      }
    }
  });
  return f.list;
}

export const errorsOf = (findings: readonly Finding[]) => findings.filter((x) => x.level === 'error');
export const warningsOf = (findings: readonly Finding[]) => findings.filter((x) => x.level === 'warning');
