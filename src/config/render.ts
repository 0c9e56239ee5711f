import { stringify } from 'yaml';
import { compactTimestamp } from '../state/atomic';
import { usageError } from '../ui/errors';
import { isLocalProvider, type Provider } from './keys';
import type { EncryptionConfiguration, KmsConfig, ProviderConfig, ResourceConfig } from './schema';

const CONFIG_HEADER = [
  '# Written by k8s-encrypt. This file holds encryption keys: keep it mode 0600 (owner root only)',
  '# and back it up somewhere safe; a lost key means data that can no longer be read.',
].join('\n');

function canonicalKms(k: KmsConfig): KmsConfig {
  return {
    ...(k.apiVersion !== undefined ? { apiVersion: k.apiVersion } : {}),
    name: k.name,
    endpoint: k.endpoint,
    ...(k.timeout !== undefined ? { timeout: k.timeout } : {}),
    ...(k.cachesize !== undefined ? { cachesize: k.cachesize } : {}),
  };
}

export function canonicalProvider(p: ProviderConfig): ProviderConfig {
  const out: ProviderConfig = {};
  for (const kind of ['aescbc', 'aesgcm', 'secretbox'] as const) {
    const v = p[kind];
    if (v) out[kind] = { keys: v.keys.map((k) => ({ name: k.name, secret: k.secret })) };
  }
  if (p.kms) out.kms = canonicalKms(p.kms);
  if (p.identity) out.identity = {};
  return out;
}

/** The same config with keys in a fixed order (what render writes and configsEqual compares). */
export function canonicalConfig(cfg: EncryptionConfiguration): EncryptionConfiguration {
  return {
    apiVersion: cfg.apiVersion,
    kind: cfg.kind,
    resources: cfg.resources.map(
      (r): ResourceConfig => ({ resources: [...r.resources], providers: r.providers.map(canonicalProvider) }),
    ),
  };
}

/** YAML text of a config, stable key order, with a header saying it holds keys. Pure. */
export function renderEncryptionConfig(cfg: EncryptionConfiguration): string {
  // YAML 1.1 quoting, so that the apiserver reads a key named `on` or `yes` as a string.
  const body = stringify(canonicalConfig(cfg), { lineWidth: 0, indent: 2, indentSeq: true, version: '1.1' });
  return `${CONFIG_HEADER}\n${body}`;
}

export interface BuildOptions {
  provider: Provider;
  /** Key name (local providers); ignored for kms, whose name is kms.name. */
  keyName: string;
  /** base64 key, required for aescbc, aesgcm and secretbox. */
  key?: string;
  kms?: { name: string; endpoint: string; apiVersion: 'v1' | 'v2'; timeout?: string; cachesize?: number };
  resources: string[];
}

/** The element that writes with the chosen provider (the new key, or the KMS plugin). */
export function buildProviderElement(opts: Omit<BuildOptions, 'resources'>): ProviderConfig {
  if (isLocalProvider(opts.provider)) {
    if (opts.key === undefined) throw usageError(`a ${opts.provider} provider needs a key`);
    return { [opts.provider]: { keys: [{ name: opts.keyName, secret: opts.key }] } };
  }
  if (!opts.kms) throw usageError('a kms provider needs a name and an endpoint', 'pass --kms-name and --kms-endpoint');
  const { name, endpoint, apiVersion, timeout, cachesize } = opts.kms;
  return { kms: canonicalKms({ apiVersion, name, endpoint, timeout, cachesize }) };
}

/**
 * A fresh config: one rule for the given resources, the chosen provider first (it encrypts new
 * writes) and `identity: {}` last (it reads what was stored before encryption was turned on).
 */
export function buildEncryptionConfig(opts: BuildOptions): EncryptionConfiguration {
  return {
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: [{ resources: [...opts.resources], providers: [buildProviderElement(opts), { identity: {} }] }],
  };
}

const KEY_NAME = /^key-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z(?:-(\d+))?$/;

/**
 * A key name that sorts by creation time and says when it was made: `key-20261126T140200Z`;
 * `-1`, `-2`... is added when a name of that second is already taken.
 */
export function newKeyName(now: Date, taken: Iterable<string> = []): string {
  const used = new Set(taken);
  const base = `key-${compactTimestamp(now)}`;
  let name = base;
  for (let i = 1; used.has(name); i++) name = `${base}-${i}`;
  return name;
}

/** When a key named by newKeyName was made; undefined for any other name. */
export function keyCreatedAt(name: string): Date | undefined {
  const m = KEY_NAME.exec(name);
  if (!m) return undefined;
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  // Refuse impossible dates (Date.UTC rolls 20261340 over into another month).
  return date.getUTCMonth() === mo - 1 && date.getUTCDate() === d && h < 24 && mi < 60 && s < 60 ? date : undefined;
}
