import { CliError, ExitCode } from '../ui/errors';
import type { FleetNode } from './inventory';
import type { FleetJournalState } from './journal';
import type { NodeRun } from './remote';

/**
 * The fleet driver: the staged flow of init, rotate-key and disable, run on every control plane
 * through the per-node command. The first node runs the command; while it answers `waiting`, each
 * lagging node in turn installs the stage's config (fetched from the first node, passed on stdin)
 * with `--from-config`, or runs `disable --stage prune`; each such run returns only once that
 * node's apiserver is proven to run it. Then the first node runs again, until `done`. The per-node
 * journals do the real resume; the fleet journal only says where the fleet was waiting.
 */

export type StagedOperation = 'init' | 'rotate-key' | 'disable';

export interface FleetStep {
  node: string;
  command: string;
  stage: string | null;
  state: string;
  detail: string;
  exitCode: number;
}

export interface DriverDeps {
  nodes: FleetNode[];
  run(node: FleetNode, args: string[], stdin?: string): Promise<NodeRun>;
  /** The config file the first node runs, read through its SSH channel (into memory only). */
  fetchConfig(node: FleetNode): Promise<{ text: string; sha256: string }>;
  journal: { load(): Promise<FleetJournalState | undefined>; save(s: FleetJournalState): Promise<void> };
  /** One line per node and step (`[cp-1] promote: proven (...)`). */
  line(node: FleetNode, text: string): void;
  signal: AbortSignal;
}

export interface StagedRequest {
  operation: StagedOperation;
  /** Options for the first node's runs (the operator's, forwarded). */
  firstArgs: string[];
  /** Options every follower run takes (--timeout, ...). */
  followerArgs: string[];
}

export interface FleetResult {
  state: 'done';
  operation: string;
  steps: FleetStep[];
  /** The last result of every node, by node name. */
  nodes: Record<string, Record<string, unknown>>;
  /** Each node's rewrite (counts, time, and the concurrency level it settled on). */
  rewrite: FleetRewrite[];
}

export interface FleetRewrite {
  node: string;
  rewritten: number;
  unchanged: number;
  deleted: number;
  failed: number;
  seconds?: number;
  objectsPerSecond?: number;
  concurrency?: { mode: string; settled: number; peak: number; max: number; cuts: number };
}

/** The rewrite a node's result reports: init's `rewrite`, or a transition's rewrite stage. */
export function rewriteOf(body: Record<string, any>): Omit<FleetRewrite, 'node'> | undefined {
  const stage = ((body.stages ?? []) as Record<string, any>[]).find((s) => s?.rewrite && typeof s.rewrite === 'object');
  const r = stage?.rewrite ?? body.rewrite;
  return r && typeof r === 'object' && typeof r.rewritten === 'number' ? r : undefined;
}

/** `cp-0: 40 rewritten, 0 unchanged in 1.2 s, concurrency settled at 64 (adaptive, peak 64)`. */
export function describeRewrite(r: FleetRewrite): string {
  const time = r.seconds !== undefined ? ` in ${r.seconds.toFixed(1)} s` : '';
  const c = r.concurrency ? `, concurrency settled at ${r.concurrency.settled} (${r.concurrency.mode}, peak ${r.concurrency.peak}${r.concurrency.cuts ? `, cut ${r.concurrency.cuts}×` : ''})` : '';
  return `${r.node}: ${r.rewritten} rewritten, ${r.unchanged} unchanged, ${r.deleted} deleted meanwhile, ${r.failed} failed${time}${c}`;
}

interface Waiting {
  stage: string;
  sha256: string;
  lagging: string[];
}

/** `STAGE:sha256:HEX` (a stage record, as the gate refusal names what it wants). */
function parseRecord(v: unknown): { stage: string; sha256: string } | undefined {
  const m = typeof v === 'string' ? /^([a-z-]+):sha256:([0-9a-f]{64})$/.exec(v) : null;
  return m ? { stage: m[1]!, sha256: m[2]! } : undefined;
}

