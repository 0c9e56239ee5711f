// Fleet mode on two control planes, with no --node-bin: the k8s-encrypt each node runs is the one
// at ROOT/var/lib/k8s-encrypt/bin/k8s-encrypt-VERSION.
// - Under K8S_ENCRYPT_BIN (CI's smoke run of the single executable, no node on PATH) the
//   executable is the orchestrator: it uploads itself there over SFTP (its sha256 checked on the
//   node), replaces a same-version file of another build, and every per-node run is that file:
//   a different version refused before any change, init with the reader, status.
// - From node + dist the orchestrator cannot upload itself (it is not one file): it says so
//   (exit 6, the hint), then uses a same-version k8s-encrypt installed at that path; this run
//   (the main suite) goes on with rotate-key and disable, the reader reading every Secret through
//   both apiservers. The smoke run leaves those two out for CI time: they are the same stages.
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdPrefixCounts, secretHashes } from '../../bench/reencrypt';
import { BIN, EXE, jsonOf, NODE, runCli } from '../helpers/cli';
import { sha, startFleetBed, VERSION, type FleetBed } from './fleet-bed';
import { okJson } from './rotate-helpers';

let f: FleetBed;
const installDir = (i: number) => join(f.bed.nodes[i]!.root, 'var/lib/k8s-encrypt/bin');
const installed = (i: number) => join(installDir(i), `k8s-encrypt-${VERSION}`);
/** A k8s-encrypt of this version that is not the executable under test: node + this checkout's dist. */
const devWrapper = `#!/bin/sh\nexec '${NODE}' '${BIN}' "$@"\n`;
const exeSha = EXE ? sha(await readFile(EXE)) : undefined;

async function install(i: number, text: string): Promise<void> {
  await mkdir(installDir(i), { recursive: true, mode: 0o700 });
  await chmod(installDir(i), 0o700);
  await writeFile(installed(i), text, { mode: 0o700 });
}
const modeOf = async (p: string) => (await stat(p)).mode & 0o777;
const bothNodes = [0, 1];

beforeAll(async () => {
  f = await startFleetBed({ nodes: 2, secrets: 20, nodeBin: async () => null });
}, 180_000);
afterAll(() => f?.stop());

describe(`fleet mode on two control planes, orchestrated by ${EXE ? 'the single executable' : 'node + dist'}`, () => {
  it('a node with another version at the install path is refused before any change, with the hint', async () => {
    const start = await f.snapshot();
    if (!EXE) {
      const r = await f.fleet(['init']);
      expect(r.exitCode).toBe(6);
      expect(jsonOf(r).error).toMatchObject({
        message: `cp-0: no k8s-encrypt ${VERSION} at ${installed(0)}, and this one runs from Node.js, so it cannot upload itself`,
        hint: expect.stringMatching(/self-contained executable .*--node-bin PATH/),
      });
      await install(0, devWrapper);
    }
    await install(1, '#!/bin/sh\necho 0.0.1\n');
    const r = await f.fleet(['init']);
    expect(r.exitCode).toBe(6);
    expect(jsonOf(r).error).toMatchObject({ message: `cp-1: ${installed(1)} reports version 0.0.1, not ${VERSION}`, hint: `remove ${installed(1)} on the node and re-run` });
    expect(await readFile(installed(1), 'utf8')).toBe('#!/bin/sh\necho 0.0.1\n');
    // The executable reached cp-0 (every node's upload step ends before the refusal is
    // reported): this very file, root-only.
    if (EXE) expect(sha(await readFile(installed(0)))).toBe(exeSha);
    expect(await modeOf(installed(0))).toBe(0o700);
    expect(await modeOf(installDir(0))).toBe(0o700);
    expect(await f.snapshot()).toEqual(start);
    // The same version but another build: the executable replaces it; node + dist runs it.
    await install(1, devWrapper);
  }, 120_000);

  it('init --fleet turns encryption on on both nodes, never failing a read, each node running the install path', async () => {
    const j = await f.withReader(async () => okJson(await f.fleet(['init'])));
    expect(j.state).toBe('done');
    expect(j.steps.map((s: any) => `${s.node} ${s.command}`)).toEqual(['cp-0 init', 'cp-1 init --from-config -', 'cp-0 init', 'cp-1 init --from-config -', 'cp-0 init']);
    for (const i of bothNodes) {
      expect(sha(await readFile(installed(i)))).toBe(exeSha ?? sha(devWrapper));
      expect(await modeOf(installed(i))).toBe(0o700);
    }
    const texts = await Promise.all(bothNodes.map(f.configText));
    expect(texts[1]).toBe(texts[0]);
    const key = (await f.providersOf(0))[0].aescbc.keys[0];
    expect(await etcdPrefixCounts(f.bed, [...f.before.keys()])).toEqual({ [`k8s:enc:aescbc:v1:${key.name}`]: f.before.size });
    expect(JSON.stringify(j)).not.toContain(key.secret);
    // The next command's plan names that path on each node (nothing uploaded again, nothing run).
    const dry = okJson(await f.fleet(['rotate-key', '--dry-run']));
    expect(dry.nodes.map((n: any) => [n.node, n.binary])).toEqual([['cp-0', installed(0)], ['cp-1', installed(1)]]);
  }, 300_000);

  it('status --fleet shows both nodes on the same stage and config, and the etcd verdict', async () => {
    const j = okJson(await f.fleet(['status']));
    expect(j).toMatchObject({ healthy: true, agree: true, etcd: { verdict: 'ok' } });
    const configSha = sha(await f.configText(0));
    expect(j.nodes.map((n: any) => [n.node, n.stage, n.configSha256, n.runsCurrentConfig])).toEqual([
      ['cp-0', 'promote', configSha, 'yes'],
      ['cp-1', 'promote', configSha, 'yes'],
    ]);
    const human = await runCli(['status', ...f.fleetFlags()]);
    expect(human.exitCode, `${human.stdout}\n${human.stderr}`).toBe(0);
    expect(human.stdout).toMatch(/every node runs the same stage and config/);
  }, 120_000);

  if (!EXE) {
    it('rotate-key --fleet is the whole rotation on both nodes, never failing a read', async () => {
      const oldKey = (await f.providersOf(0))[0].aescbc.keys[0].name;
      const j = await f.withReader(async () => okJson(await f.fleet(['rotate-key'])));
      expect(j.state).toBe('done');
      const p = await f.providersOf(0);
      expect(p[0].aescbc.keys.map((k: any) => k.name)).toEqual([expect.not.stringMatching(`^${oldKey}$`)]);
      expect(await f.configText(1)).toBe(await f.configText(0));
      expect(await etcdPrefixCounts(f.bed, [...f.before.keys()])).toEqual({ [`k8s:enc:aescbc:v1:${p[0].aescbc.keys[0].name}`]: f.before.size });
    }, 300_000);

    it('disable --fleet turns it off on both nodes, prune included, never failing a read', async () => {
      const j = await f.withReader(async () => okJson(await f.fleet(['disable'])));
      expect(j.state).toBe('done');
      expect(j.steps.filter((s: any) => s.command === 'disable --stage prune').map((s: any) => s.node)).toEqual(['cp-1']);
      for (const i of bothNodes) expect(await f.manifestText(i)).not.toMatch(/--encryption-provider-config/);
      expect(await etcdPrefixCounts(f.bed, [...f.before.keys()])).toEqual({ plaintext: f.before.size });
      for (const i of bothNodes) expect(await secretHashes(await f.bed.api(i))).toEqual(f.before);
    }, 300_000);
  }
});
