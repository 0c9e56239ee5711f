import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import * as o from '../../src/commands/option-schema';

// The option checks were zod schemas; usage errors must read as they did.
const pairs: [string, o.Opt<unknown>, z.ZodType][] = [
  ['string', o.str(), z.string()],
  ['optional string', o.str().optional(), z.string().optional()],
  ['boolean', o.bool(), z.boolean()],
  ['int >= 1', o.int(1), z.number().int().min(1)],
  ['optional int >= 1', o.int(1).optional(), z.number().int().min(1).optional()],
  ['int', o.int(), z.number().int()],
  ['enum', o.oneOf(['v1', 'v2']), z.enum(['v1', 'v2'])],
  ['string list', o.strList().optional(), z.array(z.string()).optional()],
];
const values: unknown[] = [undefined, null, '', 'x', 'v1', 'v2', 0, 1, 2, 1.5, -3, Number.NaN, Number.POSITIVE_INFINITY, true, false, [], ['a'], ['a', 1], {}, 10n];

describe('option checks', () => {
  for (const [name, mine, theirs] of pairs) {
    it(`${name}: the same verdict and message as the zod schema`, () => {
      for (const v of values) {
        const r = theirs.safeParse(v);
        expect([v, mine.check(v)]).toEqual([v, r.success ? undefined : r.error.issues[0]!.message]);
      }
    });
  }

  it('keeps the shape keys only, leaves absent ones out, and names the first bad one', () => {
    const shape = { a: o.str(), b: o.int(1).optional(), c: o.bool().optional() };
    expect(o.checkOptions(shape, { a: 'x', c: undefined, other: 1 })).toEqual({ ok: true, value: { a: 'x' } });
    expect(o.checkOptions(shape, { a: 1, b: 0 })).toEqual({ ok: false, key: 'a', message: 'Invalid input: expected string, received number' });
  });
});

describe('intOr (--page-size N|auto)', () => {
  it('takes the word or a whole number at least the minimum, and words the rest as int does', () => {
    const p = o.intOr('auto', 1);
    expect(p.check('auto')).toBeUndefined();
    expect(p.check(100)).toBeUndefined();
    expect(p.check(0)).toBe(o.int(1).check(0));
    expect(p.check('x')).toBe(o.int(1).check('x'));
    expect(p.check(1.5)).toBe(o.int(1).check(1.5));
  });
});
