import { describe, expect, it } from 'vitest';
import { nextPageSize } from '../../src/etcd/client';

const kvs = (n: number, keyBytes: number, valueBytes?: number) =>
  Array.from({ length: n }, () => ({
    key: new Uint8Array(keyBytes),
    ...(valueBytes === undefined ? {} : { value: new Uint8Array(valueBytes) }),
  }));

describe('nextPageSize: keys per etcd request from the bytes of the last page', () => {
  it.each([
    // [what, page, pageBytes, maxPageSize, expected]
    ['small Secrets fill 1 MiB with ~2,500 keys', kvs(500, 40, 360), 1024 * 1024, 5000, Math.floor((1024 * 1024) / 416)],
    ['keys only stop at the key cap', kvs(500, 40), 1024 * 1024, 5000, 5000],
    ['1 MiB Secrets: one per request', kvs(3, 40, 1024 * 1024), 1024 * 1024, 5000, 1],
    ['never below one key, even when one value is over the target', kvs(1, 40, 8 * 1024 * 1024), 1024 * 1024, 5000, 1],
    ['a mix is sized by its average', [...kvs(1, 100, 100_000), ...kvs(9, 100)], 200_000, 5000, Math.floor(200_000 / ((100_116 + 9 * 116) / 10))],
  ] as const)('%s', (_what, page, pageBytes, max, expected) => {
    expect(nextPageSize(page, pageBytes, max)).toBe(expected);
  });
});
