import { describe, expect, it } from 'vitest';
import type { EncryptionConfiguration, ProviderConfig, ResourceConfig } from '../../src/config/schema';
import {
  decodeBase64Strict,
  NEWEST_KUBE_VERSION,
  parseGoDuration,
  parseKubeVersion,
  parseFeatureGates,
  validateEncryptionConfig,
  type Finding,
} from '../../src/config/validate';

const key = (n: number, fill = 7) => Buffer.alloc(n, fill).toString('base64');
const K16 = key(16);
const K32 = key(32);
const SB = key(32, 9);

const cfg = (...resources: ResourceConfig[]): EncryptionConfiguration => ({
  apiVersion: 'apiserver.config.k8s.io/v1',
  kind: 'EncryptionConfiguration',
  resources,
});
const rule = (resources: string[], ...providers: ProviderConfig[]): ResourceConfig => ({ resources, providers });
const sb = (name = 'k1', secret = SB): ProviderConfig => ({ secretbox: { keys: [{ name, secret }] } });
const kms2 = (name = 'kms', extra: object = {}): ProviderConfig => ({
  kms: { apiVersion: 'v2', name, endpoint: 'unix:///var/run/kmsplugin/socket.sock', ...extra },
});
const id: ProviderConfig = { identity: {} };

/** A config that is clean on the newest release: no finding at all. */
const clean = cfg(rule(['secrets', 'configmaps'], sb(), id));

describe('validateEncryptionConfig: a clean config', () => {
  it('has no finding on the newest release and on 1.24', () => {
    expect(validateEncryptionConfig(clean)).toEqual([]);
    expect(validateEncryptionConfig(clean, { kubeVersion: '1.24' })).toEqual([]);
  });
});

interface Row {
  rule: string;
  noEffect?: 'warning';
  config: EncryptionConfiguration;
  kubeVersion?: string;
  featureGates?: Record<string, boolean>;
  level: Finding['level'];
  path: string;
  message: string | RegExp;
}

