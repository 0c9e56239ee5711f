/**
 * A KMS plugin stand-in for the test bed: the upstream KMS v2 (and v1beta1) gRPC service on a unix
 * socket, wrapping with AES-256-GCM under KEK = sha256(keyId), laid out as 12-byte nonce ||
 * ciphertext || 16-byte tag. That is the construction of the plugin that served the KMS vector in
 * test/fixtures/vectors (key id `bed-kek-1`), so the vector's DEK source unwraps here.
 *
 * Knobs make it misbehave the ways real plugins do: down (no socket), slow, unhealthy, answering
 * the wrong version, corrupting the round trip, rotating its key id.
 *
 * Its messages are the bed's own (./kms-wire.ts, from upstream's protos), not src/kms's descriptors.
 * It is written with grpc-js and serves our own Node clients only: a real kube-apiserver's Go
 * client was seen refusing a grpc-js server on a unix socket (stream reset, PROTOCOL_ERROR). Real
 * plugins are Go or Python servers.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdir, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { KMS_V1BETA1_SERVICE, KMS_V2_SERVICE } from './kms-wire';

export const DEFAULT_BED_KEY_ID = 'bed-kek-1';

export interface KmsPluginKnobs {
  /** No socket: the server is stopped and the socket file removed. */
  down?: boolean;
  /** Every call answers after this many milliseconds. */
  delayMs?: number;
  /** Status answers healthz "err". */
  unhealthy?: boolean;
  /** Status answers version "v1" (v2 service) / Version answers "v2" (v1 service). */
  wrongVersion?: boolean;
  /** Decrypt answers bytes other than the ones that were encrypted. */
  brokenRoundTrip?: boolean;
  /** The current key id (the KEK is sha256 of it); changing it is a key rotation. */
  keyId?: string;
}

export type KmsPluginApi = 'v1' | 'v2' | 'both';

export interface KmsPluginOptions extends KmsPluginKnobs {
  socketPath: string;
  /** Which services to serve (default v2). */
  api?: KmsPluginApi;
}

export interface KmsPluginStats {
  status: number;
  version: number;
  encrypt: number;
  decrypt: number;
}

export interface KmsPlugin {
  endpoint: string;
  socketPath: string;
  stop(): Promise<void>;
  setKnobs(k: KmsPluginKnobs): Promise<void>;
  knobs(): Readonly<Required<Omit<KmsPluginKnobs, 'delayMs'>> & { delayMs: number }>;
  stats(): KmsPluginStats;
}

const NONCE = 12;
const TAG = 16;

export function kekFor(keyId: string): Buffer {
  return createHash('sha256').update(keyId, 'utf8').digest();
}

/** nonce(12) || AES-256-GCM ciphertext || tag(16), key sha256(keyId), no additional data. */
export function wrapWithKek(keyId: string, plaintext: Uint8Array): Buffer {
  const nonce = randomBytes(NONCE);
  const c = createCipheriv('aes-256-gcm', kekFor(keyId), nonce);
  const body = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([nonce, body, c.getAuthTag()]);
}

