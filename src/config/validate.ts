import { usageError } from '../ui/errors';
import { KEY_LENGTHS, type LocalProvider } from './keys';
import type { Finding } from './parse';
import { providerKinds, type EncryptionConfiguration, type EncryptionKey, type KmsConfig } from './schema';

export { findingLine, type Finding } from './parse';

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

// Upstream messages (validation_encryption.go).
const MSG = {
  moreThanOne: 'more than one provider specified in a single element, should split into different list elements',
  noProvider: 'provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity',
  keyLen: (got: number, want: readonly number[]) =>
    `secret is not of the expected length, got ${got}, expected one of [${want.join(' ')}]`,
  scheme: (s: string) => `unsupported scheme "${s}" for KMS provider, only unix is supported`,
  kmsApiVersion: (v: string) => `unsupported apiVersion "${v}" for KMS provider, only v1 and v2 are supported`,
  atLeastOne: (what: string) => `at least one ${what} is required`,
  mandatory: (field: string, of: string) => `${field} is a mandatory field for a ${of}`,
  base64: 'secrets must be base64 encoded',
  positive: (field: string) => `${field} should be a positive value`,
  positiveOrNegative: (field: string) => `${field} should be a positive value, or negative to disable`,
  kmsNameColon: (n: string) => `invalid KMS provider name ${n}, must not contain ':'`,
  kmsNameDup: (n: string) => `duplicate KMS provider name ${n}, names must be unique`,
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
  masked: (r: string, by: string) => `resource "${r}" is masked by earlier rule "${by}"`,
} as const;

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
export function groupResourceString(gr: GroupResource): string {
  if (gr.group === '' && gr.resource === '*') return '*.';
  return gr.group === '' ? gr.resource : `${gr.resource}.${gr.group}`;
}
const grKey = (gr: GroupResource) => `${gr.resource}\u0000${gr.group}`;

/** Go's base64.StdEncoding.DecodeString: padding required, CR/LF ignored, nothing else. */
export function decodeBase64Strict(s: string): Buffer | undefined {
  const t = s.replace(/[\r\n]/g, '');
  if (t.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(t)) return undefined;
  return Buffer.from(t, 'base64');
}

/** Go's time.ParseDuration, in nanoseconds; undefined when it does not parse. */
export function parseGoDuration(s: string): number | undefined {
  if (s === '0' || s === '+0' || s === '-0') return 0;
  const m = /^([-+]?)((?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)$/.exec(s);
  if (!m) return undefined;
  const unit: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, μs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  let total = 0;
  for (const part of m[2]!.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) {
    total += Number(part[1]) * unit[part[2]!]!;
  }
  return m[1] === '-' ? -total : total;
}

/** The scheme Go's url.Parse would see: lower-cased, '' when there is none. */
function urlScheme(endpoint: string): string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(endpoint);
  return m ? m[1]!.toLowerCase() : '';
}

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

function validateResourceList(resources: string[], path: string, f: Findings, v: KubeVersion): void {
  if (resources.length === 0) f.error(path, MSG.atLeastOne(path));

  // Overlap and duplicates within one list (validateResourceOverlap).
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
    if (dup) f.error(path, MSG.duplicate);
    if (overlap) f.error(path, MSG.overlap);
  }

  // Names (validateResourceNames): the first matching rule wins, as upstream.
  resources.forEach((res, j) => {
    const p = `${path}[${j}]`;
    const gr = parseGroupResource(res);
    if (res.toLowerCase() !== res) f.error(p, MSG.capital);
    else if (res === '*') f.error(p, MSG.star);
    else if (NON_REST.has(res)) f.error(p, MSG.nonREST);
    else if (gr.group === 'events.k8s.io') f.error(p, MSG.events);
    else if (gr.group === 'extensions') f.error(p, MSG.extensions);
    else if (gr.group === '*' && gr.resource !== '*') f.error(p, MSG.acrossGroups);
    else if (res.includes('*') && !atLeast(v, 27)) {
      f.error(
        p,
        `wildcards need Kubernetes 1.27 or newer: a 1.${v.minor} apiserver accepts "${res}" silently and encrypts nothing with it`,
      );
    } else if (res === '') f.error(p, 'resource name must not be empty');
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
    f.error(path, MSG.atLeastOne('keys'));
    return;
  }
  const want = KEY_LENGTHS[kind];
  keys.forEach((key, k) => {
    const p = `${path}[${k}]`;
    if (key.name === '') f.error(`${p}.name`, MSG.mandatory('name', 'key'));
    else if (seen.has(key.name)) {
      f.error(
        `${p}.name`,
        `duplicate key name "${key.name}" (also ${seen.get(key.name)}): the apiserver only tries the first key of a name, so data written with the other is unreadable`,
      );
    } else seen.set(key.name, p);
    if (key.secret === '') {
      f.error(`${p}.secret`, MSG.mandatory('secret', 'key'));
      return;
    }
    const bytes = decodeBase64Strict(key.secret);
    if (!bytes) f.error(`${p}.secret`, MSG.base64);
    else if (!want.includes(bytes.length)) f.error(`${p}.secret`, MSG.keyLen(bytes.length, want));
  });
}

