/**
 * The status report from what the gatherers found. Pure: no I/O, no clock (the time of the
 * evidence is in the input), so every rule is unit-tested over table-driven inputs.
 */
import { keyCreatedAt } from '../config/render';
import type {
  ApiserverFacts,
  ApiserverStatus,
  ApiserversSection,
  AuditCheck,
  ConfigFacts,
  ControlPlaneFacts,
  EtcdSection,
  Finding,
  Gathered,
  KmsStatus,
  ManifestFacts,
  NodeSection,
  RunsCurrent,
  StatusInput,
  StatusReport,
  Unavailable,
} from './types';
import { short, unavailable } from './types';
import { buildApiservers } from './report-apiservers';

const DAY_MS = 86_400_000;

/** Group or other may read or write: a key file must be 0600 (a dir 0700) or stricter. */
function tooOpen(mode: string): boolean {
  const n = Number.parseInt(mode, 8);
  return Number.isNaN(n) || (n & 0o077) !== 0;
}

/** The resource whose write key the node section shows: secrets when it is covered. */
function primaryResource(c: ConfigFacts) {
  return c.resources.find((r) => r.resource === 'secrets') ?? c.resources[0];
}

/** `aescbc:key1` -> aescbc, `kms:v2:x` -> kms, `plaintext` -> identity. */
export function providerOfLabel(label: string): string {
  if (label === 'plaintext') return 'identity';
  return label.split(':')[0] ?? label;
}

function buildNode(input: StatusInput, findings: Finding[]): NodeSection | Unavailable {
  const add = (id: string, level: Finding['level'], message: string) => findings.push({ id: `node.${id}`, level, section: 'node', message });
  if (!input.manifest.ok) {
    add('manifest', 'fail', `cannot read the kube-apiserver manifest: ${input.manifest.reason}`);
    return unavailable(input.manifest);
  }
  const m = input.manifest.data;
  const reload = m.reloadFlag === 'true' || m.reloadFlag === '';
  if (m.configFlag === undefined) {
    add('flag', 'fail', `${m.path} has no --encryption-provider-config: kube-apiserver stores every object unencrypted`);
  } else if (!m.configMount) {
    add('mount', 'fail', `no hostPath volume of ${m.path} mounts ${m.configFlag} into the pod: kube-apiserver cannot read its config`);
  } else if (!m.configMount.readOnly) {
    add('mount-writable', 'warn', `the config is mounted read-write (volume ${m.configMount.volumeName}); read-only is enough`);
  }

  let kubeadmConfig: NodeSection['kubeadmConfig'];
  if (input.kubeadmConfig.ok) {
    const k = input.kubeadmConfig.data;
    kubeadmConfig = { available: true, present: k.present, flag: k.configFlag ?? null, volume: k.configVolume ?? null };
    if (k.present && m.configFlag !== undefined) {
      if (k.configFlag !== m.configFlag) {
        add(
          'kubeadm-config',
          'warn',
          k.configFlag === undefined
            ? 'kubeadm-config (ClusterConfiguration apiServer.extraArgs) lacks --encryption-provider-config: `kubeadm upgrade` would drop it'
            : `kubeadm-config sets --encryption-provider-config=${k.configFlag}, the manifest ${m.configFlag}`,
        );
      } else if (!k.configVolume && m.configMount && !KUBEADM_VOLUMES.has(m.configMount.volumeName)) {
        add('kubeadm-config-volume', 'warn', `kubeadm-config has no extraVolume for ${m.configMount.hostPath}: \`kubeadm upgrade\` would drop the mount`);
      }
    }
  } else {
    kubeadmConfig = unavailable(input.kubeadmConfig);
  }

  let config: NodeSection['config'];
  if (input.config.ok) {
    const c = input.config.data;
    const primary = primaryResource(c);
    let writeKey: Extract<NodeSection['config'], { available: true }>['writeKey'] = null;
    if (primary) {
      const keyName = primary.writeLabel === 'plaintext' ? undefined : primary.writeLabel.split(':').pop();
      const created = keyName ? keyCreatedAt(keyName) : undefined;
      writeKey = {
        resource: primary.resource,
        label: primary.writeLabel,
        createdAt: created ? created.toISOString() : null,
        ageDays: created ? Math.floor((Date.parse(input.now) - created.getTime()) / DAY_MS) : null,
      };
      if (primary.writeLabel === 'plaintext') {
        add('identity-first', 'warn', `${primary.resource} are written unencrypted: identity (or no rule) comes first in ${c.path}`);
      }
    }
    if (tooOpen(c.mode)) add('config-mode', 'warn', `${c.path} has mode ${c.mode}: it holds keys, make it 0600`);
    if (tooOpen(c.dirMode)) add('config-dir-mode', 'warn', `the directory of ${c.path} has mode ${c.dirMode}: make it 0700`);
    for (const p of c.problems) add('config-invalid', 'fail', `${c.path}: ${p}`);
    config = {
      available: true,
      path: c.path,
      mode: c.mode,
      dirMode: c.dirMode,
      sha256: c.sha256,
      modifiedAt: c.modifiedAt,
      rules: c.rules,
      writeKey,
      problems: c.problems,
    };
  } else {
    config = unavailable(input.config);
    if (m.configFlag !== undefined && !input.config.skipped) add('config', 'fail', `cannot read the EncryptionConfiguration: ${input.config.reason}`);
  }

  return {
    available: true,
    manifest: {
      path: m.path,
      flag: m.configFlag ?? null,
      mount: m.configMount ?? null,
      automaticReload: reload,
      kubeVersion: m.kubeVersion ?? null,
    },
    kubernetes: kubernetesVersion(input, m.kubeVersion, add),
    kubeadmConfig,
    config,
  };
}