export function unwrapWithKek(keyId: string, wrapped: Uint8Array): Buffer {
  const data = Buffer.from(wrapped);
  if (data.length < NONCE + TAG) throw new Error('ciphertext too short');
  const d = createDecipheriv('aes-256-gcm', kekFor(keyId), data.subarray(0, NONCE));
  d.setAuthTag(data.subarray(data.length - TAG));
  return Buffer.concat([d.update(data.subarray(NONCE, data.length - TAG)), d.final()]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Handler = (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => void;

export async function startKmsPlugin(opts: KmsPluginOptions): Promise<KmsPlugin> {
  const api = opts.api ?? 'v2';
  const socketPath = opts.socketPath;
  const endpoint = `unix://${socketPath}`;
  let knobs = {
    down: false,
    delayMs: 0,
    unhealthy: false,
    wrongVersion: false,
    brokenRoundTrip: false,
    keyId: DEFAULT_BED_KEY_ID,
    ...stripUndefined(opts),
  };
  // Every key id ever current: v1 Decrypt carries no key id, so it tries them newest first.
  const keyIds = [knobs.keyId];
  const stats: KmsPluginStats = { status: 0, version: 0, encrypt: 0, decrypt: 0 };
  let server: grpc.Server | undefined;

  const wrap = (fn: (req: any) => any): Handler => (call, cb) => {
    const delay = knobs.delayMs;
    void (async () => {
      if (delay > 0) await sleep(delay);
      try {
        cb(null, fn(call.request));
      } catch (err) {
        cb({ code: grpc.status.INTERNAL, details: (err as Error).message } as grpc.ServiceError);
      }
    })();
  };
  const corrupt = (b: Buffer) => (knobs.brokenRoundTrip ? Buffer.concat([b, Buffer.from([0x42])]) : b);

  const v2Impl = {
    Status: wrap(() => {
      stats.status++;
      return { version: knobs.wrongVersion ? 'v1' : 'v2', healthz: knobs.unhealthy ? 'err' : 'ok', keyId: knobs.keyId };
    }),
    Encrypt: wrap((req: { plaintext: Buffer }) => {
      stats.encrypt++;
      return { ciphertext: wrapWithKek(knobs.keyId, req.plaintext), keyId: knobs.keyId, annotations: {} };
    }),
    Decrypt: wrap((req: { ciphertext: Buffer; keyId: string }) => {
      stats.decrypt++;
      if (!req.keyId) throw new Error('key id is required');
      return { plaintext: corrupt(unwrapWithKek(req.keyId, req.ciphertext)) };
    }),
  };
  const v1Impl = {
    Version: wrap(() => {
      stats.version++;
      return { version: knobs.wrongVersion ? 'v2' : 'v1beta1', runtimeName: 'k8s-encrypt-bed-kms', runtimeVersion: '0.1.0' };
    }),
    Encrypt: wrap((req: { plain: Buffer }) => {
      stats.encrypt++;
      return { cipher: wrapWithKek(knobs.keyId, req.plain) };
    }),
    Decrypt: wrap((req: { cipher: Buffer }) => {
      stats.decrypt++;
      for (const id of [...keyIds].reverse()) {
        try {
          return { plain: corrupt(unwrapWithKek(id, req.cipher)) };
        } catch {
          // try the next (older) key id
        }
      }
      throw new Error('no key id unwraps this ciphertext');
    }),
  };

  async function up(): Promise<void> {
    await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
    await unlink(socketPath).catch(() => {});
    const s = new grpc.Server();
    if (api === 'v2' || api === 'both') s.addService(KMS_V2_SERVICE, v2Impl);
    if (api === 'v1' || api === 'both') s.addService(KMS_V1BETA1_SERVICE, v1Impl);
    await new Promise<void>((resolve, reject) =>
      s.bindAsync(endpoint, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    server = s;
  }

  async function down(): Promise<void> {
    const s = server;
    server = undefined;
    if (s) s.forceShutdown();
    await unlink(socketPath).catch(() => {});
  }

  if (!knobs.down) await up();

  return {
    endpoint,
    socketPath,
    async stop() {
      await down();
    },
    async setKnobs(k) {
      const next = { ...knobs, ...stripUndefined(k) };
      if (next.keyId !== knobs.keyId && !keyIds.includes(next.keyId)) keyIds.push(next.keyId);
      const wasDown = knobs.down;
      knobs = next;
      if (next.down && !wasDown) await down();
      if (!next.down && wasDown) await up();
    },
    knobs: () => ({ ...knobs }),
    stats: () => ({ ...stats }),
  };
}

function stripUndefined<T extends object>(o: T): Partial<KmsPluginKnobs> {
  const out: Record<string, unknown> = {};
  for (const k of ['down', 'delayMs', 'unhealthy', 'wrongVersion', 'brokenRoundTrip', 'keyId'] as const) {
    const v = (o as Record<string, unknown>)[k];
    if (v !== undefined) out[k] = v;
  }
  return out as Partial<KmsPluginKnobs>;
}
