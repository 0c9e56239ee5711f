/**
 * The current key id of each KMS v2 provider of a config, from its plugin's Status: what makes a
 * stored KMS v2 value stale once the plugin's key changes (src/etcd/scan.ts kmsKeyIds).
 */
import type { EncryptionConfiguration } from '../config/schema';
import { connectKmsV2 } from './client';

export interface KmsKeyIds {
  keyIds: Record<string, string>;
  /** Providers whose key id could not be had, and why. */
  unknown: { name: string; reason: string }[];
}

/** `socketOnHost` maps the config's endpoint path (as the pod sees it) to the host's. */
export async function currentKmsKeyIds(cfg: EncryptionConfiguration, socketOnHost: (podPath: string) => string, timeoutMs = 3000): Promise<KmsKeyIds> {
  const out: KmsKeyIds = { keyIds: {}, unknown: [] };
  const seen = new Set<string>();
  for (const rule of cfg.resources) {
    for (const p of rule.providers) {
      const k = p.kms;
      if (!k || k.apiVersion !== 'v2' || seen.has(k.name)) continue;
      seen.add(k.name);
      const client = connectKmsV2(`unix://${socketOnHost(k.endpoint.replace(/^unix:\/\//, ''))}`, { timeoutMs });
      try {
        const s = await client.status();
        if (s.keyId) out.keyIds[k.name] = s.keyId;
        else out.unknown.push({ name: k.name, reason: 'its Status reports no key id' });
      } catch (err) {
        out.unknown.push({ name: k.name, reason: (err as Error).message });
      } finally {
        client.close();
      }
    }
  }
  return out;
}
