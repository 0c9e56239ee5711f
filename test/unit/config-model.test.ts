import { describe, expect, it } from 'vitest';
import {
  configsEqual,
  firstProvider,
  providersFor,
  resourcesOf,
  summarizeConfig,
  withIdentityFirst,
  withPromoted,
  withPruned,
  withReader,
  writeResourceOf,
} from '../../src/config/model';
import { buildEncryptionConfig } from '../../src/config/render';
import type { EncryptionConfiguration, ProviderConfig } from '../../src/config/schema';
import { validateEncryptionConfig } from '../../src/config/validate';

const k = (fill: number) => Buffer.alloc(32, fill).toString('base64');
const K1 = k(1);
const K2 = k(2);
const K3 = k(3);

const aescbc = (name: string, secret: string): ProviderConfig => ({ aescbc: { keys: [{ name, secret }] } });
const kms: ProviderConfig = { kms: { apiVersion: 'v2', name: 'vault', endpoint: 'unix:///var/run/kmsplugin/socket.sock' } };

const base = () => buildEncryptionConfig({ provider: 'aescbc', keyName: 'k1', key: K1, resources: ['secrets', 'configmaps'] });

/** The provider chain of rule 0 as short labels: aescbc[k2,k1], kms:vault, identity. */
const chain = (cfg: EncryptionConfiguration, rule = 0) =>
  cfg.resources[rule]!.providers.map((p) => {
    if (p.identity) return 'identity';
    if (p.kms) return `kms:${p.kms.name}`;
    const kind = (['aescbc', 'aesgcm', 'secretbox'] as const).find((x) => p[x])!;
    return `${kind}[${p[kind]!.keys.map((x) => x.name).join(',')}]`;
  });

const errors = (cfg: EncryptionConfiguration) => validateEncryptionConfig(cfg).filter((f) => f.level === 'error');

describe('questions about a config', () => {
  const cfg: EncryptionConfiguration = {
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: [
      { resources: ['secrets'], providers: [aescbc('a', K1), { identity: {} }] },
      { resources: ['secrets', 'deployments.apps'], providers: [aescbc('b', K2)] },
      { resources: ['*.apps'], providers: [aescbc('c', K3)] },
      { resources: ['*.*'], providers: [{ identity: {} }] },
    ],
  };

  it('lists every resource once, in order', () => {
    expect(resourcesOf(cfg)).toEqual(['secrets', 'deployments.apps', '*.apps', '*.*']);
  });

  it.each([
    ['secrets', ['aescbc[a]', 'identity', 'aescbc[b]']],
    ['deployments.apps', ['aescbc[b]']],
    ['statefulsets.apps', ['aescbc[c]']],
    ['configmaps', ['identity']],
  ])('resolves %s the way the apiserver does', (resource, labels) => {
    const got = providersFor(cfg, resource);
    expect(chain({ ...cfg, resources: [{ resources: [], providers: got }] })).toEqual(labels);
    expect(firstProvider(cfg, resource)).toEqual(got[0]);
  });

  it('has no provider for a resource no rule covers', () => {
    expect(firstProvider(base(), 'configmaps')).toBeDefined();
    expect(firstProvider(base(), 'leases.coordination.k8s.io')).toBeUndefined();
  });

  it('summarizes kinds, key names, KMS names and prefixes, never a secret', () => {
    const c = withReader(base(), kms);
    const s = summarizeConfig(c);
    expect(s).toEqual([
      {
        index: 0,
        resources: ['secrets', 'configmaps'],
        providers: [
          { kind: 'aescbc', keys: ['k1'], prefix: 'k8s:enc:aescbc:v1:k1:' },
          { kind: 'kms', kms: { name: 'vault', apiVersion: 'v2', endpoint: 'unix:///var/run/kmsplugin/socket.sock' }, prefix: 'k8s:enc:kms:v2:vault:' },
          { kind: 'identity' },
        ],
      },
    ]);
    expect(JSON.stringify(summarizeConfig(cfg))).not.toMatch(new RegExp([K1, K2, K3].map((x) => x.replace(/[+/=]/g, '\\$&')).join('|')));
  });

  it('compares configs by meaning, not key order', () => {
    const a = base();
    const b: EncryptionConfiguration = JSON.parse(JSON.stringify({ resources: a.resources, kind: a.kind, apiVersion: a.apiVersion }));
    expect(configsEqual(a, b)).toBe(true);
    expect(configsEqual(a, withReader(a, aescbc('k2', K2)))).toBe(false);
    const other = structuredClone(a);
    other.resources[0]!.providers[0]!.aescbc!.keys[0]!.secret = K2;
    expect(configsEqual(a, other)).toBe(false);
  });
});

