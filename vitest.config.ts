import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

// The suite starts the CLI and the beds' Node processes some thousands of times. Node's on-disk
// compile cache (Node >= 22.1) spares each start compiling the same modules again; the workers
// and what they spawn inherit it (the bed passes it on where a process gets its own environment:
// test/bed/kubelet.ts, test/bed/sshd.ts). It lives in the checkout's .tmp/, never in the CLI
// itself (bin/k8s-encrypt.js would otherwise write into the operator's temp dir).
process.env.NODE_COMPILE_CACHE ??= fileURLToPath(new URL('./.tmp/node-compile-cache', import.meta.url));

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Beds start real etcd processes; two cores do not take many at once.
    maxWorkers: 2,
  },
});
