import { z } from 'zod';

/**
 * EncryptionConfiguration (apiserver.config.k8s.io/v1) as the apiserver reads it. The schema
 * checks shape only; the upstream semantic rules live in ./validate.ts.
 */
export const KeySchema = z.object({ name: z.string(), secret: z.string() }).strict();
export const KeysProviderSchema = z.object({ keys: z.array(KeySchema) }).strict();
export const IdentitySchema = z.object({}).strict();
export const KmsSchema = z
  .object({
    apiVersion: z.string().optional(),
    name: z.string(),
    endpoint: z.string(),
    cachesize: z.number().int().optional(),
    timeout: z.string().optional(),
  })
  .strict();

export const ProviderSchema = z
  .object({
    aescbc: KeysProviderSchema.optional(),
    aesgcm: KeysProviderSchema.optional(),
    secretbox: KeysProviderSchema.optional(),
    identity: IdentitySchema.optional(),
    kms: KmsSchema.optional(),
  })
  .strict();

export const ResourceConfigSchema = z
  .object({ resources: z.array(z.string()), providers: z.array(ProviderSchema) })
  .strict();

export const EncryptionConfigurationSchema = z
  .object({
    apiVersion: z.literal('apiserver.config.k8s.io/v1'),
    kind: z.literal('EncryptionConfiguration'),
    resources: z.array(ResourceConfigSchema),
  })
  .strict();

export type EncryptionKey = z.infer<typeof KeySchema>;
export type KmsConfig = z.infer<typeof KmsSchema>;
export type ProviderConfig = z.infer<typeof ProviderSchema>;
export type ResourceConfig = z.infer<typeof ResourceConfigSchema>;
export type EncryptionConfiguration = z.infer<typeof EncryptionConfigurationSchema>;

export const PROVIDER_KINDS = ['aescbc', 'aesgcm', 'secretbox', 'identity', 'kms'] as const;
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