/** Where a first-node result says the fleet waits: stage, its config's sha256, who lags. */
export function waitingOf(body: Record<string, any>): Waiting | undefined {
  if (body.state === 'waiting') {
    // init: multiNode {stage, nodes}, configSha256; the transitions: stage, sha256, lagging.
    const stage = body.multiNode?.stage ?? body.stage;
    const sha256 = body.multiNode ? body.configSha256 : body.sha256;
    const lagging = (body.multiNode?.nodes ?? body.lagging ?? []) as { node: string }[];
    if (typeof stage === 'string' && typeof sha256 === 'string') return { stage, sha256, lagging: lagging.map((l) => l.node) };
  }
  // A re-run of the first node before the others caught up is refused, naming what it waits for.
  const d = body.error?.details;
  const want = parseRecord(d?.want);
  if (body.error?.exitCode === ExitCode.Refused && want && Array.isArray(d?.lagging)) return { ...want, lagging: d.lagging.map((l: { node: string }) => l.node) };
  return undefined;
}

/** What a node's result says in one line: each stage's proof, or the node's own message. */
export function describeRun(body: Record<string, any>): string {
  if (body.ok === false) return `${body.error?.kind ?? 'error'}: ${body.error?.message ?? 'failed'}`;
  if (body.nothingToDo) return 'nothing to do';
  const parts: string[] = [];
  for (const s of (body.stages ?? []) as Record<string, any>[]) parts.push(`${s.stage}: ${s.verified ?? (s.proof ? `proven (${s.proof})` : s.evidence ?? 'done')}`);
  if (!parts.length) {
    const proof = typeof body.proof === 'string' ? body.proof : body.proof?.detail;
    const evidence = typeof body.evidence === 'string' ? body.evidence : body.evidence?.detail;
    const stage = body.multiNode?.stage ?? body.stage;
    parts.push(`${stage ? `${stage}: ` : ''}${body.verified ?? (proof ? `proven (${proof})` : evidence ?? body.state ?? 'done')}`);
  }
  if (body.state === 'waiting') parts.push('waiting for the others');
  return parts.join('; ');
}

export function nodeFailure(node: FleetNode, command: string, r: NodeRun, done: FleetStep[]): CliError {
  const e = r.body.error ?? {};
  const code = typeof e.exitCode === 'number' ? e.exitCode : r.exitCode || ExitCode.Internal;
  return new CliError(`${node.nodeName}: ${command}: ${e.message ?? `exited ${r.exitCode}`}`, {
    exitCode: code,
    hint: `${e.hint ? `${e.hint}; ` : ''}${code === ExitCode.RolledBack ? 'that node put its previous config back; ' : ''}every other node is where the last step left it: fix ${node.nodeName}, then re-run the fleet command to continue`,
    details: { node: node.nodeName, nodeError: e, steps: done },
  });
}

