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
import { describeRewrite, describeRun, driveStaged, nodeFailure, type FleetResult, type FleetStep } from './driver';
import { printDryRun } from './dry-run';
import { describeNode, expandHome, parseInventory, parseSshList, type FleetNode } from './inventory';
import { fleetJournal } from './journal';
import { FLEET_KEYS, type FleetOperation } from './options';
import { ensureNodeBinary, runOnNode, sha256File, type NodeRun, type SelfExecutable } from './remote';
import { checkNode, nodeManifest, plannedUpload, probeNode, type NodeFacts, type PlannedUpload } from './preflight';
import { nodeCredentials, shellQuote, SshSession, type Credentials, type SshSettings } from './ssh';
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

async function loadNodes(opts: Record<string, unknown>, home: string): Promise<FleetNode[]> {
  if (opts.fleet !== undefined && opts.ssh !== undefined) throw usageError('give --fleet FILE or --ssh LIST, not both');
  if (typeof opts.ssh === 'string') return parseSshList(opts.ssh);
  const file = resolve(expandHome(String(opts.fleet), home, '--fleet'));
  return parseInventory(await readText(file, 'read inventory'), file, home);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** How long a node's lock held by an earlier run is waited for before its refusal stands. */
const LOCK_WAIT_MS = 5 * 60_000;

/**
 * Whatever goes wrong on a node's account names that node first (with --json too): a message
 * without the name (the orchestrator's known_hosts, an SFTP failure) gets it.
 */
export function namedError(n: FleetNode, err: unknown): unknown {
  if (err instanceof CliError) {
    if (err.message.startsWith(`${n.nodeName}: `)) return err;
    return new CliError(`${n.nodeName}: ${err.message}`, { exitCode: err.exitCode, ...(err.hint ? { hint: err.hint } : {}), details: { ...err.details, node: n.nodeName }, cause: err });
  }
  const bug = err instanceof TypeError || err instanceof RangeError || err instanceof ReferenceError;
  return new CliError(`${n.nodeName}: ${(err as Error)?.message ?? String(err)}`, {
    exitCode: bug ? ExitCode.Internal : ExitCode.Cluster,
    hint: bug ? 're-run with --verbose for the stack trace, and report it' : 'check the node and re-run (--verbose shows the stack trace)',
    details: { node: n.nodeName },
    cause: err,
  });
}

const onNode = async <T>(n: FleetNode, fn: () => Promise<T>): Promise<T> => {
  try {
    return await fn();
  } catch (err) {
    throw namedError(n, err);
  }
};

/**
 * A preflight step (nothing in it changes a node's cluster state) on every node at once. Once
 * every node has answered, the first failure in inventory order is the one reported, as a step
 * run node by node would have reported it.
 */
export async function onEveryNode<T>(nodes: FleetNode[], fn: (n: FleetNode) => Promise<T>): Promise<T[]> {
  const settled = await Promise.allSettled(nodes.map((n) => onNode(n, () => fn(n))));
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<T>).value);
}