// One row per rule: the smallest config that breaks it, and the finding it must produce.
const rows: Row[] = [
  // keys (validateKeys / validateKey)
  { rule: 'aescbc key length', config: cfg(rule(['secrets'], { aescbc: { keys: [{ name: 'k', secret: key(20) }] } })), level: 'error', path: 'resources[0].providers[0].aescbc.keys[0].secret', message: 'secret is not of the expected length, got 20, expected one of [16 24 32]' },
  { rule: 'aesgcm key length', config: cfg(rule(['secrets'], { aesgcm: { keys: [{ name: 'k', secret: key(8) }] } })), level: 'error', path: 'resources[0].providers[0].aesgcm.keys[0].secret', message: 'secret is not of the expected length, got 8, expected one of [16 24 32]' },
  { rule: 'secretbox key length', config: cfg(rule(['secrets'], { secretbox: { keys: [{ name: 'k', secret: K16 }] } })), level: 'error', path: 'resources[0].providers[0].secretbox.keys[0].secret', message: 'secret is not of the expected length, got 16, expected one of [32]' },
  { rule: 'base64', config: cfg(rule(['secrets'], id, { aescbc: { keys: [{ name: 'k', secret: 'not base64!' }] } })), level: 'error', path: 'resources[0].providers[1].aescbc.keys[0].secret', message: 'secrets must be base64 encoded' },
  { rule: 'base64 padding', config: cfg(rule(['secrets'], sb('k', SB.replace(/=+$/, '')))), level: 'error', path: 'resources[0].providers[0].secretbox.keys[0].secret', message: 'secrets must be base64 encoded' },
  { rule: 'key name required', config: cfg(rule(['secrets'], sb(''))), level: 'error', path: 'resources[0].providers[0].secretbox.keys[0].name', message: 'name is a mandatory field for a key' },
  { rule: 'secret required', config: cfg(rule(['secrets'], sb('k', ''))), level: 'error', path: 'resources[0].providers[0].secretbox.keys[0].secret', message: 'secret is a mandatory field for a key' },
  { rule: 'key names unique', config: cfg(rule(['secrets'], { secretbox: { keys: [{ name: 'a', secret: SB }, { name: 'a', secret: K32 }] } })), level: 'error', path: 'resources[0].providers[0].secretbox.keys[1].name', message: /duplicate key name "a" \(also resources\[0\]\.providers\[0\]\.secretbox\.keys\[0\]\)/ },
  { rule: 'key names unique across elements of a kind', config: cfg(rule(['secrets'], sb('a'), id, sb('a', K32))), level: 'error', path: 'resources[0].providers[2].secretbox.keys[0].name', message: /duplicate key name "a" \(also resources\[0\]\.providers\[0\]\.secretbox\.keys\[0\]\): the apiserver only tries the first key of a name/ },
  { rule: 'keys required', config: cfg(rule(['secrets'], { secretbox: { keys: [] } })), level: 'error', path: 'resources[0].providers[0].secretbox.keys', message: 'at least one keys is required' },
  // provider elements (validateSingleProvider)
  { rule: 'one provider per element', config: cfg(rule(['secrets'], { ...sb(), identity: {} })), level: 'error', path: 'resources[0].providers[0]', message: 'more than one provider specified in a single element, should split into different list elements' },
  { rule: 'empty element', config: cfg(rule(['secrets'], sb(), {})), level: 'error', path: 'resources[0].providers[1]', message: 'provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity' },
  { rule: 'providers required', config: cfg(rule(['secrets'])), level: 'error', path: 'resources[0].providers', message: 'at least one resources[0].providers is required' },
  // KMS (validateKMSConfiguration)
  { rule: 'kms endpoint scheme', config: cfg(rule(['secrets'], kms2('kms', { endpoint: 'tcp://10.0.0.1:9000' }))), level: 'error', path: 'resources[0].providers[0].kms.endpoint', message: 'unsupported scheme "tcp" for KMS provider, only unix is supported' },
  { rule: 'kms endpoint without scheme', config: cfg(rule(['secrets'], kms2('kms', { endpoint: '/var/run/kms.sock' }))), level: 'error', path: 'resources[0].providers[0].kms.endpoint', message: 'unsupported scheme "" for KMS provider, only unix is supported' },
  { rule: 'kms endpoint required', config: cfg(rule(['secrets'], kms2('kms', { endpoint: '' }))), level: 'error', path: 'resources[0].providers[0].kms.endpoint', message: 'endpoint is a mandatory field for a kms' },
  { rule: 'kms endpoint socket path', config: cfg(rule(['secrets'], kms2('kms', { endpoint: 'unix://' }))), level: 'error', path: 'resources[0].providers[0].kms.endpoint', message: /names no socket path/ },
  { rule: 'kms apiVersion', config: cfg(rule(['secrets'], kms2('kms', { apiVersion: 'v3' }))), level: 'error', path: 'resources[0].providers[0].kms.apiVersion', message: 'Invalid value: "v3": unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported' },
  { rule: 'kms cachesize in v2', config: cfg(rule(['secrets'], kms2('kms', { cachesize: 100 }))), level: 'error', path: 'resources[0].providers[0].kms.cachesize', message: 'cachesize is not supported in v2' },
  { rule: 'kms v1 cachesize 0', config: cfg(rule(['secrets'], kms2('kms', { apiVersion: 'v1', cachesize: 0 }))), kubeVersion: '1.27', level: 'error', path: 'resources[0].providers[0].kms.cachesize', message: 'cachesize should be a positive value, or negative to disable' },
  { rule: 'kms v2 name colon', config: cfg(rule(['secrets'], kms2('a:b'))), level: 'error', path: 'resources[0].providers[0].kms.name', message: "invalid KMS provider name a:b, must not contain ':'" },
  { rule: 'kms name required', config: cfg(rule(['secrets'], kms2(''))), level: 'error', path: 'resources[0].providers[0].kms.name', message: 'name is a mandatory field for a provider' },
  { rule: 'kms v2 duplicate names', config: cfg(rule(['secrets'], kms2('k'), id), rule(['configmaps'], kms2('k'), id)), level: 'error', path: 'resources[1].providers[0].kms.name', message: 'duplicate KMS provider name k, names must be unique' },
  { rule: 'kms v1 duplicate names', config: cfg(rule(['secrets'], kms2('k', { apiVersion: 'v1' })), rule(['configmaps'], kms2('k', { apiVersion: 'v1' }))), kubeVersion: '1.27', level: 'warning', path: 'resources[1].providers[0].kms.name', message: /duplicate KMS provider name k, names must be unique \(a KMS v1 duplicate is refused once --encryption-provider-config-automatic-reload is on\)/ },
  { rule: 'kms timeout format', config: cfg(rule(['secrets'], kms2('kms', { timeout: '3 seconds' }))), level: 'error', path: 'resources[0].providers[0].kms.timeout', message: 'cannot be decoded: time: invalid duration "3 seconds"' },
  { rule: 'kms timeout positive', config: cfg(rule(['secrets'], kms2('kms', { timeout: '0s' }))), level: 'error', path: 'resources[0].providers[0].kms.timeout', message: 'timeout should be a positive value' },
  // resources (validateResourceNames / validateResourceOverlap)
  { rule: 'resources required', config: cfg(), level: 'error', path: 'resources', message: 'at least one resources is required' },
  { rule: 'rule resources required', config: cfg(rule([], sb())), level: 'error', path: 'resources[0].resources', message: 'at least one resources[0].resources is required' },
  { rule: 'star alone', config: cfg(rule(['*'], sb())), level: 'error', path: 'resources[0].resources[0]', message: "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources" },
  { rule: 'resource.*', config: cfg(rule(['secrets.*'], sb())), level: 'error', path: 'resources[0].resources[0]', message: 'encrypting the same resource across groups is not supported' },
  { rule: 'capital letters', config: cfg(rule(['Secrets'], sb())), level: 'error', path: 'resources[0].resources[0]', message: 'resource name should not contain capital letters' },
  { rule: 'duplicates in a list', config: cfg(rule(['secrets', 'secrets'], sb())), level: 'error', path: 'resources[0].resources', message: 'the same resource cannot be specified multiple times' },
  { rule: 'overlap in a list', config: cfg(rule(['secrets', '*.'], sb())), level: 'error', path: 'resources[0].resources', message: "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked" },
  { rule: 'overlap with *.*', config: cfg(rule(['*.*', 'deployments.apps'], sb())), level: 'error', path: 'resources[0].resources', message: /overlapping resources/ },
  { rule: 'extensions group', config: cfg(rule(['ingresses.extensions'], sb())), level: 'error', path: 'resources[0].resources[0]', message: "'extensions' group has been removed and cannot be used for encryption" },
  { rule: 'events.k8s.io', config: cfg(rule(['*.events.k8s.io'], sb())), level: 'error', path: 'resources[0].resources[0]', message: "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file" },
  { rule: 'resources without REST API', config: cfg(rule(['serviceipallocations'], sb())), level: 'error', path: 'resources[0].resources[0]', message: 'resources which do not have REST API/s cannot be encrypted' },
  { rule: 'masked by *.', config: cfg(rule(['*.'], sb()), rule(['secrets'], sb('k2'))), level: 'error', path: 'resources[1].resources[0]', message: 'resource "secrets" is masked by earlier rule "*."' },
  { rule: 'masked by *.*', config: cfg(rule(['*.*'], sb()), rule(['secrets'], sb('k2'))), level: 'error', path: 'resources[1].resources[0]', message: 'resource "secrets" is masked by earlier rule "*.*"' },
  { rule: 'masked by *.apps', config: cfg(rule(['*.apps'], sb()), rule(['deployments.apps'], sb('k2'))), level: 'error', path: 'resources[1].resources[0]', message: 'resource "deployments.apps" is masked by earlier rule "*.apps"' },
  { rule: '*. masked by *.', config: cfg(rule(['*.'], sb()), rule(['*.'], sb('k2'))), level: 'error', path: 'resources[1].resources[0]', message: 'resource "*." is masked by earlier rule "*."' },
  { rule: 'same resource in two rules', config: cfg(rule(['secrets'], sb()), rule(['secrets'], sb('k2'))), level: 'warning', path: 'resources[1].resources[0]', message: /"secrets" is already configured by resources\[0\]: this rule's providers only add readers/ },
  { rule: 'singular resource name', config: cfg(rule(['secret'], sb())), level: 'warning', path: 'resources[0].resources[0]', message: /did you mean "secrets"/ },
  // version traps
  { rule: 'wildcard before 1.27', config: cfg(rule(['*.*'], sb())), kubeVersion: '1.26', noEffect: 'warning', level: 'warning', path: 'resources[0].resources[0]', message: 'wildcards match nothing before 1.27: a 1.26 apiserver accepts "*.*" and encrypts nothing with it' },
  { rule: 'resource-list rules before 1.27', config: cfg(rule(['Secrets', 'secrets', 'secrets'], sb())), kubeVersion: '1.24', noEffect: 'warning', level: 'warning', path: 'resources[0].resources', message: /^a resource is listed twice \(the repeat has no effect on 1.24\) \(from 1.27 the apiserver refuses it: the same resource cannot be specified multiple times\)$/ },
  { rule: 'capital letters before 1.27', config: cfg(rule(['Secrets'], sb())), kubeVersion: '1.24', noEffect: 'warning', level: 'warning', path: 'resources[0].resources[0]', message: /"Secrets" matches no resource .* has no effect on 1.24 \(from 1.27 the apiserver refuses it: resource name should not contain capital letters\)/ },
  { rule: 'masking needs 1.27', config: cfg(rule(['*.'], sb()), rule(['secrets'], sb('k2'))), kubeVersion: '1.26', noEffect: 'warning', level: 'warning', path: 'resources[0].resources[0]', message: /wildcards match nothing before 1.27/ },
  { rule: 'kms without apiVersion on 1.29+', config: cfg(rule(['secrets'], { kms: { name: 'k', endpoint: 'unix:///s.sock' } })), level: 'error', path: 'resources[0].providers[0].kms.apiVersion', message: 'apiVersion is not set, so it defaults to v1: KMSv1 is deprecated and will only receive security updates going forward. Use KMSv2 instead.  Set --feature-gates=KMSv1=true to use the deprecated KMSv1 feature.' },
  { rule: 'kms without apiVersion before 1.29', config: cfg(rule(['secrets'], { kms: { name: 'k', endpoint: 'unix:///s.sock' } })), kubeVersion: '1.28', level: 'warning', path: 'resources[0].providers[0].kms.apiVersion', message: /apiVersion is not set, so it defaults to v1/ },
  { rule: 'kms v1 on 1.29+', config: cfg(rule(['secrets'], kms2('k', { apiVersion: 'v1' }))), kubeVersion: '1.30', level: 'error', path: 'resources[0].providers[0].kms.apiVersion', message: /^KMSv1 is deprecated and will only receive security updates going forward.*--feature-gates=KMSv1=true/ },
  { rule: 'kms v1 deprecated in 1.28', config: cfg(rule(['secrets'], kms2('k', { apiVersion: 'v1' }))), kubeVersion: '1.28', level: 'warning', path: 'resources[0].providers[0].kms.apiVersion', message: /deprecated since 1.28/ },
  { rule: 'kms v2 before 1.25', config: cfg(rule(['secrets'], kms2())), kubeVersion: '1.24', level: 'error', path: 'resources[0].providers[0].kms.apiVersion', message: /^KMS v2 does not exist before 1.25: a 1.24 apiserver drops apiVersion and talks KMS v1 to this plugin/ },
  { rule: 'kms v2 alpha', config: cfg(rule(['secrets'], kms2())), kubeVersion: '1.26', level: 'error', path: 'resources[0].providers[0].kms.apiVersion', message: /^could not configure KMSv2 plugin "kms", KMSv2 feature is not enabled \(KMS v2 is alpha in 1.26: --feature-gates=KMSv2=true/ },
  { rule: 'kms v1 on 1.29+ with the KMSv1 gate on', config: cfg(rule(['secrets'], kms2('k', { apiVersion: 'v1' }))), kubeVersion: '1.30', featureGates: { KMSv1: true }, level: 'warning', path: 'resources[0].providers[0].kms.apiVersion', message: /KMS v1 is deprecated \(enabled here with --feature-gates=KMSv1=true\)/ },
  { rule: 'kms v2 alpha with the KMSv2 gate on', config: cfg(rule(['secrets'], kms2())), kubeVersion: '1.26', featureGates: { KMSv2: true }, level: 'warning', path: 'resources[0].providers[0].kms.apiVersion', message: /alpha in 1.26 \(enabled here/ },
  { rule: 'kms v2 beta', config: cfg(rule(['secrets'], kms2())), kubeVersion: '1.27', level: 'warning', path: 'resources[0].providers[0].kms.apiVersion', message: 'KMS v2 is beta in 1.27 (GA in 1.29)' },
  { rule: 'a wildcard before 1.27 is an error for the tool\'s own writes', config: cfg(rule(['*.*'], sb())), kubeVersion: '1.26', level: 'error', path: 'resources[0].resources[0]', message: /^wildcards match nothing before 1.27/ },
  // first provider
  { rule: 'identity first', config: cfg(rule(['secrets'], id, sb())), level: 'warning', path: 'resources[0].providers[0].identity', message: /new writes are stored unencrypted/ },
  { rule: 'aesgcm first', config: cfg(rule(['secrets'], { aesgcm: { keys: [{ name: 'k', secret: K32 }] } }, id)), level: 'warning', path: 'resources[0].providers[0].aesgcm', message: /rotated well before 2\^32 writes/ },
];

describe('validateEncryptionConfig: one row per rule', () => {
  it.each(rows)('$rule', ({ config, kubeVersion, featureGates, noEffect, level, path, message }) => {
    const findings = validateEncryptionConfig(config, { ...(kubeVersion ? { kubeVersion } : {}), ...(featureGates ? { featureGates } : {}), ...(noEffect ? { noEffect } : {}) });
    const hit = findings.find((f) => f.path === path && (typeof message === 'string' ? f.message === message || f.message.endsWith(`: ${message}`) : message.test(f.message)));
    expect(hit, `findings were ${JSON.stringify(findings, null, 1)}`).toBeDefined();
    expect(hit!.level).toBe(level);
  });

  it('never puts a secret in a finding', () => {
    const secrets = [K16, K32, SB, key(20), key(8), 'not base64!'];
    for (const { config, kubeVersion } of rows) {
      const text = JSON.stringify(validateEncryptionConfig(config, kubeVersion ? { kubeVersion } : {}));
      for (const s of secrets) expect(text).not.toContain(s);
    }
  });

  it('reports every problem, not just the first', () => {
    const bad = cfg(rule(['Secrets', '*'], sb('', 'x'), { ...id, ...sb() }), rule([], kms2('a:b', { endpoint: 'http://x' })));
    const paths = validateEncryptionConfig(bad).filter((f) => f.level === 'error').map((f) => f.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        'resources[0].resources[0]',
        'resources[0].resources[1]',
        'resources[0].providers[0].secretbox.keys[0].name',
        'resources[0].providers[0].secretbox.keys[0].secret',
        'resources[0].providers[1]',
        'resources[1].resources',
        'resources[1].providers[0].kms.name',
        'resources[1].providers[0].kms.endpoint',
      ]),
    );
  });

  it('accepts what upstream accepts: wildcards on 1.27+, *.group next to another group, kms v2 on GA', () => {
    const ok = cfg(
      rule(['secrets', 'deployments.apps'], kms2('a'), sb(), id),
      rule(['*.batch'], kms2('b'), id),
      rule(['*.'], sb('x'), id),
      rule(['*.*'], sb('y'), id),
    );
    expect(validateEncryptionConfig(ok, { kubeVersion: '1.29' })).toEqual([]);
  });
});

describe('validateEncryptionConfig: upstream field error wording', () => {
  it.each([
    [cfg(rule(['secrets'], sb('k', key(20)))), 'resources[0].providers[0].secretbox.keys[0].secret', 'Invalid value: "REDACTED": secret is not of the expected length, got 20, expected one of [32]'],
    [cfg(rule(['secrets'], sb(''))), 'resources[0].providers[0].secretbox.keys[0].name', 'Required value: name is a mandatory field for a key'],
    [cfg(rule(['secrets', 'secrets.'], sb())), 'resources[0].resources', 'Invalid value: []string{"secrets", "secrets."}: the same resource cannot be specified multiple times'],
    [cfg(rule(['secrets'], kms2('k', { timeout: '-15s' }))), 'resources[0].providers[0].kms.timeout', 'Invalid value: -15s: timeout should be a positive value'],
    [cfg(rule(['secrets'], kms2('k', { apiVersion: 'v3' }))), 'resources[0].providers[0].kms.apiVersion', 'Invalid value: "v3": unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported'],
    [cfg(rule(['secrets'], kms2('k', { endpoint: 'unix:///foo\n.socket' }))), 'resources[0].providers[0].kms.endpoint', 'Invalid value: "unix:///foo\\n.socket": invalid endpoint for kms provider, error: parse "unix:///foo\\n.socket": net/url: invalid control character in URL'],
  ])('%#: %s', (config, path, message) => {
    expect(validateEncryptionConfig(config)).toContainEqual({ level: 'error', path, message });
  });

  it('before 1.27 a repeated wildcard is only a wildcard that matches nothing, not a second rule', () => {
    const twice = cfg(rule(['*.'], sb()), rule(['*.'], sb('k2')));
    const findings = validateEncryptionConfig(twice, { kubeVersion: '1.26', noEffect: 'warning' });
    expect(findings.map((f) => f.message)).toEqual([expect.stringMatching(/^wildcards match nothing/), expect.stringMatching(/^wildcards match nothing/)]);
  });

  it('gives no warning for aescbc first (the tool\'s default)', () => {
    const c = cfg(rule(['secrets'], { aescbc: { keys: [{ name: 'k', secret: K32 }] } }, id));
    expect(validateEncryptionConfig(c)).toEqual([]);
  });
});

describe('parseKubeVersion', () => {
  it.each([
    ['1.29', 29],
    ['v1.30', 30],
    ['1.24.17', 24],
    [NEWEST_KUBE_VERSION, 34],
  ])('reads %s', (s, minor) => expect(parseKubeVersion(s)).toEqual({ major: 1, minor }));
  it.each(['', 'latest', '1', '2.0', '1.x', '1.29-rc1', '1.100'])('refuses %j with a clear error', (s) => {
    expect(() => parseKubeVersion(s)).toThrow(/is not a Kubernetes version/);
  });
});

describe('Go-compatible parsing helpers', () => {
  it.each([
    ['3s', 3e9],
    ['500ms', 5e8],
    ['1m30s', 90e9],
    ['1.5h', 5400e9],
    ['0', 0],
    ['-1s', -1e9],
    ['7us', 7e3],
    ['7\u00b5s', 7e3], // micro sign, as Go accepts
    ['7\u03bcs', 7e3], // Greek small mu, as Go accepts
    ['1h2m3s4ms5\u00b5s6ns', 3723004005006],
  ])('duration %s', (s, ns) => expect(parseGoDuration(s)).toBe(ns));
  it.each(['3', '3 s', 's', '3sec', ''])('duration %j does not parse', (s) => expect(parseGoDuration(s)).toBeUndefined());
  it('base64 as Go StdEncoding: padding required, newlines ignored', () => {
    expect(decodeBase64Strict(K32)).toHaveLength(32);
    expect(decodeBase64Strict(`${K32.slice(0, 20)}\n${K32.slice(20)}`)).toHaveLength(32);
    expect(decodeBase64Strict(K32.replace(/=/g, ''))).toBeUndefined();
    expect(decodeBase64Strict(` ${K32}`)).toBeUndefined();
    expect(decodeBase64Strict('a-b_')).toBeUndefined();
  });
});

describe('parseFeatureGates', () => {
  it.each([
    [undefined, {}],
    ['KMSv1=true', { KMSv1: true }],
    ['KMSv1=true, KMSv2=false,Junk,X=maybe', { KMSv1: true, KMSv2: false }],
  ])('%j', (value, want) => {
    expect(parseFeatureGates(value)).toEqual(want);
  });
});
