import { randomBytes } from 'node:crypto';
import { usageError } from '../ui/errors';

export const LOCAL_PROVIDERS = ['aescbc', 'aesgcm', 'secretbox'] as const;
export type LocalProvider = (typeof LOCAL_PROVIDERS)[number];
export const PROVIDERS = [...LOCAL_PROVIDERS, 'kms'] as const;
export type Provider = (typeof PROVIDERS)[number];

/** Names we write: they end up in etcd value prefixes (`k8s:enc:aescbc:v1:NAME:`), so no ':' or '/'. */
export const WRITABLE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** --key-name as write-config, init and rotate-key accept it. */
export function checkKeyName(name: string | undefined): void {
  if (name !== undefined && !WRITABLE_NAME.test(name)) {
    throw usageError(`--key-name "${name}" is not a usable key name`, 'use letters, digits, ".", "_" or "-" (at most 63)');
  }
}

/** A KMS provider's name: it goes into every stored value's prefix and names its escrow file. */
export function checkKmsName(name: string | undefined): void {
  if (name !== undefined && !WRITABLE_NAME.test(name)) {
    throw usageError(`--kms-name "${name}" is not a usable name`, 'use letters, digits, ".", "_" or "-" (at most 63)');
  }
}

/** Key lengths the apiserver accepts (k8s.io/apiserver encryptionconfig validation). */
export const KEY_LENGTHS: Record<LocalProvider, readonly number[]> = {
  aescbc: [16, 24, 32],
  aesgcm: [16, 24, 32],
  secretbox: [32],
};

export const DEFAULT_KEY_BYTES = 32;

export function isLocalProvider(p: string): p is LocalProvider {
  return (LOCAL_PROVIDERS as readonly string[]).includes(p);
}

export function parseProvider(p: string, allowKms = true): Provider {
  const allowed: readonly string[] = allowKms ? PROVIDERS : LOCAL_PROVIDERS;
  if (!allowed.includes(p)) {
    throw usageError(`unknown provider "${p}"`, `use one of: ${allowed.join(', ')}`);
  }
  return p as Provider;
}

/** "an aescbc key", "an aesgcm key", "a secretbox key". */
const keyOf = (provider: LocalProvider) => `${/^[aeiou]/.test(provider) ? 'an' : 'a'} ${provider} key`;
const lengthsText = (ok: readonly number[]) => ok.join(', ').replace(/, (\d+)$/, ' or $1');

export function checkKeyLength(provider: LocalProvider, bytes: number): void {
  const ok = KEY_LENGTHS[provider];
  if (!ok.includes(bytes)) {
    throw usageError(
      `${keyOf(provider)} must be ${lengthsText(ok)} bytes, not ${bytes}`,
      `choose --bytes ${ok.join('|')}`,
    );
  }
}

/** A fresh key from the OS's CSPRNG, base64 as the EncryptionConfiguration stores it. */
export function generateKey(provider: LocalProvider = 'aescbc', bytes = DEFAULT_KEY_BYTES): string {
  checkKeyLength(provider, bytes);
  return randomBytes(bytes).toString('base64');
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Decodes and checks a base64 key for a provider. Errors name the problem, never the key.
 * Accepts surrounding whitespace (a key file usually ends with a newline).
 */
export function decodeKey(provider: LocalProvider, text: string, source = 'the key'): Buffer {
  const trimmed = text.trim();
  if (trimmed === '' || trimmed.length % 4 !== 0 || !BASE64.test(trimmed)) {
    throw usageError(
      `${source} is not valid base64`,
      'give the key as standard base64 (e.g. from "k8s-encrypt generate-key")',
    );
  }
  const bytes = Buffer.from(trimmed, 'base64');
  const ok = KEY_LENGTHS[provider];
  if (!ok.includes(bytes.length)) {
    throw usageError(
      `${source} is ${bytes.length} bytes; ${keyOf(provider)} must be ${lengthsText(ok)} bytes`,
      'generate a suitable one with "k8s-encrypt generate-key --provider ' + provider + '"',
    );
  }
  return bytes;
}
