/**
 * Which keys have an escrowed copy: STATE_DIR/escrow.json (0600) lists each bundle written by
 * `keys export` or by init / rotate-key --escrow-recipient, with the names of the keys inside,
 * its fingerprint and whom it is sealed to (public recipients or "passphrase"). No key material.
 * `status` warns about keys in use that no record names.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { z } from 'zod';
import { LOCAL_PROVIDERS } from '../config/keys';
import type { EncryptionConfiguration } from '../config/schema';
import { SECRET_FILE_MODE, writeFileAtomic } from '../state/atomic';
import { CliError, ExitCode, fsError } from '../ui/errors';

const ESCROW_RECORDS_FILE = 'escrow.json';

// zod is loaded only when a records file exists: status reads this on every run, most often to
// find no file, and zod's modules cost 10-14 MB of RSS.
const recordSchemas = (z: typeof import('zod').z) => {
  const RecordSchema = z.object({
    bundle: z.string(),
    fingerprint: z.string(),
    createdAt: z.string(),
    configSha256: z.string(),
    keys: z.array(z.object({ provider: z.string(), name: z.string() })),
    sealedTo: z.union([z.array(z.string()), z.literal('passphrase')]),
    by: z.string(),
  });
  return { RecordSchema, FileSchema: z.object({ version: z.literal(1), records: z.array(RecordSchema) }) };
};

type EscrowRecord = z.infer<ReturnType<typeof recordSchemas>['RecordSchema']>;

const escrowRecordsPath = (stateDir: string) => join(stateDir, ESCROW_RECORDS_FILE);

async function loadEscrowRecords(stateDir: string): Promise<EscrowRecord[]> {
  const path = escrowRecordsPath(stateDir);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw fsError('read', path, err);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const r = recordSchemas((await import('zod')).z).FileSchema.safeParse(parsed);
  if (!r.success) throw new CliError(`${path} is not a k8s-encrypt escrow record file`, { exitCode: ExitCode.Usage, hint: 'move it away; "k8s-encrypt keys export" writes a new one' });
  return r.data.records;
}

/**
 * Reads the records now, so that a damaged file refuses before the bundle is written (not after,
 * leaving a bundle no record names that a re-run refuses to overwrite); returns what adds one.
 */
export async function escrowRecorder(stateDir: string): Promise<(rec: EscrowRecord) => Promise<void>> {
  const records = await loadEscrowRecords(stateDir);
  return async (rec) => {
    // A bundle written again at the same path (a resumed run) replaces its record.
    const next = [...records.filter((r) => r.bundle !== rec.bundle), rec];
    await writeFileAtomic(escrowRecordsPath(stateDir), `${JSON.stringify({ version: 1, records: next }, null, 2)}\n`, { mode: SECRET_FILE_MODE });
  };
}

/** The local keys of a config (name and provider), in config order. */
function localKeysOf(cfg: EncryptionConfiguration): { provider: string; name: string }[] {
  const out: { provider: string; name: string }[] = [];
  for (const rule of cfg.resources) {
    for (const p of rule.providers) {
      for (const kind of LOCAL_PROVIDERS) for (const k of p[kind]?.keys ?? []) out.push({ provider: kind, name: k.name });
    }
  }
  return out.filter((k, i) => out.findIndex((o) => o.provider === k.provider && o.name === k.name) === i);
}

/**
 * Keys of the config that no escrow record names (KMS keys live in the KMS and are left out).
 * Pure. A key name is not unique across clusters; the record also keeps the provider.
 */
function keysWithoutEscrow(cfg: EncryptionConfiguration, records: readonly EscrowRecord[]): { provider: string; name: string }[] {
  return localKeysOf(cfg).filter((k) => !records.some((r) => r.keys.some((rk) => rk.provider === k.provider && rk.name === k.name)));
}

/**
 * status's warning lines: a key of the config in use that no escrow record names. Reads the
 * config and the records; a config that cannot be read is status's own finding, not repeated here.
 */
export async function escrowWarnings(stateDir: string, configPath: string): Promise<string[]> {
  const { loadEncryptionConfig } = await import('../config/parse');
  let cfg: EncryptionConfiguration;
  try {
    cfg = (await loadEncryptionConfig(configPath)).config;
  } catch {
    return [];
  }
  const missingKeys = keysWithoutEscrow(cfg, await loadEscrowRecords(stateDir));
  return missingKeys.map(
    (k) => `key ${k.provider}:${k.name} in ${configPath} has no recorded escrow: without a copy elsewhere, a lost node loses every Secret under it ("k8s-encrypt keys export --recipient age1...")`,
  );
}
