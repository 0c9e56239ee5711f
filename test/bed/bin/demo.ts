/**
 * `npm run demo`: see encryption at rest happen without a cluster. A bed with a few dozen Secrets;
 * one Secret's raw etcd bytes (plaintext); `k8s-encrypt init` (or, while the CLI has no init, the
 * documented manual steps); the same bytes again, now `k8s:enc:aescbc:v1:...`.
 */
import { silenceIpServernameWarning } from '../../../src/ui/warnings';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { addEncryptionConfigFlag } from '../layout';
import { writeFileAtomic } from '../../../src/state/atomic';
import { repoRoot, startBed, type Bed } from '../index';
import type { TestApi } from '../api';

silenceIpServernameWarning();

const SECRET = { namespace: 'default', name: 'bed-secret-0' };
const ETCD_KEY = `/registry/secrets/${SECRET.namespace}/${SECRET.name}`;
const PASSWORD = 'bed-password-0';
/** The password as a plaintext value holds it: raw (protobuf) or base64 (JSON storage). */
const showsPassword = (raw: Buffer) => raw.includes(PASSWORD) || raw.includes(Buffer.from(PASSWORD).toString('base64'));

/** hexdump -C, limited to the first `max` bytes. */
function hexdump(buf: Buffer, max = 192): string {
  const out: string[] = [];
  const n = Math.min(buf.length, max);
  for (let off = 0; off < n; off += 16) {
    const row = buf.subarray(off, Math.min(off + 16, n));
    const hex = [...row].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    out.push(`${off.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  |${ascii}|`);
  }
  if (buf.length > max) out.push(`... ${buf.length - max} more bytes`);
  return out.join('\n');
}

const say = (s: string) => console.log(`\n== ${s}`);

async function showRaw(bed: Bed, when: string): Promise<Buffer> {
  const raw = await bed.etcdGet(ETCD_KEY);
  if (!raw) throw new Error(`${ETCD_KEY} is not in etcd`);
  say(`${when}: etcd value of ${ETCD_KEY} (${raw.length} bytes)`);
  console.log(hexdump(raw));
  return raw;
}

async function cli(args: string[], inherit = true) {
  return execa(process.execPath, [join(repoRoot(), 'bin/k8s-encrypt.js'), ...args], {
    reject: false,
    stdio: inherit ? 'inherit' : 'pipe',
    env: { NO_COLOR: process.env.NO_COLOR ?? '' },
  });
}

/** The documented manual procedure, for as long as the CLI has no `init`. */
async function manualSteps(bed: Bed, commands: Set<string>): Promise<void> {
  const node = bed.nodes[0]!;
  const configDir = join(node.root, 'etc/kubernetes/encryption');
  const config = join(configDir, 'config.yaml');
  if (commands.has('write-config')) {
    say(`k8s-encrypt write-config (a fresh aescbc key)`);
    const r = await cli([...node.cliArgs, 'write-config', '--provider', 'aescbc', '--kube-version', bed.kubeVersion]);
    if (r.exitCode !== 0) throw new Error(`write-config failed (exit ${r.exitCode})`);
  } else {
    say(`writing ${config} (a fresh 32-byte aescbc key, identity as reader)`);
    const key = randomBytes(32).toString('base64');
    await writeFileAtomic(
      config,
      [
        'apiVersion: apiserver.config.k8s.io/v1',
        'kind: EncryptionConfiguration',
        'resources:',
        '  - resources: [secrets]',
        '    providers:',
        `      - aescbc: { keys: [{ name: key1, secret: ${key} }] }`,
        '      - identity: {}',
        '',
      ].join('\n'),
    );
  }

  say(`editing ${node.manifest}: --encryption-provider-config plus a hostPath volume and mount`);
  const manifest = addEncryptionConfigFlag(await readFile(node.manifest, 'utf8'), { configFile: config, mountDir: configDir });
  const before = node.apiserverStarts();
  await writeFileAtomic(node.manifest, manifest, { mode: 0o600 });

  say('waiting for the kubelet to restart kube-apiserver');
  await node.kubelet.readyAfterStart(before + 1);
  console.log(`kube-apiserver restarted (pid ${node.kubelet.pid()}) and ready`);

  say('rewriting every Secret (GET + PUT) so that it is stored encrypted');
  const api = await bed.api(0);
  const n = await rewriteSecrets(api);
  console.log(`rewrote ${n} Secrets`);
}

async function rewriteSecrets(api: TestApi): Promise<number> {
  let token: string | undefined;
  let count = 0;
  do {
    const page = await api.list('/api/v1/secrets', { limit: 50, continue: token });
    if (page.status !== 200) throw new Error(`list secrets: HTTP ${page.status}`);
    await Promise.all(
      page.body.items.map(async (s: any) => {
        const r = await api.put(`/api/v1/namespaces/${s.metadata.namespace}/secrets/${s.metadata.name}`, s);
        if (r.status !== 200) throw new Error(`PUT ${s.metadata.namespace}/${s.metadata.name}: HTTP ${r.status}`);
        count++;
      }),
    );
    token = page.body.metadata?.continue || undefined;
  } while (token);
  return count;
}

async function main(): Promise<void> {
  say('starting a local control plane (etcd, kube-apiserver and kubelet stand-ins) with 36 Secrets');
  const bed = await startBed({ secrets: 36 });
  const stop = () => void bed.stop().finally(() => process.exit(130));
  process.once('SIGINT', stop);
  try {
    const node = bed.nodes[0]!;
    console.log(`node root: ${node.root}`);
    const plain = await showRaw(bed, 'before');
    if (!showsPassword(plain)) throw new Error('the Secret is not stored in plaintext at the start');
    console.log(`(${PASSWORD} is readable by anyone who can read etcd or its backups)`);

    const help = await cli(['--help'], false);
    const commands = new Set([...String(help.stdout).matchAll(/^\s{2}([a-z][a-z-]+)\b/gm)].map((m) => m[1]!));
    // --manual: show the documented steps even when the CLI has init.
    if (commands.has('init') && !process.argv.includes('--manual')) {
      say(`k8s-encrypt --root ${node.root} init --yes`);
      const r = await cli([...node.cliArgs, 'init', '--yes']);
      if (r.exitCode !== 0) throw new Error(`k8s-encrypt init failed (exit ${r.exitCode})`);
    } else {
      console.log(commands.has('init') ? '\n(--manual: doing init\'s steps by hand)' : '\n(this build of k8s-encrypt has no `init` yet: doing its steps by hand)');
      await manualSteps(bed, commands);
    }

    const enc = await showRaw(bed, 'after');
    const prefix = enc.subarray(0, 40).toString('latin1').match(/^k8s:enc:[a-z0-9]+:v\d:[^:]+:/)?.[0];
    if (!prefix || showsPassword(enc)) throw new Error('the Secret is not stored encrypted');
    console.log(`\nstored as ${prefix}... : the password is no longer in etcd in the clear`);
    const cfg = parse(await readFile(join(node.root, 'etc/kubernetes/encryption/config.yaml'), 'utf8').catch(() => 'null'));
    if (cfg) console.log(`first provider now: ${Object.keys(cfg.resources?.[0]?.providers?.[0] ?? {})[0]}`);
  } finally {
    await bed.stop();
  }
}

main().catch((err) => {
  console.error(`demo failed: ${err instanceof Error ? err.message : err}`);
  process.exit(1);
});
