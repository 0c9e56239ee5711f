/**
 * Loading the EncryptionConfiguration the way kube-apiserver does at start and on automatic
 * reload: decode, default, validate, build one transformer per resource. Deliberately
 * independent of src/config and src/etcd (nothing is imported from them), so that the CLI and the
 * bed cannot share a validator, a resource rule or a cipher bug; the rules and messages follow
 * k8s.io/apiserver (apis/apiserver/validation and server/options/encryptionconfig), the
 * transformers are in ./value. Messages never carry key material ("REDACTED").
 */
import { createHash } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import { kmsV1Probe, type KmsPlugins, type KmsProbe } from './kms';
import { cbcTransformer, gcmTransformer, secretboxTransformer } from './value/ciphers';
import { kmsV1EnvelopeTransformer } from './value/envelope';
import { KmsV2Provider } from './value/kmsv2';
import { encryptCheckTransformer, prefixTransformers, type PrefixTransformer, type RecordTransformation, type Transformer } from './value/transformer';
import { atLeast, type KubeVersion } from './version';

/** The resources the stand-in stores (core group), by their EncryptionConfiguration name. */
export const STORED_RESOURCES = ['secrets', 'configmaps', 'namespaces', 'pods', 'nodes'] as const;
export type StoredResource = (typeof STORED_RESOURCES)[number];

/** apiserver.config.k8s.io/v1 EncryptionConfiguration, as decoded and defaulted here. */
interface KeyConfig {
  name: string;
  secret: string;
}
interface ProviderConfig {
  aescbc?: { keys: KeyConfig[] };
  aesgcm?: { keys: KeyConfig[] };
  secretbox?: { keys: KeyConfig[] };
  identity?: Record<string, never>;
  kms?: { apiVersion: string; name: string; endpoint: string; timeout: string; cachesize?: number };
}
interface ResourceConfig {
  resources: string[];
  providers: ProviderConfig[];
}
export interface EncryptionConfiguration {
  apiVersion: 'apiserver.config.k8s.io/v1';
  kind: 'EncryptionConfiguration';
  resources: ResourceConfig[];
}

export interface LoadOptions {
  version: KubeVersion;
  featureGates: Record<string, boolean>;
  reload: boolean;
  kms: KmsPlugins;
  record: RecordTransformation;
}

export interface LoadedEncryption {
  config: EncryptionConfiguration;
  /** `sha256:<hex of the file bytes>`, as apiserver_encryption_config_controller_last_config_info. */
  hash: string;
  /** Undefined: no rule covers it, stored as plaintext (identity, no metrics). */
  transformers: Record<StoredResource, Transformer | undefined>;
  /** The KMS providers' probes, in config order (the health checks). */
  probes: KmsProbe[];
  /** KMS provider names in use (connections to others may be closed). */
  kmsNames: Set<string>;
  /** Stops the KMS providers' Status polls. */
  close(): void;
}

export function configHash(data: Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Throws an Error whose message is what kube-apiserver would report (without the klog frame). */
export async function loadEncryption(file: string, data: Buffer, opts: LoadOptions): Promise<LoadedEncryption> {
  if (data.length === 0) {
    throw new Error(`error while parsing file: error while loading file: encryption provider configuration file "${file}" is empty`);
  }
  let config: EncryptionConfiguration;
  try {
    config = decodeConfig(data);
  } catch (err) {
    throw new Error(
      `error while parsing file: error decoding encryption provider configuration file "${file}": ${(err as Error).message}`,
    );
  }
  const errs = validateConfig(config, opts);
  if (errs.length) throw new Error(`error while parsing file: ${aggregate(errs)}`);
  let built: Built;
  try {
    const effective = effectiveConfig(config, opts.version);
    checkBuildable(effective, opts);
    built = buildTransformers(effective, opts);
    config = effective;
  } catch (err) {
    throw new Error(`error while building transformers: ${(err as Error).message}`);
  }
  // primeAndProbeKMSv2: the first Status (and DEK source) inline; failures go on in the background.
  await Promise.all(built.v2.map((p) => p.start()));
  return {
    config,
    hash: configHash(data),
    transformers: built.transformers,
    probes: built.probes,
    kmsNames: new Set(built.probes.map((p) => p.name)),
    close: () => built.v2.forEach((p) => p.stop()),
  };
}

const aggregate = (errs: string[]) => (errs.length === 1 ? errs[0]! : `[${errs.join(', ')}]`);

// ---------------------------------------------------------------------------------------------
// Decoding (the universal decoder is lenient: unknown fields are dropped, wrong types fail).

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function str(v: unknown, field: string): string {
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw new Error(`json: cannot unmarshal ${goType(v)} into Go struct field ${field} of type string`);
  return v;
}
function arr(v: unknown, field: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new Error(`json: cannot unmarshal ${goType(v)} into Go struct field ${field} of type []`);
  return v;
}
function obj(v: unknown, field: string): Obj | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObj(v)) throw new Error(`json: cannot unmarshal ${goType(v)} into Go struct field ${field} of type object`);
  return v;
}
const goType = (v: unknown) => (Array.isArray(v) ? 'array' : typeof v === 'number' ? 'number' : typeof v);

