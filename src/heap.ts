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
// are a few KB; a page is promoted either way).
//
// The cap is held for the whole run, not set once: V8 also shrinks the new space (its memory
// reducer does when the allocation rate drops, as it does on a loaded machine or between
// phases), and with the growth factor left at 1 it could never grow back. Measured on
// re-encrypt-all at a load average of 20: the new space went from 16 MiB to 2 MiB 84 s into the
// run, everything a request keeps for its round trip was then promoted, the old space climbed
// from 28 to 61 MB and RSS from 133 to 154 MB. So after every GC the factor is 1 at the cap and
// the default (2) below it.
// The observer runs after a GC, so V8 can grow the new space twice before it does (seen on Node
// 26: 31 MB of new space in some runs). The single executable therefore starts with
// --max-semi-space-size=8, the same bound set when the heap is made (scripts/build-exe.mjs), and
// where that flag is given this does nothing.
// K8S_ENCRYPT_YOUNG_GEN=unbounded turns this off (for comparison runs) on the npm path only: the
// executable's start-up flag cannot be undone (its execArgvExtension is none, so NODE_OPTIONS is
// not read either).
const YOUNG_CAP_BYTES = 16 * 1024 * 1024;
const DEFAULT_GROWTH_FACTOR = 2;

/** Holds the bound from inside the process; false when there is nothing to hold. */
export function boundYoungGeneration(env: NodeJS.ProcessEnv = process.env, execArgv: readonly string[] = process.execArgv): boolean {
  if (env.K8S_ENCRYPT_YOUNG_GEN === 'unbounded') return false;
  if (execArgv.some((a) => a.startsWith('--max-semi-space-size'))) return false;
  const newSpaceSize = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
  let capped = false;
  const hold = () => {
    const atCap = newSpaceSize() >= YOUNG_CAP_BYTES;
    if (atCap === capped) return;
    capped = atCap;
    v8.setFlagsFromString(`--semi-space-growth-factor=${atCap ? 1 : DEFAULT_GROWTH_FACTOR}`);
  };
  hold();
  new PerformanceObserver(hold).observe({ entryTypes: ['gc'] });
  return true;
}

/**
 * V8's memory saver mode (as Chrome's Memory Saver): a full GC whenever the old generation has
 * grown by a little (the default lets it grow to about three times what was live) and a young
 * generation that does not grow. re-encrypt-all's requests are HTTP/2 streams (src/cluster/h2.ts),
 * and each stream's objects belong to a native handle that scavenges cannot free: they are
 * promoted with everything they reference and are garbage from the end of the request until the
 * next full GC. Measured on 20,000 Secrets: the old space climbed to 34 MB between full GCs with
 * 11 MB live (peak RSS 133 MB); with the mode on it stays near what is live (92 MB), for a full
 * GC of about 20 ms every 1.5 s and no loss of rate. V8 reads it at every GC, so setting it here
 * at start-up works (checked by test/unit/heap.test.ts).
 * K8S_ENCRYPT_MEMORY_SAVER=off leaves V8's default (for comparison runs).
 */
export function saveMemory(env: NodeJS.ProcessEnv = process.env, v8Version: string = process.versions.v8): 'memory-saver-mode' | 'heap-growing' | false {
  if (env.K8S_ENCRYPT_MEMORY_SAVER === 'off') return false;
  // V8 13.6 (Node 24.0) and 14.6 (Node 26, the executable's) have the flag; 12.4 (Node 22) does
  // not, and an unknown flag prints "Error: unrecognized flag" on stderr. What V8 12 has of the
  // mode is the part that matters here, a small growing factor for the old generation (also read
  // at every GC): a full GC once it has grown by a tenth instead of about threefold. Measured on
  // Node 22.23.5 at 100,000 Secrets: peak RSS 131 MB without it, 100 MB with it, the same rate.
  if (Number(v8Version.split('.')[0]) < 13) {
    v8.setFlagsFromString(`--heap-growing-percent=${V8_12_HEAP_GROWING_PERCENT}`);
    return 'heap-growing';
  }
  v8.setFlagsFromString('--memory-saver-mode');
  return 'memory-saver-mode';
}

const V8_12_HEAP_GROWING_PERCENT = 10;
