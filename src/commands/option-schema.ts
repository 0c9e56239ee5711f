import { receivedType } from '../ui/type-names';

/**
 * The shape of a command's options, checked at the edge so that its run function receives exactly
 * the typed object it declares. Commander's parsers have already turned numbers into numbers and
 * flags into booleans; this is the last check. It is plain code, not a schema library: every
 * command declares its options when the program is built, and a library loaded for that costs
 * every run its start-up memory (zod: 95 modules, 10-14 MB of RSS). The messages are the ones
 * the option checks gave before (zod's English defaults), so usage errors read the same.
 */
export interface Opt<T> {
  /** The message for a value that does not fit, or undefined. */
  check(v: unknown): string | undefined;
  optional(): Opt<T | undefined>;
  /** Type only. */
  readonly _type?: T;
}

export type OptionShape = Record<string, Opt<unknown>>;
type TypeOf<O> = O extends Opt<infer T> ? T : never;
type OptionalKeys<S> = { [K in keyof S]: undefined extends TypeOf<S[K]> ? K : never }[keyof S];
/** The object a shape checks: keys whose option may be absent are optional. */
export type OptionsOf<S extends OptionShape> = {
  [K in Exclude<keyof S, OptionalKeys<S>>]: TypeOf<S[K]>;
} & { [K in OptionalKeys<S>]?: TypeOf<S[K]> };
/** A shape that yields T (for option types declared elsewhere). */
export type ShapeOf<T> = { [K in keyof T]: Opt<T[K]> };

const expected = (type: string, v: unknown) => `Invalid input: expected ${type}, received ${receivedType(v)}`;

function opt<T>(check: (v: unknown) => string | undefined): Opt<T> {
  return {
    check,
    optional: () => opt<T | undefined>((v) => (v === undefined ? undefined : check(v))),
  };
}

const typed = <T>(type: 'string' | 'boolean') => opt<T>((v) => (typeof v === type ? undefined : expected(type, v)));

export const str = (): Opt<string> => typed<string>('string');
export const bool = (): Opt<boolean> => typed<boolean>('boolean');

/** A whole number, at least `min` when given. */
export function int(min?: number): Opt<number> {
  return opt<number>((v) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) return expected('number', v);
    if (!Number.isInteger(v)) return expected('int', v);
    if (min !== undefined && v < min) return `Too small: expected number to be >=${min}`;
    return undefined;
  });
}

/** A whole number (at least `min` when given) or the one word `literal` (`--page-size auto`). */
export function intOr<const L extends string>(literal: L, min?: number): Opt<number | L> {
  const n = int(min);
  return opt<number | L>((v) => (v === literal ? undefined : n.check(v)));
}

export function oneOf<const V extends readonly string[]>(values: V): Opt<V[number]> {
  return opt<V[number]>((v) =>
    (values as readonly unknown[]).includes(v) ? undefined : `Invalid option: expected one of ${values.map((x) => JSON.stringify(x)).join('|')}`,
  );
}

export function strList(): Opt<string[]> {
  return opt<string[]>((v) => {
    if (!Array.isArray(v)) return expected('array', v);
    const i = v.findIndex((x) => typeof x !== 'string');
    return i < 0 ? undefined : expected('string', v[i]);
  });
}

/** The first option that does not fit (in the shape's order) and why, or the checked options:
 * the shape's keys only, absent ones left out. */
export function checkOptions<S extends OptionShape>(
  shape: S,
  raw: Record<string, unknown>,
): { ok: true; value: OptionsOf<S> } | { ok: false; key: string; message: string } {
  const value: Record<string, unknown> = {};
  for (const [key, o] of Object.entries(shape)) {
    const v = raw[key];
    const message = o.check(v);
    if (message !== undefined) return { ok: false, key, message };
    if (v !== undefined) value[key] = v;
  }
  return { ok: true, value: value as OptionsOf<S> };
}