function decodeConfig(data: Buffer): EncryptionConfiguration {
  let doc: unknown;
  try {
    doc = parseYaml(data.toString('utf8'));
  } catch (err) {
    throw new Error(`yaml: ${(err as Error).message.split('\n')[0]}`);
  }
  if (!isObj(doc)) throw new Error("Object 'Kind' is missing in the file");
  const kind = doc.kind;
  const apiVersion = doc.apiVersion;
  if (typeof kind !== 'string' || kind === '') throw new Error(`Object 'Kind' is missing in '${data.toString('utf8').trim().slice(0, 80)}'`);
  if (apiVersion !== 'apiserver.config.k8s.io/v1' || kind !== 'EncryptionConfiguration') {
    throw new Error(`no kind "${kind}" is registered for version "${String(apiVersion)}" in scheme "pkg/runtime/scheme.go:100"`);
  }
  const resources: ResourceConfig[] = arr(doc.resources, 'EncryptionConfiguration.resources').map((r) => {
    const ro = obj(r, 'EncryptionConfiguration.resources') ?? {};
    return {
      resources: arr(ro.resources, 'ResourceConfiguration.resources').map((s) => str(s, 'ResourceConfiguration.resources')),
      providers: arr(ro.providers, 'ResourceConfiguration.providers').map((p) => decodeProvider(obj(p, 'ResourceConfiguration.providers') ?? {})),
    };
  });
  return { apiVersion: 'apiserver.config.k8s.io/v1', kind: 'EncryptionConfiguration', resources };
}

