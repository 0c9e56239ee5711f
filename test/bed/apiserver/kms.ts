/**
 * KMS plugins as the apiserver reaches them: gRPC on a unix socket that must be visible inside the
 * pod (the socket's directory needs a hostPath mount), and the KMS health checks on
 * /healthz|/readyz (`kms-providers` with v2 or automatic reload, `kms-provider-N` otherwise).
 */
import type { KmsV1Factory, KmsV2Factory } from '../../../src/etcd/codec';
import type { EncryptionConfiguration } from '../../../src/config/schema';
import { connectKmsV1, connectKmsV2, type KmsV1Client, type KmsV2Client } from '../../../src/kms/client';
import type { PodFs } from './mounts';

type Plugin = { version: 'v1'; client: KmsV1Client } | { version: 'v2'; client: KmsV2Client };

export class KmsPlugins {
  /** By provider name: one connection per plugin, reused across reloads. */
  private readonly plugins = new Map<string, Plugin>();

  constructor(private readonly fs: PodFs) {}

  /** The endpoint as the host sees it; an unmounted socket stays unreachable, as in the pod. */
  private hostEndpoint(endpoint: string): string {
    const path = endpoint.replace(/^unix:\/\//, '');
    return `unix://${this.fs.hostPathOf(path) ?? `/nonexistent-outside-pod-mounts${path}`}`;
  }

  factories(): { v1: KmsV1Factory; v2: KmsV2Factory } {
    return {
      v1: (name, endpoint, timeoutMs) => {
        const existing = this.plugins.get(name);
        if (existing?.version === 'v1' && existing.client.endpoint === this.hostEndpoint(endpoint)) return existing.client;
        const client = connectKmsV1(this.hostEndpoint(endpoint), { timeoutMs });
        this.plugins.set(name, { version: 'v1', client });
        return client;
      },
      v2: (name, endpoint, timeoutMs) => {
        const existing = this.plugins.get(name);
        if (existing?.version === 'v2' && existing.client.endpoint === this.hostEndpoint(endpoint)) return existing.client;
        const client = connectKmsV2(this.hostEndpoint(endpoint), { timeoutMs });
        this.plugins.set(name, { version: 'v2', client });
        return client;
      },
    };
  }

  private kmsProviders(config: EncryptionConfiguration | undefined) {
    return (config?.resources ?? []).flatMap((r) => r.providers.flatMap((p) => (p.kms ? [p.kms] : [])));
  }

  healthChecks(config: EncryptionConfiguration | undefined, reload: boolean): Map<string, () => Promise<true | string>> {
    const checks = new Map<string, () => Promise<true | string>>();
    const providers = this.kmsProviders(config);
    if (providers.length === 0) return checks;
    const probe = async (name: string): Promise<true | string> => {
      const p = this.plugins.get(name);
      if (!p) return `KMS provider ${name} has no connection`;
      try {
        if (p.version === 'v2') {
          const s = await p.client.status();
          if (s.healthz !== 'ok') return `got unexpected healthz status: ${s.healthz}`;
          if (s.version !== 'v2' && s.version !== 'v2beta1') return `expected KMSv2 API version v2, got ${s.version}`;
          if (!s.keyId) return 'got invalid KMSv2 KeyID: empty';
        } else {
          await p.client.decrypt(await p.client.encrypt(Buffer.from('ping')));
        }
        return true;
      } catch (err) {
        return `failed to perform the healthz check for KMS Provider ${name}, error: ${(err as Error).message}`;
      }
    };
    const allV2 = providers.every((p) => (p.apiVersion ?? 'v1') === 'v2');
    if (reload || allV2) {
      checks.set('kms-providers', async () => {
        for (const p of providers) {
          const r = await probe(p.name);
          if (r !== true) return r;
        }
        return true;
      });
    } else {
      providers.forEach((p, i) => checks.set(`kms-provider-${i}`, () => probe(p.name)));
    }
    return checks;
  }

  /** After a reload: close connections to plugins the new config no longer names. */
  retireUnused(config: EncryptionConfiguration): void {
    const names = new Set(this.kmsProviders(config).map((p) => p.name));
    for (const [name, p] of this.plugins) {
      if (!names.has(name)) {
        this.plugins.delete(name);
        // In-flight calls may still use it; upstream also closes old transformers after a grace period.
        setTimeout(() => p.client.close(), 10_000).unref();
      }
    }
  }

  closeAll(): void {
    for (const p of this.plugins.values()) p.client.close();
    this.plugins.clear();
  }
}