function validateKms(kms: KmsConfig, path: string, names: Set<string>, f: Findings, v: KubeVersion, gates: FeatureGates): void {
  const api = effectiveKmsApiVersion(kms);

  // name (validateKMSConfigName)
  if (kms.name === '') f.error(`${path}.name`, MSG.mandatory('name', 'provider'));
  if (api !== 'v1' && kms.name.includes(':')) f.error(`${path}.name`, MSG.kmsNameColon(kms.name));
  if (names.has(kms.name)) {
    if (api !== 'v1') f.error(`${path}.name`, MSG.kmsNameDup(kms.name));
    else {
      f.warning(
        `${path}.name`,
        `${MSG.kmsNameDup(kms.name)} (a KMS v1 duplicate is refused once --encryption-provider-config-automatic-reload is on)`,
      );
    }
  }
  names.add(kms.name);

  // timeout (metav1.Duration: a Go duration string; defaults to 3s)
  if (kms.timeout !== undefined) {
    const ns = parseGoDuration(kms.timeout);
    if (ns === undefined) f.error(`${path}.timeout`, 'timeout must be a duration such as "3s" or "500ms"');
    else if (ns <= 0) f.error(`${path}.timeout`, MSG.positive('timeout'));
  }

  // endpoint (validateKMSEndpoint)
  if (kms.endpoint === '') f.error(`${path}.endpoint`, MSG.mandatory('endpoint', 'kms'));
  else {
    const scheme = urlScheme(kms.endpoint);
    if (scheme !== 'unix') f.error(`${path}.endpoint`, MSG.scheme(scheme));
    else if (!/^unix:\/\/[^/]*\/./i.test(kms.endpoint)) {
      f.error(`${path}.endpoint`, 'the endpoint names no socket path (write it as unix:///path/to/socket)');
    }
  }

  // cachesize (validateKMSCacheSize; upstream defaults it to 1000 for v1 only)
  if (api !== 'v1' && kms.cachesize !== undefined) f.error(`${path}.cachesize`, 'cachesize is not supported in v2');
  if (api === 'v1' && kms.cachesize === 0) f.error(`${path}.cachesize`, MSG.positiveOrNegative('cachesize'));

  // apiVersion (validateKMSAPIVersion) and what each version of Kubernetes does with it
  if (api !== 'v1' && api !== 'v2') {
    f.error(`${path}.apiVersion`, MSG.kmsApiVersion(api));
    return;
  }
  const gateV1 =
    'the apiserver refuses to start with KMS v1 unless it runs with --feature-gates=KMSv1=true; use apiVersion: v2';
  if (api === 'v1') {
    if (atLeast(v, 29) && gates.KMSv1 === true) {
      // The operator turned the gate on: the apiserver starts; v1 is still on its way out.
      f.warning(`${path}.apiVersion`, 'KMS v1 is deprecated (this apiserver runs with --feature-gates=KMSv1=true): move to apiVersion: v2');
      return;
    }
    if (kms.apiVersion === undefined || kms.apiVersion === '') {
      if (atLeast(v, 29)) f.error(`${path}.apiVersion`, `apiVersion is not set, so it defaults to v1: since 1.29 ${gateV1}`);
      else f.warning(`${path}.apiVersion`, 'apiVersion is not set, so it defaults to v1 (deprecated, off by default from 1.29): set apiVersion: v2');
    } else if (atLeast(v, 29)) f.error(`${path}.apiVersion`, `KMS v1 is deprecated and off by default since 1.29: ${gateV1}`);
    else if (atLeast(v, 28)) f.warning(`${path}.apiVersion`, 'KMS v1 is deprecated since 1.28 and off by default from 1.29: move to apiVersion: v2');
    return;
  }
  if (!atLeast(v, 25)) f.error(`${path}.apiVersion`, `KMS v2 does not exist before Kubernetes 1.25 (this is 1.${v.minor})`);
  else if (!atLeast(v, 27) && gates.KMSv2 === true) f.warning(`${path}.apiVersion`, `KMS v2 is alpha in 1.${v.minor} (enabled here with --feature-gates=KMSv2=true)`);
  else if (!atLeast(v, 27)) {
    f.error(
      `${path}.apiVersion`,
      `KMS v2 is alpha in 1.${v.minor}: the apiserver refuses it unless it runs with --feature-gates=KMSv2=true (beta from 1.27, GA in 1.29)`,
    );
  } else if (!atLeast(v, 29)) f.warning(`${path}.apiVersion`, `KMS v2 is beta in 1.${v.minor} (GA in 1.29)`);
}

