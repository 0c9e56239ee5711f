import type { ChalkInstance } from 'chalk';

/**
 * `status --fleet`: every node's own status report in one table (its stage record, the sha256 of
 * its config, what proves which config its apiserver runs) and the etcd verdict, read once through
 * the first node (etcd is shared). Pure: the reports in, the view out.
 */

export interface NodeReport {
  node: string;
  report: Record<string, any>;
}

export interface FleetStatusRow {
  node: string;
  healthy: boolean;
  stage: string | null;
  configSha256: string | null;
  runsCurrentConfig: string;
  evidence: string[];
  findings: string[];
}

export function renderFleetStatus(reports: NodeReport[]) {
  const rows: FleetStatusRow[] = reports.map(({ node, report }) => {
    const self = (report.apiservers?.nodes ?? []).find((n: Record<string, any>) => n.thisNode) ?? {};
    return {
      node,
      healthy: report.healthy === true,
      stage: self.stage ?? null,
      configSha256: report.node?.config?.sha256 ?? null,
      runsCurrentConfig: self.runsCurrentConfig ?? 'unknown',
      evidence: self.evidence ?? [],
      findings: (report.findings ?? []).filter((f: Record<string, any>) => f.level === 'fail').map((f: Record<string, any>) => `${f.id}: ${f.message}`),
    };
  });
  const shas = new Set(rows.map((r) => r.configSha256));
  const stages = new Set(rows.map((r) => r.stage));
  const agree = shas.size === 1 && stages.size === 1;
  const etcd = reports[0]?.report.etcd ?? { available: false, reason: 'no node answered' };
  const etcdFindings = (reports[0]?.report.findings ?? []).filter((f: Record<string, any>) => f.section === 'etcd' && f.level === 'fail');
  const etcdOk = etcd.available === true && etcdFindings.length === 0;
  const healthy = rows.every((r) => r.healthy) && agree && etcdOk;
  const json = {
    healthy,
    agree,
    nodes: rows,
    etcd: { ...etcd, verdict: etcdOk ? 'ok' : 'fail', findings: etcdFindings },
    reports: Object.fromEntries(reports.map((r) => [r.node, r.report])),
  };
  const human = (c: ChalkInstance) => {
    const mark = (ok: boolean) => (ok ? c.green('✓') : c.red('✗'));
    const w = Math.max(4, ...rows.map((r) => r.node.length));
    const lines = [c.bold(`Control planes (${rows.length})`), `  ${'node'.padEnd(w)}  ${'stage'.padEnd(10)}  config sha256   runs it  evidence`];
    for (const r of rows) {
      lines.push(`${mark(r.healthy)} ${r.node.padEnd(w)}  ${(r.stage ?? '-').padEnd(10)}  ${(r.configSha256 ?? '-').slice(0, 12).padEnd(14)}  ${r.runsCurrentConfig.padEnd(7)}  ${r.evidence[0] ?? ''}`);
      for (const f of r.findings) lines.push(`    ${c.red('✗')} ${f}`);
    }
    lines.push(`${mark(agree)} ${agree ? 'every node runs the same stage and config' : `nodes disagree: ${[...shas].map((s) => (s ?? 'none').slice(0, 12)).join(' vs ')}`}`);
    lines.push(c.bold('etcd (through the first node)'));
    if (etcd.available !== true) lines.push(`${c.red('✗')} not read: ${etcd.reason ?? 'unavailable'}`);
    else {
      for (const res of etcd.resources ?? []) {
        const counts = Object.entries(res.counts ?? {}).map(([k, v]) => `${v} ${k}`).join(', ');
        lines.push(`${mark((res.stale?.count ?? 0) === 0)} ${res.resource}: ${res.total} objects: ${counts || 'none'} (write: ${res.writeLabel ?? '-'})`);
      }
      for (const f of etcdFindings) lines.push(`  ${c.red('✗')} ${f.message}`);
    }
    return lines.join('\n');
  };
  return { json, human };
}
