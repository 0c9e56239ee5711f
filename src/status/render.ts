/**
 * The human status report: one section per source, one aligned row per fact, ✓/✗/! marks.
 * Pure (string in, string out); colour only through the chalk instance passed in, so NO_COLOR,
 * --no-color and --json get plain text.
 */
import type { ChalkInstance } from 'chalk';
import type { RuleSummary } from '../config/model';
import type { StatusReport, Unavailable } from './types';

export interface RenderOptions {
  /** Objects listed per stale/plaintext/failure list (the report may hold more). */
  listLimit?: number;
}

const LABEL_WIDTH = 16;
const short = (sha: string) => `${sha.slice(0, 12)}…`;
const ref = (o: { namespace: string; name: string }) => (o.namespace ? `${o.namespace}/${o.name}` : o.name);

export function describeProviders(rules: RuleSummary[]): string[] {
  return rules.map((r) => {
    const chain = r.providers.map((p) => {
      if (p.keys) return `${p.kind}[${p.keys.join(', ')}]`;
      if (p.kms) return `kms:${p.kms.apiVersion}:${p.kms.name}`;
      return p.kind;
    });
    return `${r.resources.join(', ')}: ${chain.join(' → ')}`;
  });
}

export function renderStatus(r: StatusReport, c: ChalkInstance, opts: RenderOptions = {}): string {
  const limit = opts.listLimit ?? 10;
  const out: string[] = [];
  const ok = c.green('✓');
  const bad = c.red('✗');
  const warn = c.yellow('!');
  const info = c.dim('·');
  const pad = (s: string) => s.padEnd(LABEL_WIDTH);
  const row = (mark: string, label: string, text: string) => out.push(`  ${mark} ${pad(label)} ${text}`);
  const more = (text: string) => out.push(`    ${' '.repeat(LABEL_WIDTH)} ${text}`);
  const head = (title: string) => out.push(c.bold(title));
  const missing = (label: string, u: Unavailable) => row(u.skipped ? info : warn, label, c.dim(u.skipped ? `skipped (${u.reason})` : `not available: ${u.reason}`));
  const failed = new Set(r.findings.filter((f) => f.level === 'fail').map((f) => f.id));
  const warned = new Set(r.findings.filter((f) => f.level === 'warn').map((f) => f.id));
  const markFor = (...ids: string[]) => (ids.some((i) => failed.has(i)) ? bad : ids.some((i) => warned.has(i)) ? warn : ok);

  // This node ---------------------------------------------------------------------------------
  head('This node');
  if (!r.node.available) {
    missing('manifest', r.node);
  } else {
    const n = r.node;
    const m = n.manifest;
    if (m.flag === null) {
      row(bad, 'manifest', `${m.path}: no --encryption-provider-config`);
    } else {
      const mount = m.mount
        ? `mounted ${m.mount.readOnly ? 'read-only' : 'read-write'} from ${m.mount.hostPath} (volume ${m.mount.volumeName})`
        : c.red('not mounted into the pod');
      row(markFor('node.mount', 'node.mount-writable'), 'manifest', `--encryption-provider-config=${m.flag}, ${mount}`);
    }
    if (!n.kubeadmConfig.available) missing('kubeadm-config', n.kubeadmConfig);
    else if (!n.kubeadmConfig.present) row(info, 'kubeadm-config', c.dim('no kube-system/kubeadm-config (not a kubeadm cluster)'));
    else {
      const k = n.kubeadmConfig;
      const text = k.flag ? `records --encryption-provider-config=${k.flag}${k.volume ? ` and volume ${k.volume}` : ''}` : 'does not record --encryption-provider-config';
      row(m.flag === null && !k.flag ? info : markFor('node.kubeadm-config', 'node.kubeadm-config-volume'), 'kubeadm-config', text);
    }
    if (!n.config.available) {
      if (m.flag === null) row(info, 'config', c.dim(n.config.reason));
      else missing('config', n.config);
    } else {
      const cf = n.config;
      row(
        markFor('node.config-mode', 'node.config-dir-mode', 'node.config-invalid'),
        'config',
        `${cf.path}  mode ${cf.mode}  dir ${cf.dirMode}  sha256 ${short(cf.sha256)}`,
      );
      for (const line of describeProviders(cf.rules)) more(line);
      for (const p of cf.problems) more(c.red(p));
      if (cf.writeKey) {
        const age = cf.writeKey.ageDays === null ? '' : ` (${cf.writeKey.ageDays} day${cf.writeKey.ageDays === 1 ? '' : 's'} old)`;
        row(cf.writeKey.label === 'plaintext' ? warn : ok, 'write key', `${cf.writeKey.resource}: ${cf.writeKey.label}${age}`);
      }
    }
    row(info, 'reload', m.automaticReload ? 'automatic reload on (--encryption-provider-config-automatic-reload)' : 'automatic reload off (a change needs a restart)');
    const k = n.kubernetes;
    if (k.differ) {
      row(warn, 'kubernetes', `${k.apiserver} (apiserver /version); the manifest's image is ${k.image}`);
    } else if (k.version) {
      row(info, 'kubernetes', `${k.version} (${k.source === 'apiserver' ? 'apiserver /version' : 'manifest image'})`);
    }
  }

  // Apiservers --------------------------------------------------------------------------------
  head('Apiservers');
  if (!r.apiservers.available) {
    missing('control planes', r.apiservers);
  } else {
    for (const a of r.apiservers.nodes) {
      const mark = a.runsCurrentConfig === 'yes' ? ok : a.runsCurrentConfig === 'no' ? bad : warn;
      const verdict =
        a.runsCurrentConfig === 'yes' ? 'runs the current config' : a.runsCurrentConfig === 'no' ? c.red('does not run the current config') : 'unproven';
      const extra = [a.stage ? `stage ${a.stage}` : '', a.ready === false ? c.red('not ready') : ''].filter(Boolean).join(', ');
      row(mark, `${a.name}${a.thisNode ? ' (this)' : ''}`, `${verdict}${extra ? ` (${extra})` : ''}`);
      for (const e of a.evidence) more(c.dim(e));
    }
    if (r.apiservers.nodes.length === 0) row(warn, 'control planes', 'none found (no kube-apiserver mirror pods, no control-plane Nodes)');
    if (r.apiservers.agree) row(ok, 'agreement', `${r.apiservers.nodes.length} control plane${r.apiservers.nodes.length === 1 ? '' : 's'}, no disagreement seen`);
    for (const d of r.apiservers.disagreement) row(bad, 'disagreement', d);
  }

  // etcd --------------------------------------------------------------------------------------
  head('etcd');
  if (!r.etcd.available) {
    missing('scan', r.etcd);
  } else {
    for (const e of r.etcd.resources) {
      const problem = e.stale.count > 0 || (e.writeLabel === 'plaintext' && e.total > 0) || (e.decryptFailures?.count ?? 0) > 0;
      const counts = Object.entries(e.counts)
        .sort((a, b) => b[1] - a[1])
        .map(([l, n]) => (l === e.writeLabel && l !== 'plaintext' ? `${n} ${l} ${ok}` : `${n} ${l}`))
        .join(', ');
      row(problem ? bad : ok, e.resource, `${e.total} object${e.total === 1 ? '' : 's'}${counts ? `: ${counts}` : ''}  (write: ${e.writeLabel})`);
      const list = (title: string, total: number, items: string[]) => {
        if (!total) return;
        more(`${title} (${total}):`);
        for (const i of items.slice(0, limit)) more(`  ${i}`);
        if (total > Math.min(items.length, limit)) more(c.dim(`  … and ${total - Math.min(items.length, limit)} more`));
      };
      if (e.writeLabel !== 'plaintext') {
        list(
          'not under the write key',
          e.stale.count,
          e.stale.items.map((o) => `${ref(o)} (${o.label})`),
        );
      }
      list('plaintext', e.plaintext.count, e.plaintext.items.map(ref));
      if (e.decryptFailures) {
        list(
          c.red('decrypt check failed'),
          e.decryptFailures.count,
          e.decryptFailures.items.map((f) => `${ref(f)} (${f.label}): ${f.error}`),
        );
        if (!e.decryptFailures.count) more(`${ok} decrypt check: every value decrypts with the configured keys${e.kmsNotChecked ? ` (${e.kmsNotChecked} KMS values not checked)` : ''}`);
      }
    }
    row(info, 'scanned', `${r.etcd.total} objects in ${(r.etcd.durationMs / 1000).toFixed(1)} s`);
  }

  // Audit -------------------------------------------------------------------------------------
  head('Audit (CIS Kubernetes Benchmark v1.9–v1.12)');
  for (const a of r.audit) {
    const mark = a.result === 'pass' ? ok : a.result === 'fail' ? bad : warn;
    row(mark, `CIS ${a.id}`, `${a.result === 'unknown' ? 'unknown: ' : ''}${a.detail}`);
  }

  // KMS ---------------------------------------------------------------------------------------
  if (!r.kms.available) {
    if (!r.kms.skipped) {
      head('KMS');
      missing('providers', r.kms);
    }
  } else if (r.kms.providers.length) {
    head('KMS');
    for (const p of r.kms.providers) {
      const objects = p.objects === null ? '' : `; ${p.objects} object${p.objects === 1 ? '' : 's'} under kms:${p.apiVersion}:${p.name}`;
      if (!p.health.available) {
        row(warn, `${p.name} (${p.apiVersion})`, `${p.endpoint}: not checked (${p.health.reason})${objects}`);
      } else if (p.health.ok) {
        row(ok, `${p.name} (${p.apiVersion})`, `${p.endpoint}: healthy${p.health.keyId ? `, key id ${p.health.keyId}` : ''}${objects}`);
      } else {
        row(bad, `${p.name} (${p.apiVersion})`, `${p.endpoint}: unhealthy (${p.health.failedChecks.join('; ')})${objects}`);
      }
    }
  }

  out.push('');
  const fails = r.findings.filter((f) => f.level === 'fail');
  if (fails.length > 1) {
    out.push(`${bad} ${fails.length} problems:`);
    for (const f of fails) out.push(`  ${bad} ${f.message}`);
  } else {
    out.push(`${r.healthy ? ok : bad} ${r.summary}`);
  }
  for (const w of r.findings.filter((f) => f.level === 'warn')) out.push(`${warn} ${w.message}`);
  return out.join('\n');
}
