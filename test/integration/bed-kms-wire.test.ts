import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKmsPlugin, type KmsPlugin } from '../bed/kms-plugin';

/**
 * The bed's KMS plugin on the wire, byte for byte: requests and expected replies are literal
 * protobuf (field numbers from upstream's k8s.io/kms api.proto), so neither the bed's message
 * tables nor src/kms's descriptors decide what a field number means here.
 */
let dir: string;
let plugin: KmsPlugin;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-kms-wire-'));
  plugin = await startKmsPlugin({ socketPath: join(dir, 'grpc.sock'), api: 'both', keyId: 'kek-A' });
});
afterAll(async () => {
  await plugin?.stop();
  await rm(dir, { recursive: true, force: true });
});

function raw(method: string, body: Buffer): Promise<Buffer> {
  const client = new grpc.Client(plugin.endpoint, grpc.credentials.createInsecure());
  return new Promise<Buffer>((resolve, reject) => {
    client.makeUnaryRequest(method, (b: Buffer) => b, (b: Buffer) => b, body, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err, res) =>
      err ? reject(err) : resolve(res!),
    );
  }).finally(() => client.close());
}

/** tag byte (field << 3 | 2), one-byte length, payload. */
const len = (field: number, payload: Buffer | string) => {
  const b = Buffer.from(payload);
  return Buffer.concat([Buffer.from([(field << 3) | 2, b.length]), b]);
};

describe('bed KMS plugin wire format', () => {
  it('v2 Status answers version = 1, healthz = 2, key_id = 3', async () => {
    expect(await raw('/v2.KeyManagementService/Status', Buffer.alloc(0))).toEqual(Buffer.concat([len(1, 'v2'), len(2, 'ok'), len(3, 'kek-A')]));
  });

  it('v2 Encrypt reads plaintext = 1 and answers ciphertext = 1, key_id = 2; Decrypt reads ciphertext = 1, key_id = 3', async () => {
    const enc = await raw('/v2.KeyManagementService/Encrypt', Buffer.concat([len(1, 'secret bytes'), len(2, 'uid-1')]));
    expect(enc[0]).toBe(0x0a);
    const ctLen = enc[1]!;
    expect(ctLen).toBe(12 + 'secret bytes'.length + 16);
    const ciphertext = enc.subarray(2, 2 + ctLen);
    expect(enc.subarray(2 + ctLen)).toEqual(len(2, 'kek-A'));

    const dec = await raw('/v2.KeyManagementService/Decrypt', Buffer.concat([len(1, ciphertext), len(2, 'uid-2'), len(3, 'kek-A')]));
    expect(dec).toEqual(len(1, 'secret bytes'));
    // key_id in field 4 (annotations' number) is no key id: the plugin refuses.
    await expect(raw('/v2.KeyManagementService/Decrypt', Buffer.concat([len(1, ciphertext), len(4, 'kek-A')]))).rejects.toThrow();
  });

  it('v1beta1 Version, Encrypt (plain = 2, cipher = 1) and Decrypt (cipher = 2, plain = 1)', async () => {
    expect(await raw('/v1beta1.KeyManagementService/Version', len(1, 'v1beta1'))).toEqual(
      Buffer.concat([len(1, 'v1beta1'), len(2, 'k8s-encrypt-bed-kms'), len(3, '0.1.0')]),
    );
    const enc = await raw('/v1beta1.KeyManagementService/Encrypt', Buffer.concat([len(1, 'v1beta1'), len(2, 'plain v1')]));
    expect(enc[0]).toBe(0x0a);
    const cipher = enc.subarray(2, 2 + enc[1]!);
    expect(2 + cipher.length).toBe(enc.length);
    expect(await raw('/v1beta1.KeyManagementService/Decrypt', Buffer.concat([len(1, 'v1beta1'), len(2, cipher)]))).toEqual(len(1, 'plain v1'));
  });
});
