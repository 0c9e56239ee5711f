// Fleet mode on three control planes sharing one etcd, each reached through a real OpenSSH sshd
// on loopback (the inventory's `root` selects the bed node). One command per operation drives
// every node; a reader reads every Secret through every apiserver the whole time.
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdPrefixCounts, secretHashes } from '../../bench/reencrypt';
import { BIN, cliCommand, jsonOf, NODE, runCli } from '../helpers/cli';
import { sha, startFleetBed, VERSION, type FleetBed } from './fleet-bed';
import { okJson } from './rotate-helpers';

let f: FleetBed;
let bed: FleetBed['bed'];
let dir: string;
let before: Map<string, string>;
let fleet: FleetBed['fleet'];
let configText: FleetBed['configText'];
let manifestText: FleetBed['manifestText'];
let providersOf: FleetBed['providersOf'];
let snapshot: FleetBed['snapshot'];
let withReader: FleetBed['withReader'];
let writeInventory: FleetBed['writeInventory'];
let sshd: FleetBed['sshd'];
let nodeBin: string;

beforeAll(async () => {
  f = await startFleetBed({
    nodes: 3,
    secrets: 40,
    // k8s-encrypt "installed" on every node: this checkout's build run by the project's Node.
    nodeBin: async (d) => {
      nodeBin = join(d, 'k8s-encrypt');
      await writeFile(nodeBin, `#!/bin/sh\nexec '${NODE}' '${BIN}' "$@"\n`, { mode: 0o700 });
      return nodeBin;
    },
  });
  ({ bed, sshd, dir, before, fleet, configText, manifestText, providersOf, snapshot, withReader, writeInventory } = f);
}, 180_000);
afterAll(() => f?.stop());