export async function runFleet(ctx: Context, cmd: Command, operation: FleetOperation, opts: Record<string, unknown>): Promise<void> {
  const home = homedir();
  const nodes = await loadNodes(opts, home);
  const fwd = forwardedArgs(cmd, opts);
  const settings: SshSettings = {
    knownHostsFile: resolve(typeof opts.knownHosts === 'string' ? expandHome(opts.knownHosts, home, '--known-hosts') : join(home, '.ssh', 'known_hosts')),
    acceptNewHostKeys: Boolean(opts.acceptNewHostKeys),
    connectTimeoutMs: parseTimeoutMs(String(opts.connectTimeout ?? '20s'), '--connect-timeout'),
    commandTimeoutMs: parseTimeoutMs(String(opts.commandTimeout ?? '30m'), '--command-timeout'),
    ...(ctx.env.SSH_AUTH_SOCK ? { agentSocket: ctx.env.SSH_AUTH_SOCK } : {}),
    defaultIdentities: ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((f) => join(home, '.ssh', f)),
    notice: (m) => ctx.out.warn(m),
  };
  const line = (n: FleetNode, text: string) => ctx.out.info(`[${n.nodeName}] ${text}`);
  const self = await selfExecutable();
  const nodeBin = typeof opts.nodeBin === 'string' ? opts.nodeBin : undefined;
  const { createProgressReporter } = await import('../ui/progress');

  // Every node's key is read (a missing or locked one is refused) before the first connection.
  const creds = new Map<FleetNode, Credentials>();
  for (const n of nodes) creds.set(n, await nodeCredentials(n, settings));
  const sessions = new Map<FleetNode, SshSession>();
  const bins = new Map<FleetNode, string>();
  const checks = new Map<FleetNode, { checks: string[]; upload?: PlannedUpload }>();
  try {
    // Preflight, nothing changed yet, each step on every node at once: every node reachable with
    // a known host key (each said as it connects: a node that hangs until the connect timeout
    // does not hold back the others' lines) ...
    await onEveryNode(nodes, async (n) => {
      sessions.set(n, await SshSession.open(n, settings, creds.get(n)));
      line(n, `connected to ${describeNode(n)}`);
    });
    // ... logged in as root, with an apiserver manifest (read-only checks, before any upload) ...
    const facts = new Map<FleetNode, NodeFacts>();
    if (operation !== 'status') {
      await onEveryNode(nodes, async (n) => {
        const f = await probeNode(sessions.get(n)!, nodeManifest(n, typeof opts.manifest === 'string' ? opts.manifest : undefined));
        facts.set(n, f);
        checks.set(n, { checks: checkNode(n, f) });
      });
    }
    // ... running the same k8s-encrypt (uploaded unless it is there: only once every node passed
    // the checks above; a dry run uploads nothing, not even to a staging path: it checks that the
    // upload could be done) ...
    await onEveryNode(nodes, async (n) => {
      const bin = await ensureNodeBinary(sessions.get(n)!, self, nodeBin, (m) => ctx.out.info(`[${n.nodeName}] ${m.replace(`${n.nodeName}: `, '')}`), { dryRun: fwd.dryRun });
      if (bin) bins.set(n, bin);
      else if (facts.has(n)) checks.get(n)!.upload = await plannedUpload(n, facts.get(n)!, self);
    });
    const run = (n: FleetNode, args: string[], stdin?: string): Promise<NodeRun> =>
      onNode(n, async () => {
        const bin = bins.get(n);
        if (!bin) throw new CliError(`${n.nodeName}: k8s-encrypt ${self.version} is not installed there yet`, { exitCode: ExitCode.Usage, hint: 'run without --dry-run to upload it' });
        const named = n.nameGiven && args[0] !== 'status' ? ['--node-name', n.nodeName] : [];
        // A run cut off with its SSH connection (orchestrator killed) may still be finishing there:
        // wait for its lock a while (not the whole command timeout: it may be someone else's run).
        const deadline = Date.now() + Math.min(settings.commandTimeoutMs, LOCK_WAIT_MS);
        for (let said = false; ; said = true) {
          // The node's rewrite progress, as a bar (or a line every few seconds) named after it.
          const bar = createProgressReporter(ctx.out);
          let r: NodeRun;
          try {
            r = await runOnNode(sessions.get(n)!, bin, [...args, ...named], {
              ...(stdin !== undefined ? { stdin } : {}),
              onProgress: (p) => bar.update({ ...p, resource: `[${n.nodeName}] ${p.resource}` }),
              onText: (t) => line(n, t),
            });
          } finally {
            bar.stop();
          }
          const held = r.exitCode === ExitCode.Refused && /holds the lock/.test(String(r.body.error?.message ?? ''));
          if (!held || Date.now() > deadline || ctx.signal.aborted) return r;
          if (!said) line(n, `an earlier run still holds the lock there: waiting up to ${LOCK_WAIT_MS / 60_000} min for it to finish`);
          await sleep(2000);
        }
      });
    // ... whose own status answers, as the node the inventory says it is (a dry run checks the
    // nodes that already have this k8s-encrypt).
    const statuses = new Map<FleetNode, Record<string, any>>();
    await onEveryNode(nodes, async (n) => {
      if (!bins.has(n)) return;
      const first = n === nodes[0];
      const extra = operation === 'status' && first ? fwd.first : operation === 'status' ? [...fwd.first, '--no-etcd'] : ['--no-etcd'];
      // Without --node-name: the node names itself (its mirror pod), which is what is checked.
      const r = await run(n, ['status', ...extra]);
      if (r.exitCode !== 0 && !(operation === 'status' && r.exitCode === ExitCode.Verification)) throw nodeFailure(n, 'status', r, []);
      const me = r.body.apiservers?.thisNode?.name;
      const proven = /mirror pod/.test(String(r.body.apiservers?.thisNode?.how ?? ''));
      if (typeof me === 'string' && me !== n.nodeName && (proven || !n.nameGiven)) {
        if (n.nameGiven) throw new CliError(`${n.nodeName}: the inventory says ${n.nodeName}, but that node's apiserver runs as ${me}`, { exitCode: ExitCode.Usage, hint: `fix nodeName (or root) of ${describeNode(n)} in the inventory; nothing was changed`, details: { node: n.nodeName } });
        n.nodeName = me;
      }
      statuses.set(n, r.body);
      checks.get(n)?.checks.push('its own status answers');
    });
    if (operation === 'status') return printStatus(ctx, nodes, statuses, opts);

    const preflight: FleetStep[] = [];
    const dryRuns: Record<string, unknown> = {};
    // rollback runs on every node, so every node's dry run must pass (they run at once); the
    // staged commands start on the first node, which plans for all.
    const planners = (operation === 'rollback' ? nodes : nodes.slice(0, 1)).filter((n) => bins.has(n));
    const plans = await onEveryNode(planners, (n) => run(n, [operation, ...fwd.first, '--dry-run']));
    for (const [i, n] of planners.entries()) {
      const r = plans[i]!;
      if (r.exitCode !== 0) throw nodeFailure(n, `${operation} --dry-run`, r, preflight);
      dryRuns[n.nodeName] = r.body;
      preflight.push({ node: n.nodeName, command: `${operation} --dry-run`, stage: null, state: 'planned', detail: 'dry run passed', exitCode: 0 });
      line(n, `preflight: ${operation} --dry-run passed`);
    }
    if (fwd.dryRun) return printDryRun(ctx, operation, nodes, { bins, checks, plans: dryRuns, version: self.version });
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
      return printFleetResult(ctx, { state: 'done', operation, steps, nodes: last as never, rewrite: [] });
    }

    const journal = fleetJournal(ctx.paths.stateDir, operation, nodes, ctx.now);
    const result = await driveStaged(
      {
        nodes,
        run,
        fetchConfig: (n) =>
          onNode(n, async () => {
            const st = await run(n, ['status', '--no-etcd', '--no-cluster']);
            const path = st.body.node?.config?.path;
            if (typeof path !== 'string') throw new CliError(`${n.nodeName}: its status names no config file`, { exitCode: ExitCode.Cluster, hint: 'check "k8s-encrypt status" there', details: { node: n.nodeName } });
            const r = await sessions.get(n)!.exec(`cat -- ${shellQuote(path)}`, { timeoutMs: 60_000 });
            if (r.code !== 0) throw new CliError(`${n.nodeName}: cannot read ${path} there`, { exitCode: ExitCode.Cluster, hint: `check the file on ${n.nodeName}`, details: { node: n.nodeName } });
            return { text: r.stdout.toString('utf8'), sha256: createHash('sha256').update(r.stdout).digest('hex') };
          }),
        journal,
        line,
        signal: ctx.signal,
      },
      { operation, firstArgs: fwd.first, followerArgs: fwd.followers },
    );
    printFleetResult(ctx, result);
  } finally {
    for (const s of sessions.values()) s.close();
  }
}

function printFleetResult(ctx: Context, r: FleetResult): void {
  ctx.out.result(r, (c) =>
    [
      `${c.green('✓')} fleet ${r.operation} finished on ${Object.keys(r.nodes).length} control plane(s)`,
      ...r.steps.map((s) => `  [${s.node}] ${s.command}: ${s.detail}`),
      ...r.rewrite.map((w) => `  rewrite on ${describeRewrite(w)}`),
    ].join('\n'),
  );
}

function printStatus(ctx: Context, nodes: FleetNode[], statuses: Map<FleetNode, Record<string, any>>, opts: Record<string, unknown>): void {
  const view = renderFleetStatus(nodes.map((n) => ({ node: n.nodeName, report: statuses.get(n)! })));
  ctx.out.result({ ...view.json, ok: view.json.healthy }, (c) => view.human(c));
  if (opts.exitCode && !view.json.healthy) ctx.out.exitCode = ExitCode.Verification;
}
