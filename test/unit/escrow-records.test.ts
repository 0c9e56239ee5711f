import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateIdentity, identityToRecipient } from 'age-encryption';
import { afterEach, describe, expect, it } from 'vitest';
import { buildBundle } from '../../src/escrow/bundle';
import { writeBundle } from '../../src/escrow/export';
import { CliError } from '../../src/ui/errors';

const CONFIG = readFileSync(fileURLToPath(new URL('../fixtures/configs/aescbc-two-keys.yaml', import.meta.url)), 'utf8');

describe('writing a bundle next to a damaged escrow.json', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('refuses before the bundle is written, so a re-run is not refused by a bundle no record names', async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-escrow-rec-'));
    const records = join(dir, 'escrow.json');
    await writeFile(records, '{"version": 1, "records": [', { mode: 0o600 });
    const recipient = await identityToRecipient(await generateIdentity());
    const out = join(dir, 'out', 'bundle.age');
    const bundle = buildBundle(CONFIG, join(dir, 'config.yaml'), new Date('2026-01-01T00:00:00Z'));
    const err = await writeBundle(bundle, { recipients: [recipient] }, out, 'keys export', dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).message).toBe(`${records} is not a k8s-encrypt escrow record file`);
    expect(await readdir(dir)).toEqual(['escrow.json']);
    expect(await readFile(records, 'utf8')).toBe('{"version": 1, "records": [');
  });
});
