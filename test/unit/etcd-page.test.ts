import { describe, expect, it } from 'vitest';
import { grpcTarget, nextPageSize, openEtcd } from '../../src/etcd/client';
import { CliError, ExitCode } from '../../src/ui/errors';

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

describe('etcd endpoints: what a channel dials, and endpoints it cannot', () => {
  it.each([
    ['https://10.0.0.1:2379', '10.0.0.1:2379'],
    ['https://etcd-0.example', 'etcd-0.example:2379'],
    ['https://[fd00::1]', '[fd00::1]:2379'],
    ['http://127.0.0.1:22379/', '127.0.0.1:22379'],
  ])('%s -> %s', (endpoint, target) => {
    expect(grpcTarget(endpoint)).toBe(target);
  });

  it.each([
    ['https://::1', '"https://::1"'],
    ['https://fe80::1%eth0:2379', '"https://fe80::1%eth0:2379"'],
    ['https://etcd 0:2379', '"https://etcd 0:2379"'],
    ['https://etcd:0', '"https://etcd:0"'],
    ['https://etcd:2379?x', '"https://etcd:2379?x"'],
    ['https://etcd:2379#x', '"https://etcd:2379#x"'],
    ['https://etcd:2379\nx', '"https://etcd:2379\\nx"'],
    // User info is refused, and its password never shown.
    ['https://root:s3cret@etcd:2379', '"https://…@etcd:2379"'],
  ])('%s is refused in one line before anything is read or dialled', async (endpoint, shown) => {
    const err = await openEtcd({ endpoints: ['https://127.0.0.1:2379', endpoint], caFile: '/nonexistent/ca.crt' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).message).toBe(`etcd endpoint ${shown} is not a URL with just a host and port`);
    expect((err as CliError).hint).toContain("kube-apiserver's --etcd-servers");
  });
});
