// The node binary of the npm registry's node-linux-ARCH@VERSION package (the Node.js project's
// own builds), fetched once with `npm pack` into `dir` and checked against a pinned sha512
// integrity before anything of it is unpacked. Used by build:exe (the single executables' Node)
// and by scripts/fetch-node.mjs (the oldest Node.js the package supports, for CI).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/** `{ arch, version, integrity, dir, log }` -> the path of bin/node under `dir`. */
export function nodeBinary({ arch, version, integrity, dir, log }) {
  const bin = join(dir, 'package', 'bin', 'node');
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const spec = `node-linux-${arch}@${version}`;
  log(`fetching ${spec} from the npm registry`);
  // npm pack downloads without the package's os/cpu check (arm64 cannot install here).
  const [{ filename }] = JSON.parse(execFileSync('npm', ['pack', spec, '--json', '--pack-destination', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
  const tgz = join(dir, filename);
  const got = `sha512-${createHash('sha512').update(readFileSync(tgz)).digest('base64')}`;
  if (got !== integrity) {
    rmSync(tgz);
    throw new Error(`${spec}: integrity ${got} is not the pinned ${integrity}`);
  }
  // Unpacked beside and renamed into place: a binary cut short (an interrupted run, a full disk)
  // is never where the check above would trust it.
  const tmp = join(dir, `.unpack-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    execFileSync('tar', ['-xzf', tgz, '-C', tmp, 'package/bin/node']);
    rmSync(join(dir, 'package'), { recursive: true, force: true });
    renameSync(join(tmp, 'package'), join(dir, 'package'));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(tgz, { force: true });
  }
  return bin;
}
