import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import type { Context } from '../context';
import { parseTimeoutMs } from '../transition/front';
import { readText } from '../state/atomic';
import { CliError, ExitCode, usageError } from '../ui/errors';
import { confirm } from '../ui/prompt';
import { VERSION } from '../version';
import { describeRun, driveStaged, nodeFailure, type FleetStep } from './driver';
import { describeNode, parseInventory, parseSshList, type FleetNode } from './inventory';
import { fleetJournal } from './journal';
import { FLEET_KEYS, type FleetOperation } from './options';
import { ensureNodeBinary, runOnNode, sha256File, type NodeRun, type SelfExecutable } from './remote';
import { shellQuote, SshSession, type SshSettings } from './ssh';
import { renderFleetStatus } from './status';

/**
 * `--fleet FILE` / `--ssh LIST` on init, rotate-key, disable, rollback and status: connect to
 * every control plane, check each one (host key, the same k8s-encrypt, its status, the first
 * node's dry run) before any is changed, then drive the per-node command over SSH.
 */

/** Options that only make sense on one node, or that would put a key on this machine's disk. */
const NOT_WITH_FLEET: Record<string, string> = {
  fromConfig: 'the fleet passes each stage\'s config from node to node itself',
  keyFile: 'the key is generated on the first node and never touches the orchestrator\'s disk',
  keyStdin: 'the key is generated on the first node and never touches the orchestrator\'s disk',
  stage: 'the fleet runs every stage in turn (run one stage on one node without --fleet)',
  nodeName: 'each node\'s name comes from the inventory',
};
/** Forwarded to every node, not only the first one. */
const FOLLOWER_KEYS = new Set(['timeout', 'keepBackups', 'controlPlanes', 'kubeadmConfig', 'manifest', 'config']);

interface Forwarded {
  first: string[];
  followers: string[];
  dryRun: boolean;
}

/** The operator's own options of this command, as they were given, for the per-node runs. */
export function forwardedArgs(cmd: Command, opts: Record<string, unknown>): Forwarded {
  const first: string[] = [];
  const followers: string[] = [];
  let dryRun = false;
  for (const o of cmd.options) {
    const key = o.attributeName();
    if ((FLEET_KEYS as readonly string[]).includes(key) || cmd.getOptionValueSource(key) !== 'cli') continue;
    const value = opts[key];
    if (key === 'dryRun') {
      dryRun = Boolean(value);
      continue;
    }
    if (NOT_WITH_FLEET[key] && value !== undefined && value !== false) {
      throw usageError(`--${o.long!.replace(/^--/, '')} does not apply with --fleet/--ssh: ${NOT_WITH_FLEET[key]}`);
    }
    let words: string[];
    if (o.negate) words = value === false ? [o.long!] : [];
    else if (!o.required && !o.optional) words = value ? [o.long!] : [];
    // A repeatable option (--escrow-recipient A --escrow-recipient B) goes over as it came in.
    else words = (Array.isArray(value) ? value : [value]).flatMap((v) => [o.long!, String(v)]);
    first.push(...words);
    if (FOLLOWER_KEYS.has(key)) followers.push(...words);
  }
  return { first, followers, dryRun };
}

async function selfExecutable(): Promise<SelfExecutable> {
  const { ownExecutable } = await import('../runtime/assets');
  const path = ownExecutable();
  if (!path) return { version: VERSION, arch: process.arch };
  return { version: VERSION, arch: process.arch, path, sha256: await sha256File(path) };
}

