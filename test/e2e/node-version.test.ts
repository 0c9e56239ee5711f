// README: "Requires Node.js >= 22". On an older Node the CLI says so in one line (exit 2) instead
// of failing inside a dependency with an internal error and a stack trace.
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { unsupportedNode } from '../../src/version';
import { BIN, NODE } from '../helpers/cli';

const PRETEND_20 = fileURLToPath(new URL('../fixtures/node/pretend-node-20.mjs', import.meta.url));
const run = (args: string[]) =>
  execa(NODE, ['--import', PRETEND_20, BIN, ...args], { reject: false, input: '', env: { NO_COLOR: '1', CI: 'true' } });

describe('an unsupported Node.js', () => {
  it.each([
    ['20.19.0', true],
    ['21.7.3', true],
    ['22.0.0', false],
    ['24.21.0', false],
  ])('%s is refused: %s', (version, refused) => {
    expect(unsupportedNode(version) !== undefined).toBe(refused);
  });

  it('is one clear line with a hint and exit 2, before any command runs', async () => {
    const r = await run(['--kubeconfig', '/nonexistent', 'status', '--no-etcd']);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(String(r.stderr).trim().split('\n')).toEqual([
      'error: k8s-encrypt needs Node.js >= 22, this is v20.19.0; nothing was done (install Node.js 22 or newer and run it with that node)',
    ]);
  });

  it('is one JSON document with --json', async () => {
    const r = await run(['--json', 'generate-key']);
    expect(r.exitCode).toBe(2);
    expect(JSON.parse(String(r.stdout))).toEqual({
      ok: false,
      error: {
        message: 'k8s-encrypt needs Node.js >= 22, this is v20.19.0; nothing was done',
        hint: 'install Node.js 22 or newer and run it with that node',
        exitCode: 2,
        kind: 'usage',
      },
    });
  });
});
