/**
 * Key escrow bundles: every key of an EncryptionConfiguration (and the config text itself, byte
 * for byte) encrypted with age, to X25519 / post-quantum recipients (`age1...`) or to a
 * passphrase (age's scrypt recipient). The plaintext bundle exists only in memory; on disk there
 * is only the age file (ASCII armored), written 0600 by the caller.
 *
 * Build and parse are pure; encrypt/decrypt only call the age library.
 */
import { z } from 'zod';
import { sha256Hex } from '../config/parse';
import { parseEncryptionConfig } from '../config/parse';
import { LOCAL_PROVIDERS } from '../config/keys';
import { CliError, ExitCode, usageError } from '../ui/errors';

const BUNDLE_FORMAT = 'k8s-encrypt-key-bundle/v1';

const BundleKeySchema = z
  .object({
    resources: z.array(z.string()),
    provider: z.enum(['aescbc', 'aesgcm', 'secretbox', 'kms']),
    name: z.string(),
    /** base64 key (local providers); KMS keys stay in the KMS and only the provider is recorded. */
    secret: z.string().optional(),
    endpoint: z.string().optional(),
  })
  .strict();

const BundleSchema = z
  .object({
    format: z.literal(BUNDLE_FORMAT),
    createdAt: z.string(),
    /** Where the config was read from (for the operator; import writes wherever it is told). */
    source: z.string(),
    configSha256: z.string().regex(/^[0-9a-f]{64}$/),
    config: z.string(),
    keys: z.array(BundleKeySchema),
  })
  .strict();

export type KeyBundle = z.infer<typeof BundleSchema>;
type BundleKey = z.infer<typeof BundleKeySchema>;

/** What may be shown of a bundle: names and providers, never the key bytes. */
interface BundleSummary {
  configSha256: string;
  createdAt: string;
  source: string;
  keys: { provider: string; name: string; resources: string[] }[];
}

/** The bundle of a config text (throws a usage error when the text is not a valid config). */
export function buildBundle(configText: string, source: string, now: Date): KeyBundle {
  const cfg = parseEncryptionConfig(configText, source);
  const keys: BundleKey[] = [];
  for (const rule of cfg.resources) {
    for (const p of rule.providers) {
      for (const kind of LOCAL_PROVIDERS) {
        for (const k of p[kind]?.keys ?? []) keys.push({ resources: rule.resources, provider: kind, name: k.name, secret: k.secret });
      }
      if (p.kms) keys.push({ resources: rule.resources, provider: 'kms', name: p.kms.name, endpoint: p.kms.endpoint });
    }
  }
  return { format: BUNDLE_FORMAT, createdAt: now.toISOString(), source, configSha256: sha256Hex(configText), config: configText, keys };
}

export function summarizeBundle(b: KeyBundle): BundleSummary {
  return { configSha256: b.configSha256, createdAt: b.createdAt, source: b.source, keys: b.keys.map((k) => ({ provider: k.provider, name: k.name, resources: k.resources })) };
}

/** Names of the keys whose bytes the bundle holds. */
export const escrowedKeyNames = (b: KeyBundle) => b.keys.filter((k) => k.secret !== undefined).map((k) => k.name);

/** How a bundle is sealed: one or more age recipients, or one passphrase. */
export type Seal = { recipients: string[] } | { passphrase: string; scryptWorkFactor?: number };

const RECIPIENT = /^age1[0-9a-z]+$/;

/** Checks recipients before anything is written; a bad one is a usage error naming it. */
export function checkRecipients(recipients: readonly string[], flag = '--recipient'): void {
  if (recipients.length === 0) throw usageError(`${flag} names no recipient`);
  for (const r of recipients) {
    if (!RECIPIENT.test(r)) throw usageError(`${flag} ${JSON.stringify(r.slice(0, 80))} is not an age recipient`, 'give a public key that starts with age1 (age-keygen -y IDENTITY_FILE prints it)');
  }
}

