import type { ApiClient } from '../cluster/api';
import type { RewriteSummary } from '../cluster/rewrite';
import type { EtcdConnection, EtcdReader } from '../etcd/client';
import type { JournalStatus, JsonObject } from '../state/journal';
import type { StageName } from './plan';
import type { StepOutput } from './steps';

/**
 * What the executor (executor.ts, install.ts, unpatch.ts, rollback.ts) works with: everything
 * outside the process, passed in, and the journal it records each step in before the step counts
 * as done.
 */

export interface TransitionReporter {
  step(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  success(msg: string): void;
  /** What a long wait currently sees (a spinner line on a terminal); default: info lines. */
  progress?(msg: string): void;
}

export interface TransitionDeps {
  /** A client for THIS node's apiserver. */
  api: ApiClient;
  now: () => Date;
  out: TransitionReporter;
  signal?: AbortSignal;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  manifestPath: string;
  manifestsDir: string;
  configPath: string;
  backupDir: string;
  /** Previous configs kept in backupDir (the oldest go first). */
  keepBackups: number;
  nodeName: string;
  hasNode: boolean;
  timeoutMs: number;
  force: boolean;
  kubeadmConfig: boolean;
  etcd: EtcdConnection;
  openEtcd: (conn: EtcdConnection) => Promise<EtcdReader>;
  /** Rewrites every object of the resources (the re-encrypt-all engine, resumable). */
  rewrite: (resources: string[]) => Promise<RewriteSummary>;
  /** The command the other control planes run, e.g. `k8s-encrypt rotate-key --from-config FILE`. */
  followCommand: string;
}

/** What the executor needs of a journal: the persistent one, or an in-memory one for a follower. */
export interface StepJournal {
  done(step: string): boolean;
  output(step: string): JsonObject | undefined;
  complete(step: string, output?: JsonObject): Promise<void>;
  forget(steps: readonly string[]): Promise<void>;
  setStatus(status: JournalStatus, message?: string): Promise<void>;
  readonly status: JournalStatus;
  readonly message: string | undefined;
}

export interface StageOutcome {
  /** A stage name, or `rollback` for a restored copy. */
  stage: string;
  evidence?: string;
  proof?: string;
  rewrite?: StepOutput<'rewrite'>;
  verified?: string;
}

export interface TransitionResult {
  state: 'done' | 'waiting' | 'stopped';
  /** The last stage this node completed. */
  stage: StageName | null;
  sha256: string | null;
  stages: StageOutcome[];
  lagging: { node: string; reports: string }[];
  next: string | null;
}

/** A journal kept in memory: followers are idempotent by the file's sha256 instead. */
export class MemoryJournal implements StepJournal {
  private steps = new Map<string, JsonObject>();
  status: JournalStatus = 'running';
  message: string | undefined;
  done(step: string): boolean {
    return this.steps.has(step);
  }
  output(step: string): JsonObject | undefined {
    return this.steps.get(step);
  }
  async complete(step: string, output: JsonObject = {}): Promise<void> {
    this.steps.set(step, output);
  }
  async forget(steps: readonly string[]): Promise<void> {
    for (const s of steps) this.steps.delete(s);
  }
  async setStatus(status: JournalStatus, message?: string): Promise<void> {
    this.status = status;
    this.message = message;
  }
}

export const checkAbort = (deps: TransitionDeps) => {
  if (deps.signal?.aborted) throw deps.signal.reason;
};

export const progressOf = (deps: Pick<TransitionDeps, 'out'>) => (m: string) => (deps.out.progress ? deps.out.progress(m) : deps.out.info(`  … ${m}`));