describe('rotation transitions', () => {
  it('rotates a local key: add as reader, promote, prune; every step validates', () => {
    const start = base();
    const frozen = JSON.stringify(start);
    const added = withReader(start, aescbc('k2', K2));
    expect(chain(added)).toEqual(['aescbc[k1,k2]', 'identity']);
    const promoted = withPromoted(added, 'k2');
    expect(chain(promoted)).toEqual(['aescbc[k2,k1]', 'identity']);
    const pruned = withPruned(promoted, { names: [], identity: true });
    expect(chain(pruned)).toEqual(['aescbc[k2]', 'identity']);
    const noIdentity = withPruned(promoted, { names: ['k1'], identity: false });
    expect(chain(noIdentity)).toEqual(['aescbc[k2,k1]']);
    for (const c of [added, promoted, pruned, noIdentity]) expect(errors(c)).toEqual([]);
    expect(JSON.stringify(start)).toBe(frozen);
  });

  it('adds a key of another kind as a new element right after the writer', () => {
    const sb: ProviderConfig = { secretbox: { keys: [{ name: 's1', secret: K3 }] } };
    const added = withReader(base(), sb);
    expect(chain(added)).toEqual(['aescbc[k1]', 'secretbox[s1]', 'identity']);
    const promoted = withPromoted(added, 's1');
    expect(chain(promoted)).toEqual(['secretbox[s1]', 'aescbc[k1]', 'identity']);
    expect(chain(withPruned(promoted, { names: [], identity: false }))).toEqual(['secretbox[s1]']);
    for (const c of [added, promoted]) expect(errors(c)).toEqual([]);
  });

  it('moves from aescbc to KMS v2 and back to plaintext', () => {
    const added = withReader(base(), kms);
    const promoted = withPromoted(added, 'vault');
    expect(chain(promoted)).toEqual(['kms:vault', 'aescbc[k1]', 'identity']);
    const disabled = withIdentityFirst(promoted);
    expect(chain(disabled)).toEqual(['identity', 'kms:vault', 'aescbc[k1]']);
    expect(withIdentityFirst(disabled)).toEqual(disabled);
    const plain = withPruned(disabled, { names: [], identity: true });
    expect(chain(plain)).toEqual(['identity']);
    for (const c of [added, promoted, disabled, plain]) expect(errors(c)).toEqual([]);
  });

  it('applies to every resource rule', () => {
    const two: EncryptionConfiguration = {
      ...base(),
      resources: [
        { resources: ['secrets'], providers: [aescbc('k1', K1), { identity: {} }] },
        { resources: ['configmaps'], providers: [{ secretbox: { keys: [{ name: 's', secret: K3 }] } }] },
      ],
    };
    const promoted = withPromoted(withReader(two, aescbc('k2', K2)), 'k2');
    expect(chain(promoted, 0)).toEqual(['aescbc[k2,k1]', 'identity']);
    expect(chain(promoted, 1)).toEqual(['aescbc[k2]', 'secretbox[s]']);
    expect(errors(promoted)).toEqual([]);
    expect(() => withReader(two, kms)).toThrow(/KMS v2 provider names must be unique/);
  });

  it('is idempotent, and refuses a second key under a used name', () => {
    const once = withReader(base(), aescbc('k2', K2));
    expect(withReader(once, aescbc('k2', K2))).toEqual(once);
    expect(withReader(withReader(base(), kms), kms)).toEqual(withReader(base(), kms));
    expect(() => withReader(once, aescbc('k2', K3))).toThrow(expect.objectContaining({ exitCode: 6 }));
    expect(() => withReader(once, aescbc('k1', K3))).toThrow(/already has a key named "k1" \(aescbc\) with another secret/);
    expect(withPromoted(withPromoted(once, 'k2'), 'k2')).toEqual(withPromoted(once, 'k2'));
  });

  it('refuses to promote what is not a reader, and never prunes the write key', () => {
    expect(() => withPromoted(base(), 'nope')).toThrow(/"nope" is not a key or KMS provider of resources\[0\]/);
    expect(() => withReader(base(), { identity: {} })).toThrow(/a reader must be/);
    const promoted = withPromoted(withReader(base(), aescbc('k2', K2)), 'k2');
    expect(chain(withPruned(promoted, { names: ['k1'], identity: false }))).toEqual(['aescbc[k2,k1]']);
    expect(chain(withPruned(promoted, { names: [], identity: false }))).toEqual(['aescbc[k2]']);
  });
});

