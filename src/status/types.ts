/**
 * What `status` gathers and what it reports. Gatherers return `Gathered<T>`: either the evidence
 * or the precise reason it could not be read (no etcd certificate readable, apiserver down, no
 * kubeconfig, skipped by a flag), so one missing source never fails the whole command. The report
 * (schemaVersion 1, docs/status-schema.md) is built from these by the pure buildStatusReport.
 */
import { CliError } from '../ui/errors';
import type { RuleSummary } from '../config/model';
import type { ScanReport } from '../etcd/scan';
import type { KmsHealthReport } from '../kms/health';

export type Gathered<T> = { ok: true; data: T } | { ok: false; reason: string; skipped?: boolean };

export const gathered = <T>(data: T): Gathered<T> => ({ ok: true, data });
export const missing = (reason: string): Gathered<never> => ({ ok: false, reason });
export const skipped = (reason: string): Gathered<never> => ({ ok: false, reason, skipped: true });

/** One line for a failed source: the error's message and, when it has one, its hint. */
export function reasonOf(err: unknown): string {
  if (err instanceof CliError) return err.hint ? `${err.message} (${err.hint})` : err.message;
  return (err as Error)?.message ?? String(err);
}


export interface MountFacts {
  volumeName: string;
  hostPath: string;
  mountPath: string;
  readOnly: boolean;
}

/** This node's kube-apiserver manifest. */
export interface ManifestFacts {
  path: string;
  /** --encryption-provider-config as written (the path inside the pod). */
  configFlag?: string;
  /** --encryption-provider-config-automatic-reload as written. */
  reloadFlag?: string;
  /** The hostPath mount through which the pod sees the config file. */
  configMount?: MountFacts;
  /** The config file on the host, through that mount (undefined when no mount covers it). */
  configHostPath?: string;
  /** The k8s-encrypt.io/config-sha256 pod annotation (the config the pod was last restarted for). */
  configSha256Annotation?: string;
  kubeVersion?: string;
  /** Every flag of the command line, for recognising this node among the mirror pods. */
  args: string[];
}

/** The flag and mount as recorded in kubeadm's ClusterConfiguration (kube-system/kubeadm-config). */
export interface KubeadmConfigFacts {
  /** false: the cluster has no kubeadm-config ConfigMap (not made by kubeadm). */
  present: boolean;
  apiVersion?: string;
  configFlag?: string;
  /** An extraVolume whose mountPath holds the config file. */
  configVolume?: string;
}

/** The EncryptionConfiguration file this node's apiserver is pointed at (never its secrets). */
export interface ConfigFacts {
  path: string;
  /** Octal, e.g. "0600". */
  mode: string;
  dirMode: string;
  sha256: string;
  /** File modification time (ISO): a process that started before it runs an older config. */
  modifiedAt: string;
  rules: RuleSummary[];
  /** Per scanned resource: the label new writes get and every label the providers can read. */
  resources: ResourceProviders[];
  /** Errors the apiserver would refuse the file for (validate-config's rules). */
  problems: string[];
}

export interface ResourceProviders {
  resource: string;
  /** `aescbc:key1`, `kms:v2:name`, `plaintext` (identity, or no rule covers it). */
  writeLabel: string;
  readLabels: string[];
}

/** kube-apiserver's own metrics, as far as status reads them. */
export interface ApiserverMetrics {
  /** process_start_time_seconds. */
  processStart?: number;
  /** apiserver_encryption_config_controller_last_config_info{hash} (1.34+), `sha256:HEX`. */
  configInfoHash?: string;
  /** ..._automatic_reload_last_timestamp_seconds{status}. */
  lastReloadSuccess?: number;
  lastReloadFailure?: number;
}

export interface ControlPlaneFacts {
  name: string;
  thisNode: boolean;
  hasNode: boolean;
  hasMirrorPod: boolean;
  /** The mirror pod's command line: is --encryption-provider-config there? */
  flagInPod?: boolean;
  configFlag?: string;
  /** The mirror pod's k8s-encrypt.io/config-sha256 annotation. */
  podConfigSha256?: string;
  /** The apiserver container's running.startedAt (ISO). */
  startedAt?: string;
  ready?: boolean;
  /** Why its mirror pod could not be read (a 403, a timeout; not a pod that is gone). */
  podUnreadable?: string;
  /** The stage record (Node annotation or state ConfigMap): STAGE:sha256:HEX. */
  stage?: { stage: string; sha256: string };
  stageMalformed?: string;
  /** Where its /metrics was read from, and what they say. */
  endpoint?: string;
  metrics: Gathered<ApiserverMetrics>;
}

export interface ApiserverFacts {
  /** How this node was recognised among the control planes. */
  thisNode: { name: string; how: string };
  controlPlanes: ControlPlaneFacts[];
  /** Sources of control planes that could not be read (identity leases behind a 403). */
  discoveryWarnings?: string[];
}

export interface KmsProviderFacts {
  name: string;
  apiVersion: string;
  endpoint: string;
  /** Plugin health (only when its socket is reachable from here). */
  health: Gathered<Pick<KmsHealthReport, 'ok' | 'keyId' | 'pluginVersion' | 'checks'>>;
}

