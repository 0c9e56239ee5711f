// The oldest Node.js the npm package supports (package.json "engines"), for CI's smoke run of the
// CLI on it: fetched once into .cache/node/VERSION (pinned version and integrity, as build:exe's
// Node) and its path printed. The project itself builds and tests on its own newer Node (the "node"
// devDependency), so without this nothing would ever run the CLI on the version it promises.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeBinary } from './lib/node-binary.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Pinned: the newest 22.x on the registry when it was set, and its tarball's sha512 integrity. */
export const OLDEST_NODE = {
  version: '22.23.5',
  integrity: 'sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==',
};

const log = (msg) => process.stderr.write(`fetch-node: ${msg}\n`);
const engines = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).engines?.node ?? '';
const oldest = /^>=\s*(\d+)/.exec(engines)?.[1];
if (oldest !== OLDEST_NODE.version.split('.')[0]) {
  log(`package.json engines.node is "${engines}" but scripts/fetch-node.mjs pins ${OLDEST_NODE.version}: pin the newest release of the oldest supported major`);
  process.exit(1);
}
if (process.arch !== 'x64') {
  log(`only linux-x64 is fetched (this is ${process.arch})`);
  process.exit(1);
}
try {
  const bin = nodeBinary({ arch: 'x64', ...OLDEST_NODE, dir: join(ROOT, '.cache', 'node', OLDEST_NODE.version, 'x64'), log });
  process.stdout.write(`${bin}\n`);
} catch (err) {
  log(`failed: ${err.message}`);
  process.exit(1);
}
