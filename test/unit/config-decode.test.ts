import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { API_VERSION, decodeEncryptionConfiguration, KIND } from '../../src/config/schema';

// The zod schema the decoder replaced: the reference for its verdicts, output and issues.
const goString = z.string().default('');
const goList = <T extends z.ZodType>(item: T) => z.array(item).default([]);
const KeySchema = z.object({ name: goString, secret: goString }).strict();
const KeysProviderSchema = z.object({ keys: goList(KeySchema.default({ name: '', secret: '' })) }).strict();
const KmsSchema = z
  .object({
    apiVersion: z.string().optional(),
    name: goString,
    endpoint: goString,
    cachesize: z.number().int().min(-2147483648).max(2147483647).optional(),
    timeout: z.string().optional(),
  })
  .strict();
const ProviderSchema = z
  .object({
    aescbc: KeysProviderSchema.optional(),
    aesgcm: KeysProviderSchema.optional(),
    secretbox: KeysProviderSchema.optional(),
    identity: z.object({}).strict().optional(),
    kms: KmsSchema.optional(),
  })
  .strict();
const ResourceConfigSchema = z.object({ resources: goList(goString), providers: goList(ProviderSchema.default({})) }).strict();
const Reference = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal(KIND),
    resources: goList(ResourceConfigSchema.default({ resources: [], providers: [] })),
  })
  .strict();

function compare(doc: unknown): boolean {
  const want = Reference.safeParse(doc);
  const got = decodeEncryptionConfiguration(doc);
  const issues = (list: readonly { code: string; path: PropertyKey[]; message: string; keys?: string[] }[]) =>
    list.map((i) => ({ code: i.code, path: i.path, message: i.message, ...(i.keys ? { keys: i.keys } : {}) }));
  if (want.success) expect(got).toEqual({ success: true, data: want.data });
  else expect(got.success ? got : issues(got.issues)).toEqual(issues(want.error.issues as never));
  return want.success;
}

// A seeded generator of documents near the config's shape: right and wrong types, unknown
// fields, holes in lists, numbers at and beyond the limits.
function* documents(count: number): Generator<unknown> {
  let seed = 42;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const odd = (): unknown => [1, 'x', true, [], {}, [1], { zz: 1 }, 1.5, Number.NaN, Number.POSITIVE_INFINITY, undefined][rnd(11)];
  const maybe = (v: () => unknown) => (rnd(6) === 0 ? odd() : rnd(5) === 0 ? undefined : v());
  const extra = (o: Record<string, unknown>) => (rnd(5) === 0 ? { ...o, [`x${rnd(3)}`]: odd(), ...(rnd(2) ? { other: 1 } : {}) } : o);
  const list = (item: () => unknown) => maybe(() => Array.from({ length: rnd(4) }, () => (rnd(7) === 0 ? undefined : item())));
  const str = () => maybe(() => `s${rnd(3)}`);
  const key = () => extra({ name: str(), secret: str() });
  const keys = () => extra({ keys: list(key) });
  const ints = [0, -1, 5, 2147483647, 2147483648, -2147483649, 3000000000.5, 2 ** 53, -(2 ** 60), 1e300, 1.25];
  const kms = () => extra({ apiVersion: rnd(2) ? str() : undefined, name: str(), endpoint: str(), cachesize: maybe(() => ints[rnd(ints.length)]), timeout: rnd(2) ? str() : undefined });
  const provider = () => {
    const p: Record<string, unknown> = {};
    for (const k of ['aescbc', 'aesgcm', 'secretbox', 'identity', 'kms'] as const) {
      if (rnd(3) === 0) p[k] = k === 'kms' ? maybe(kms) : k === 'identity' ? maybe(() => extra({})) : maybe(keys);
    }
    return extra(p);
  };
  const rule = () => extra({ resources: list(str), providers: list(provider) });
  for (let i = 0; i < count; i++) yield rnd(20) === 0 ? odd() : extra({ apiVersion: API_VERSION, kind: KIND, resources: list(rule) });
}

describe('decodeEncryptionConfiguration', () => {
  it('decodes as the zod schema did, and reports the same issues in the same order', () => {
    compare({ apiVersion: API_VERSION, kind: KIND, resources: [{ resources: ['secrets'], providers: [{ aescbc: { keys: [{ name: 'k', secret: 's' }] } }, { identity: {} }] }] });
    compare({ apiVersion: API_VERSION, kind: KIND, zz: 1, resources: [{ resources: ['secrets', 2], providers: [undefined, { kms: { name: 'k', cachesize: 1e20, extra: 1 } }] }], yy: 2 });
    compare({ apiVersion: 'v1', kind: 'EncryptionConfig' });
    compare('text');
    const verdicts = [...documents(3000)].map(compare);
    // The corpus holds both: documents that decode and documents with every kind of issue.
    expect(verdicts.filter(Boolean).length).toBeGreaterThan(300);
    expect(verdicts.filter((ok) => !ok).length).toBeGreaterThan(300);
  });
});
