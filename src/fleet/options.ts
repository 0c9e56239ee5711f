import type { Command } from 'commander';
import type { Context } from '../context';

/**
 * The fleet flags every command that drives control planes takes, and the one branch its action
 * starts with. Kept light: the SSH code loads only when --fleet or --ssh is given.
 */

export type FleetOperation = 'init' | 'rotate-key' | 'disable' | 'rollback' | 'status';

/** Option keys (commander's camelCase) that belong to the orchestrator, never forwarded to a node. */
export const FLEET_KEYS = ['fleet', 'ssh', 'knownHosts', 'acceptNewHostKeys', 'connectTimeout', 'commandTimeout', 'nodeBin'] as const;

const commandOf = (program: Command, name: FleetOperation) => program.commands.find((c) => c.name() === name)!;

/** Adds the fleet flags to the (already registered) command `name`. */
export function addFleetOptions(program: Command, name: FleetOperation): void {
  commandOf(program, name)
    .option('--fleet <file>', 'drive every control plane over SSH: an inventory YAML with controlPlanes: [{host, port, user, identityFile, nodeName, root}], first node first')
    .option('--ssh <list>', 'short form of --fleet: user@host[:port],... first node first')
    .option('--known-hosts <file>', 'known_hosts to check host keys against (default ~/.ssh/known_hosts)')
    .option('--accept-new-host-keys', 'record host keys not yet known (a changed key is still refused)', false)
    .option('--connect-timeout <duration>', 'SSH connect timeout per node', '20s')
    .option('--command-timeout <duration>', 'how long one command on a node may run', '30m')
    .option('--node-bin <path>', 'k8s-encrypt already installed on every node (default: upload this executable)');
}

/** Runs the command on every control plane when --fleet or --ssh is given; false otherwise. */
export async function runFleetIfAsked(ctx: Context, program: Command, operation: FleetOperation, opts: object): Promise<boolean> {
  const o = opts as Record<string, unknown>;
  if (o.fleet === undefined && o.ssh === undefined) return false;
  const { runFleet } = await import('./command');
  await runFleet(ctx, commandOf(program, operation), operation, o);
  return true;
}
