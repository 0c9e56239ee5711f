import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeEncryptedObject, kmsV2Transformer } from '../../src/etcd/codec';
import { connectKmsV2 } from '../../src/kms/client';
import { startKmsPlugin, unwrapWithKek, wrapWithKek, type KmsPlugin } from '../bed/kms-plugin';

// The KMS v2 Secret a real kube-apiserver 1.32.6 stored through a plugin using the same wrapping as
// the bed's plugin (key id bed-kek-1).
const vector = readFileSync(new URL('../fixtures/vectors/kube-apiserver-v1.32.jsonl', import.meta.url), 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => JSON.parse(l) as { provider: string; keyName: string; etcdKey: string; rawBase64: string; data: Record<string, string> })
  .find((v) => v.provider === 'kms')!;

let dir: string;
let plugin: KmsPlugin;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-kmsvec-'));
  plugin = await startKmsPlugin({ socketPath: join(dir, 'grpc.sock') });
});
afterAll(async () => {
  await plugin.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("the bed plugin's wrapping against the real apiserver's KMS v2 vector", () => {
  const stored = Buffer.from(vector.rawBase64, 'base64');
  const prefix = `k8s:enc:kms:v2:${vector.keyName}:`;

  it('unwraps the DEK source with KEK = sha256("bed-kek-1")', () => {
    expect(stored.subarray(0, prefix.length).toString()).toBe(prefix);
    const obj = decodeEncryptedObject(stored.subarray(prefix.length));
    expect(obj.keyId).toBe('bed-kek-1');
    const seed = unwrapWithKek(obj.keyId, obj.encryptedDEKSource);
    expect(seed).toHaveLength(32);
    expect(() => unwrapWithKek('bed-kek-2', obj.encryptedDEKSource)).toThrow();
  });

  it('lets the apiserver codec read the Secret back through the plugin over gRPC', async () => {
    const client = connectKmsV2(plugin.endpoint);
    try {
      const t = kmsV2Transformer(vector.keyName, client);
      const plain = await t.decrypt(stored, vector.etcdKey);
      expect(plain.subarray(0, 4)).toEqual(Buffer.from('k8s\0', 'binary'));
      for (const value of Object.values(vector.data)) expect(plain.includes(Buffer.from(value))).toBe(true);
      expect(plugin.stats().decrypt).toBeGreaterThanOrEqual(1);
    } finally {
      client.close();
    }
  });

  it('wraps in the same layout: 12-byte nonce, ciphertext, 16-byte tag', () => {
    const w = wrapWithKek('bed-kek-1', Buffer.alloc(32, 7));
    expect(w).toHaveLength(12 + 32 + 16);
    expect(unwrapWithKek('bed-kek-1', w)).toEqual(Buffer.alloc(32, 7));
  });
});
