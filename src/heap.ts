import { PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';

// Bound V8's young generation. Node 24 lets the new space grow (doubling after scavenges) to
// 64 MiB per semi-space, 128 MiB in all, whenever a run keeps objects alive across scavenges:
// re-encrypt-all's list page and requests in flight, status's etcd pages. That is how a paged,
// bounded rewrite reached 250 MB of RSS at 100,000 Secrets with 15 MB of old space in use: the
// garbage of the last 64 MiB of allocation, not anything retained. --max-semi-space-size cannot be
// changed once the heap exists (setFlagsFromString has no effect on it; measured on Node 24.21),
// but the growth factor is read at every resize: let the new space grow to YOUNG_CAP_BYTES as
// usual, then stop it growing. Throughput is unchanged within noise (objects live per request
// are a few KB; a page is promoted either way) and RSS stays flat as N grows.
// K8S_ENCRYPT_YOUNG_GEN=unbounded turns this off (for comparison runs).
const YOUNG_CAP_BYTES = 16 * 1024 * 1024;
export function boundYoungGeneration(env: NodeJS.ProcessEnv = process.env): void {
  if (env.K8S_ENCRYPT_YOUNG_GEN === 'unbounded') return;
  const newSpaceSize = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
  const cap = () => {
    if (newSpaceSize() < YOUNG_CAP_BYTES) return false;
    v8.setFlagsFromString('--semi-space-growth-factor=1');
    return true;
  };
  if (!cap()) {
    const gcs = new PerformanceObserver(() => {
      if (cap()) gcs.disconnect();
    });
    gcs.observe({ entryTypes: ['gc'] });
  }
}