function decodeProvider(p: Obj): ProviderConfig {
  const out: ProviderConfig = {};
  for (const kind of ['aescbc', 'aesgcm', 'secretbox'] as const) {
    const k = obj(p[kind], `ProviderConfiguration.${kind}`);
    if (k) {
      out[kind] = {
        keys: arr(k.keys, `KeyConfiguration.keys`).map((key) => {
          const ko = obj(key, 'KeyConfiguration.keys') ?? {};
          return { name: str(ko.name, 'Key.name'), secret: str(ko.secret, 'Key.secret') };
        }),
      };
    }
  }
  if (obj(p.identity, 'ProviderConfiguration.identity') !== undefined) out.identity = {};
  const kms = obj(p.kms, 'ProviderConfiguration.kms');
  if (kms) {
    const cachesize = kms.cachesize;
    if (cachesize !== undefined && cachesize !== null && typeof cachesize !== 'number') {
      throw new Error(`json: cannot unmarshal ${goType(cachesize)} into Go struct field KMSConfiguration.cachesize of type int32`);
    }
    out.kms = {
      apiVersion: str(kms.apiVersion, 'KMSConfiguration.apiVersion') || 'v1', // SetDefaults_KMSConfiguration
      name: str(kms.name, 'KMSConfiguration.name'),
      endpoint: str(kms.endpoint, 'KMSConfiguration.endpoint'),
      timeout: str(kms.timeout, 'KMSConfiguration.timeout') || '3s',
      ...(typeof cachesize === 'number' ? { cachesize } : {}),
    };
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Validation (apis/apiserver/validation/validation.go).

const AES_KEY_SIZES = [16, 24, 32];
const SECRETBOX_KEY_SIZES = [32];
const STD_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

const invalid = (path: string, value: string, detail: string) => `${path}: Invalid value: ${JSON.stringify(value)}: ${detail}`;
const required = (path: string, detail: string) => `${path}: Required value: ${detail}`;

function validateConfig(c: EncryptionConfiguration, opts: LoadOptions): string[] {
  const errs: string[] = [];
  if (c.resources.length === 0) return [required('resources', 'at least one resources is required')];
  const kmsNames = new Set<string>();
  c.resources.forEach((rc, i) => {
    const r = `resources[${i}].resources`;
    const p = `resources[${i}].providers`;
    if (rc.resources.length === 0) errs.push(required(r, `at least one ${r} is required`));
    if (atLeast(opts.version, 27)) errs.push(...validateResources(rc.resources, r));
    if (rc.providers.length === 0) errs.push(required(p, `at least one ${p} is required`));
    rc.providers.forEach((provider, j) => {
      const path = `${p}[${j}]`;
      const kinds = (['kms', 'aesgcm', 'aescbc', 'secretbox', 'identity'] as const).filter((k) => provider[k] !== undefined);
      if (kinds.length === 0) {
        errs.push(invalid(path, 'REDACTED', 'provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity'));
        return;
      }
      if (kinds.length > 1) {
        errs.push(invalid(path, 'REDACTED', 'more than one provider specified in a single element, should split into different list elements'));
        return;
      }
      const kind = kinds[0]!;
      if (kind === 'kms') errs.push(...validateKms(provider.kms!, `${path}.kms`, kmsNames, opts));
      else if (kind !== 'identity') {
        errs.push(...validateKeys(provider[kind]!.keys, `${path}.${kind}.keys`, kind === 'secretbox' ? SECRETBOX_KEY_SIZES : AES_KEY_SIZES));
      }
    });
  });
  return errs;
}

function validateKeys(keys: { name: string; secret: string }[], path: string, sizes: number[]): string[] {
  if (keys.length === 0) return [required(path, 'at least one keys is required')];
  const errs: string[] = [];
  keys.forEach((key, i) => {
    const kp = `${path}[${i}]`;
    if (key.name === '') errs.push(required(`${kp}.name`, 'name is a mandatory field for a key'));
    if (key.secret === '') {
      errs.push(required(`${kp}.secret`, 'secret is a mandatory field for a key'));
      return;
    }
    if (!STD_BASE64.test(key.secret)) {
      errs.push(invalid(`${kp}.secret`, 'REDACTED', 'secrets must be base64 encoded'));
      return;
    }
    const len = Buffer.from(key.secret, 'base64').length;
    if (!sizes.includes(len)) {
      errs.push(invalid(`${kp}.secret`, 'REDACTED', `secret is not of the expected length, got ${len}, expected one of [${sizes.join(' ')}]`));
    }
  });
  return errs;
}

function validateKms(
  k: NonNullable<ProviderConfig['kms']>,
  path: string,
  names: Set<string>,
  opts: LoadOptions,
): string[] {
  const errs: string[] = [];
  const v = k.apiVersion ?? 'v1';
  if (k.name === '') errs.push(required(`${path}.name`, 'name is a mandatory field for a provider'));
  if (v !== 'v1' && k.name.includes(':')) {
    errs.push(invalid(`${path}.name`, k.name, `invalid KMS provider name ${k.name}, must not contain ':'`));
  }
  if ((opts.reload || v !== 'v1') && names.has(k.name)) {
    errs.push(invalid(`${path}.name`, k.name, `duplicate KMS provider name ${k.name}, names must be unique`));
  }
  names.add(k.name);
  let timeoutOk = true;
  try {
    timeoutOk = goDurationMs(k.timeout ?? '3s') > 0;
  } catch {
    timeoutOk = false;
  }
  if (!timeoutOk) errs.push(invalid(`${path}.timeout`, k.timeout ?? '', 'timeout should be a positive value'));
  if (k.endpoint === '') errs.push(invalid(`${path}.endpoint`, '', 'endpoint is a mandatory field for a kms'));
  else {
    const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(k.endpoint)?.[1] ?? '';
    if (scheme !== 'unix') {
      errs.push(invalid(`${path}.endpoint`, k.endpoint, `unsupported scheme ${JSON.stringify(scheme)} for KMS provider, only unix is supported`));
    }
  }
  if (v === 'v1' && k.cachesize === 0) errs.push(invalid(`${path}.cachesize`, '0', 'cachesize should be a positive value, or negative to disable'));
  if (v === 'v2' && k.cachesize !== undefined) errs.push(invalid(`${path}.cachesize`, String(k.cachesize), 'cachesize is not supported in v2'));
  if (v !== 'v1' && v !== 'v2') errs.push(invalid(`${path}.apiVersion`, v, 'unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported'));
  return errs;
}

function goDurationMs(text: string): number {
  const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, ns: 0.000001 };
  const re = /(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)/gy;
  let total = 0;
  let seen = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    total += Number(m[1]) * units[m[2]!]!;
    seen += m[0].length;
  }
  if (text === '' || seen !== text.length) throw new Error(`time: invalid duration "${text}"`);
  return total;
}

