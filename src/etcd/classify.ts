/** Recognising stored values from their first bytes, and the labels reports use for them. */
import { readFields } from './protobuf';
import { asBuffer, ENCRYPTED_PREFIX_BYTES, PROTOBUF_MAGIC, startsWith, type ValueTransformer } from './value';

export type ValueKind =
  | 'plaintext-protobuf'
  | 'plaintext-json'
  | 'aescbc'
  | 'aesgcm'
  | 'secretbox'
  | 'kms'
  | 'unknown';

export interface ValueClass {
  kind: ValueKind;
  /** The full `k8s:enc:...:` prefix, for encrypted values. */
  prefix?: string;
  /** The key name (local providers) or the KMS provider name. */
  keyName?: string;
  kmsVersion?: 'v1' | 'v2';
}

const ENC_HEADER = /^k8s:enc:([a-z0-9]+):(v[0-9a-z]+):([^:]*):/;

/**
 * What a raw etcd value is, from its first bytes. Key names are read up to the next ':'
 * (upstream writes `NAME:` right after the version; KMS v2 forbids ':' in names).
 */
export function classifyValue(raw: Uint8Array): ValueClass {
  const b = asBuffer(raw);
  if (startsWith(b, PROTOBUF_MAGIC)) return { kind: 'plaintext-protobuf' };
  if (startsWith(b, ENCRYPTED_PREFIX_BYTES)) {
    const head = b.subarray(0, 512).toString('latin1');
    const m = ENC_HEADER.exec(head);
    if (!m) return { kind: 'unknown' };
    const [prefix, kind, version, keyName] = m as unknown as [string, string, string, string];
    if ((kind === 'aescbc' || kind === 'aesgcm' || kind === 'secretbox') && version === 'v1') {
      return { kind, prefix, keyName };
    }
    if (kind === 'kms' && (version === 'v1' || version === 'v2')) {
      return { kind: 'kms', prefix, keyName, kmsVersion: version };
    }
    return { kind: 'unknown', prefix };
  }
  let i = 0;
  while (i < b.length && (b[i] === 0x20 || b[i] === 0x09 || b[i] === 0x0a || b[i] === 0x0d)) i++;
  if (b[i] === 0x7b) return { kind: 'plaintext-json' };
  return { kind: 'unknown' };
}

/** A short label for reports: `aescbc:key1`, `kms:v2:name`, `plaintext`, `unknown`. */
export function valueLabel(c: ValueClass): string {
  switch (c.kind) {
    case 'plaintext-protobuf':
    case 'plaintext-json':
      return 'plaintext';
    case 'kms':
      return `kms:${c.kmsVersion}:${c.keyName}`;
    case 'unknown':
      return 'unknown';
    default:
      return `${c.kind}:${c.keyName}`;
  }
}

/** The label values written through this transformer get (`plaintext` for identity). */
export function transformerLabel(t: ValueTransformer): string {
  return t.prefix === '' ? 'plaintext' : valueLabel(classifyValue(Buffer.from(t.prefix, 'latin1')));
}

/**
 * Plaintext as the apiserver stores objects: the protobuf envelope `k8s\0` + runtime.Unknown
 * (typeMeta = 1, raw = 2, ...) that parses to its end, or a JSON document. aescbc has no MAC, so
 * this is what catches a wrong key that happened to leave valid padding.
 */
export function looksLikeStoredObject(plaintext: Uint8Array): boolean {
  const k = classifyValue(plaintext).kind;
  if (k === 'plaintext-json') {
    try {
      JSON.parse(asBuffer(plaintext).toString('utf8'));
      return true;
    } catch {
      return false;
    }
  }
  if (k !== 'plaintext-protobuf') return false;
  try {
    const fields = readFields(plaintext.subarray(PROTOBUF_MAGIC.length));
    return fields.some((f) => f.field === 1 && f.bytes) && fields.some((f) => f.field === 2 && f.bytes);
  } catch {
    return false;
  }
}
