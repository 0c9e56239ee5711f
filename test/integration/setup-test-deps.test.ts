// scripts/setup-test-deps.sh (run by npm test, npm run demo and CI) installs what the tests need
// and stops only the services those packages started, never a process found by name: the
// cluster's own etcd on a control-plane node must survive it. apt-get, service, systemctl and the
// kill-by-name tools are stand-ins on PATH that record their calls; a live process named "etcd"
// stands for the cluster's etcd.
import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { chmod, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const SCRIPT = fileURLToPath(new URL('../../scripts/setup-test-deps.sh', import.meta.url));
const isRoot = process.getuid?.() === 0;
let dir: string;
let log: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-setup-'));
  log = join(dir, 'calls.log');
  for (const tool of ['apt-get', 'service', 'systemctl', 'pkill', 'killall', 'kill']) {
    await writeFile(join(dir, tool), `#!/bin/sh\necho "${tool} $*" >> ${log}\n`);
    await chmod(join(dir, tool), 0o755);
  }
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const run = (missing: string) =>
  execa('bash', [SCRIPT], { reject: false, env: { PATH: `${dir}:${process.env.PATH}`, K8S_ENCRYPT_SETUP_ASSUME_MISSING: missing } });
const calls = async () => (await readFile(log, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean);

describe('setup-test-deps.sh', () => {
  it('does nothing when etcd and sshd are there', async () => {
    const r = await run('');
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(await calls()).toEqual([]);
  });

  it.runIf(isRoot)('installs what is missing, stops only those packages\' services, and leaves a process named etcd alone', async () => {
    const fakeEtcd = join(dir, 'etcd');
    await copyFile('/bin/sleep', fakeEtcd);
    await chmod(fakeEtcd, 0o755);
    const clusterEtcd = spawn(fakeEtcd, ['60'], { stdio: 'ignore' });
    try {
      const r = await run('etcd,ssh');
      expect(r.exitCode, String(r.stderr)).toBe(0);
      expect(r.stderr).toContain('installing etcd-server etcd-client openssh-server');
      const c = await calls();
      expect(c).toContain('apt-get install -y -qq etcd-server etcd-client openssh-server');
      const stops = c.filter((l) => / stop/.test(l));
      expect(stops.length).toBe(2);
      expect(stops.join('\n')).toMatch(/(service etcd stop|systemctl stop etcd\.service)/);
      expect(stops.join('\n')).toMatch(/(service ssh stop|systemctl stop ssh\.service)/);
      expect(c.filter((l) => /^(pkill|killall|kill) /.test(l))).toEqual([]);
      expect(clusterEtcd.exitCode).toBeNull();
      expect(() => process.kill(clusterEtcd.pid!, 0)).not.toThrow();
    } finally {
      clusterEtcd.kill();
    }
  });

  it.runIf(!isRoot)('without root it names the packages and the command, exit 1', async () => {
    const r = await run('ssh');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('apt-get install -y openssh-server');
  });
});