export async function driveStaged(deps: DriverDeps, req: StagedRequest): Promise<FleetResult> {
  const [first, ...rest] = deps.nodes;
  if (!first) throw new CliError('the inventory lists no control plane', { exitCode: ExitCode.Usage });
  const steps: FleetStep[] = [];
  const last: FleetResult['nodes'] = {};
  const rewrites = new Map<string, FleetRewrite>();
  const op = req.operation;
  const record = (node: FleetNode, command: string, r: NodeRun, detail: string) => {
    last[node.nodeName] = r.body;
    const rw = rewriteOf(r.body);
    if (rw) rewrites.set(node.nodeName, { node: node.nodeName, ...rw });
    steps.push({ node: node.nodeName, command, stage: r.body.multiNode?.stage ?? r.body.stage ?? null, state: r.body.state ?? (r.body.ok === false ? 'failed' : 'done'), detail, exitCode: r.exitCode });
  };
  const prior = await deps.journal.load();
  let waiting: Waiting | undefined = prior?.phase === 'followers' && prior.operation === op ? { stage: prior.stage!, sha256: prior.sha256!, lagging: prior.lagging ?? [] } : undefined;
  if (waiting) deps.line(first, `continuing: the fleet was at stage ${waiting.stage}, ${waiting.lagging.join(', ') || 'nobody'} still to follow`);
  // What the journal says the fleet waits for may be stale (a rollback, a run by hand since): then
  // the first node is asked again instead of refusing every re-run on the same journal.
  let resumed = waiting !== undefined;

  // Each round moves the first node one stage on; no transition has more than four stages.
  for (let round = 0; round < 12; round++) {
    if (deps.signal.aborted) throw deps.signal.reason;
    if (!waiting) {
      await deps.journal.save({ operation: op, phase: 'first', status: 'running' });
      const r = await deps.run(first, [op, ...req.firstArgs]);
      waiting = waitingOf(r.body);
      if (r.exitCode !== 0 && !waiting) {
        record(first, op, r, describeRun(r.body));
        throw nodeFailure(first, op, r, steps);
      }
      const detail = r.exitCode === 0 ? describeRun(r.body) : `stage ${waiting!.stage}: still waiting for ${waiting!.lagging.join(', ')}`;
      record(first, op, r, detail);
      deps.line(first, `${op}: ${detail}`);
      if (!waiting) {
        if (r.body.state === 'done' || r.body.nothingToDo || r.body.state === undefined) {
          await deps.journal.save({ operation: op, phase: 'done', status: 'done' });
          return { state: 'done', operation: op, steps, nodes: last, rewrite: [...rewrites.values()] };
        }
        throw new CliError(`${first.nodeName}: ${op} answered state "${r.body.state}"`, { exitCode: ExitCode.Internal, hint: 'run "k8s-encrypt status --fleet" and re-run', details: { node: first.nodeName } });
      }
    }
    const w = waiting;
    await deps.journal.save({ operation: op, phase: 'followers', status: 'waiting', stage: w.stage, sha256: w.sha256, lagging: w.lagging });
    const strangers = w.lagging.filter((n) => n !== first.nodeName && !rest.some((x) => x.nodeName === n));
    if (strangers.length) {
      throw new CliError(`${strangers.join(', ')}: control plane(s) at stage ${w.stage} that the inventory does not list`, {
        exitCode: ExitCode.Refused,
        hint: 'add every control plane to the inventory (or run the follower step there by hand), then re-run',
        details: { nodes: strangers },
      });
    }
    const todo = rest.filter((n) => w.lagging.includes(n.nodeName));
    for (const node of todo) {
      if (deps.signal.aborted) throw deps.signal.reason;
      const prune = op === 'disable' && w.stage === 'prune';
      let r: NodeRun;
      let command: string;
      if (prune) {
        command = `${op} --stage prune`;
        r = await deps.run(node, [op, '--stage', 'prune', ...req.followerArgs]);
      } else {
        // The file travels from the first node's channel to this node's stdin, in memory only.
        const cfg = await deps.fetchConfig(first);
        if (cfg.sha256 !== w.sha256 && resumed) {
          deps.line(first, `its config is no longer the stage ${w.stage} config the interrupted run waited with: asking it again`);
          break;
        }
        if (cfg.sha256 !== w.sha256) {
          throw new CliError(`${first.nodeName}: its config (sha256 ${cfg.sha256.slice(0, 12)}…) is no longer the stage ${w.stage} config (sha256 ${w.sha256.slice(0, 12)}…)`, {
            exitCode: ExitCode.Refused,
            hint: 'something changed it meanwhile: check "k8s-encrypt status --fleet", then re-run',
            details: { node: first.nodeName },
          });
        }
        command = `${op} --from-config -`;
        r = await deps.run(node, [op, '--from-config', '-', ...req.followerArgs], cfg.text);
      }
      const detail = describeRun(r.body);
      record(node, command, r, detail);
      if (r.exitCode !== 0) throw nodeFailure(node, command, r, steps);
      deps.line(node, `${w.stage}: ${detail}`);
      w.lagging = w.lagging.filter((n) => n !== node.nodeName);
      await deps.journal.save({ operation: op, phase: 'followers', status: 'waiting', stage: w.stage, sha256: w.sha256, lagging: w.lagging });
    }
    waiting = undefined;
    resumed = false;
  }
  throw new CliError(`${first.nodeName}: ${op} did not finish after 12 rounds`, { exitCode: ExitCode.Internal, hint: 'run "k8s-encrypt status --fleet" and report it', details: { node: first.nodeName } });
}
