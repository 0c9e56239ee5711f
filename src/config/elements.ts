import { LOCAL_PROVIDERS } from './keys';
import type { EncryptionConfiguration, ProviderConfig } from './schema';

/** Finding a transition's new element in a config again, and the names a config already uses. Pure. */

export const localKindOf = (el: ProviderConfig) => LOCAL_PROVIDERS.find((k) => el[k] !== undefined);

/** The element named `name` in a config (the key, alone in its provider kind; or the KMS provider). */
export function findElement(cfg: EncryptionConfiguration, provider: string, name: string): ProviderConfig | undefined {
  for (const rule of cfg.resources) {
    for (const p of rule.providers) {
      if (provider === 'kms' && p.kms?.name === name) return structuredClone(p);
      const local = localKindOf(p);
      if (local && local === provider) {
        const k = p[local]!.keys.find((x) => x.name === name);
        if (k) return { [local]: { keys: [{ ...k }] } };
      }
    }
  }
  return undefined;
}

export function takenNames(cfg: EncryptionConfiguration): string[] {
  return cfg.resources.flatMap((r) => r.providers.flatMap((p) => {
    const l = localKindOf(p);
    return l ? p[l]!.keys.map((k) => k.name) : p.kms ? [p.kms.name] : [];
  }));
}


/** Names of the local keys a config holds (KMS providers hold none: the plugin keeps its key). */
export function keyNamesOf(cfg: EncryptionConfiguration): string[] {
  return [...new Set(cfg.resources.flatMap((r) => r.providers.flatMap((p) => {
    const l = localKindOf(p);
    return l ? p[l]!.keys.map((k) => k.name) : [];
  })))];
}