export interface StatusOptions {
  decryptCheck: boolean;
  exitCode: boolean;
  etcd: boolean;
  cluster: boolean;
  /** Resources scanned in etcd. */
  resources: string[];
  /** Objects listed per list (counts are complete). */
  listLimit: number;
}

/** Everything the gatherers found: the only input of buildStatusReport. */
export interface StatusInput {
  /** ISO time the evidence was read. */
  now: string;
  options: StatusOptions;
  manifest: Gathered<ManifestFacts>;
  kubeadmConfig: Gathered<KubeadmConfigFacts>;
  config: Gathered<ConfigFacts>;
  /** The apiserver's /version gitVersion (v1.32.6), read through the kubeconfig. */
  serverVersion?: Gathered<string>;
  apiservers: Gathered<ApiserverFacts>;
  etcd: Gathered<ScanReport>;
  kms: Gathered<KmsProviderFacts[]>;
}

// -------------------------------------------------------------------------------------------
// The report (schemaVersion 1): see docs/status-schema.md. Add fields, never rename or remove.

export type Level = 'fail' | 'warn';
export type Section = 'node' | 'apiservers' | 'etcd' | 'audit' | 'kms';

export interface Finding {
  /** Stable identifier, e.g. `etcd.stale`, `apiservers.disagree`, `audit.cis-1.2.27`. */
  id: string;
  level: Level;
  section: Section;
  message: string;
}

export type Unavailable = { available: false; reason: string; skipped: boolean };

export interface NodeSection {
  available: true;
  manifest: { path: string; flag: string | null; mount: MountFacts | null; automaticReload: boolean; kubeVersion: string | null };
  /** The Kubernetes version: what the apiserver answers on /version when it answers, else the
   * manifest's image tag; both when they differ (an upgrade in progress, a hand-edited image). */
  kubernetes: { version: string | null; source: 'apiserver' | 'manifest image' | null; apiserver: string | null; image: string | null; differ: boolean };
  kubeadmConfig: Unavailable | { available: true; present: boolean; flag: string | null; volume: string | null };
  config:
    | Unavailable
    | (Pick<ConfigFacts, 'path' | 'mode' | 'dirMode' | 'sha256' | 'modifiedAt' | 'rules'> & {
        available: true;
        writeKey: { resource: string; label: string; createdAt: string | null; ageDays: number | null } | null;
        problems: string[];
      });
}

export type RunsCurrent = 'yes' | 'no' | 'unknown';

export interface ApiserverStatus {
  name: string;
  thisNode: boolean;
  runsCurrentConfig: RunsCurrent;
  /** Why: which evidence says so (strongest first). */
  evidence: string[];
  /** The config sha256 it is known to run (metric, pod annotation or stage record). */
  configSha256: string | null;
  stage: string | null;
  flagSet: boolean | null;
  ready: boolean | null;
  startedAt: string | null;
  metrics: Unavailable | { available: true; endpoint: string | null };
}

export interface ApiserversSection {
  available: true;
  thisNode: { name: string; how: string };
  nodes: ApiserverStatus[];
  agree: boolean;
  disagreement: string[];
}

export interface EtcdResourceStatus {
  resource: string;
  etcdPrefix: string;
  total: number;
  writeLabel: string;
  counts: Record<string, number>;
  /** Objects not under the write label. */
  stale: { count: number; items: { namespace: string; name: string; label: string }[] };
  plaintext: { count: number; items: { namespace: string; name: string }[] };
  decryptFailures: { count: number; items: { namespace: string; name: string; label: string; error: string }[] } | null;
  kmsNotChecked: number | null;
}

export interface EtcdSection {
  available: true;
  resources: EtcdResourceStatus[];
  total: number;
  staleTotal: number;
  plaintextTotal: number;
  decryptCheck: boolean;
  decryptFailuresTotal: number | null;
  durationMs: number;
}

export interface AuditCheck {
  /** CIS Kubernetes Benchmark id in v1.9–v1.12 (kube-bench cis-1.9 … cis-1.12). */
  id: string;
  /** The same check's id in other benchmark versions. */
  otherIds: Record<string, string>;
  title: string;
  result: 'pass' | 'fail' | 'unknown';
  detail: string;
}

export interface KmsStatus {
  name: string;
  apiVersion: string;
  endpoint: string;
  health: Unavailable | { available: true; ok: boolean; keyId: string | null; failedChecks: string[] };
  /** Objects stored under kms:APIVERSION:NAME in the scanned resources (null without a scan). */
  objects: number | null;
}

export interface StatusReport {
  schemaVersion: 1;
  generatedAt: string;
  /** No finding at level fail. */
  healthy: boolean;
  summary: string;
  options: { decryptCheck: boolean; etcd: boolean; cluster: boolean; resources: string[] };
  node: NodeSection | Unavailable;
  apiservers: ApiserversSection | Unavailable;
  etcd: EtcdSection | Unavailable;
  audit: AuditCheck[];
  kms: Unavailable | { available: true; providers: KmsStatus[] };
  findings: Finding[];
}

/** A source that could not be read, as the report shows it. */
export const unavailable = (g: { ok: false; reason: string; skipped?: boolean }): Unavailable => ({
  available: false,
  reason: g.reason,
  skipped: g.skipped === true,
});

/** The first 12 hex digits of a sha256. */
export const short = (sha: string) => `${sha.slice(0, 12)}…`;
