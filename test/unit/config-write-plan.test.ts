import { describe, expect, it } from 'vitest';
import { parseResources } from '../../src/config/model';
import { planWriteConfig, type WriteConfigInput } from '../../src/config/write';
import { parseEncryptionConfig } from '../../src/config/parse';

const K32 = Buffer.alloc(32, 4).toString('base64');
const input = (over: Partial<WriteConfigInput> = {}): WriteConfigInput => ({
  provider: 'secretbox',
  keyName: 'k1',
  key: K32,
  resources: ['secrets'],
  kubeVersion: '1.34',
  ...over,
});

describe('planWriteConfig (pure)', () => {
  it('plans the rendered file and its warnings', () => {
    const plan = planWriteConfig(input({ provider: 'aescbc' }));
    expect(parseEncryptionConfig(plan.text, 'plan')).toEqual(plan.config);
    // aescbc, the default, draws no warning (init and rotate-key name the stronger choices once).
    expect(plan.warnings).toEqual([]);
    expect(planWriteConfig(input({ provider: 'aesgcm' })).warnings.map((w) => w.path)).toEqual(['resources[0].providers[0].aesgcm']);
  });

  it.each([
    [{ resources: ['secrets', 'Secrets'] }, /--resources \(Secrets\): Invalid value: "Secrets": resource name should not contain capital letters/],
    [{ resources: ['secrets', 'secrets'] }, /--resources: Invalid value: \[\]string\{"secrets", "secrets"\}: the same resource cannot be specified multiple times/],
    [{ provider: 'kms', kms: { name: 'a:b', endpoint: 'unix:///s', apiVersion: 'v2' } } as const, /--kms-name: Invalid value: "a:b": invalid KMS provider name a:b/],
    [{ provider: 'kms', kms: { name: 'k', endpoint: 'unix:///s', apiVersion: 'v2', timeout: 'soon' } } as const, /--kms-timeout: cannot be decoded: time: invalid duration "soon"/],
    [{ provider: 'kms', kms: { name: 'k', endpoint: 'unix:///s', apiVersion: 'v1' } } as const, /--kms-api-version: KMSv1 is deprecated and will only receive security updates going forward/],
  ])('names the flag behind an invalid config: %j', (over, message) => {
    expect(() => planWriteConfig(input(over))).toThrow(message);
    expect(() => planWriteConfig(input(over))).toThrow(expect.objectContaining({ exitCode: 2 }));
  });
});

describe('planWriteConfig on an older release', () => {
  it('refuses to write a rule that does nothing there (a wildcard before 1.27)', () => {
    expect(() => planWriteConfig(input({ resources: ['*.*'], kubeVersion: '1.26' }))).toThrow(/--resources \(\*\.\*\): wildcards match nothing before 1.27/);
  });
});

describe('parseResources', () => {
  it('splits, trims and drops empty items', () => {
    expect(parseResources(' secrets, configmaps ,,widgets.example.com')).toEqual(['secrets', 'configmaps', 'widgets.example.com']);
  });
  it('refuses an empty list', () => expect(() => parseResources(' , ')).toThrow(/names no resource/));
  it.each(['secrets', 'widgets.example.com', 'deployments.apps', '*.', '*.*', '*.apps'])('takes %s', (v) => expect(parseResources(v)).toEqual([v]));
  it.each(['secrets/x', 'a b', 'Secrets', 'X!', '*', 'secrets.*', '*.Apps', '-secrets', 'secrets.'])('refuses %j, which is not a resource name', (v) =>
    expect(() => parseResources(v)).toThrow(`--resources: "${v}" is not a resource name`),
  );
});
