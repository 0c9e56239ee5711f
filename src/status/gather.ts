/**
 * The gatherers behind `status`: each reads one source (this node's manifest and config, the
 * kubeadm-config ConfigMap, the control planes through the apiserver, etcd, KMS plugins) and
 * returns the evidence or the precise reason it could not. Read-only: nothing here writes to the
 * filesystem, the cluster or etcd. The I/O goes through `GatherDeps` so tests can point it at a
 * temp dir, the test bed or a real etcd.
 */
import { stat as fsStat } from 'node:fs/promises';
import { dirname, posix } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { ApiClient, ApiTarget } from '../cluster/api';
import type { LoadedConfig } from '../config/parse';
import type { EncryptionConfiguration } from '../config/schema';
import type { EtcdConnection, EtcdReader } from '../etcd/client';
import type { KmsHealthOptions, KmsHealthReport } from '../kms/health';
import { gatherApiservers, readServerVersion } from './gather-apiservers';
import { apiserverFlagsOf, CONFIG_FLAG, CONFIG_HASH_ANNOTATION, hostPathMountsOf, parseManifest, readApiserverFlags, RELOAD_FLAG } from '../manifest/manifest';
import {
  gathered,
  missing,
  reasonOf,
  skipped,
  type ApiserverFacts,
  type ConfigFacts,
  type Gathered,
  type KmsProviderFacts,
  type KubeadmConfigFacts,
  type ManifestFacts,
  type MountFacts,
  type StatusInput,
  type StatusOptions,
} from './types';


export { endpointFromArgs, gatherApiservers, metricsFacts } from './gather-apiservers';
export { reasonOf } from './types';

export interface GatherDeps {
  stat(path: string): Promise<{ mode: number; mtimeMs: number }>;
  readManifest(path: string): Promise<string>;
  loadConfig(path: string): Promise<LoadedConfig>;
  openEtcd(conn: EtcdConnection): Promise<EtcdReader>;
  /** A client for the kubeconfig's apiserver, or (with `server`) for one given apiserver. */
  apiClient(server?: { url: string; tlsServerName?: string }): Promise<ApiClient>;
  /** The kubeconfig's server URL (to keep verifying its DNS name when talking to an address). */
  kubeconfigServer(): Promise<string>;
  checkKms(endpoint: string, opts: KmsHealthOptions): Promise<KmsHealthReport>;
  now(): Date;
}

export interface GatherOptions extends Omit<StatusOptions, 'resources'> {
  manifestPath: string;
  /** --config given explicitly: read this file instead of the one the manifest names. */
  configPath?: string;
  /** Where the config is when neither --config nor the manifest says (kubeadm default). */
  defaultConfigPath: string;
  /** --resources given: scan these; otherwise secrets plus every resource the config names. */
  resources?: string[];
  nodeName?: string;
  kmsTimeoutMs?: number;
  signal?: AbortSignal;
  onProgress?: (msg: string) => void;
}

// ---------------------------------------------------------------------------------------------
// This node: manifest, config.

/** Where a path inside the pod lives on the host, through the pod's hostPath mounts. */
export function hostPathOf(mounts: readonly MountFacts[], podPath: string, types: Record<string, string | undefined> = {}): { mount: MountFacts; hostPath: string } | undefined {
  const p = posix.normalize(podPath);
  // The deepest mount wins, as in the container's mount table.
  const sorted = [...mounts].sort((a, b) => b.mountPath.length - a.mountPath.length);
  for (const m of sorted) {
    if (p === m.mountPath) return { mount: m, hostPath: m.hostPath };
    const t = types[m.volumeName];
    if (t === 'File' || t === 'FileOrCreate') continue;
    const prefix = m.mountPath === '/' ? '/' : `${m.mountPath}/`;
    if (p.startsWith(prefix)) return { mount: m, hostPath: posix.join(m.hostPath, p.slice(prefix.length)) };
  }
  return undefined;
}

