import { describe, expect, it } from 'vitest';
import { formatDurationMs, parseKmsEndpoint } from '../../src/kms/client';
import { KMS_V1BETA1_DESCRIPTOR, KMS_V1BETA1_PROTO, KMS_V2_DESCRIPTOR, KMS_V2_PROTO, type PackageJson } from '../../src/kms/proto';
import { CliError, ExitCode } from '../../src/ui/errors';

const camel = (s: string) => s.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());

/** message -> field -> "type id" from the .proto text (scalars and map<string, bytes>). */
function fieldsOfProto(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const m of text.matchAll(/message (\w+) \{([^}]*)\}/g)) {
    const fields: Record<string, string> = {};
    for (const f of m[2]!.matchAll(/^\s*(map<string, bytes>|\w+) (\w+) = (\d+);/gm)) {
      fields[camel(f[2]!)] = `${f[1] === 'map<string, bytes>' ? 'map<string,bytes>' : f[1]} ${f[3]}`;
    }
    out[m[1]!] = fields;
  }
  return out;
}

function fieldsOfDescriptor(d: PackageJson): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  const pkg = Object.values(d.nested)[0]!.nested;
  for (const [name, def] of Object.entries(pkg)) {
    if (!('fields' in def)) continue;
    out[name] = Object.fromEntries(
      Object.entries(def.fields).map(([f, v]) => [f, `${v.keyType ? `map<${v.keyType},${v.type}>` : v.type} ${v.id}`]),
    );
  }
  return out;
}

function methodsOfProto(text: string): Record<string, string> {
  return Object.fromEntries([...text.matchAll(/rpc (\w+)\((\w+)\) returns \((\w+)\)/g)].map((m) => [m[1]!, `${m[2]}->${m[3]}`]));
}
function methodsOfDescriptor(d: PackageJson): Record<string, string> {
  const svc = Object.values(d.nested)[0]!.nested.KeyManagementService as { methods: Record<string, { requestType: string; responseType: string }> };
  return Object.fromEntries(Object.entries(svc.methods).map(([k, v]) => [k, `${v.requestType}->${v.responseType}`]));
}

describe('embedded KMS descriptors match the upstream proto text', () => {
  it.each([
    ['v2', KMS_V2_PROTO, KMS_V2_DESCRIPTOR],
    ['v1beta1', KMS_V1BETA1_PROTO, KMS_V1BETA1_DESCRIPTOR],
  ] as const)('%s: every message field (name, type, number) and every rpc', (pkg, text, descriptor) => {
    expect(text).toContain(`package ${pkg};`);
    expect(Object.keys(descriptor.nested)).toEqual([pkg]);
    expect(fieldsOfDescriptor(descriptor)).toEqual(fieldsOfProto(text));
    expect(methodsOfDescriptor(descriptor)).toEqual(methodsOfProto(text));
  });
});

describe('parseKmsEndpoint', () => {
  it.each([
    ['unix:///var/run/kmsplugin/grpc.sock', '/var/run/kmsplugin/grpc.sock'],
    ['unix:///tmp/x.sock', '/tmp/x.sock'],
  ])('%s -> %s', (endpoint, path) => {
    expect(parseKmsEndpoint(endpoint)).toBe(path);
  });

  it.each([
    'tcp://127.0.0.1:8080',
    'http://localhost/x',
    '/var/run/kmsplugin/grpc.sock',
    'unix://var/run/kmsplugin/grpc.sock',
    'unix:///',
    'unix://',
    '',
  ])('refuses %j with a usage error', (endpoint) => {
    let err: unknown;
    try {
      parseKmsEndpoint(endpoint);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).message).not.toContain('\n');
  });
});

describe('formatDurationMs', () => {
  it.each([
    [3000, '3s'],
    [1500, '1.5s'],
    [500, '500ms'],
    [1234, '1234ms'],
    [60000, '60s'],
  ])('%d -> %s', (ms, text) => {
    expect(formatDurationMs(ms)).toBe(text);
  });
});
