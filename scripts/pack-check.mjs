// npm run pack:check: packs the npm package, installs the tarball into a temporary prefix with
// this Node.js (the project's), and runs `k8s-encrypt --help` and `validate-config` from there.
// Prints the tarball's file count and sizes. Exit 1 when anything fails.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const tmp = mkdtempSync(join(tmpdir(), 'k8s-encrypt-pack-'));
const env = { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH}` };
const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'inherit'], ...opts });
try {
  const [pack] = JSON.parse(sh('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: ROOT }));
  const tgz = join(tmp, pack.filename);
  const bad = pack.files.map((f) => f.path).filter((p) => /^dist\/(test|bench|dev-chunks|exe)\/|\.map$/.test(p));
  if (bad.length) throw new Error(`the package ships files the CLI does not need: ${bad.slice(0, 5).join(', ')}`);
  const prefix = join(tmp, 'prefix');
  sh('npm', ['install', '--global', '--prefix', prefix, '--no-audit', '--no-fund', '--loglevel=error', tgz]);
  const cli = join(prefix, 'bin', 'k8s-encrypt');
  const help = sh(cli, ['--help']);
  if (!help.startsWith('Usage: k8s-encrypt')) throw new Error(`--help printed: ${help.slice(0, 200)}`);
  const valid = sh(cli, ['validate-config', join(ROOT, 'test', 'fixtures', 'configs', 'aescbc-two-keys.yaml')]);
  const installed = sh('du', ['-sk', join(prefix, 'lib', 'node_modules')]).split('\t')[0];
  console.log(`npm package: ${pack.entryCount} files, tarball ${(statSync(tgz).size / 1024).toFixed(0)} KiB, unpacked ${(pack.unpackedSize / 1024).toFixed(0)} KiB; installed with dependencies ${(Number(installed) / 1024).toFixed(1)} MiB`);
  console.log(`installed CLI (${process.version}): --help ok; validate-config: ${valid.trim().split('\n')[0]}`);
} catch (err) {
  console.error(`pack:check failed: ${err.message}`);
  process.exitCode = 1;
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