// Resource rules added with wildcard support (1.27).
function validateResources(resources: string[], path: string): string[] {
  const errs: string[] = [];
  const seen = new Set<string>();
  const hasCoreStar = resources.includes('*.');
  const hasAllStar = resources.includes('*.*');
  resources.forEach((res, i) => {
    const rp = `${path}[${i}]`;
    if (res !== res.toLowerCase()) errs.push(invalid(rp, res, 'resource name should not contain capital letters'));
    const dot = res.indexOf('.');
    const resource = dot === -1 ? res : res.slice(0, dot);
    const group = dot === -1 ? '' : res.slice(dot + 1);
    if (res === '*') errs.push(invalid(rp, res, "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"));
    else if (resource !== '*' && group === '*') errs.push(invalid(rp, res, 'encrypting the same resource across groups is not supported'));
    if (group === 'extensions' || group.startsWith('extensions.')) {
      errs.push(invalid(rp, res, "'extensions' group has been removed and cannot be used for encryption"));
    }
    if (group === 'events.k8s.io') {
      errs.push(invalid(rp, res, "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"));
    }
    if (seen.has(res)) errs.push(invalid(rp, res, 'the same resource cannot be specified multiple times'));
    seen.add(res);
    const overlapsCore = hasCoreStar && res !== '*.' && group === '' && res !== '*.*';
    const overlapsAll = hasAllStar && res !== '*.*';
    if (overlapsCore || overlapsAll) {
      errs.push(invalid(rp, res, "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked"));
    }
  });
  return errs;
}

// ---------------------------------------------------------------------------------------------
// Building (server/options/encryptionconfig/config.go).

/** Before 1.27 wildcard entries are not special: they name no real resource and match nothing. */
function effectiveConfig(c: EncryptionConfiguration, version: KubeVersion): EncryptionConfiguration {
  if (atLeast(version, 27)) return c;
  return { ...c, resources: c.resources.map((r) => ({ ...r, resources: r.resources.filter((x) => !x.includes('*')) })) };
}

const grString = (res: string) => {
  const dot = res.indexOf('.');
  return dot === -1 ? res : `${res.slice(0, dot)}.${res.slice(dot + 1)}`;
};

