import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';
import { describe, expect, it } from 'vitest';
import { boundYoungGeneration, saveMemory } from '../../src/heap';

describe('boundYoungGeneration', () => {
  it('does nothing where the bound is set at start-up (the single executable) or turned off', () => {
    expect(boundYoungGeneration({}, ['--max-semi-space-size=8'])).toBe(false);
    expect(boundYoungGeneration({}, ['--max-semi-space-size', '8'])).toBe(false);
    expect(boundYoungGeneration({ K8S_ENCRYPT_YOUNG_GEN: 'unbounded' }, [])).toBe(false);
  });
});

describe('saveMemory', () => {
  it('K8S_ENCRYPT_MEMORY_SAVER=off leaves V8 as it is', () => {
    expect(saveMemory({ K8S_ENCRYPT_MEMORY_SAVER: 'off' })).toBe(false);
  });

  it('leaves a V8 without the mode alone (Node 22: 12.4, which would print an error for the flag)', () => {
    expect(saveMemory({}, '12.4.254.21-node.57')).toBe(false);
    expect(saveMemory({}, '13.6.233.8-node.10')).toBe(true);
  });

  it('set at start-up, it keeps the old space near what is live when promoted objects die', () => {
    // A child that calls saveMemory (or not) and then promotes garbage as HTTP/2 streams do:
    // objects that outlive two scavenges, then die. Its largest old space is compared.
    const dir = mkdtempSync(join(tmpdir(), 'k8s-encrypt-heap-'));
    try {
      const entry = join(dir, 'child.ts');
      writeFileSync(
        entry,
        `import v8 from 'node:v8';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { saveMemory } from ${JSON.stringify(fileURLToPath(new URL('../../src/heap.ts', import.meta.url)))};
saveMemory();
let majors = 0;
new PerformanceObserver((l) => {
  for (const e of l.getEntries()) if ((e.detail as { kind: number }).kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++;
}).observe({ entryTypes: ['gc'] });
const fifo = new Array(10000);
let maxOld = 0;
for (let i = 0; i < 600000; i++) {
  fifo[i % fifo.length] = { s: 'x'.repeat(150) + i, a: [i, i + 1, i + 2] };
  if (i % 2000 === 0) maxOld = Math.max(maxOld, v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')!.space_size);
}
setTimeout(() => console.log(JSON.stringify({ maxOld, majors })), 10);
`,
      );
      const bundle = join(dir, 'child.mjs');
      buildSync({ entryPoints: [entry], bundle: true, platform: 'node', format: 'esm', outfile: bundle, logLevel: 'silent' });
      const run = (saver: string) => {
        const r = spawnSync(process.execPath, ['--max-semi-space-size=8', bundle], {
          encoding: 'utf8',
          env: { ...process.env, K8S_ENCRYPT_MEMORY_SAVER: saver },
        });
        expect(r.stderr).toBe('');
        return JSON.parse(r.stdout) as { maxOld: number; majors: number };
      };
      const on = run('on');
      const off = run('off');
      // Measured (also on a loaded machine): 22-26 full GCs and 13-15 MB of old space, against
      // 1 full GC and 19 MB. The count is what does not move with the load; the size does a little.
      expect(on.majors).toBeGreaterThanOrEqual(10);
      expect(on.majors).toBeGreaterThanOrEqual(5 * Math.max(1, off.majors));
      expect(on.maxOld).toBeLessThan(off.maxOld);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
