import type { Context } from '../context';
import { describeNode, type FleetNode } from './inventory';
import type { PlannedUpload } from './preflight';

/**
 * What `--dry-run --fleet` shows: per node, what was checked (SSH and host key, root, the
 * manifest, its own status where this k8s-encrypt already runs), the upload it would do (path,
 * sha256, size, free space), what could not be checked without that upload, and the plans the
 * nodes' own dry runs made.
 */

interface DryRunFacts {
  bins: Map<FleetNode, string>;
  checks: Map<FleetNode, { checks: string[]; upload?: PlannedUpload }>;
  plans: Record<string, unknown>;
  version: string;
}

const mib = (n: number) => `${(n / (1 << 20)).toFixed(1)} MiB`;
const uploadText = (version: string, u: PlannedUpload) =>
  `would upload k8s-encrypt ${version} to ${u.path} (sha256 ${u.sha256}, ${mib(u.bytes)}${u.freeBytes !== null ? `, ${mib(u.freeBytes)} free there` : ''})`;

export function printDryRun(ctx: Context, operation: string, nodes: FleetNode[], f: DryRunFacts): void {
  const planner = operation === 'rollback' ? 'its' : "the first node's";
  const rows = nodes.map((n, i) => {
    const c = f.checks.get(n);
    const installed = f.bins.get(n);
    const needsBinary = operation === 'rollback' || i === 0 ? `its own status and ${operation} --dry-run` : 'its own status';
    return {
      node: n.nodeName,
      host: n.host,
      port: n.port,
      binary: installed ?? null,
      checked: ['SSH login and host key', ...(c?.checks ?? [])],
      upload: c?.upload ?? null,
      notChecked: installed ? [] : [`${needsBinary}: they need k8s-encrypt ${f.version} there, which a dry run does not upload`],
    };
  });
  ctx.out.result({ dryRun: true, operation, nodes: rows, plans: f.plans }, (c) =>
    [
      c.bold(`fleet ${operation} — dry run, nothing was changed on ${nodes.length} control plane(s): ${nodes.map((n) => n.nodeName).join(', ')}`),
      ...rows.flatMap((r, i) => [
        `  ${describeNode(nodes[i]!)}: ${r.binary ? `runs ${r.binary}` : r.upload ? uploadText(f.version, r.upload) : `no k8s-encrypt ${f.version} there`}`,
        `    checked: ${r.checked.join('; ')}`,
        ...r.notChecked.map((x) => `    not checked: ${x}`),
      ]),
      ...(Object.keys(f.plans).length ? [] : [`no plan: ${planner} dry run needs k8s-encrypt there; a run without --dry-run uploads it, then makes that dry run before any node is changed`]),
      ...Object.entries(f.plans).map(([name, body]) => `${name}'s plan:\n${JSON.stringify((body as Record<string, unknown>).stages ?? (body as Record<string, unknown>).steps ?? body, null, 2)}`),
    ].join('\n'),
  );
}
