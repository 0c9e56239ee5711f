import { describe, expect, it } from 'vitest';
import { doneHeadline, keyCopyLine, resumeNotice } from '../../src/init/print';

describe('resumeNotice: what a re-run of init says it continues', () => {
  it.each([
    ['a planned pause at a stage gate', 'waiting', 'add-reader:gate', /^init-1 paused after stage "add-reader" to wait for the other control planes: checking whether they all run it$/],
    ['a stage that was rolled back', 'waiting', 'stage promote rolled back', /^continuing init-1 \(stage promote rolled back\): retrying$/],
    ['a run that was interrupted', 'running', undefined, /^continuing the interrupted init-1 \(running\) where it stopped$/],
  ])('%s', (_what, status, message, want) => {
    expect(resumeNotice('init-1', status, message)).toMatch(want);
  });
  it('a planned pause is not called an interruption', () => {
    expect(resumeNotice('init-1', 'waiting', 'promote:gate')).not.toMatch(/interrupted/);
  });
});

describe('doneHeadline: the first line of a finished init says what is true at its stage', () => {
  const base = { provider: 'aescbc', keyName: 'key-1', config: '/etc/kubernetes/encryption/config.yaml' };
  const node = (stage: string | null) => ({ controlPlanes: 2, stage, nodes: [], next: null });
  it.each([
    ['a single control plane', { ...base, mode: 'single' as const, multiNode: node(null) }, /^encryption at rest is on: aescbc, key key-1, config /],
    ['a further control plane at add-reader', { ...base, mode: 'from-config' as const, multiNode: node('add-reader') }, /^stage "add-reader": this apiserver can read aescbc key key-1 .*; new writes are still plaintext until stage "promote"$/],
    ['a further control plane at promote', { ...base, mode: 'from-config' as const, multiNode: node('promote') }, /^encryption at rest is on at stage "promote": aescbc, key key-1/],
  ])('%s', (_what, r, want) => {
    expect(doneHeadline(r)).toMatch(want);
  });
  it('at add-reader it never claims encryption is on', () => {
    expect(doneHeadline({ ...base, mode: 'from-config', multiNode: node('add-reader') })).not.toMatch(/encryption at rest is on/);
  });
});

describe('keyCopyLine: what init says to keep, by where the new key is', () => {
  const r = { provider: 'aescbc', keyName: 'key-1', config: '/etc/kubernetes/encryption/config.yaml' };
  it('not escrowed: the config is the only copy', () => {
    expect(keyCopyLine(r, undefined)).toBe('keep a copy of /etc/kubernetes/encryption/config.yaml somewhere safe (or escrow it: keys export): without its key the Secrets cannot be read');
  });
  it('escrowed with --escrow-recipient: names the bundle and the identity to keep, not a copy of the config', () => {
    const line = keyCopyLine(r, { path: '/var/lib/k8s-encrypt/escrow/key-1.age', fingerprint: 'sha256:ab', keys: ['key-1'] });
    expect(line).toBe('key key-1 is escrowed in /var/lib/k8s-encrypt/escrow/key-1.age: keep an age identity that opens it safe, apart from this host');
    expect(line).not.toMatch(/keep a copy/);
  });
  it('a bundle that does not hold this key is no escrow of it', () => {
    expect(keyCopyLine(r, { path: '/x/other.age', keys: ['older'] })).toMatch(/^keep a copy of /);
  });
  it('KMS: the key is not on this host at all', () => {
    const line = keyCopyLine({ ...r, provider: 'kms', keyName: 'bedkms' }, undefined);
    expect(line).toBe('the key encryption key stays in the KMS behind provider bedkms: without it the Secrets cannot be read');
  });
});
