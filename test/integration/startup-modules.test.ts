// What the npm distribution (ES modules on the built dist/) loads of Node itself for a command that
// talks to an apiserver: not Node's bundled undici and web streams, which an ES module import of
// node:http pulls in through its lazy WebSocket export (about 10 MB of resident memory).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN } from '../helpers/cli';

// A preload that reports, at exit, the Node-internal modules the process loaded.
const PRELOAD = `data:text/javascript,${encodeURIComponent(
  "process.on('exit', () => process.stderr.write('\\nLOADED ' + JSON.stringify(process.moduleLoadList) + '\\n'));",
)}`;

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-startup-'));
  // An apiserver nobody listens on: the command loads its HTTP client, then fails to connect.
  await writeFile(
    join(dir, 'kubeconfig'),
    `apiVersion: v1
kind: Config
clusters: [{ name: c, cluster: { server: "https://127.0.0.1:1", insecure-skip-tls-verify: true } }]
users: [{ name: u, user: { token: t } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`,
    { mode: 0o600 },
  );
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('start-up modules', () => {
  it('re-encrypt-all reaches the apiserver without loading undici or web streams', async () => {
    const r = await execa(
      process.execPath,
      ['--import', PRELOAD, BIN, '--json', 're-encrypt-all', '--kubeconfig', join(dir, 'kubeconfig'), '--state-dir', join(dir, 'state'), '--yes'],
      { reject: false, env: { NO_COLOR: '1', CI: 'true' }, timeout: 60_000 },
    );
    const line = String(r.stderr).split('\n').find((l) => l.startsWith('LOADED '));
    expect(line, String(r.stderr)).toBeDefined();
    const loaded = JSON.parse(line!.slice('LOADED '.length)) as string[];
    // It got as far as connecting.
    expect(String(r.stdout) + String(r.stderr)).toMatch(/127\.0\.0\.1:1/);
    expect(loaded.filter((m) => /undici|webstreams/.test(m))).toEqual([]);
  });
});
