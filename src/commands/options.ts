import type { Command } from 'commander';
import { usageError } from '../ui/errors';
import { bool, checkOptions, int, oneOf, str as string, strList, type OptionsOf, type OptionShape } from './option-schema';
import { intOption } from './types';

/**
 * Options are checked against their shape at the edge (src/commands/option-schema.ts), so a
 * command's run function receives exactly the typed object it declares.
 */
export function parseOptions<S extends OptionShape>(shape: S, raw: unknown, command: string): OptionsOf<S> {
  const r = checkOptions(shape, raw as Record<string, unknown>);
  if (r.ok) return r.value;
  const flag = `--${r.key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
  throw usageError(`${command}: ${flag}: ${r.message}`, `see "k8s-encrypt ${command} --help"`);
}

const str = string().optional();
const flag = bool().optional();

/** What every transition command (init, rotate-key, disable, rollback) shares. */
export const nodeOptions = {
  config: str,
  nodeName: str,
  dryRun: flag,
  keepBackups: int(1),
};

export const keyOptions = {
  keyName: str,
  keyFile: str,
  keyStdin: flag,
  kmsName: str,
  kmsEndpoint: str,
  kmsApiVersion: oneOf(['v1', 'v2']),
  kmsTimeout: str,
};

export const stagedOptions = {
  stage: str,
  fromConfig: str,
  force: flag,
  controlPlanes: int(1).optional(),
  timeout: string(),
};

/** The safety net's flags (src/commands/safety.ts): a snapshot before the first change. */
export const snapshotOptions = {
  snapshot: flag,
  snapshotDir: str,
  keepSnapshots: int(1).optional(),
  snapshotStallTimeout: str,
};

/** ... and the new key escrowed before it encrypts anything (init, rotate-key). */
export const escrowOptions = {
  escrowRecipient: strList().optional(),
  escrowDir: str,
};

/** The flags rotate-key, disable and rollback share: this node's files, the wait, the backups. */
export function addNodeFlags(cmd: Command, timeout: string): Command {
  return cmd
    .option('--config <path>', "the EncryptionConfiguration (default: the manifest's --encryption-provider-config)")
    .option('--manifest <path>', 'kube-apiserver static pod manifest (default ROOT/etc/kubernetes/manifests/kube-apiserver.yaml)')
    .option('--timeout <duration>', timeout, '5m')
    .option('--keep-backups <n>', 'previous configs kept in the backup dir', intOption('--keep-backups'), 10)
    .option('--node-name <name>', "this control plane's node name (default: found from its mirror pod)");
}

/** ... and the staged ones (rotate-key, disable): further control planes and how many there are. */
export function addStagedFlags(cmd: Command): Command {
  return cmd
    .option('--from-config <file>', "further control planes: install the first node's config for the current stage (- reads it from standard input)")
    .option(
      '--control-planes <n>',
      'how many control planes there are, where they cannot all be discovered (no mirror pods, Nodes or identity leases)',
      intOption('--control-planes'),
    );
}