/**
 * Every problem of a parsed config, errors (the apiserver would refuse it, or it would not do what
 * it says) and warnings (legal but probably not what you want), in document order. Messages name
 * keys and resources, never key material.
 */
export function validateEncryptionConfig(
  cfg: EncryptionConfiguration,
  opts: { kubeVersion?: string; featureGates?: FeatureGates } = {},
): Finding[] {
  const v = parseKubeVersion(opts.kubeVersion ?? NEWEST_KUBE_VERSION);
  const gates = opts.featureGates ?? {};
  const f = new Findings();
  if (cfg.resources.length === 0) {
    f.error('resources', MSG.atLeastOne('resources'));
    return f.list;
  }

  const kmsNames = new Set<string>();
  // group/resource -> index of the rule that first configured it, to find masking across rules.
  const configured = new Map<string, number>();

  cfg.resources.forEach((rule, i) => {
    const rPath = `resources[${i}].resources`;
    const pPath = `resources[${i}].providers`;
    validateResourceList(rule.resources, rPath, f, v);

    // Masking by an earlier rule (getTransformerOverridesAndKMSPluginProbes). Within one list the
    // overlap rule above already speaks.
    rule.resources.forEach((res, j) => {
      const gr = parseGroupResource(res);
      const earlier = (g: GroupResource) => {
        const at = configured.get(grKey(g));
        return at !== undefined && at < i ? at : undefined;
      };
      const anyInGroup = { group: gr.group, resource: '*' };
      const anyAny = { group: '*', resource: '*' };
      if (earlier(anyInGroup) !== undefined) {
        f.error(`${rPath}[${j}]`, MSG.masked(groupResourceString(gr), groupResourceString(anyInGroup)));
      } else if (earlier(anyAny) !== undefined) {
        f.error(`${rPath}[${j}]`, MSG.masked(groupResourceString(gr), groupResourceString(anyAny)));
      } else if (earlier(gr) !== undefined) {
        f.warning(
          `${rPath}[${j}]`,
          `"${res}" is already configured by resources[${earlier(gr)}]: this rule's providers only add readers after that rule's, they never encrypt`,
        );
      }
      if (!configured.has(grKey(gr))) configured.set(grKey(gr), i);
    });

    if (rule.providers.length === 0) f.error(pPath, MSG.atLeastOne(pPath));
    const keyNames = new Map<LocalProvider, Map<string, string>>();
    rule.providers.forEach((p, j) => {
      const path = `${pPath}[${j}]`;
      const kinds = providerKinds(p);
      if (kinds.length === 0) f.error(path, MSG.noProvider);
      if (kinds.length > 1) f.error(path, MSG.moreThanOne);
      for (const kind of kinds) {
        if (kind === 'kms') validateKms(p.kms!, `${path}.kms`, kmsNames, f, v, gates);
        else if (kind !== 'identity') {
          if (!keyNames.has(kind)) keyNames.set(kind, new Map());
          validateKeys(kind, p[kind]!.keys, `${path}.${kind}.keys`, keyNames.get(kind)!, f);
        }
      }
    });

    // What the first provider means for new writes.
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
      } else if (kinds[0] === 'aescbc') {
        f.warning(
          `${fp}.aescbc`,
          'aescbc meets the CIS benchmark, but the Kubernetes docs rate it weaker than secretbox, aesgcm or KMS v2 (it has no integrity check)',
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
