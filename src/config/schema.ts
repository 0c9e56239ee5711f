import { z } from 'zod';

/**
 * EncryptionConfiguration (apiserver.config.k8s.io/v1) as the apiserver decodes it: a missing or
 * null field is its Go zero value ("" or an empty list; a nil pointer for a provider, cachesize
 * and timeout), so that validate.ts can report it with upstream's "Required value" message; a
 * wrong type fails. `.strict()` finds unknown fields, which parse.ts reports as the version
 * decides (dropped before strict decoding, refused from 1.31). Semantic rules live in validate.ts.
 */
const goString = z.string().default('');
const goList = <T extends z.ZodType>(item: T) => z.array(item).default([]);

const KeySchema = z.object({ name: goString, secret: goString }).strict();
const KeysProviderSchema = z.object({ keys: goList(KeySchema.default({ name: '', secret: '' })) }).strict();
const IdentitySchema = z.object({}).strict();
const KmsSchema = z
  .object({
    apiVersion: z.string().optional(),
    name: goString,
    endpoint: goString,
    cachesize: z.number().int().min(-2147483648).max(2147483647).optional(),
    timeout: z.string().optional(),
  })
  .strict();

const ProviderSchema = z
  .object({
    aescbc: KeysProviderSchema.optional(),
    aesgcm: KeysProviderSchema.optional(),
    secretbox: KeysProviderSchema.optional(),
    identity: IdentitySchema.optional(),
    kms: KmsSchema.optional(),
  })
  .strict();

const ResourceConfigSchema = z
  .object({ resources: goList(goString), providers: goList(ProviderSchema.default({})) })
  .strict();

/** The registered form. */
export const API_VERSION = 'apiserver.config.k8s.io/v1';
export const KIND = 'EncryptionConfiguration';
/** The form from before 1.13, still registered by every apiserver ("due to a docs bug"). */
export const LEGACY_API_VERSION = 'v1';
export const LEGACY_KIND = 'EncryptionConfig';

export const EncryptionConfigurationSchema = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal(KIND),
    resources: goList(ResourceConfigSchema.default({ resources: [], providers: [] })),
  })
  .strict();

export type EncryptionKey = z.infer<typeof KeySchema>;
export type KmsConfig = z.infer<typeof KmsSchema>;
export type ProviderConfig = z.infer<typeof ProviderSchema>;
export type ResourceConfig = z.infer<typeof ResourceConfigSchema>;
export type EncryptionConfiguration = z.infer<typeof EncryptionConfigurationSchema>;

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
