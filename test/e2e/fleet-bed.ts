// Shared by the fleet e2e tests: a bed of N control planes sharing one etcd, each reached through
// one real OpenSSH sshd on loopback (the inventory's `root` selects the bed node), the fleet
// command line, what each node holds, and a reader that reads every Secret through every
// apiserver while a fleet command runs.
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { expect } from 'vitest';
import { secretHashes } from '../../bench/reencrypt';
import { startBed, type Bed } from '../bed/index';
import { startSshd, type RunningSshd } from '../bed/sshd';
import { runCli } from '../helpers/cli';
import { CONFIG_REL, startReader } from './rotate-helpers';

export const VERSION = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')).version as string;
export const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

export interface FleetOpts {
  inventory?: string;
  knownHosts?: string;
  /** --node-bin; null leaves it out (the orchestrator uploads itself or uses the installed one). */
  bin?: string | null;
}

export interface FleetBed {
  bed: Bed;
  sshd: RunningSshd;
  dir: string;
  /** The orchestrator's --state-dir. */
  stateDir: string;
  /** The inventory of every bed node, first node first. */
  inventory: string;
  /** Secrets' sha256 by name as the bed started. */
  before: Map<string, string>;
  writeInventory(name: string, over?: (i: number) => Record<string, unknown>): Promise<string>;
  /** `--json --yes ARGS --fleet ... --known-hosts ... [--node-bin ...]`. */
  fleet(args: string[], o?: FleetOpts): ReturnType<typeof runCli>;
  /** The fleet flags alone (inventory, known_hosts, --node-bin unless null). */
  fleetFlags(o?: FleetOpts): string[];
  configText(i: number): Promise<string>;
  manifestText(i: number): Promise<string>;
  providersOf(i: number): Promise<any[]>;
  /** Each node's config and manifest sha256 and its apiserver's start count. */
  snapshot(): Promise<Array<{ config: string; manifest: string; starts: number }>>;
  /** The orchestrator journal of `operation` (one: only the full inventory gets past preflight). */
  journalFile(operation: string): Promise<string>;
  /** Runs `fn` while every Secret is read through every apiserver: no failed read, never all down. */
  withReader<T>(fn: () => Promise<T>): Promise<T>;
  stop(): Promise<void>;
}

/**
 * Starts the bed and the sshd. `nodeBin` is the default --node-bin (a k8s-encrypt "installed" on
 * every node), or null for none.
 */
export async function startFleetBed(o: { nodes: 2 | 3; secrets: number; nodeBin: (dir: string) => Promise<string | null> }): Promise<FleetBed> {
  const [bed, sshd] = await Promise.all([startBed({ nodes: o.nodes, secrets: o.secrets }), startSshd()]);
  const dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-fleet-'));
  const stateDir = join(dir, 'orchestrator');
  const nodeBin = await o.nodeBin(dir);
  const writeInventory = async (name: string, over: (i: number) => Record<string, unknown> = () => ({})) => {
    const file = join(dir, name);
    const controlPlanes = bed.nodes.map((n, i) => ({ host: '127.0.0.1', port: sshd.port, user: sshd.user, identityFile: sshd.identityFile, nodeName: n.name, root: n.root, ...over(i) }));
    await writeFile(file, JSON.stringify({ controlPlanes }, null, 2));
    return file;
  };
  const inventory = await writeInventory('inventory.yaml');
  const before = await secretHashes(await bed.api(0));
  const fleetFlags = (f: FleetOpts = {}) => {
    const bin = f.bin === undefined ? nodeBin : f.bin;
    return ['--fleet', f.inventory ?? inventory, '--known-hosts', f.knownHosts ?? sshd.knownHostsFile, ...(bin ? ['--node-bin', bin] : [])];
  };
  const configText = (i: number) => readFile(join(bed.nodes[i]!.root, CONFIG_REL), 'utf8').catch(() => '');
  const manifestText = (i: number) => readFile(bed.nodes[i]!.manifest, 'utf8');
  return {
    bed,
    sshd,
    dir,
    stateDir,
    inventory,
    before,
    writeInventory,
    fleetFlags,
    fleet: (args, f = {}) => runCli(['--json', '--yes', '--state-dir', stateDir, ...args, ...fleetFlags(f)], { timeoutMs: 300_000 }),
    configText,
    manifestText,
    providersOf: async (i) => parse(await configText(i)).resources[0].providers,
    snapshot: () => Promise.all(bed.nodes.map(async (n, i) => ({ config: sha(await configText(i)), manifest: sha(await manifestText(i)), starts: n.apiserverStarts() }))),
    async journalFile(operation) {
      const d = join(stateDir, 'fleet');
      const names = (await readdir(d)).filter((f) => f.startsWith(`${operation}-`));
      expect(names, `${operation} journals in ${d}`).toHaveLength(1);
      return join(d, names[0]!);
    },
    async withReader(fn) {
      const reader = startReader(await Promise.all(bed.nodes.map((_, i) => bed.api(i))), before);
      let out;
      try {
        out = await fn();
      } finally {
        const seen = await reader.stop();
        expect(seen.failures).toEqual([]);
        expect(seen.allDownRounds).toBe(0);
        expect(seen.rounds).toBeGreaterThan(5);
      }
      return out;
    },
    async stop() {
      await bed.stop();
      await sshd.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