function checkBuildable(c: EncryptionConfiguration, opts: LoadOptions): void {
  const configured = new Set<string>();
  for (const rc of c.resources) {
    for (const p of rc.providers) {
      if (p.kms && (p.kms.apiVersion ?? 'v1') === 'v1' && atLeast(opts.version, 29) && !opts.featureGates.KMSv1) {
        throw new Error(
          'KMSv1 is deprecated and will only receive security updates going forward. Use KMSv2 instead.  Set --feature-gates=KMSv1=true to use the deprecated KMSv1 feature.',
        );
      }
    }
    for (const res of rc.resources) {
      const dot = res.indexOf('.');
      const group = dot === -1 ? '' : res.slice(dot + 1);
      const anyInGroup = `*.${group}`;
      if (configured.has(anyInGroup)) throw new Error(`resource ${JSON.stringify(grString(res))} is masked by earlier rule ${JSON.stringify(anyInGroup)}`);
      if (configured.has('*.*')) throw new Error(`resource ${JSON.stringify(grString(res))} is masked by earlier rule "*.*"`);
      configured.add(res);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Transformers (config.go getTransformerOverridesAndKMSPluginProbes, transformerFromOverrides).

interface Built {
  transformers: Record<StoredResource, Transformer | undefined>;
  probes: KmsProbe[];
  v2: KmsV2Provider[];
}

const groupResource = (res: string) => {
  const dot = res.indexOf('.'); // schema.ParseGroupResource
  return dot === -1 ? { group: '', resource: res } : { group: res.slice(dot + 1), resource: res.slice(0, dot) };
};
const grKey = (group: string, resource: string) => `${resource}\u0000${group}`;

function buildTransformers(c: EncryptionConfiguration, opts: LoadOptions): Built {
  const probes: KmsProbe[] = [];
  const v2: KmsV2Provider[] = [];
  const byGr = new Map<string, PrefixTransformer[]>();
  for (const rc of c.resources) {
    const list = rc.providers.map((p) => providerTransformer(p, opts, probes, v2));
    for (const res of rc.resources) {
      const gr = groupResource(res);
      const key = grKey(gr.group, gr.resource);
      byGr.set(key, [...(byGr.get(key) ?? []), ...list]);
    }
  }
  const lookup = (res: string) => {
    const gr = groupResource(res);
    const list = byGr.get(grKey(gr.group, gr.resource)) ?? byGr.get(grKey(gr.group, '*')) ?? byGr.get(grKey('*', '*'));
    return list && prefixTransformers('no matching prefix found', list, opts.record);
  };
  const transformers = Object.fromEntries(STORED_RESOURCES.map((r) => [r, lookup(r)])) as Built['transformers'];
  return { transformers, probes, v2 };
}

function providerTransformer(p: ProviderConfig, opts: LoadOptions, probes: KmsProbe[], v2: KmsV2Provider[]): PrefixTransformer {
  const prefixed = (prefix: string, transformer: Transformer) => ({ prefix: Buffer.from(prefix), transformer });
  const keyed = (prefix: string, noMatch: string, keys: KeyConfig[], make: (key: Buffer) => Transformer) =>
    prefixed(prefix, prefixTransformers(noMatch, keys.map((k) => prefixed(`${k.name}:`, make(Buffer.from(k.secret, 'base64')))), opts.record));
  if (p.aesgcm) return keyed('k8s:enc:aesgcm:v1:', 'no matching key was found for the provided AES transformer', p.aesgcm.keys, gcmTransformer);
  if (p.aescbc) return keyed('k8s:enc:aescbc:v1:', 'no matching key was found for the provided AES transformer', p.aescbc.keys, cbcTransformer);
  if (p.secretbox) return keyed('k8s:enc:secretbox:v1:', 'no matching key was found for the provided Secretbox transformer', p.secretbox.keys, secretboxTransformer);
  if (p.identity) return prefixed('', encryptCheckTransformer());
  const k = p.kms!;
  const timeoutMs = goDurationMs(k.timeout);
  if (k.apiVersion === 'v1') {
    const plugin = opts.kms.v1(k.name, k.endpoint, timeoutMs);
    probes.push(kmsV1Probe(k.name, plugin));
    return prefixed(`k8s:enc:kms:v1:${k.name}:`, kmsV1EnvelopeTransformer(plugin, k.cachesize ?? 1000, opts.version));
  }
  const useSeed = opts.featureGates.KMSv2KDF ?? atLeast(opts.version, 29);
  const provider = new KmsV2Provider(k.name, opts.kms.v2(k.name, k.endpoint, timeoutMs), useSeed);
  probes.push(provider);
  v2.push(provider);
  return prefixed(`k8s:enc:kms:v2:${k.name}:`, provider.envelope());
}
