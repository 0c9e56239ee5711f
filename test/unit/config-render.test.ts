import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { configsEqual } from '../../src/config/model';
import { parseEncryptionConfig } from '../../src/config/parse';
import { buildEncryptionConfig, keyCreatedAt, newKeyName, renderEncryptionConfig, type BuildOptions } from '../../src/config/render';
import { validateEncryptionConfig } from '../../src/config/validate';
import { redactConfigText } from '../../src/ui/redact';

const K32 = Buffer.alloc(32, 5).toString('base64');
const K16 = Buffer.alloc(16, 6).toString('base64');

const builds: [string, BuildOptions][] = [
  ['aescbc', { provider: 'aescbc', keyName: 'key-20261126T140200Z', key: K32, resources: ['secrets'] }],
  ['aesgcm 16 bytes', { provider: 'aesgcm', keyName: 'k1', key: K16, resources: ['secrets', 'configmaps'] }],
  ['secretbox', { provider: 'secretbox', keyName: 'k1', key: K32, resources: ['secrets', 'widgets.example.com'] }],
  ['kms v2', { provider: 'kms', keyName: 'ignored', kms: { name: 'vault', endpoint: 'unix:///var/run/kmsplugin/socket.sock', apiVersion: 'v2', timeout: '3s' }, resources: ['secrets'] }],
];

describe('buildEncryptionConfig + renderEncryptionConfig', () => {
  it.each(builds)('%s: provider first, identity last, round-trips and validates', (_name, opts) => {
    const cfg = buildEncryptionConfig(opts);
    const providers = cfg.resources[0]!.providers;
    expect(Object.keys(providers[0]!)).toEqual([opts.provider]);
    expect(providers.at(-1)).toEqual({ identity: {} });
    expect(cfg.resources[0]!.resources).toEqual(opts.resources);

    const text = renderEncryptionConfig(cfg);
    const back = parseEncryptionConfig(text, 'rendered');
    expect(back).toEqual(cfg);
    expect(configsEqual(back, cfg)).toBe(true);
    expect(renderEncryptionConfig(back)).toBe(text);
    expect(validateEncryptionConfig(back).filter((f) => f.level === 'error')).toEqual([]);
  });

  it('writes a header saying the file holds keys and must stay 0600', () => {
    const text = renderEncryptionConfig(buildEncryptionConfig(builds[0]![1]));
    expect(text.split('\n').slice(0, 2).join(' ')).toMatch(/^# Written by k8s-encrypt\. .*holds encryption keys.*0600/);
  });

  it('renders keys in a stable order whatever the input order', () => {
    const a = parseEncryptionConfig(
      `{"resources":[{"providers":[{"kms":{"timeout":"2s","endpoint":"unix:///s","name":"k","apiVersion":"v2"}},{"identity":{}}],"resources":["secrets"]}],"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1"}`,
      'a',
    );
    const b = buildEncryptionConfig({ provider: 'kms', keyName: 'x', kms: { apiVersion: 'v2', name: 'k', endpoint: 'unix:///s', timeout: '2s' }, resources: ['secrets'] });
    expect(renderEncryptionConfig(a)).toBe(renderEncryptionConfig(b));
    expect(renderEncryptionConfig(a)).toMatch(/apiVersion: apiserver[^]*kind: EncryptionConfiguration[^]*resources:[^]*- resources:[^]*providers:[^]*apiVersion: v2\n\s+name: k\n\s+endpoint: unix:\/\/\/s\n\s+timeout: 2s/);
  });

  it('quotes key names that YAML 1.1 would read as booleans or numbers', () => {
    for (const keyName of ['on', 'yes', 'n', '0755', '1:20']) {
      const cfg = buildEncryptionConfig({ provider: 'aescbc', keyName, key: K32, resources: ['secrets'] });
      const text = renderEncryptionConfig(cfg);
      expect(text).toContain(`name: "${keyName}"`);
      expect(parseEncryptionConfig(text, 'x')).toEqual(cfg);
    }
  });

  it('produces text whose secret the redactor hides', () => {
    const text = renderEncryptionConfig(buildEncryptionConfig(builds[0]![1]));
    expect(text).toContain(K32);
    expect(redactConfigText(text)).not.toContain(K32);
  });

  it('needs a key for a local provider and kms settings for kms', () => {
    expect(() => buildEncryptionConfig({ provider: 'aescbc', keyName: 'k', resources: ['secrets'] })).toThrow(/needs a key/);
    expect(() => buildEncryptionConfig({ provider: 'kms', keyName: 'k', resources: ['secrets'] })).toThrow(/needs a name and an endpoint/);
  });
});

describe('newKeyName / keyCreatedAt', () => {
  const t = new Date('2026-11-26T14:02:00.456Z');

  it('names a key after its UTC creation second and reads it back', () => {
    expect(newKeyName(t)).toBe('key-20261126T140200Z');
    expect(keyCreatedAt('key-20261126T140200Z')).toEqual(new Date('2026-11-26T14:02:00Z'));
    expect(keyCreatedAt('key-20261126T140200Z-2')).toEqual(new Date('2026-11-26T14:02:00Z'));
  });

  it('stays unique when the name of that second is taken, and sorts by time', () => {
    const taken = ['key-20261126T140200Z', 'key-20261126T140200Z-1'];
    expect(newKeyName(t, taken)).toBe('key-20261126T140200Z-2');
    const times = ['2025-01-01T00:00:00Z', '2026-11-26T14:02:00Z', '2026-11-26T14:02:01Z', '2027-03-09T08:00:00Z'];
    const names = times.map((s) => newKeyName(new Date(s)));
    expect([...names].reverse().sort()).toEqual(names);
    expect(new Set(names).size).toBe(names.length);
  });

  it.each(['key1', 'key-2026', 'key-20261340T140200Z', 'key-20261126T250000Z', 'xkey-20261126T140200Z', 'key-20261126T140200Z-'])(
    'does not invent a date for %s',
    (name) => expect(keyCreatedAt(name)).toBeUndefined(),
  );
});

describe('fixtures', () => {
  it('aescbc-two-keys.yaml round-trips through render', async () => {
    const text = await readFile(fileURLToPath(new URL('../fixtures/configs/aescbc-two-keys.yaml', import.meta.url)), 'utf8');
    const cfg = parseEncryptionConfig(text, 'fixture');
    expect(parseEncryptionConfig(renderEncryptionConfig(cfg), 'again')).toEqual(cfg);
  });
});