describe('fleet mode on three control planes', () => {
  it('refuses an unknown host key, an unreachable node and another version before any node is changed', async () => {
    const start = await snapshot();
    const emptyKnown = join(dir, 'known_hosts-empty');
    await writeFile(emptyKnown, '');
    let r = await fleet(['init'], { knownHosts: emptyKnown });
    expect(r.exitCode).toBe(6);
    expect(jsonOf(r).error.message).toMatch(/^cp-0: the host key of cp-0 .* is not in .*known_hosts-empty/);

    const unreachable = await writeInventory('unreachable.yaml', (i) => (i === 2 ? { port: 1 } : {}));
    r = await fleet(['init'], { inventory: unreachable });
    expect(r.exitCode).toBe(3);
    expect(jsonOf(r).error.message).toMatch(/^cp-2: cannot connect to cp-2 \(.*:1\)/);
    // Without --json: the nodes that answered are said, each as it connected, before the error.
    r = await runCli(['--yes', '--state-dir', f.stateDir, 'init', ...f.fleetFlags({ inventory: unreachable })]);
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toMatch(/^\[cp-0\] connected to /m);
    expect(r.stderr).toMatch(/^\[cp-1\] connected to /m);
    expect(r.stderr).not.toMatch(/\[cp-2\] connected to/);
    expect(r.stderr).toMatch(/^error: cp-2: cannot connect to cp-2 \(.*:1\)/m);
    // A node that accepts the connection and never answers holds the run until the connect
    // timeout, but not the news of the nodes that did connect: their lines come at once.
    const silent = createServer(() => {}).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    try {
      const hangs = await writeInventory('silent.yaml', (i) => (i === 2 ? { port: (silent.address() as AddressInfo).port } : {}));
      const c = cliCommand(['--yes', '--state-dir', f.stateDir, 'init', ...f.fleetFlags({ inventory: hangs }), '--connect-timeout', '8s']);
      const t0 = Date.now();
      const child = execa(c.file, c.args, { reject: false, env: c.env });
      const seen = new Map<string, number>();
      child.stderr!.on('data', (b: Buffer) => {
        for (const m of String(b).matchAll(/^\[(cp-\d)\] connected to /gm)) if (!seen.has(m[1]!)) seen.set(m[1]!, Date.now() - t0);
      });
      const done = await child;
      const endedAt = Date.now() - t0;
      expect(done.exitCode, String(done.stderr)).toBe(3);
      expect(endedAt).toBeGreaterThanOrEqual(8000);
      expect([...seen.keys()].sort()).toEqual(['cp-0', 'cp-1']);
      for (const at of seen.values()) expect(at).toBeLessThan(endedAt - 3000);
    } finally {
      silent.close();
    }

    const old = join(dir, 'k8s-encrypt-old');
    await writeFile(old, '#!/bin/sh\necho 0.0.1\n', { mode: 0o700 });
    r = await fleet(['init'], { bin: old });
    expect(r.exitCode).toBe(6);
    expect(jsonOf(r).error).toMatchObject({ message: expect.stringMatching(new RegExp(`^cp-0: .*k8s-encrypt-old is k8s-encrypt 0.0.1, this is ${VERSION.replace(/\./g, '\\.')}`)), hint: expect.stringMatching(/same version/) });

    // The wrong node behind an inventory entry is caught by its own status.
    r = await fleet(['init'], { inventory: await writeInventory('swapped.yaml', (i) => (i === 1 ? { root: bed.nodes[2]!.root } : i === 2 ? { root: bed.nodes[1]!.root } : {})) });
    expect(r.exitCode).toBe(2);
    expect(jsonOf(r).error.message).toMatch(/^cp-1: the inventory says cp-1, but that node's apiserver runs as cp-2/);

    // identityFile ~/... is the orchestrator's home (HOME here: a temp dir); a missing one is one
    // line naming the node and the path, before any node is connected to.
    const home = join(dir, 'home');
    const tilde = await writeInventory('tilde.yaml', (i) => (i === 2 ? { identityFile: '~/no-such-key' } : {}));
    r = await runCli(['--state-dir', join(dir, 'orchestrator'), 'init', '--yes', '--fleet', tilde, '--known-hosts', sshd.knownHostsFile, '--node-bin', nodeBin], { env: { HOME: home } });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^error: cp-2: cannot read identityFile ${home}/no-such-key: no such file`, 'm'));
    expect(r.stderr).not.toMatch(/connected to/);
    expect(await snapshot()).toEqual(start);
  }, 120_000);

  it('init --fleet turns encryption on everywhere in one command, never failing a read', async () => {
    const r = await withReader(() => fleet(['init']));
    const j = okJson(r);
    expect(j.state).toBe('done');
    // --json: the rewrite's progress stays off stdout (one document) and off the terminal; the
    // document has the rewrite summary with the concurrency level it settled on.
    expect(r.stderr).not.toMatch(/secrets: \d+/);
    expect(j.rewrite).toEqual([expect.objectContaining({ node: 'cp-0', failed: 0, concurrency: expect.objectContaining({ mode: 'adaptive', settled: expect.any(Number) }) })]);
    expect(j.rewrite[0].rewritten + j.rewrite[0].unchanged).toBeGreaterThanOrEqual(before.size);
    expect(j.steps.map((s: any) => `${s.node} ${s.command}`)).toEqual(['cp-0 init', 'cp-1 init --from-config -', 'cp-2 init --from-config -', 'cp-0 init', 'cp-1 init --from-config -', 'cp-2 init --from-config -', 'cp-0 init']);
    const texts = await Promise.all([0, 1, 2].map(configText));
    expect(new Set(texts).size).toBe(1);
    const key = (await providersOf(0))[0].aescbc.keys[0].name;
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ [`k8s:enc:aescbc:v1:${key}`]: before.size });
    // Nothing of the key on the orchestrator's side: its journal holds a sha256 at most.
    const secret = (await providersOf(0))[0].aescbc.keys[0].secret as string;
    const journal = await readFile(await f.journalFile('init'), 'utf8');
    expect(journal).not.toContain(secret);
    expect(JSON.stringify(j)).not.toContain(secret);
  }, 300_000);

  it('rotate-key --fleet inventory.yaml --yes is the whole rotation', async () => {
    const oldKey = (await providersOf(0))[0].aescbc.keys[0].name;
    const r = await withReader(() => runCli(['--yes', '--state-dir', f.stateDir, 'rotate-key', ...f.fleetFlags()], { timeoutMs: 300_000 }));
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stderr).toMatch(/\[cp-1\] add-reader: .*proven/);
    // The rewrite on the first node, relayed from its --progress-json stderr as a line named after it.
    expect(r.stderr).toMatch(/^\[cp-0\] secrets: \d+(\/\d+)? done \(\d+ rewritten, /m);
    expect(r.stdout).toMatch(/rewrite on cp-0: \d+ rewritten, .*concurrency settled at \d+ \(adaptive/);
    expect(r.stdout).toMatch(/fleet rotate-key finished on 3 control plane/);
    const p = await providersOf(0);
    expect(p).toHaveLength(1);
    expect(p[0].aescbc.keys).toHaveLength(1);
    expect(p[0].aescbc.keys[0].name).not.toBe(oldKey);
    expect(new Set(await Promise.all([0, 1, 2].map(configText))).size).toBe(1);
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ [`k8s:enc:aescbc:v1:${p[0].aescbc.keys[0].name}`]: before.size });
  }, 300_000);

  it('a node whose apiserver does not come back is rolled back; kill -9 of the orchestrator mid-stage, then a re-run, finishes', async () => {
    await withReader(async () => {
      // cp-2 crashes with any new config: its own run puts the old one back (exit 5).
      const cp2Before = await configText(2);
      await bed.nodes[2]!.setKnobs({ crashOnStart: true });
      let written = false;
      const healer = setInterval(() => {
        void configText(2).then((t) => {
          if (t !== cp2Before) written = true;
          else if (written) void bed.nodes[2]!.setKnobs({});
        });
      }, 50);
      let r;
      try {
        r = await fleet(['rotate-key', '--timeout', '6s']);
      } finally {
        clearInterval(healer);
        await bed.nodes[2]!.setKnobs({});
      }
      expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(5);
      expect(jsonOf(r).error.message).toMatch(/^cp-2: rotate-key --from-config -: /);
      await bed.nodes[2]!.waitReady(30_000);
      // Consistent: cp-0 and cp-1 at add-reader (the new key a reader), cp-2 back on its old config.
      expect(await configText(2)).toBe(cp2Before);
      expect(await configText(1)).toBe(await configText(0));
      expect((await providersOf(0))[0].aescbc.keys).toHaveLength(2);

      // Re-run, killed once the fleet is between followers of a stage; then a re-run finishes.
      const journalFile = await f.journalFile('rotate-key');
      const child = execa(NODE, [BIN, '--json', '--yes', '--state-dir', f.stateDir, 'rotate-key', ...f.fleetFlags()], { reject: false, env: { NO_COLOR: '1', CI: 'true' } });
      let killed = false;
      for (let i = 0; i < 6000 && !killed; i++) {
        const j = JSON.parse(await readFile(journalFile, 'utf8'));
        if (j.phase === 'followers' && j.stage === 'promote' && j.lagging.length === 1) {
          child.kill('SIGKILL');
          killed = true;
        }
        await new Promise((res) => setTimeout(res, 20));
      }
      expect(killed).toBe(true);
      expect((await child).signal).toBe('SIGKILL');
      const done = okJson(await fleet(['rotate-key']));
      expect(done.state).toBe('done');
    });
    expect(new Set(await Promise.all([0, 1, 2].map(configText))).size).toBe(1);
    expect((await providersOf(0))[0].aescbc.keys).toHaveLength(1);
    for (const i of [0, 1, 2]) expect(await secretHashes(await bed.api(i))).toEqual(before);
  }, 300_000);

  it('status --fleet shows every node in one table with the etcd verdict', async () => {
    const r = await fleet(['status']);
    const j = okJson(r);
    expect(j).toMatchObject({ healthy: true, agree: true, etcd: { verdict: 'ok' } });
    expect(j.nodes.map((n: any) => [n.node, n.stage, n.runsCurrentConfig])).toEqual([
      ['cp-0', 'prune', 'yes'],
      ['cp-1', 'prune', 'yes'],
      ['cp-2', 'prune', 'yes'],
    ]);
    const human = await runCli(['status', ...f.fleetFlags()]);
    expect(human.stdout).toMatch(/every node runs the same stage and config/);
    expect(human.stdout).toMatch(/✓ secrets: \d+ objects/);
  }, 120_000);

  it('rollback --fleet: a dry run changes nothing; then each node in turn gets its previous config back, and a second rollback rolls forward', async () => {
    // After the finished rotation every node runs the new key alone; its newest differing backup
    // is the promote stage's config (new key first, the old one a reader), which reads all of etcd.
    const start = await snapshot();
    const key = (await providersOf(0))[0].aescbc.keys[0];
    const dry = okJson(await fleet(['rollback', '--dry-run']));
    expect(dry.dryRun).toBe(true);
    expect(Object.keys(dry.plans)).toEqual(['cp-0', 'cp-1', 'cp-2']);
    for (const [i, n] of dry.nodes.entries()) {
      expect(n).toMatchObject({ node: `cp-${i}`, binary: nodeBin, upload: null, notChecked: [] });
      expect(n.checked).toEqual(['SSH login and host key', expect.stringMatching(/^logged in as /), `manifest ${bed.nodes[i]!.manifest}`, 'its own status answers']);
    }
    for (const [i, plan] of Object.values<any>(dry.plans).entries()) {
      expect(plan.from.startsWith(bed.nodes[i]!.root)).toBe(true);
      expect(plan.diff).not.toBe('');
    }
    expect(JSON.stringify(dry)).not.toContain(key.secret);
    expect(await snapshot()).toEqual(start);

    const j = await withReader(async () => okJson(await fleet(['rollback'])));
    expect(j.state).toBe('done');
    expect(j.steps.map((s: any) => `${s.node} ${s.command} ${s.state}`)).toEqual(['cp-0 rollback done', 'cp-1 rollback done', 'cp-2 rollback done']);
    expect(JSON.stringify(j)).not.toContain(key.secret);
    const back = await snapshot();
    const texts = await Promise.all([0, 1, 2].map(configText));
    expect(new Set(texts).size).toBe(1);
    for (const [i, n] of back.entries()) {
      expect(n.config).toBe(sha(texts[0]!));
      expect(n.config).not.toBe(start[i]!.config);
      expect(n.starts).toBeGreaterThan(start[i]!.starts);
    }
    const keys = (await providersOf(0))[0].aescbc.keys;
    expect(keys.map((k: any) => k.name)).toEqual([key.name, expect.not.stringMatching(`^${key.name}$`)]);
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ [`k8s:enc:aescbc:v1:${key.name}`]: before.size });

    // The newest backup that differs now is the config rollback replaced: every node is back on it.
    const fwd = okJson(await fleet(['rollback']));
    expect(fwd.steps.map((s: any) => `${s.node} ${s.state}`)).toEqual(['cp-0 done', 'cp-1 done', 'cp-2 done']);
    expect((await snapshot()).map((n) => n.config)).toEqual(start.map((n) => n.config));
    for (const i of [0, 1, 2]) expect(await secretHashes(await bed.api(i))).toEqual(before);
  }, 180_000);

  it('disable --fleet turns it off everywhere, prune included', async () => {
    const j = await withReader(async () => okJson(await fleet(['disable'])));
    expect(j.state).toBe('done');
    expect(j.steps.filter((s: any) => s.command === 'disable --stage prune').map((s: any) => s.node)).toEqual(['cp-1', 'cp-2']);
    for (const i of [0, 1, 2]) expect(await manifestText(i)).not.toMatch(/--encryption-provider-config/);
    expect(await etcdPrefixCounts(bed, [...before.keys()])).toEqual({ plaintext: before.size });
  }, 300_000);

  it('rollback --fleet after disable is refused on the first node with nothing changed', async () => {
    const start = await snapshot();
    const r = await fleet(['rollback']);
    expect(r.exitCode).toBe(6);
    expect(jsonOf(r).error.message).toMatch(/^cp-0: rollback --dry-run: there is no config at .* to roll back/);
    expect(await snapshot()).toEqual(start);
  }, 60_000);
});

