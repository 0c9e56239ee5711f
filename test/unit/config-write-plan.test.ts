import { describe, expect, it } from 'vitest';
import { parseResources, planWriteConfig, type WriteConfigInput } from '../../src/config/write';
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
    expect(plan.warnings.map((w) => w.path)).toEqual(['resources[0].providers[0].aescbc']);
  });

  it.each([
    [{ resources: ['secrets', 'Secrets'] }, /--resources \(Secrets\): resource name should not contain capital letters/],
    [{ resources: ['secrets', 'secrets'] }, /--resources: the same resource cannot be specified multiple times/],
    [{ resources: ['*.*'], kubeVersion: '1.26' }, /--resources \(\*\.\*\): wildcards need Kubernetes 1.27/],
    [{ provider: 'kms', kms: { name: 'a:b', endpoint: 'unix:///s', apiVersion: 'v2' } } as const, /--kms-name: invalid KMS provider name a:b/],
    [{ provider: 'kms', kms: { name: 'k', endpoint: 'unix:///s', apiVersion: 'v2', timeout: 'soon' } } as const, /--kms-timeout: timeout must be a duration/],
    [{ provider: 'kms', kms: { name: 'k', endpoint: 'unix:///s', apiVersion: 'v1' } } as const, /--kms-api-version: KMS v1 is deprecated/],
  ])('names the flag behind an invalid config: %j', (over, message) => {
    expect(() => planWriteConfig(input(over))).toThrow(message);
    expect(() => planWriteConfig(input(over))).toThrow(expect.objectContaining({ exitCode: 2 }));
  });
});

describe('parseResources', () => {
  it('splits, trims and drops empty items', () => {
    expect(parseResources(' secrets, configmaps ,,widgets.example.com')).toEqual(['secrets', 'configmaps', 'widgets.example.com']);
  });
  it('refuses an empty list', () => expect(() => parseResources(' , ')).toThrow(/names no resource/));
});
