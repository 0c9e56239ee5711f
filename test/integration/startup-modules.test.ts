// What the npm distribution (ES modules on the built dist/) loads of Node itself for a command that
// talks to an apiserver: not Node's bundled undici and web streams, which an ES module import of
// node:http pulls in through its lazy WebSocket export (about 10 MB of resident memory). And a
// kubeconfig that cannot be read is an error without loading @kubernetes/client-node (its
// loader is only for exec and auth-provider plugins).
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

// A preload that reports, at exit, every module specifier the process resolved (module.registerHooks).
const RESOLVED = `data:text/javascript,${encodeURIComponent(
  "import { registerHooks } from 'node:module'; const seen = []; registerHooks({ resolve(s, c, next) { seen.push(s); return next(s, c); } }); process.on('exit', () => process.stderr.write('\\nRESOLVED ' + JSON.stringify(seen) + '\\n'));",
)}`;

// Every run gets --root in this temp dir (an empty node root): re-encrypt-all reads the
// EncryptionConfiguration under its root, never this machine's /etc/kubernetes.
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
      ['--import', PRELOAD, BIN, '--root', join(dir, 'root'), '--json', 're-encrypt-all', '--kubeconfig', join(dir, 'kubeconfig'), '--state-dir', join(dir, 'state'), '--yes'],
      { reject: false, env: { NO_COLOR: '1', CI: 'true' }, timeout: 60_000 },
    );
    const line = String(r.stderr).split('\n').find((l) => l.startsWith('LOADED '));
    expect(line, String(r.stderr)).toBeDefined();
    const loaded = JSON.parse(line!.slice('LOADED '.length)) as string[];
    // It got as far as connecting.
    expect(String(r.stdout) + String(r.stderr)).toMatch(/127\.0\.0\.1:1/);
    expect(loaded.filter((m) => /undici|webstreams/.test(m))).toEqual([]);
  });

  it('a kubeconfig that cannot be read fails with its reason, without loading client-node', async () => {
    for (const [path, reason] of [
      [join(dir, 'missing', 'kubeconfig'), 'it does not exist'],
      [dir, 'it is a directory'],
    ] as const) {
      const r = await execa(
        process.execPath,
        ['--import', RESOLVED, BIN, '--root', join(dir, 'root'), 're-encrypt-all', '--kubeconfig', path, '--state-dir', join(dir, 'state-unread'), '--yes'],
        { reject: false, env: { NO_COLOR: '1', CI: 'true' }, timeout: 60_000 },
      );
      expect(r.exitCode, String(r.stderr)).toBe(2);
      expect(String(r.stderr)).toContain(`error: cannot read kubeconfig ${path}: ${reason} (pass --kubeconfig`);
      const line = String(r.stderr).split('\n').find((l) => l.startsWith('RESOLVED '));
      expect(line, String(r.stderr)).toBeDefined();
      const resolved = JSON.parse(line!.slice('RESOLVED '.length)) as string[];
      expect(resolved.length).toBeGreaterThan(0);
      expect(resolved.filter((s) => s.includes('@kubernetes/client-node'))).toEqual([]);
    }
  });
});
