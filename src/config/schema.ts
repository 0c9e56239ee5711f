import { receivedType } from '../ui/type-names';

/**
 * EncryptionConfiguration (apiserver.config.k8s.io/v1) as the apiserver decodes it: a missing or
 * null field is its Go zero value ("" or an empty list; a nil pointer for a provider, cachesize
 * and timeout), so that validate.ts can report it with upstream's "Required value" message; a
 * wrong type fails. Unknown fields are found (strict), and parse.ts reports them as the version
 * decides (dropped before strict decoding, refused from 1.31). Semantic rules live in validate.ts.
 *
 * The decoder is plain code rather than a schema library: `status` and `re-encrypt-all` read the
 * config on every run, and loading zod for it cost 10-14 MB of RSS. Its issues are the ones the
 * zod schema gave (codes, paths, messages, order), which test/unit/config-decode.test.ts checks
 * against that schema.
 */
export interface EncryptionKey {
  name: string;
  secret: string;
}
export interface KmsConfig {
  apiVersion?: string;
  name: string;
  endpoint: string;
  cachesize?: number;
  timeout?: string;
}
export interface ProviderConfig {
  aescbc?: { keys: EncryptionKey[] };
  aesgcm?: { keys: EncryptionKey[] };
  secretbox?: { keys: EncryptionKey[] };
  identity?: Record<string, never>;
  kms?: KmsConfig;
}
export interface ResourceConfig {
  resources: string[];
  providers: ProviderConfig[];
}
export interface EncryptionConfiguration {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  resources: ResourceConfig[];
}

/** The registered form. */
export const API_VERSION = 'apiserver.config.k8s.io/v1';
export const KIND = 'EncryptionConfiguration';
/** The form from before 1.13, still registered by every apiserver ("due to a docs bug"). */
export const LEGACY_API_VERSION = 'v1';
export const LEGACY_KIND = 'EncryptionConfig';

/** One reason a document does not decode; `keys` for unrecognized_keys. */
export interface DecodeIssue {
  code: 'invalid_type' | 'invalid_value' | 'too_big' | 'too_small' | 'unrecognized_keys';
  path: PropertyKey[];
  message: string;
  keys?: string[];
}

type Path = PropertyKey[];
/** Decodes one value at `path`, pushing what is wrong; the result is only used when nothing is. */
type Decoder = (v: unknown, path: Path, issues: DecodeIssue[]) => unknown;

const wrongType = (want: string, v: unknown, path: Path): DecodeIssue => ({
  code: 'invalid_type',
  path,
  message: `Invalid input: expected ${want}, received ${receivedType(v)}`,
});

const withDefault = (d: Decoder, zero: () => unknown): Decoder => (v, path, issues) => (v === undefined ? zero() : d(v, path, issues));
const optional = (d: Decoder): Decoder => (v, path, issues) => (v === undefined ? undefined : d(v, path, issues));

const string: Decoder = (v, path, issues) => {
  if (typeof v !== 'string') issues.push(wrongType('string', v, path));
  return v;
};
const goString = withDefault(string, () => '');

const INT32 = [-2147483648, 2147483647] as const;
const int32: Decoder = (v, path, issues) => {
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    issues.push(wrongType('number', v, path));
    return v;
  }
  if (!Number.isInteger(v)) issues.push(wrongType('int', v, path));
  else if (v > Number.MAX_SAFE_INTEGER) issues.push({ code: 'too_big', path, message: `Too big: expected int to be <=${Number.MAX_SAFE_INTEGER}` });
  else if (v < Number.MIN_SAFE_INTEGER) issues.push({ code: 'too_small', path, message: `Too small: expected int to be >=${Number.MIN_SAFE_INTEGER}` });
  if (v < INT32[0]) issues.push({ code: 'too_small', path, message: `Too small: expected number to be >=${INT32[0]}` });
  if (v > INT32[1]) issues.push({ code: 'too_big', path, message: `Too big: expected number to be <=${INT32[1]}` });
  return v;
};

const literal = (want: string): Decoder => (v, path, issues) => {
  if (v !== want) issues.push({ code: 'invalid_value', path, message: `Invalid input: expected ${JSON.stringify(want)}` });
  return v;
};

const goList = (item: Decoder): Decoder =>
  withDefault((v, path, issues) => {
    if (!Array.isArray(v)) {
      issues.push(wrongType('array', v, path));
      return v;
    }
    return v.map((x, i) => item(x, [...path, i], issues));
  }, () => []);

/** A mapping with exactly these fields (in this order); absent optional ones stay absent. */
const strict = (shape: Record<string, Decoder>): Decoder => (v, path, issues) => {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    issues.push(wrongType('object', v, path));
    return v;
  }
  const input = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [key, d] of Object.entries(shape)) {
    const x = d(input[key], [...path, key], issues);
    if (x !== undefined) out[key] = x;
  }
  const unknown = Object.keys(input).filter((k) => !(k in shape));
  if (unknown.length) {
    const list = unknown.map((k) => JSON.stringify(k)).join(', ');
    issues.push({ code: 'unrecognized_keys', path, keys: unknown, message: `Unrecognized key${unknown.length > 1 ? 's' : ''}: ${list}` });
  }
  return out;
};

const key = strict({ name: goString, secret: goString });
const keysProvider = strict({ keys: goList(withDefault(key, () => ({ name: '', secret: '' }))) });
const provider = strict({
  aescbc: optional(keysProvider),
  aesgcm: optional(keysProvider),
  secretbox: optional(keysProvider),
  identity: optional(strict({})),
  kms: optional(
    strict({ apiVersion: optional(string), name: goString, endpoint: goString, cachesize: optional(int32), timeout: optional(string) }),
  ),
});
const resourceConfig = strict({ resources: goList(goString), providers: goList(withDefault(provider, () => ({}))) });
const configuration = strict({
  apiVersion: literal(API_VERSION),
  kind: literal(KIND),
  resources: goList(withDefault(resourceConfig, () => ({ resources: [], providers: [] }))),
});

/** The decoded config, or every issue (in document order, each mapping's unknown fields after
 * its fields). */
export function decodeEncryptionConfiguration(
  doc: unknown,
): { success: true; data: EncryptionConfiguration } | { success: false; issues: DecodeIssue[] } {
  const issues: DecodeIssue[] = [];
  const data = configuration(doc, [], issues);
  return issues.length ? { success: false, issues } : { success: true, data: data as EncryptionConfiguration };
}

const PROVIDER_KINDS = ['aescbc', 'aesgcm', 'secretbox', 'identity', 'kms'] as const;
export type ProviderKind = (typeof PROVIDER_KINDS)[number];

/** The provider kinds set in one element (a valid element has exactly one). */
export function providerKinds(p: ProviderConfig): ProviderKind[] {
  return PROVIDER_KINDS.filter((k) => p[k] !== undefined);
}

/**
 * The etcd value prefix a provider element writes with its first key, e.g.
 * `k8s:enc:aescbc:v1:key1:`; `undefined` for identity (plaintext).
 */
export function writePrefix(p: ProviderConfig): string | undefined {
  const [kind] = providerKinds(p);
  if (kind === 'aescbc' || kind === 'aesgcm' || kind === 'secretbox') {
    const key = p[kind]!.keys[0];
    return key ? `k8s:enc:${kind}:v1:${key.name}:` : undefined;
  }
  if (kind === 'kms') return `k8s:enc:kms:${p.kms!.apiVersion ?? 'v1'}:${p.kms!.name}:`;
  return undefined;
}
