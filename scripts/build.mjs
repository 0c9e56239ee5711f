// Bundles the CLI (and the test bed's processes) with esbuild. Dependencies stay external in
// node_modules; code splitting keeps lazily imported command code out of the start-up path.
import { build } from 'esbuild';
import { existsSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';

const { version } = JSON.parse(readFileSync('package.json', 'utf8'));

const list = (dir) =>
  existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => join(dir, f)) : [];

const entryPoints = ['src/cli.ts', ...list('test/bed/bin'), ...list('bench')];
// Build beside dist/ and swap it in, so that CLI runs already in flight (tests) never see a
// half-built or missing dist/.
const tmp = `dist.tmp-${process.pid}`;
rmSync(tmp, { recursive: true, force: true });
await build({
  entryPoints,
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
  define: { __K8S_ENCRYPT_VERSION__: JSON.stringify(version) },
  chunkNames: 'chunks/[name]-[hash]',
});

const old = `dist.old-${process.pid}`;
if (existsSync('dist')) renameSync('dist', old);
renameSync(tmp, 'dist');
rmSync(old, { recursive: true, force: true });
