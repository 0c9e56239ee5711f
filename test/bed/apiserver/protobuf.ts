/**
 * Just enough of Kubernetes' protobuf storage encoding to read what a real kube-apiserver wrote:
 * the `k8s\0` magic, runtime.Unknown (apimachinery runtime/generated.proto: typeMeta=1 {apiVersion=1,
 * kind=2}, raw=2, contentEncoding=3, contentType=4) and a core/v1 Secret inside it (k8s.io/api
 * core/v1 generated.proto: metadata=1, data=2 map<string,bytes>, type=3, immutable=5; ObjectMeta:
 * name=1, generateName=2, namespace=3, uid=5, resourceVersion=6, generation=7,
 * creationTimestamp=8 {seconds=1, nanos=2}, labels=11, annotations=12). Field numbers were checked
 * against a value a real 1.32 apiserver stored (test/fixtures/vectors).
 */

export const PROTOBUF_MAGIC = Buffer.from('k8s\0', 'latin1');

export interface Field {
  no: number;
  wire: number;
  /** varint value (wire 0) */
  n?: bigint;
  /** payload (wire 2) */
  bytes?: Buffer;
}

export function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let i = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (i >= buf.length) throw new Error('protobuf: truncated varint');
      const b = buf[i++]!;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 63n) throw new Error('protobuf: varint too long');
    }
  };
  while (i < buf.length) {
    const tag = Number(varint());
    const no = tag >>> 3;
    const wire = tag & 7;
    if (no === 0) throw new Error('protobuf: field number 0');
    switch (wire) {
      case 0:
        out.push({ no, wire, n: varint() });
        break;
      case 1:
        i += 8;
        out.push({ no, wire });
        break;
      case 2: {
        const len = Number(varint());
        if (i + len > buf.length) throw new Error('protobuf: truncated length-delimited field');
        out.push({ no, wire, bytes: buf.subarray(i, i + len) });
        i += len;
        break;
      }
      case 5:
        i += 4;
        out.push({ no, wire });
        break;
      default:
        throw new Error(`protobuf: unsupported wire type ${wire}`);
    }
    if (i > buf.length) throw new Error('protobuf: truncated fixed-width field');
  }
  return out;
}

export const text = (f: Field) => (f.bytes ?? Buffer.alloc(0)).toString('utf8');

export function mapEntry(entry: Buffer): [string, Buffer] {
  let key = '';
  let value: Buffer = Buffer.alloc(0);
  for (const f of fields(entry)) {
    if (f.no === 1 && f.bytes) key = text(f);
    if (f.no === 2 && f.bytes) value = f.bytes;
  }
  return [key, value];
}

function rfc3339(seconds: bigint): string {
  return new Date(Number(seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function objectMeta(buf: Buffer): Record<string, unknown> {
  const meta: Record<string, unknown> = {};
  const labels: Record<string, string> = {};
  const annotations: Record<string, string> = {};
  for (const f of fields(buf)) {
    if (f.wire === 2 && f.bytes) {
      if (f.no === 1 && f.bytes.length) meta.name = text(f);
      else if (f.no === 2 && f.bytes.length) meta.generateName = text(f);
      else if (f.no === 3 && f.bytes.length) meta.namespace = text(f);
      else if (f.no === 5 && f.bytes.length) meta.uid = text(f);
      else if (f.no === 8) {
        const secs = fields(f.bytes).find((t) => t.no === 1)?.n ?? 0n;
        meta.creationTimestamp = rfc3339(secs);
      } else if (f.no === 11) {
        const [k, v] = mapEntry(f.bytes);
        labels[k] = v.toString('utf8');
      } else if (f.no === 12) {
        const [k, v] = mapEntry(f.bytes);
        annotations[k] = v.toString('utf8');
      }
    } else if (f.wire === 0 && f.no === 7 && f.n) meta.generation = Number(f.n);
  }
  if (Object.keys(labels).length) meta.labels = labels;
  if (Object.keys(annotations).length) meta.annotations = annotations;
  return meta;
}

/**
 * Decodes a stored `k8s\0` value into the JSON shape the API serves. Only core/v1 Secrets are
 * understood; anything else is reported, not guessed.
 */
export function decodeProtobufObject(value: Buffer): Record<string, unknown> {
  if (!value.subarray(0, 4).equals(PROTOBUF_MAGIC)) throw new Error('protobuf: missing k8s\\0 magic');
  let apiVersion = '';
  let kind = '';
  let raw: Buffer | undefined;
  for (const f of fields(value.subarray(4))) {
    if (f.no === 1 && f.bytes) {
      for (const t of fields(f.bytes)) {
        if (t.no === 1) apiVersion = text(t);
        if (t.no === 2) kind = text(t);
      }
    } else if (f.no === 2 && f.bytes) raw = f.bytes;
    else if (f.no === 3 && f.bytes?.length) throw new Error(`protobuf: unsupported contentEncoding ${text(f)}`);
  }
  if (apiVersion !== 'v1' || kind !== 'Secret' || !raw) {
    throw new Error(`protobuf: the stand-in decodes only v1 Secret, not ${apiVersion || '?'} ${kind || '?'}`);
  }
  const secret: Record<string, unknown> = { kind, apiVersion };
  const data: Record<string, string> = {};
  let hasData = false;
  for (const f of fields(raw)) {
    if (f.no === 1 && f.bytes) secret.metadata = objectMeta(f.bytes);
    else if (f.no === 2 && f.bytes) {
      const [k, v] = mapEntry(f.bytes);
      data[k] = v.toString('base64');
      hasData = true;
    } else if (f.no === 3 && f.bytes?.length) secret.type = text(f);
    else if (f.no === 5 && f.wire === 0) secret.immutable = f.n !== 0n;
  }
  if (hasData) secret.data = data;
  secret.metadata ??= {};
  return secret;
}

/** One field to write: a proto3 scalar (zero values are left out, as Go's proto.Marshal does). */
export type OutField =
  | { no: number; bytes: Uint8Array | string | undefined }
  | { no: number; uint: number }
  | { no: number; map: Record<string, Uint8Array | string> | undefined };

function uvarint(n: number): Buffer {
  const out: number[] = [];
  let v = BigInt(n);
  do {
    const low = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v > 0n ? low | 0x80 : low);
  } while (v > 0n);
  return Buffer.from(out);
}

function lengthDelimited(no: number, payload: Buffer): Buffer {
  return Buffer.concat([uvarint((no << 3) | 2), uvarint(payload.length), payload]);
}

/** A message from its fields, in the order given; map entries sorted by key (Go's deterministic order). */
export function encodeMessage(out: OutField[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of out) {
    if ('uint' in f) {
      if (f.uint !== 0) parts.push(uvarint(f.no << 3), uvarint(f.uint));
    } else if ('map' in f) {
      for (const k of Object.keys(f.map ?? {}).sort()) {
        parts.push(lengthDelimited(f.no, encodeMessage([{ no: 1, bytes: k }, { no: 2, bytes: f.map![k] }])));
      }
    } else if (f.bytes !== undefined && f.bytes.length > 0) {
      parts.push(lengthDelimited(f.no, typeof f.bytes === 'string' ? Buffer.from(f.bytes, 'utf8') : Buffer.from(f.bytes)));
    }
  }
  return Buffer.concat(parts);
}
