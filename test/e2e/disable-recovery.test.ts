// disable after kill -9 at its stage boundaries (the config write, the rewrite, the unpatch, the
// removal of the file): the re-run finishes, every Secret is plaintext and reads back unchanged.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdPrefixCounts, secretHashes } from '../../bench/reencrypt';
import { startBed, type Bed } from '../bed/index';
import { BIN, jsonOf, runCli } from '../helpers/cli';

const JOURNAL_REL = 'var/lib/k8s-encrypt/journals/disable.json';
let bed: Bed;
let before: Map<string, string>;
const root = () => bed.nodes[0]!.root;
const journal = async () => JSON.parse(await readFile(join(root(), JOURNAL_REL), 'utf8').catch(() => '{"steps":[]}'));
const userSecrets = async () => new Map([...(await secretHashes(await bed.api(0)))].filter(([k]) => !k.includes('/k8s-encrypt-canary-')));

beforeAll(async () => {
  bed = await startBed({ secrets: 150 });
  before = await secretHashes(await bed.api(0));
  const r = await runCli([...bed.nodes[0]!.cliArgs, '--yes', 'init']);
  expect(r.exitCode, String(r.stderr)).toBe(0);
}, 90_000);
afterAll(async () => bed?.stop());

describe('disable after kill -9', () => {
  it('continues from every boundary and leaves nothing encrypted and nothing lost', async () => {
    const boundaries = ['promote:begin', 'promote:write', 'promote:wait', 'rewrite:run', 'prune:check', 'prune:unpatch', 'prune:wait', 'prune:kubeadm-config', 'prune:remove-config'];
    const killedAt: string[] = [];
    for (const boundary of boundaries) {
      const child = execa(process.execPath, [BIN, ...bed.nodes[0]!.cliArgs, '--yes', '--json', 'disable'], { reject: false, env: { NO_COLOR: '1', CI: 'true' } });
      let exited = false;
      void child.then(() => (exited = true));
      for (;;) {
        const j = await journal();
        if (j.status === 'done' || exited) break;
        if (j.steps.some((s: any) => s.name === boundary)) {
          child.kill('SIGKILL');
          killedAt.push(boundary);
          break;
        }
        await new Promise((r) => setTimeout(r, 15));
      }
      const r = await child;
      if ((await journal()).status === 'done') {
        expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
        break;
      }
      expect(r.signal).toBe('SIGKILL');
      await bed.nodes[0]!.waitReady(30_000);
      expect(await userSecrets()).toEqual(before);
    }
    expect(killedAt.length).toBeGreaterThanOrEqual(5);
    if ((await journal()).status !== 'done') {
      const r = await runCli([...bed.nodes[0]!.cliArgs, '--yes', '--json', 'disable']);
      expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
      expect(jsonOf(r).state).toBe('done');
    }
    await bed.nodes[0]!.waitReady(30_000);
    expect(await secretHashes(await bed.api(0))).toEqual(before);
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ plaintext: before.size });
    expect(await readFile(bed.nodes[0]!.manifest, 'utf8')).not.toContain('--encryption-provider-config');
    await expect(stat(join(root(), 'etc/kubernetes/encryption/config.yaml'))).rejects.toThrow();
    const backups = await readdir(join(root(), 'var/lib/k8s-encrypt/backups'));
    expect(backups.some((b) => b.startsWith('config.yaml.'))).toBe(true);
  }, 90_000);
});
