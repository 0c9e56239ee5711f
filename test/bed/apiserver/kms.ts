/**
 * KMS plugins as the apiserver reaches them: gRPC on a unix socket that must be visible inside the
 * pod (the socket's directory needs a hostPath mount), one probe per provider, and the KMS health
 * checks on /healthz|/readyz (`kms-providers` with v2 or automatic reload, `kms-provider-N`
 * otherwise).
 */
import { kmsV1Plugin, kmsV2Plugin, type KmsV1Plugin, type KmsV2Plugin } from './kms-grpc';
import type { PodFs } from './mounts';

type Connection = { version: 'v1'; endpoint: string; plugin: KmsV1Plugin } | { version: 'v2'; endpoint: string; plugin: KmsV2Plugin };

/** What a health check asks of a provider: throws with upstream's message when it is unhealthy. */
export interface KmsProbe {
  name: string;
  apiVersion: 'v1' | 'v2';
  check(): Promise<void>;
}

/** The probes' answer cache: 20 s after a healthy answer, 3 s after a failure (kmsPluginHealthz*TTL). */
export function cachedCheck(run: () => Promise<void>): () => Promise<void> {
  let last: { at: number; ttl: number; err?: Error } | undefined;
  return async () => {
    if (!last || Date.now() - last.at >= last.ttl) {
      const err = await run().then(() => undefined, (e: Error) => e);
      last = { at: Date.now(), ttl: err ? 3_000 : 20_000, err };
    }
    if (last.err) throw last.err;
  };
}

/** kmsPluginProbe (v1): encrypt then decrypt "ping". */
export function kmsV1Probe(name: string, plugin: KmsV1Plugin): KmsProbe {
  const check = cachedCheck(async () => {
    let cipher: Buffer;
    try {
      cipher = await plugin.encrypt(Buffer.from('ping'));
    } catch (err) {
      throw new Error(`failed to perform encrypt section of the healthz check for KMS Provider ${name}, error: ${(err as Error).message}`);
    }
    try {
      await plugin.decrypt(cipher);
    } catch (err) {
      throw new Error(`failed to perform decrypt section of the healthz check for KMS Provider ${name}, error: ${(err as Error).message}`);
    }
  });
  return { name, apiVersion: 'v1', check };
}

export class KmsPlugins {
  /** By provider name: one connection per plugin, reused across reloads. */
  private readonly connections = new Map<string, Connection>();

  constructor(private readonly fs: PodFs) {}

  /** The endpoint as the host sees it; an unmounted socket stays unreachable, as in the pod. */
  private hostEndpoint(endpoint: string): string {
    const path = endpoint.replace(/^unix:\/\//, '');
    return `unix://${this.fs.hostPathOf(path) ?? `/nonexistent-outside-pod-mounts${path}`}`;
  }

  /** The plugin connection of a provider, reused while its name, API and endpoint stay the same. */
  private connect<P extends KmsV1Plugin | KmsV2Plugin>(version: 'v1' | 'v2', name: string, endpoint: string, make: (host: string) => P): P {
    const host = this.hostEndpoint(endpoint);
    const c = this.connections.get(name);
    if (c?.version === version && c.endpoint === host) return c.plugin as P;
    const plugin = make(host);
    this.connections.set(name, { version, endpoint: host, plugin } as Connection);
    return plugin;
  }

  v1(name: string, endpoint: string, timeoutMs: number): KmsV1Plugin {
    return this.connect('v1', name, endpoint, (host) => kmsV1Plugin(host, timeoutMs));
  }

  v2(name: string, endpoint: string, timeoutMs: number): KmsV2Plugin {
    return this.connect('v2', name, endpoint, (host) => kmsV2Plugin(host, timeoutMs));
  }

  healthChecks(probes: readonly KmsProbe[], reload: boolean): Map<string, () => Promise<true | string>> {
    const checks = new Map<string, () => Promise<true | string>>();
    if (probes.length === 0) return checks;
    const probe = (p: KmsProbe) => p.check().then(() => true as const, (err: Error) => err.message);
    if (reload || probes.every((p) => p.apiVersion === 'v2')) {
      checks.set('kms-providers', async () => {
        for (const p of probes) {
          const r = await probe(p);
          if (r !== true) return r;
        }
        return true;
      });
    } else {
      probes.forEach((p, i) => checks.set(`kms-provider-${i}`, () => probe(p)));
    }
    return checks;
  }

  /** After a reload: close connections to plugins the new config no longer names. */
  retireUnused(names: ReadonlySet<string>): void {
    for (const [name, c] of this.connections) {
      if (!names.has(name)) {
        this.connections.delete(name);
        // In-flight calls may still use it; upstream also closes old transformers after a grace period.
        setTimeout(() => c.plugin.close(), 10_000).unref();
      }
    }
  }

  closeAll(): void {
    for (const c of this.connections.values()) c.plugin.close();
    this.connections.clear();
  }
}
