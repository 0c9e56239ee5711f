/**
 * The apiserver's storage transformers, byte for byte: what kube-apiserver writes to etcd for each
 * EncryptionConfiguration provider and how it reads it back (k8s.io/apiserver
 * pkg/storage/value/...). Pure crypto, no I/O; KMS plugins are reached through the service
 * interfaces the caller passes in. This module builds the transformers of a config; the ciphers
 * live in local.ts (aescbc, aesgcm, secretbox, identity), kmsv2.ts and kmsv1.ts, recognising a
 * stored value in classify.ts and reading one in decode.ts.
 */
import { parseGoDuration } from '../config/go';
import { providersFor } from '../config/model';
import { providerKinds, type EncryptionConfiguration, type ProviderConfig } from '../config/schema';
import { kmsV1Transformer, unreachableKmsTransformer, type KmsV1Service } from './kmsv1';
import { kmsV2Transformer, type KmsV2Service } from './kmsv2';
import { identityTransformer, localTransformer } from './local';
import type { ValueTransformer } from './value';

// The names the rest of the project imports from here.
export { classifyValue, looksLikeStoredObject, transformerLabel, valueLabel, type ValueClass, type ValueKind } from './classify';
export { decodeStored, type Decoded } from './decode';
export { kmsV1Transformer, unreachableKmsTransformer, type KmsV1Service } from './kmsv1';
export {
  DEK_SOURCE_AES_GCM_KEY,
  DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED,
  decodeEncryptedObject,
  encodeEncryptedObject,
  hkdfSha256Expand,
  kmsV2Transformer,
  storedKmsV2KeyId,
  type EncryptedObject,
  type KmsV2DecryptRequest,
  type KmsV2EncryptResponse,
  type KmsV2Service,
  type KmsV2TransformerOptions,
} from './kmsv2';
export { identityTransformer, localTransformer, type LocalKind } from './local';
export { ENCRYPTED_PREFIX, type ValueTransformer } from './value';

type KmsV1Factory = (name: string, endpoint: string, timeoutMs: number) => KmsV1Service;
type KmsV2Factory = (name: string, endpoint: string, timeoutMs: number) => KmsV2Service;

/** The kms `timeout` field (a Go duration, `3s` when absent) in milliseconds. */
function kmsTimeoutMs(name: string, text = '3s'): number {
  const ns = parseGoDuration(text);
  if (ns === undefined || ns <= 0) throw new Error(`kms provider "${name}": invalid timeout "${text}"`);
  return ns / 1e6;
}

function providerTransformers(
  p: ProviderConfig,
  kms?: { v1?: KmsV1Factory; v2?: KmsV2Factory },
): ValueTransformer[] {
  const [kind] = providerKinds(p);
  switch (kind) {
    case 'aescbc':
    case 'aesgcm':
    case 'secretbox':
      return p[kind]!.keys.map((k) => localTransformer(kind, k.name, k.secret));
    case 'identity':
      return [identityTransformer()];
    case 'kms': {
      const c = p.kms!;
      const version = c.apiVersion ?? 'v1';
      const timeoutMs = kmsTimeoutMs(c.name, c.timeout);
      if (version === 'v2') {
        return [kms?.v2 ? kmsV2Transformer(c.name, kms.v2(c.name, c.endpoint, timeoutMs)) : unreachableKmsTransformer('v2', c.name)];
      }
      if (version === 'v1') {
        return [
          kms?.v1
            ? kmsV1Transformer(c.name, kms.v1(c.name, c.endpoint, timeoutMs), c.cachesize ?? 1000)
            : unreachableKmsTransformer('v1', c.name),
        ];
      }
      throw new Error(`kms provider "${c.name}": unsupported apiVersion "${version}"`);
    }
    default:
      throw new Error('a provider element must set exactly one of aescbc, aesgcm, secretbox, identity or kms');
  }
}

/**
 * The transformers the apiserver would use for a resource: the providers `providersFor` resolves
 * (upstream's rule), in order, one per key. `[]` when no rule covers it (the apiserver stores it
 * as plaintext). KMS providers without a factory get a transformer that recognises their prefix
 * but cannot decrypt.
 */
export function transformersForResource(
  cfg: EncryptionConfiguration,
  resource: string,
  kms?: { v1?: KmsV1Factory; v2?: KmsV2Factory },
): ValueTransformer[] {
  return providersFor(cfg, resource).flatMap((p) => providerTransformers(p, kms));
}