/** What runs is what counts: /version when the apiserver answers, else the image tag. */
function kubernetesVersion(input: StatusInput, imageTag: string | undefined, add: (id: string, level: Finding['level'], message: string) => void): NodeSection['kubernetes'] {
  const apiserver = input.serverVersion?.ok ? input.serverVersion.data : null;
  const image = imageTag ? `v${imageTag}` : null;
  const bare = (v: string) => v.replace(/^v/, '').replace(/[-+].*$/, '');
  const differ = Boolean(apiserver && image && bare(apiserver) !== bare(image));
  if (differ) {
    add('version-differs', 'warn', `the apiserver answers ${apiserver} on /version but the manifest's image is ${image}: an upgrade in progress, or a hand-edited image`);
  }
  return { version: apiserver ?? image, source: apiserver ? 'apiserver' : image ? 'manifest image' : null, apiserver, image, differ };
}

/** kubeadm's own kube-apiserver volumes (kubeadm-config does not list them as extraVolumes). */
const KUBEADM_VOLUMES = new Set(['ca-certs', 'etc-ca-certificates', 'etc-pki', 'k8s-certs', 'usr-local-share-ca-certificates', 'usr-share-ca-certificates']);

export { judgeApiserver } from './report-apiservers';

const ref = (o: { namespace: string; name: string }) => (o.namespace ? `${o.namespace}/${o.name}` : o.name);

