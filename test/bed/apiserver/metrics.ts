/** The few kube-apiserver metrics k8s-encrypt and its tests read, in Prometheus text format. */
import { atLeast, type KubeVersion } from './version';

const esc = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const labelText = (labels: Record<string, string>) =>
  `{${Object.entries(labels)
    .map(([k, v]) => `${k}="${esc(v)}"`)
    .join(',')}}`;

export class Metrics {
  readonly startTimeSeconds = Date.now() / 1000;
  private readonly transformations = new Map<string, number>();
  private reloads = { success: 0, failure: 0 };
  private lastReload?: { status: 'success' | 'failure'; timestamp: number };
  lastConfigHash?: string;

  constructor(
    private readonly version: KubeVersion,
    /** `sha256:...` of the apiserver identity, as upstream labels these metrics. */
    readonly apiserverIdHash: string,
  ) {}

  transformation(type: 'to_storage' | 'from_storage', prefix: string, status: 'OK' | string): void {
    const key = `${type}\u0000${prefix}\u0000${status}`;
    this.transformations.set(key, (this.transformations.get(key) ?? 0) + 1);
  }

  reload(status: 'success' | 'failure'): void {
    this.reloads[status]++;
    this.lastReload = { status, timestamp: Date.now() / 1000 };
  }

  render(): string {
    const out: string[] = [];
    const family = (name: string, type: string, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    const id = this.apiserverIdHash;

    if (this.lastConfigHash && atLeast(this.version, 34)) {
      const name = 'apiserver_encryption_config_controller_last_config_info';
      family(name, 'gauge', '[ALPHA] Information about the last applied encryption configuration with hash as label, split by apiserver identity.');
      out.push(`${name}${labelText({ apiserver_id_hash: id, hash: this.lastConfigHash })} 1`);
    }
    if (this.lastReload) {
      if (atLeast(this.version, 30)) {
        const total = 'apiserver_encryption_config_controller_automatic_reloads_total';
        family(total, 'counter', '[ALPHA] Total number of reload successes and failures of encryption configuration split by apiserver identity.');
        for (const status of ['success', 'failure'] as const) {
          if (this.reloads[status]) out.push(`${total}${labelText({ apiserver_id_hash: id, status })} ${this.reloads[status]}`);
        }
      } else {
        for (const status of ['success', 'failure'] as const) {
          const name = `apiserver_encryption_config_controller_automatic_reload_${status}_total`;
          family(name, 'counter', `[ALPHA] Total number of ${status}ful automatic reloads of encryption configuration.`);
          out.push(`${name}${labelText({ apiserver_id_hash: id })} ${this.reloads[status]}`);
        }
      }
      const ts = 'apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds';
      family(ts, 'gauge', '[ALPHA] Timestamp of the last successful or failed automatic reload of encryption configuration split by apiserver identity.');
      out.push(`${ts}${labelText({ apiserver_id_hash: id, status: this.lastReload.status })} ${this.lastReload.timestamp}`);
    }

    const ops = 'apiserver_storage_transformation_operations_total';
    family(ops, 'counter', '[ALPHA] Total number of transformations. Successful transformation will have a status \'OK\' and a varied status string when the transformation fails.');
    for (const [key, n] of [...this.transformations].sort()) {
      const [transformation_type, transformer_prefix, status] = key.split('\u0000') as [string, string, string];
      out.push(`${ops}${labelText({ status, transformation_type, transformer_prefix })} ${n}`);
    }

    family('process_start_time_seconds', 'gauge', 'Start time of the process since unix epoch in seconds.');
    out.push(`process_start_time_seconds ${this.startTimeSeconds}`);
    return `${out.join('\n')}\n`;
  }
}
