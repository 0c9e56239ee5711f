// Bundles the CLI (and, separately, the test bed's processes and the benchmarks) with esbuild.
// Dependencies stay external in node_modules; code splitting keeps lazily imported command code
// out of the start-up path. The CLI goes to dist/src/ alone (what the npm package ships); the bed
// and the benchmarks go to dist/test/ and dist/bench/ with their own chunks in dist/dev-chunks/.
import { build } from 'esbuild';
import { existsSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { buildDefines } from './build-info.mjs';

const list = (dir) =>
  existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => join(dir, f)) : [];

// Build beside dist/ and swap it in, so that CLI runs already in flight (tests) never see a
// half-built or missing dist/. dist/exe (npm run build:exe) is carried over.
const tmp = `dist.tmp-${process.pid}`;
rmSync(tmp, { recursive: true, force: true });
const common = {
  outdir: tmp,
  outbase: '.',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node22',
  packages: 'external',
  sourcemap: true,
  logLevel: 'warning',
  define: buildDefines(),
};
await Promise.all([
  build({ ...common, entryPoints: ['src/cli.ts'], chunkNames: 'src/chunks/[name]-[hash]' }),
  build({ ...common, entryPoints: [...list('test/bed/bin'), ...list('bench')], chunkNames: 'dev-chunks/[name]-[hash]' }),
]);

const old = `dist.old-${process.pid}`;
if (existsSync('dist')) renameSync('dist', old);
if (existsSync(join(old, 'exe'))) renameSync(join(old, 'exe'), join(tmp, 'exe'));
renameSync(tmp, 'dist');
rmSync(old, { recursive: true, force: true });