/**
 * Upstream's rule (k8s.io/apiserver server/options/encryptionconfig/config.go):
 * getTransformerOverridesAndKMSPluginProbes appends each rule's providers under every
 * schema.ParseGroupResource(name) it lists, and transformerFromOverrides looks up the exact
 * group/resource, then {group, "*"}, then {"*", "*"}, else identity. Each row: rules as
 * [resources, provider name], the resource asked for, the providers it gets in order.
 */
describe('which providers serve a resource (upstream transformerFromOverrides)', () => {
  const cfgOf = (rules: [string[], string][]): EncryptionConfiguration => ({
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: rules.map(([resources, name], i) => ({ resources, providers: [aescbc(name, k(i + 1))] })),
  });
  it.each<[string, [string[], string][], string, string[]]>([
    ['one exact rule', [[['secrets'], 'a']], 'secrets', ['aescbc[a]']],
    ['exact rules naming it twice are appended in file order', [[['secrets'], 'a'], [['configmaps', 'secrets'], 'b']], 'secrets', ['aescbc[a]', 'aescbc[b]']],
    ['"secrets." and "secrets" are one group/resource', [[['secrets.'], 'a'], [['secrets'], 'b']], 'secrets', ['aescbc[a]', 'aescbc[b]']],
    ['an exact rule before "*." wins over it', [[['secrets'], 'a'], [['*.'], 'b']], 'secrets', ['aescbc[a]']],
    ['an exact rule before "*.*" wins over it', [[['secrets'], 'a'], [['*.*'], 'b']], 'secrets', ['aescbc[a]']],
    ['"*." serves the core group', [[['*.'], 'a']], 'configmaps', ['aescbc[a]']],
    ['"*." does not serve a named group', [[['*.'], 'a']], 'deployments.apps', []],
    ['"*.apps" serves the apps group', [[['*.apps'], 'a'], [['*.*'], 'b']], 'statefulsets.apps', ['aescbc[a]']],
    ['"*.apps" does not serve the core group', [[['*.apps'], 'a']], 'secrets', []],
    ['"*.example.com" serves widgets.example.com', [[['*.example.com'], 'a']], 'widgets.example.com', ['aescbc[a]']],
    ['"*.com" is another group than example.com', [[['*.com'], 'a']], 'widgets.example.com', []],
    ['"*.*" serves what nothing else does', [[['secrets'], 'a'], [['*.*'], 'b']], 'pods', ['aescbc[b]']],
    ['"*.group" comes before "*.*" whatever the file order', [[['secrets'], 'a'], [['*.apps', 'x.y'], 'b'], [['*.*'], 'c']], 'deployments.apps', ['aescbc[b]']],
    ['widgets.example.com is not widgets', [[['widgets.example.com'], 'a']], 'widgets', []],
    ['nothing covers it: stored unencrypted', [[['secrets'], 'a']], 'configmaps', []],
  ])('%s', (_what, rules, resource, want) => {
    const cfg = cfgOf(rules);
    const got = providersFor(cfg, resource);
    expect(chain({ ...cfg, resources: [{ resources: [], providers: got }] })).toEqual(want);
    expect(firstProvider(cfg, resource)).toEqual(got[0]);
  });
});

describe("the resource a config's writer is read from", () => {
  const cfgOf = (names: string[][]): EncryptionConfiguration => ({
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: names.map((resources, i) => ({ resources, providers: [aescbc(`k${i}`, K1)] })),
  });
  it.each([
    [[['secrets']], 'secrets'],
    [[['configmaps'], ['secrets']], 'secrets'],
    [[['configmaps'], ['*.*']], 'secrets'],
    [[['configmaps'], ['*.']], 'secrets'],
    [[['configmaps'], ['*.apps']], 'configmaps'],
    [[['*.apps']], '*.apps'],
  ])('%j -> %s', (names, want) => expect(writeResourceOf(cfgOf(names))).toBe(want));
});
