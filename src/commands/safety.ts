import type { Command } from 'commander';
import { intOption } from './types';

/** Commander parser for a repeatable option. */
export const collect = (v: string, prev: string[] = []) => [...prev, v];

/** The snapshot flags of init, rotate-key and disable (the snapshot runs before the first change). */
export function addSnapshotOptions(cmd: Command): Command {
  return cmd
    .option('--no-snapshot', 'do not take an etcd snapshot before the first change (a warning says so)')
    .option('--snapshot-dir <dir>', 'where the etcd snapshot goes (0600; default STATE_DIR/snapshots)')
    .option('--keep-snapshots <n>', 'snapshots kept in the snapshot dir (default 5)', intOption('--keep-snapshots'))
    .option('--snapshot-stall-timeout <duration>', 'give up on the etcd snapshot when etcd sends nothing for this long (default 30s)');
}

/** The escrow flags of init and rotate-key: the new key is sealed before it first encrypts anything. */
export function addEscrowOptions(cmd: Command): Command {
  return cmd
    .option('--escrow-recipient <age1...>', 'seal the new key (with the config holding it) to this age recipient before it is used; repeatable', collect)
    .option('--escrow-dir <dir>', 'where the escrow bundle KEYNAME.age goes (0600; default STATE_DIR/escrow)');
}
