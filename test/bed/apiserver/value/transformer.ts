/**
 * k8s.io/apiserver pkg/storage/value, written again for the stand-in from upstream's code (not from
 * src/etcd): a Transformer turns stored bytes into plaintext and back; prefix transformers nest
 * (`k8s:enc:aescbc:v1:` then `KEYNAME:`), try every match in order and never stop at a failed one;
 * every level counts apiserver_storage_transformation_operations_total under its own prefix.
 */

/** The etcd key, as upstream's value.Context.AuthenticatedData(). */
export type AuthenticatedData = Buffer;

export interface FromStorage {
  out: Buffer;
  /** Read through anything but the write path: an unchanged update must still be written. */
  stale: boolean;
}

export interface Transformer {
  fromStorage(data: Buffer, ctx: AuthenticatedData): Promise<FromStorage>;
  toStorage(data: Buffer, ctx: AuthenticatedData): Promise<Buffer>;
}

export interface PrefixTransformer {
  prefix: Buffer;
  transformer: Transformer;
}

/** value.RecordTransformation: the metric's labels, status "OK" or the error's code. */
export type RecordTransformation = (type: 'from_storage' | 'to_storage', prefix: string, failed: boolean) => void;

/**
 * utilerrors.Reduce(NewAggregate(errs)): one error stays itself; several print as `[a, b]`,
 * nested aggregates flattened and repeated messages shown once.
 */
export function aggregate(errs: Error[]): Error | undefined {
  const flat: string[] = [];
  const visit = (e: Error) => (e instanceof AggregateError ? e.errors.forEach(visit) : flat.push(e.message));
  errs.forEach(visit);
  if (flat.length === 0) return undefined;
  if (errs.length === 1) return errs[0];
  const unique = [...new Set(flat)];
  return new AggregateError(errs, unique.length === 1 ? unique[0] : `[${unique.join(', ')}]`);
}

const hasPrefix = (data: Buffer, prefix: Buffer) => data.length >= prefix.length && data.subarray(0, prefix.length).equals(prefix);

/** value.NewPrefixTransformers: reads by the first prefix that matches and succeeds; writes with the first. */
export function prefixTransformers(noMatch: string, list: PrefixTransformer[], record: RecordTransformation): Transformer {
  return {
    async fromStorage(data, ctx) {
      const errs: Error[] = [];
      for (const [i, t] of list.entries()) {
        if (!hasPrefix(data, t.prefix)) continue;
        let res: FromStorage | undefined;
        let err: Error | undefined;
        try {
          res = await t.transformer.fromStorage(data.subarray(t.prefix.length), ctx);
        } catch (e) {
          err = e as Error;
        }
        // identity refusing encrypted data must not stop the providers after it
        if (t.prefix.length === 0 && err) continue;
        record('from_storage', t.prefix.length === 0 ? 'identity' : t.prefix.toString('latin1'), err !== undefined);
        // two providers of one kind share a prefix during rotation: never stop at a failed match
        if (err) {
          errs.push(err);
          continue;
        }
        return { out: res!.out, stale: res!.stale || i !== 0 };
      }
      const err = aggregate(errs);
      if (err) throw err;
      record('from_storage', 'unknown', true);
      throw new Error(noMatch);
    },
    async toStorage(data, ctx) {
      const t = list[0]!;
      let out: Buffer;
      try {
        out = await t.transformer.toStorage(data, ctx);
      } catch (err) {
        record('to_storage', t.prefix.toString('latin1'), true);
        throw err;
      }
      record('to_storage', t.prefix.toString('latin1'), false);
      return Buffer.concat([t.prefix, out]);
    },
  };
}

const ENCRYPTED = Buffer.from('k8s:enc:');

/** identity.NewEncryptCheckTransformer: plaintext both ways, but it refuses to read encrypted data. */
export function encryptCheckTransformer(): Transformer {
  return {
    async fromStorage(data) {
      if (hasPrefix(data, ENCRYPTED)) throw new Error('identity transformer tried to read encrypted data');
      return { out: data, stale: false };
    },
    async toStorage(data) {
      return data;
    },
  };
}