function buildEtcd(input: StatusInput, findings: Finding[]): EtcdSection | Unavailable {
  const add = (id: string, message: string) => findings.push({ id: `etcd.${id}`, level: 'fail', section: 'etcd', message });
  if (!input.etcd.ok) {
    // Without the scan nothing is proven: fail closed unless the user chose --no-etcd.
    if (!input.etcd.skipped) add('unavailable', `cannot read etcd, so nothing is proven about what it holds: ${input.etcd.reason}`);
    return unavailable(input.etcd);
  }
  const s = input.etcd.data;
  // Wildcard rules are not expanded into resources (that needs discovery): say what was not looked at.
  const wild = input.config.ok ? [...new Set(input.config.data.rules.flatMap((r) => r.resources).filter((r) => r.includes('*')))] : [];
  if (wild.length) {
    findings.push({
      id: 'etcd.wildcard-not-scanned',
      level: 'warn',
      section: 'etcd',
      message: `rules ${wild.map((w) => `"${w}"`).join(', ')} may cover more than the scanned ${input.options.resources.join(', ')}: name them with --resources to scan them`,
    });
  }
  const resources = s.resources.map((r) => {
    if (r.writeLabel === 'plaintext' && r.total > 0) {
      add('not-encrypted', `${r.resource}: all ${r.total} objects are stored unencrypted, and new writes are not encrypted either`);
    } else if (r.stale.count > 0) {
      const other = Object.entries(r.counts)
        .filter(([l]) => l !== r.writeLabel)
        .map(([l, n]) => `${n} ${l}`)
        .join(', ');
      const eg = r.stale.items.slice(0, 3).map(ref).join(', ');
      add('stale', `${r.resource}: ${r.stale.count} of ${r.total} objects are not under the write key ${r.writeLabel} (${other}; e.g. ${eg})`);
    }
    if (r.decryptFailures && r.decryptFailures.count > 0) {
      const eg = r.decryptFailures.items.slice(0, 3).map((f) => `${ref(f)}: ${f.error}`).join('; ');
      add('decrypt-failed', `${r.resource}: ${r.decryptFailures.count} objects cannot be decrypted with the configured keys (${eg})`);
    }
    return {
      resource: r.resource,
      etcdPrefix: r.etcdPrefix,
      total: r.total,
      writeLabel: r.writeLabel,
      counts: r.counts,
      stale: r.stale,
      plaintext: { count: r.plaintext.count, items: r.plaintext.items.map(({ namespace, name }) => ({ namespace, name })) },
      decryptFailures: r.decryptFailures ?? null,
      kmsNotChecked: r.kmsNotChecked ?? null,
    };
  });
  return {
    available: true,
    resources,
    total: s.total,
    staleTotal: s.staleTotal,
    plaintextTotal: s.plaintextTotal,
    decryptCheck: input.options.decryptCheck,
    decryptFailuresTotal: s.decryptFailuresTotal ?? null,
    durationMs: s.durationMs,
  };
}

const CIS_PROVIDERS = ['aescbc', 'kms', 'secretbox'];

/**
 * The CIS Kubernetes Benchmark checks about encryption at rest, numbered as in CIS v1.9–v1.12
 * (kube-bench cfg/cis-1.9 … cfg/cis-1.12: 1.2.27 and 1.2.28); CIS v1.8 numbers them 1.2.28/1.2.29.
 */
function buildAudit(input: StatusInput, findings: Finding[]): AuditCheck[] {
  const flag: AuditCheck = {
    id: '1.2.27',
    otherIds: { 'cis-1.8': '1.2.28' },
    title: 'Ensure that the --encryption-provider-config argument is set as appropriate',
    result: 'unknown',
    detail: '',
  };
  const providers: AuditCheck = {
    id: '1.2.28',
    otherIds: { 'cis-1.8': '1.2.29' },
    title: 'Ensure that encryption providers are appropriately configured (aescbc, kms or secretbox first)',
    result: 'unknown',
    detail: '',
  };
  if (!input.manifest.ok) {
    flag.detail = providers.detail = `manifest not readable: ${input.manifest.reason}`;
  } else if (input.manifest.data.configFlag === undefined) {
    flag.result = providers.result = 'fail';
    flag.detail = `${input.manifest.data.path} does not set it`;
    providers.detail = 'no EncryptionConfiguration is in use';
  } else {
    flag.result = 'pass';
    flag.detail = `--encryption-provider-config=${input.manifest.data.configFlag}`;
    if (!input.config.ok) {
      providers.detail = `config not readable: ${input.config.reason}`;
    } else {
      const c = input.config.data;
      const secrets = c.resources.find((r) => r.resource === 'secrets');
      const secretsProvider = secrets ? providerOfLabel(secrets.writeLabel) : 'identity';
      // kube-bench reads the first provider listed in the file; the benchmark is about Secrets.
      const firstInFile = c.rules[0]?.providers[0]?.kind ?? 'identity';
      const bad = [secretsProvider, firstInFile].filter((p) => !CIS_PROVIDERS.includes(p));
      providers.result = bad.length ? 'fail' : 'pass';
      providers.detail =
        secretsProvider === firstInFile
          ? `first provider: ${secretsProvider}`
          : `secrets are written by ${secretsProvider}; the first provider in the file is ${firstInFile}`;
    }
  }
  for (const chk of [flag, providers]) {
    if (chk.result === 'fail') findings.push({ id: `audit.cis-${chk.id}`, level: 'fail', section: 'audit', message: `CIS ${chk.id} fails: ${chk.detail}` });
  }
  return [flag, providers];
}