export async function sealBundle(b: KeyBundle, seal: Seal): Promise<Buffer> {
  const { Encrypter, armor } = await import('age-encryption');
  const e = new Encrypter();
  if ('passphrase' in seal) {
    if (!seal.passphrase) throw usageError('the passphrase is empty', 'put the passphrase in the file (one line) or on stdin');
    e.setPassphrase(seal.passphrase);
    if (seal.scryptWorkFactor !== undefined) e.setScryptWorkFactor(seal.scryptWorkFactor);
  } else {
    checkRecipients(seal.recipients);
    for (const r of seal.recipients) {
      try {
        e.addRecipient(r);
      } catch (err) {
        throw usageError(`${JSON.stringify(r.slice(0, 80))} is not a valid age recipient: ${(err as Error).message}`, 'give a public key that starts with age1 (age-keygen -y IDENTITY_FILE prints it)');
      }
    }
  }
  const sealed = await e.encrypt(`${JSON.stringify(b)}\n`);
  return Buffer.from(armor.encode(sealed), 'utf8');
}

/** What opens a bundle: age identities (`AGE-SECRET-KEY-...` lines) or a passphrase. */
export type Opener = { identities: string[] } | { passphrase: string };

/** The identities of an age identity file (comments and blank lines skipped). */
export function parseIdentityFile(text: string, path: string): string[] {
  const ids = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  if (ids.length === 0 || ids.some((l) => !/^AGE-SECRET-KEY-/.test(l))) {
    throw usageError(`${path} is not an age identity file`, 'give the file age-keygen wrote (lines starting with AGE-SECRET-KEY-)');
  }
  return ids;
}

/** Decrypts and checks a bundle: its shape, and that the config text still hashes as recorded. */
export async function openBundle(sealed: Uint8Array, opener: Opener, source: string): Promise<KeyBundle> {
  const { Decrypter, armor } = await import('age-encryption');
  const text = Buffer.from(sealed).toString('utf8');
  let raw: Uint8Array;
  try {
    raw = text.trimStart().startsWith('-----BEGIN AGE ENCRYPTED FILE-----') ? armor.decode(text) : sealed;
  } catch (err) {
    throw usageError(`${source} is not an age file: ${(err as Error).message}`, 'give a bundle written by "k8s-encrypt keys export"');
  }
  const d = new Decrypter();
  if ('passphrase' in opener) d.addPassphrase(opener.passphrase);
  else {
    opener.identities.forEach((id, i) => {
      try {
        d.addIdentity(id);
      } catch {
        // The library's message quotes the whole line: an almost-right private key must not reach a log.
        throw usageError(`identity ${i + 1} given is not a valid age identity (a typo or a truncated AGE-SECRET-KEY-1... line?)`, 'give the identity file written by age-keygen, unchanged');
      }
    });
  }
  let plain: string;
  try {
    plain = await d.decrypt(raw, 'text');
  } catch (err) {
    throw new CliError(`cannot decrypt ${source}: ${(err as Error).message}`, {
      exitCode: ExitCode.Usage,
      hint: 'passphrase' in opener ? 'check the passphrase (a bundle sealed to recipients needs --identity)' : 'give the identity of one of the recipients it was exported to (or --passphrase-file for a passphrase bundle)',
      cause: err,
    });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(plain);
  } catch {
    throw usageError(`${source} decrypts, but not to a k8s-encrypt key bundle`);
  }
  const r = BundleSchema.safeParse(parsed);
  if (!r.success) throw usageError(`${source} decrypts, but not to a ${BUNDLE_FORMAT} key bundle`);
  if (sha256Hex(r.data.config) !== r.data.configSha256) throw usageError(`${source}: the config inside does not hash to the recorded sha256 (damaged bundle)`);
  parseEncryptionConfig(r.data.config, `the config inside ${source}`);
  return r.data;
}

/** A bundle's fingerprint: the sha256 of the sealed file, as the journal and records keep it. */
export const bundleFingerprint = (sealed: Uint8Array) => `sha256:${sha256Hex(sealed)}`;