export async function gatherManifest(deps: GatherDeps, path: string): Promise<Gathered<ManifestFacts & { text: string; mounts: MountFacts[] }>> {
  try {
    const text = await deps.readManifest(path);
    const m = parseManifest(text, path);
    const f = apiserverFlagsOf(m);
    const raw = hostPathMountsOf(m);
    const mounts = raw.map(({ volumeName, hostPath, mountPath, readOnly }) => ({ volumeName, hostPath, mountPath, readOnly }));
    const types = Object.fromEntries(raw.map((x) => [x.volumeName, x.type]));
    const configFlag = f.flags.get(CONFIG_FLAG);
    const via = configFlag ? hostPathOf(mounts, configFlag, types) : undefined;
    const annotations = (m.pod as { metadata?: { annotations?: Record<string, unknown> } }).metadata?.annotations ?? {};
    const sha = annotations[CONFIG_HASH_ANNOTATION];
    return gathered({
      path,
      text,
      mounts,
      args: f.args,
      ...(configFlag !== undefined ? { configFlag } : {}),
      ...(f.flags.has(RELOAD_FLAG) ? { reloadFlag: f.flags.get(RELOAD_FLAG) } : {}),
      ...(via ? { configMount: via.mount, configHostPath: via.hostPath } : {}),
      ...(typeof sha === 'string' && sha ? { configSha256Annotation: sha } : {}),
      ...(f.kubeVersionFromImage ? { kubeVersion: f.kubeVersionFromImage } : {}),
    });
  } catch (err) {
    return missing(reasonOf(err));
  }
}

const octal = (mode: number) => `0${(mode & 0o777).toString(8).padStart(3, '0')}`;

/** The resources to scan: given, or secrets plus every resource the config names (not wildcards). */
export function resourcesToScan(given: string[] | undefined, cfg: EncryptionConfiguration | undefined): string[] {
  if (given?.length) return [...new Set(given)];
  const named = cfg ? cfg.resources.flatMap((r) => r.resources).filter((r) => !r.includes('*')) : [];
  return [...new Set(['secrets', ...named])];
}

export async function gatherConfig(
  deps: GatherDeps,
  path: string,
  given: string[] | undefined,
  kubeVersion: string | undefined,
): Promise<{ facts: Gathered<ConfigFacts>; config?: EncryptionConfiguration; resources: string[] }> {
  let loaded: LoadedConfig;
  try {
    loaded = await deps.loadConfig(path);
  } catch (err) {
    return { facts: missing(reasonOf(err)), resources: resourcesToScan(given, undefined) };
  }
  const resources = resourcesToScan(given, loaded.config);
  try {
    const [{ summarizeConfig }, { transformersForResource, transformerLabel }, v, { scrubSecrets }] = await Promise.all([
      import('../config/model'),
      import('../etcd/codec'),
      import('../config/validate'),
      import('../config/parse'),
    ]);
    const [file, dir] = await Promise.all([deps.stat(path), deps.stat(dirname(path))]);
    const problems: string[] = [];
    const minor = kubeVersion ? kubeVersion.split('.').slice(0, 2).join('.') : undefined;
    for (const f of v.errorsOf(v.validateEncryptionConfig(loaded.config, { kubeVersion: minor }))) {
      problems.push(scrubSecrets(f.path ? `${f.path}: ${f.message}` : f.message, loaded.text));
    }
    const perResource = [...new Set(['secrets', ...resources])].map((resource) => {
      try {
        const labels = transformersForResource(loaded.config, resource).map(transformerLabel);
        return { resource, writeLabel: labels[0] ?? 'plaintext', readLabels: labels.length ? labels : ['plaintext'] };
      } catch (err) {
        problems.push(scrubSecrets(`${resource}: ${(err as Error).message}`, loaded.text));
        return { resource, writeLabel: 'unknown', readLabels: [] };
      }
    });
    return {
      config: loaded.config,
      resources,
      facts: gathered({
        path,
        mode: octal(file.mode),
        dirMode: octal(dir.mode),
        sha256: loaded.sha256,
        modifiedAt: new Date(file.mtimeMs).toISOString(),
        rules: summarizeConfig(loaded.config),
        resources: perResource,
        problems,
      }),
    };
  } catch (err) {
    return { facts: missing(reasonOf(err)), config: loaded.config, resources };
  }
}