function buildKms(input: StatusInput, etcd: EtcdSection | Unavailable, findings: Finding[]): StatusReport['kms'] {
  if (!input.kms.ok) return unavailable(input.kms);
  const providers: KmsStatus[] = input.kms.data.map((p) => {
    const label = `kms:${p.apiVersion}:${p.name}`;
    const objects = etcd.available ? etcd.resources.reduce((n, r) => n + (r.counts[label] ?? 0), 0) : null;
    let health: KmsStatus['health'];
    if (p.health.ok) {
      const failed = p.health.data.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);
      health = { available: true, ok: p.health.data.ok, keyId: p.health.data.keyId ?? null, failedChecks: failed };
      if (!p.health.data.ok) {
        findings.push({ id: 'kms.unhealthy', level: 'fail', section: 'kms', message: `KMS plugin "${p.name}" at ${p.endpoint} is not healthy: ${failed.join('; ')}` });
      }
    } else {
      health = unavailable(p.health);
      if (!p.health.skipped) {
        findings.push({ id: 'kms.unreachable', level: 'warn', section: 'kms', message: `KMS plugin "${p.name}" not checked: ${p.health.reason}` });
      }
    }
    return { name: p.name, apiVersion: p.apiVersion, endpoint: p.endpoint, health, objects };
  });
  return { available: true, providers };
}

export function buildStatusReport(input: StatusInput): StatusReport {
  const findings: Finding[] = [];
  const node = buildNode(input, findings);
  const apiservers = buildApiservers(input, findings);
  const etcd = buildEtcd(input, findings);
  const audit = buildAudit(input, findings);
  const kms = buildKms(input, etcd, findings);
  const fails = findings.filter((f) => f.level === 'fail');
  let summary: string;
  if (fails.length) {
    summary = `${fails.length} problem${fails.length === 1 ? '' : 's'}: ${fails[0]!.message}${fails.length > 1 ? ` (and ${fails.length - 1} more)` : ''}`;
  } else if (etcd.available) {
    const labels = [...new Set(etcd.resources.map((r) => r.writeLabel))].join(', ');
    summary = `every scanned object (${etcd.total}) is under its write key (${labels})`;
  } else {
    summary = 'no problem found (etcd not scanned)';
  }
  return {
    schemaVersion: 1,
    generatedAt: input.now,
    healthy: fails.length === 0,
    summary,
    options: {
      decryptCheck: input.options.decryptCheck,
      etcd: input.options.etcd,
      cluster: input.options.cluster,
      resources: input.options.resources,
    },
    node,
    apiservers,
    etcd,
    audit,
    kms,
    findings,
  };
}

/** For tests and the renderer: the fail-level findings. */
export const failures = (r: StatusReport) => r.findings.filter((f) => f.level === 'fail');

export type { Gathered };