async function loadNodes(opts: Record<string, unknown>): Promise<FleetNode[]> {
  if (opts.fleet !== undefined && opts.ssh !== undefined) throw usageError('give --fleet FILE or --ssh LIST, not both');
  if (typeof opts.ssh === 'string') return parseSshList(opts.ssh);
  const file = resolve(String(opts.fleet));
  return parseInventory(await readText(file, 'read inventory'), file);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** How long a node's lock held by an earlier run is waited for before its refusal stands. */
const LOCK_WAIT_MS = 5 * 60_000;

export async function runFleet(ctx: Context, cmd: Command, operation: FleetOperation, opts: Record<string, unknown>): Promise<void> {
  const nodes = await loadNodes(opts);
  const fwd = forwardedArgs(cmd, opts);
  const settings: SshSettings = {
    knownHostsFile: resolve(typeof opts.knownHosts === 'string' ? opts.knownHosts : join(homedir(), '.ssh', 'known_hosts')),
    acceptNewHostKeys: Boolean(opts.acceptNewHostKeys),
    connectTimeoutMs: parseTimeoutMs(String(opts.connectTimeout ?? '20s'), '--connect-timeout'),
    commandTimeoutMs: parseTimeoutMs(String(opts.commandTimeout ?? '30m'), '--command-timeout'),
    ...(ctx.env.SSH_AUTH_SOCK ? { agentSocket: ctx.env.SSH_AUTH_SOCK } : {}),
    defaultIdentities: ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((f) => join(homedir(), '.ssh', f)),
    notice: (m) => ctx.out.warn(m),
  };
  const line = (n: FleetNode, text: string) => ctx.out.info(`[${n.nodeName}] ${text}`);
  const self = await selfExecutable();
  const nodeBin = typeof opts.nodeBin === 'string' ? opts.nodeBin : undefined;

  const sessions = new Map<FleetNode, SshSession>();
  const bins = new Map<FleetNode, string>();
  try {
    // Preflight, nothing changed yet: every node reachable with a known host key ...
    for (const n of nodes) {
      sessions.set(n, await SshSession.open(n, settings));
      line(n, `connected to ${describeNode(n)}`);
    }
    // ... running the same k8s-encrypt (uploaded unless it is there; a dry run uploads nothing) ...
    for (const n of nodes) {
      const bin = await ensureNodeBinary(sessions.get(n)!, self, nodeBin, (m) => ctx.out.info(`[${n.nodeName}] ${m.replace(`${n.nodeName}: `, '')}`), { dryRun: fwd.dryRun });
      if (bin) bins.set(n, bin);
    }
    const run = async (n: FleetNode, args: string[], stdin?: string): Promise<NodeRun> => {
      const bin = bins.get(n);
      if (!bin) throw new CliError(`${n.nodeName}: k8s-encrypt ${self.version} is not installed there yet`, { exitCode: ExitCode.Usage, hint: 'run without --dry-run to upload it' });
      const named = n.nameGiven && args[0] !== 'status' ? ['--node-name', n.nodeName] : [];
      // A run cut off with its SSH connection (orchestrator killed) may still be finishing there:
      // wait for its lock a while (not the whole command timeout: it may be someone else's run).
      const deadline = Date.now() + Math.min(settings.commandTimeoutMs, LOCK_WAIT_MS);
      for (let said = false; ; said = true) {
        const r = await runOnNode(sessions.get(n)!, bin, [...args, ...named], stdin !== undefined ? { stdin } : {});
        const held = r.exitCode === ExitCode.Refused && /holds the lock/.test(String(r.body.error?.message ?? ''));
        if (!held || Date.now() > deadline || ctx.signal.aborted) return r;
        if (!said) line(n, `an earlier run still holds the lock there: waiting up to ${LOCK_WAIT_MS / 60_000} min for it to finish`);
        await sleep(2000);
      }
    };
    // ... whose own status answers, as the node the inventory says it is.
    const statuses = new Map<FleetNode, Record<string, any>>();
    if (bins.size === nodes.length) {
      for (const [i, n] of nodes.entries()) {
        const extra = operation === 'status' && i === 0 ? fwd.first : operation === 'status' ? [...fwd.first, '--no-etcd'] : ['--no-etcd'];
        // Without --node-name: the node names itself (its mirror pod), which is what is checked.
        const r = await run(n, ['status', ...extra]);
        if (r.exitCode !== 0 && !(operation === 'status' && r.exitCode === ExitCode.Verification)) throw nodeFailure(n, 'status', r, []);
        const me = r.body.apiservers?.thisNode?.name;
        const proven = /mirror pod/.test(String(r.body.apiservers?.thisNode?.how ?? ''));
        if (typeof me === 'string' && me !== n.nodeName && (proven || !n.nameGiven)) {
          if (n.nameGiven) throw new CliError(`${n.nodeName}: the inventory says ${n.nodeName}, but that node's apiserver runs as ${me}`, { exitCode: ExitCode.Usage, hint: `fix nodeName (or root) of ${describeNode(n)} in the inventory; nothing was changed` });
          n.nodeName = me;
        }
        statuses.set(n, r.body);
      }
    }
    if (operation === 'status') return printStatus(ctx, nodes, statuses, opts);

    const preflight: FleetStep[] = [];
    const dryRuns: Record<string, unknown> = {};
    // rollback runs on every node, so every node's dry run must pass; the staged commands start
    // on the first node, which plans for all.
    for (const n of operation === 'rollback' ? nodes : nodes.slice(0, 1)) {
      if (!bins.get(n)) continue;
      const r = await run(n, [operation, ...fwd.first, '--dry-run']);
      if (r.exitCode !== 0) throw nodeFailure(n, `${operation} --dry-run`, r, preflight);
      dryRuns[n.nodeName] = r.body;
      preflight.push({ node: n.nodeName, command: `${operation} --dry-run`, stage: null, state: 'planned', detail: 'dry run passed', exitCode: 0 });
      line(n, `preflight: ${operation} --dry-run passed`);
    }
    if (fwd.dryRun) {
      ctx.out.result({ dryRun: true, operation, nodes: nodes.map((n) => ({ node: n.nodeName, host: n.host, port: n.port, binary: bins.get(n) ?? null })), plans: dryRuns }, (c) =>
        [
          c.bold(`fleet ${operation} — dry run, nothing was changed on ${nodes.length} control plane(s): ${nodes.map((n) => n.nodeName).join(', ')}`),
          ...nodes.map((n) => `  ${n.nodeName}: ${describeNode(n)}, ${bins.get(n) ? `runs ${bins.get(n)}` : `would upload k8s-encrypt ${self.version}`}`),
          ...Object.entries(dryRuns).map(([name, body]) => `${name}'s plan:\n${JSON.stringify((body as Record<string, unknown>).stages ?? (body as Record<string, unknown>).steps ?? body, null, 2)}`),
        ].join('\n'),
      );
      return;
    }
    await confirm(ctx, `${operation} on ${nodes.length} control plane(s), one at a time: ${nodes.map((n) => n.nodeName).join(', ')}? Each apiserver restarts at each stage.`);

    if (operation === 'rollback') {
      const steps: FleetStep[] = [];
      const last: Record<string, unknown> = {};
      for (const n of nodes) {
        const r = await run(n, ['rollback', ...fwd.first]);
        const detail = describeRun(r.body);
        steps.push({ node: n.nodeName, command: 'rollback', stage: r.body.stage ?? null, state: r.body.state ?? 'failed', detail, exitCode: r.exitCode });
        if (r.exitCode !== 0) throw nodeFailure(n, 'rollback', r, steps);
        last[n.nodeName] = r.body;
        line(n, `rollback: ${detail}`);
      }
      return printFleetResult(ctx, { state: 'done', operation, steps, nodes: last as never });
    }

    const journal = fleetJournal(ctx.paths.stateDir, operation, nodes, ctx.now);
    const first = nodes[0]!;
    const result = await driveStaged(
      {
        nodes,
        run,
        async fetchConfig(n) {
          const st = await run(n, ['status', '--no-etcd', '--no-cluster']);
          const path = st.body.node?.config?.path;
          if (typeof path !== 'string') throw new CliError(`${n.nodeName}: its status names no config file`, { exitCode: ExitCode.Cluster, hint: 'check "k8s-encrypt status" there', details: { node: n.nodeName } });
          const r = await sessions.get(n)!.exec(`cat -- ${shellQuote(path)}`, { timeoutMs: 60_000 });
          if (r.code !== 0) throw new CliError(`${n.nodeName}: cannot read ${path} there`, { exitCode: ExitCode.Cluster, hint: `check the file on ${n.nodeName}`, details: { node: n.nodeName } });
          return { text: r.stdout.toString('utf8'), sha256: createHash('sha256').update(r.stdout).digest('hex') };
        },
        journal,
        line,
        signal: ctx.signal,
      },
      { operation, firstArgs: fwd.first, followerArgs: fwd.followers },
    );
    void first;
    printFleetResult(ctx, result);
  } finally {
    for (const s of sessions.values()) s.close();
  }
}

function printFleetResult(ctx: Context, r: { state: string; operation: string; steps: FleetStep[]; nodes: Record<string, unknown> }): void {
  ctx.out.result(r, (c) =>
    [
      `${c.green('✓')} fleet ${r.operation} finished on ${Object.keys(r.nodes).length} control plane(s)`,
      ...r.steps.map((s) => `  [${s.node}] ${s.command}: ${s.detail}`),
    ].join('\n'),
  );
}

function printStatus(ctx: Context, nodes: FleetNode[], statuses: Map<FleetNode, Record<string, any>>, opts: Record<string, unknown>): void {
  const view = renderFleetStatus(nodes.map((n) => ({ node: n.nodeName, report: statuses.get(n)! })));
  ctx.out.result({ ...view.json, ok: view.json.healthy }, (c) => view.human(c));
  if (opts.exitCode && !view.json.healthy) ctx.out.exitCode = ExitCode.Verification;
}
