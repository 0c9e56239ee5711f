import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fileExists, readText, writeFileAtomic } from '../state/atomic';
import type { FleetNode } from './inventory';

/**
 * The orchestrator's journal, beside the node journals' state dir: which fleet operation runs,
 * whether the first node or the followers were next, the stage and its config sha256, and who
 * still had to follow. Never key material (a sha256 only). The per-node journals do the real
 * resume; this one lets a re-run go to the followers first instead of asking the first node again.
 */

export interface FleetJournalState {
  operation: string;
  phase: 'first' | 'followers' | 'done';
  status: 'running' | 'waiting' | 'done';
  stage?: string;
  sha256?: string;
  lagging?: string[];
}

interface Stored extends FleetJournalState {
  fleet: string;
  nodes: string[];
  updatedAt: string;
}

/** The same inventory (node names and addresses, in order) gives the same journal. */
export function fleetId(nodes: FleetNode[]): string {
  const text = nodes.map((n) => `${n.nodeName}@${n.host}:${n.port}${n.root}`).join('\n');
  return createHash('sha256').update(text).digest('hex').slice(0, 12);
}

export function fleetJournal(stateDir: string, operation: string, nodes: FleetNode[], now: () => Date) {
  const id = fleetId(nodes);
  const path = join(stateDir, 'fleet', `${operation}-${id}.json`);
  return {
    path,
    async load(): Promise<FleetJournalState | undefined> {
      if (!(await fileExists(path))) return undefined;
      let s: Stored;
      try {
        s = JSON.parse(await readText(path, 'read fleet journal')) as Stored;
      } catch {
        return undefined; // an unreadable journal only costs asking the first node again
      }
      return s.fleet === id && s.status !== 'done' ? s : undefined;
    },
    async save(s: FleetJournalState): Promise<void> {
      const body: Stored = { fleet: id, nodes: nodes.map((n) => n.nodeName), ...s, updatedAt: now().toISOString() };
      await writeFileAtomic(path, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600, dirMode: 0o700 });
    },
  };
}