/** The flag and volume in kubeadm's ClusterConfiguration (v1beta3 map or v1beta4 list). Pure. */
export function kubeadmConfigEntries(clusterConfiguration: string, configFlag: string | undefined): KubeadmConfigFacts {
  const doc = (parseYaml(clusterConfiguration) ?? {}) as Record<string, any>;
  const api = doc.apiServer ?? {};
  let flag: string | undefined;
  const extra = api.extraArgs;
  if (Array.isArray(extra)) {
    for (const a of extra) if (a?.name === CONFIG_FLAG) flag = String(a.value ?? '');
  } else if (extra && typeof extra === 'object' && CONFIG_FLAG in extra) {
    flag = String(extra[CONFIG_FLAG]);
  }
  let volume: string | undefined;
  const want = configFlag ?? flag;
  if (want && Array.isArray(api.extraVolumes)) {
    const mounts = api.extraVolumes
      .filter((x: any) => typeof x?.mountPath === 'string' && typeof x?.name === 'string')
      .map((x: any) => ({ volumeName: x.name, hostPath: String(x.hostPath ?? x.mountPath), mountPath: posix.normalize(x.mountPath).replace(/(.)\/+$/, '$1'), readOnly: x.readOnly === true }));
    volume = hostPathOf(mounts, want)?.mount.volumeName;
  }
  return {
    present: true,
    ...(typeof doc.apiVersion === 'string' ? { apiVersion: doc.apiVersion } : {}),
    ...(flag !== undefined ? { configFlag: flag } : {}),
    ...(volume ? { configVolume: volume } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// KMS plugins.

export async function gatherKms(
  deps: GatherDeps,
  config: ConfigFacts,
  mounts: readonly MountFacts[],
  timeoutMs: number,
): Promise<KmsProviderFacts[]> {
  const seen = new Map<string, KmsProviderFacts>();
  for (const rule of config.rules) {
    for (const p of rule.providers) {
      if (!p.kms || seen.has(p.kms.name)) continue;
      const { name, apiVersion, endpoint } = p.kms;
      let health: KmsProviderFacts['health'];
      const podSocket = endpoint.replace(/^unix:\/\//, '');
      const host = hostPathOf(mounts, podSocket)?.hostPath ?? podSocket;
      try {
        await deps.stat(host);
        if (apiVersion !== 'v1' && apiVersion !== 'v2') throw new Error(`unsupported apiVersion ${apiVersion}`);
        const r = await deps.checkKms(`unix://${host}`, { apiVersion, timeoutMs });
        health = gathered({ ok: r.ok, checks: r.checks, ...(r.keyId ? { keyId: r.keyId } : {}), ...(r.pluginVersion ? { pluginVersion: r.pluginVersion } : {}) });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        health = missing(code === 'ENOENT' ? `no socket at ${host} on this host (plugin not running here?)` : code === 'EACCES' ? `${host}: permission denied (run as root)` : reasonOf(err));
      }
      seen.set(name, { name, apiVersion, endpoint, health });
    }
  }
  return [...seen.values()];
}

// ---------------------------------------------------------------------------------------------

/** Runs every gatherer; never throws for a source that cannot be read (that is in the result). */
export async function gatherStatus(deps: GatherDeps, o: GatherOptions): Promise<StatusInput> {
  const progress = o.onProgress ?? (() => {});
  const manifest = await gatherManifest(deps, o.manifestPath);
  const m = manifest.ok ? manifest.data : undefined;

  const configPath = o.configPath ?? m?.configHostPath ?? m?.configFlag ?? o.defaultConfigPath;
  const { facts, config: cfg, resources } = await gatherConfig(deps, configPath, o.resources, m?.kubeVersion);
  let config = facts;
  if (!config.ok && m && m.configFlag === undefined && o.configPath === undefined) {
    // Nothing configured is a state, not missing evidence.
    config = skipped(`not configured: no --encryption-provider-config in the manifest, no file at ${configPath}`);
  }

  // Cluster: kubeadm-config and the control planes.
  let kubeadmConfig: Gathered<KubeadmConfigFacts> = skipped('--no-cluster');
  let apiservers: Gathered<ApiserverFacts> = skipped('--no-cluster');
  let serverVersion: Gathered<string> = skipped('--no-cluster');
  if (o.cluster) {
    let api: ApiClient | undefined;
    try {
      api = await deps.apiClient();
    } catch (err) {
      kubeadmConfig = apiservers = serverVersion = missing(reasonOf(err));
    }
    if (api) {
      try {
        progress('reading the control planes through the apiserver');
        serverVersion = await readServerVersion(api);
        try {
          const { readClusterConfiguration } = await import('../cluster/kubeadm-config');
          const text = await readClusterConfiguration(api);
          kubeadmConfig = text === undefined ? gathered({ present: false }) : gathered(kubeadmConfigEntries(text, m?.configFlag));
        } catch (err) {
          kubeadmConfig = missing(reasonOf(err));
        }
        apiservers = await gatherApiservers(deps, api, m, { nodeName: o.nodeName, signal: o.signal });
      } finally {
        api.close();
      }
    }
  }

  // KMS plugins named by the config (before etcd: their current key ids tell stale KMS v2 values).
  let kms: StatusInput['kms'];
  if (!config.ok) kms = config.skipped ? skipped(config.reason) : missing(`no config: ${config.reason}`);
  else kms = gathered(await gatherKms(deps, config.data, m?.mounts ?? [], o.kmsTimeoutMs ?? 3000));
  const kmsKeyIds: Record<string, string> = {};
  for (const p of kms.ok ? kms.data : []) if (p.apiVersion === 'v2' && p.health.ok && p.health.data.keyId) kmsKeyIds[p.name] = p.health.data.keyId;

  // etcd.
  let etcd: StatusInput['etcd'] = skipped('--no-etcd');
  if (o.etcd) {
    if (!manifest.ok) {
      etcd = missing(`the etcd connection comes from the manifest, which is not readable: ${manifest.reason}`);
    } else {
      let reader: EtcdReader | undefined;
      try {
        const [{ etcdConnectionFromFlags }, { scanEncryptionState, etcdPrefixFor }, { transformersForResource }] = await Promise.all([
          import('../etcd/client'),
          import('../etcd/scan'),
          import('../etcd/codec'),
        ]);
        const conn = etcdConnectionFromFlags(readApiserverFlags(manifest.data.text, manifest.data.path).flags);
        progress(`scanning ${resources.join(', ')} in etcd at ${conn.endpoints.join(',')}`);
        reader = await deps.openEtcd(conn);
        etcd = gathered(
          await scanEncryptionState(reader, {
            prefix: conn.prefix,
            resources: resources.map((resource) => ({ resource, etcdPrefix: etcdPrefixFor(resource, conn.prefix) })),
            transformersFor: (r) => (cfg ? transformersForResource(cfg, r) : []),
            decryptCheck: o.decryptCheck,
            kmsKeyIds,
            listLimit: o.listLimit,
            signal: o.signal,
            onProgress: (p) => progress(`etcd: ${p.resource}: ${p.scanned} objects`),
          }),
        );
      } catch (err) {
        if (o.signal?.aborted) throw err;
        etcd = missing(reasonOf(err));
      } finally {
        reader?.close();
      }
    }
  }

  const { text: _t, mounts: _m, ...manifestFacts } = m ?? ({} as NonNullable<typeof m>);
  return {
    now: deps.now().toISOString(),
    options: {
      decryptCheck: o.decryptCheck,
      exitCode: o.exitCode,
      etcd: o.etcd,
      cluster: o.cluster,
      resources,
      listLimit: o.listLimit,
    },
    manifest: manifest.ok ? gathered(manifestFacts as ManifestFacts) : manifest,
    kubeadmConfig,
    config,
    serverVersion,
    apiservers,
    etcd,
    kms,
  };
}

/** The real dependencies: files, kubeconfig, etcd and KMS plugins of this machine. */
export function defaultGatherDeps(kubeconfig: string, now: () => Date): GatherDeps {
  // Read once per run: the cluster client, each control plane's /metrics client and the server
  // name all come from the same kubeconfig (an exec plugin would otherwise run once per client).
  let loaded: Promise<ApiTarget> | undefined;
  const target = () => (loaded ??= import('../cluster/api').then((a) => a.loadKubeconfig(kubeconfig)));
  return {
    stat: (p) => fsStat(p),
    async readManifest(path) {
      const { readText } = await import('../state/atomic');
      return readText(path, 'read the kube-apiserver manifest');
    },
    async loadConfig(path) {
      const { loadEncryptionConfig } = await import('../config/parse');
      return loadEncryptionConfig(path);
    },
    async openEtcd(conn) {
      const { openEtcd } = await import('../etcd/client');
      return openEtcd(conn, { callTimeoutMs: 30_000 });
    },
    async apiClient(server) {
      const { createApiClient } = await import('../cluster/api');
      const t: ApiTarget = { ...(await target()), ...(server ? { server: server.url } : {}) };
      if (server?.tlsServerName) t.tlsServerName = server.tlsServerName;
      return createApiClient(t, { timeoutMs: 10_000, maxSockets: 4 });
    },
    async kubeconfigServer() {
      return (await target()).server;
    },
    async checkKms(endpoint, opts) {
      const { checkKmsHealth } = await import('../kms/health');
      return checkKmsHealth(endpoint, opts);
    },
    now,
  };
}
