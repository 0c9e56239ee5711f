/**
 * What the CLI reads at run time besides its code (the KMS plugin templates, protocol
 * descriptors), and how this process was started. In the single executable (Node SEA) the files
 * are assets embedded in the executable; from the npm package or a checkout they are the package's
 * own files, found from this module's location.
 */
import * as sea from 'node:sea';
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CliError, ExitCode } from '../ui/errors';

/** The names by which the CLI is run: itself, and as the kubectl plugin `kubectl encrypt`. */
export const CLI_NAME = 'k8s-encrypt';
export const KUBECTL_PLUGIN_NAME = 'kubectl-encrypt';

/** True when this process is the k8s-encrypt single executable (no Node.js installation needed). */
export function isSingleExecutable(): boolean {
  return sea.isSea();
}

/**
 * The path of the executable this process runs from, when it is the single executable: a file
 * that can be copied to another node of the same architecture and run there as it is. Undefined
 * when the CLI runs on a Node.js installation (its files are then the npm package, not one file).
 */
export function ownExecutable(): string | undefined {
  return isSingleExecutable() ? process.execPath : undefined;
}

/**
 * The name the operator ran: `kubectl-encrypt` when started as the kubectl plugin (a link or copy
 * of that name: kubectl runs plugins by their path, which is argv0; node + a script link shows it
 * as the script), `k8s-encrypt` otherwise. execPath is no help: the kernel resolves links in it.
 */
export function invokedAs(names: Array<string | undefined> = [process.argv0, process.argv[1]]): string {
  for (const p of names) if (p && basename(p).replace(/\.(c|m)?js$/, '') === KUBECTL_PLUGIN_NAME) return KUBECTL_PLUGIN_NAME;
  return CLI_NAME;
}

/** The package root (the directory holding package.json and templates/), from this module. */
function packageRoot(): string {
  const here = fileURLToPath(import.meta.url);
  for (let dir = dirname(here), i = 0; i < 6; i++, dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'templates'))) return dir;
  }
  throw new CliError('cannot find the installation directory of k8s-encrypt (package.json and templates/)', {
    hint: 'the installation is incomplete: reinstall the package',
    exitCode: ExitCode.Internal,
  });
}

/** An asset name is a relative path inside the package, like `templates/kms/x.yaml`. */
function checkName(name: string): string {
  const n = normalize(name);
  if (n !== name || n.startsWith('..') || n.startsWith(sep) || n.includes(`${sep}..${sep}`)) {
    throw new CliError(`internal error: bad asset name ${JSON.stringify(name)}`, { exitCode: ExitCode.Internal });
  }
  return n;
}

/** The text of an asset: from the executable when it is one, else the package file of that name. */
export function readAsset(name: string): string {
  checkName(name);
  if (isSingleExecutable()) {
    try {
      return sea.getAsset(name, 'utf8');
    } catch (err) {
      throw new CliError(`this executable has no embedded ${name}: ${(err as Error).message}`, {
        hint: 'the executable was built incompletely: download it again and check it against SHA256SUMS',
        exitCode: ExitCode.Internal,
        cause: err,
      });
    }
  }
  const path = join(packageRoot(), name);
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read ${path}: ${(err as Error).message}`, {
      hint: 'the installation is incomplete: reinstall the package',
      exitCode: ExitCode.Internal,
      cause: err,
    });
  }
}
