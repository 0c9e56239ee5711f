// What a build stamps into the CLI: the package version and the git commit it was built from.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const git = (...args) => {
  try {
    return execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
};

/** `abcdef123456`, with `-dirty` when tracked files differ from it; `unknown` outside a checkout. */
export function gitCommit() {
  const head = git('rev-parse', '--short=12', 'HEAD');
  if (!head) return 'unknown';
  return git('status', '--porcelain', '--untracked-files=no') ? `${head}-dirty` : head;
}

export function buildDefines() {
  const { version } = JSON.parse(readFileSync('package.json', 'utf8'));
  return {
    __K8S_ENCRYPT_VERSION__: JSON.stringify(version),
    __K8S_ENCRYPT_COMMIT__: JSON.stringify(process.env.K8S_ENCRYPT_COMMIT || gitCommit()),
  };
}
