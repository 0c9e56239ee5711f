// src/runtime/assets.ts outside the single executable (the executable's side runs in the e2e
// smoke set with K8S_ENCRYPT_BIN): package files by asset name, the kubectl plugin name.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { invokedAs, isSingleExecutable, ownExecutable, readAsset } from '../../src/runtime/assets';

describe('runtime assets', () => {
  it('is not the single executable under vitest, and has no own executable then', () => {
    expect(isSingleExecutable()).toBe(false);
    expect(ownExecutable()).toBeUndefined();
  });

  it('reads an asset from the package files', () => {
    const want = readFileSync(fileURLToPath(new URL('../../templates/kms/ack-kms-plugin.static-pod.yaml', import.meta.url)), 'utf8');
    expect(readAsset('templates/kms/ack-kms-plugin.static-pod.yaml')).toBe(want);
  });

  it.each(['../package.json', '/etc/passwd', 'templates/../../x', 'templates//kms/x.yaml'])('refuses the asset name %s', (name) => {
    expect(() => readAsset(name)).toThrow(/bad asset name/);
  });

  it.each([
    [['/usr/local/bin/kubectl-encrypt', undefined], 'kubectl-encrypt'],
    [['/usr/bin/node', '/home/u/bin/kubectl-encrypt'], 'kubectl-encrypt'],
    [['/usr/bin/node', '/opt/k/bin/kubectl-encrypt.js'], 'kubectl-encrypt'],
    [['/usr/local/bin/k8s-encrypt', undefined], 'k8s-encrypt'],
    [['/usr/bin/node', '/opt/k/bin/k8s-encrypt.js'], 'k8s-encrypt'],
  ] as const)('invoked as %j is %s', (names, want) => {
    expect(invokedAs([...names])).toBe(want);
  });
});
