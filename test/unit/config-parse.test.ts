import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import {
  formatPath,
  loadEncryptionConfig,
  parseConfigText,
  parseEncryptionConfig,
  scrubSecrets,
  secretValuesIn,
} from '../../src/config/parse';
import { CliError } from '../../src/ui/errors';

const FIXTURES = fileURLToPath(new URL('../fixtures/configs/', import.meta.url));
const fixture = (name: string) => readFile(join(FIXTURES, name), 'utf8');
const K32A = Buffer.alloc(32, 0x11).toString('base64');
const K32B = Buffer.alloc(32, 0x22).toString('base64');

const head = 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n';

function thrown(fn: () => unknown): CliError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CliError);
    return e as CliError;
  }
  throw new Error('expected a CliError');
}

describe('parseEncryptionConfig', () => {
  it('reads YAML and JSON into the same model', async () => {
    const y = parseEncryptionConfig(await fixture('aescbc-two-keys.yaml'), 'a.yaml');
    expect(y.resources[0]!.resources).toEqual(['secrets', 'configmaps']);
    expect(y.resources[0]!.providers[0]!.aescbc!.keys.map((k) => k.name)).toEqual(['key2', 'key1']);
    expect(y.resources[0]!.providers[0]!.aescbc!.keys[1]!.secret).toBe(K32A);
    const j = parseEncryptionConfig(await fixture('kms-v2-wildcard.json'), 'b.json');
    expect(j.resources[0]!.providers[0]!.kms).toEqual({
      apiVersion: 'v2',
      name: 'vault',
      endpoint: 'unix:///var/run/kmsplugin/socket.sock',
      timeout: '3s',
    });
  });

  it.each([
    ['wrong type', `${head}resources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: k\n              secret: 12345\n`, 'resources[0].providers[0].aescbc.keys[0].secret', /expected string/],
    ['unknown field', `${head}resources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: k\n              secrt: abc\n`, 'resources[0].providers[0].aescbc.keys[0].secrt', /unknown field "secrt"/],
    ['missing field', `${head}resources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          name: k\n`, 'resources[0].providers[0].kms.endpoint', /^required field is missing/],
    ['identity with no value', `${head}resources:\n  - resources: [secrets]\n    providers:\n      - identity:\n`, 'resources[0].providers[0].identity', /expected object, received null/],
    ['wrong kind', 'apiVersion: apiserver.config.k8s.io/v1\nkind: Pod\nresources: []\n', 'kind', /expected "EncryptionConfiguration"/],
    ['wrong apiVersion', 'apiVersion: v1\nkind: EncryptionConfiguration\nresources: []\n', 'apiVersion', /apiserver.config.k8s.io\/v1/],
    ['not a mapping', '- a\n- b\n', '', /expected object/],
    ['a YAML 1.1 boolean as a key name, as the apiserver reads it', `${head}resources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: on\n              secret: abcd\n`, 'resources[0].providers[0].aescbc.keys[0].name', /expected string, received boolean/],
  ])('reports a shape error with its document path: %s', (_name, text, path, message) => {
    const r = parseConfigText(text);
    expect(r.ok).toBe(false);
    expect(r.problems).toContainEqual({ level: 'error', path, message: expect.stringMatching(message) });
    const e = thrown(() => parseEncryptionConfig(text, 'cfg.yaml'));
    expect(e.exitCode).toBe(2);
    expect(e.message).toContain(path ? `${path}: ` : 'cfg.yaml');
    expect(e.message).not.toContain('\n');
  });

  it.each([
    ['empty', '', /the file is empty/],
    ['only a comment', '# nothing\n', /the file is empty/],
    ['two documents', `${head}resources: []\n---\n${head}resources: []\n`, /2 YAML documents/],
    ['duplicate keys', `${head}kind: EncryptionConfiguration\nresources: []\n`, /Map keys must be unique/],
    ['bad JSON', '{"apiVersion": "apiserver.config.k8s.io/v1",', /does not parse as YAML or JSON/],
  ])('refuses a document that does not parse: %s', (_name, text, message) => {
    const r = parseConfigText(text);
    expect(r.ok).toBe(false);
    expect(r.problems[0]!.message).toMatch(message);
    expect(thrown(() => parseEncryptionConfig(text, 'x')).exitCode).toBe(2);
  });

  it('never echoes the line of a YAML error, which may hold a key', async () => {
    const text = await fixture('not-yaml.yaml');
    const e = thrown(() => parseEncryptionConfig(text, 'not-yaml.yaml'));
    expect(e.message).toMatch(/does not parse as YAML or JSON: .* at line 9, column \d+/);
    expect(JSON.stringify({ m: e.message, h: e.hint, d: e.details })).not.toContain(K32A);
  });

  it('never echoes a secret of a malformed key', () => {
    const text = `${head}resources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - secret: ${K32B}\n              extra: 1\n`;
    const e = thrown(() => parseEncryptionConfig(text, 'x'));
    expect(e.message).toContain('resources[0].providers[0].aescbc.keys[0].name');
    expect(JSON.stringify({ m: e.message, d: e.details })).not.toContain(K32B);
  });
});

describe('secret scrubbing', () => {
  it('finds secrets in YAML and JSON, quoted or not', () => {
    const text = `secret: ${K32A}\n"secret": "${K32B}"\n  - secret: 'c2VjcmV0'\n`;
    expect(secretValuesIn(text).sort()).toEqual([K32A, K32B, 'c2VjcmV0'].sort());
    expect(scrubSecrets(`a ${K32A} b ${K32B}`, text)).toBe('a <redacted> b <redacted>');
  });
});

describe('formatPath', () => {
  it.each([
    [[], ''],
    [['resources'], 'resources'],
    [['resources', 0, 'providers', 1, 'aescbc', 'keys', 0, 'secret'], 'resources[0].providers[1].aescbc.keys[0].secret'],
  ])('%j -> %s', (path, s) => expect(formatPath(path)).toBe(s));
});

describe('loadEncryptionConfig', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('returns the config, the text and the sha256 of the exact bytes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-parse-'));
    dirs.push(dir);
    const text = await fixture('aescbc-two-keys.yaml');
    const file = join(dir, 'config.yaml');
    await writeFile(file, text);
    const loaded = await loadEncryptionConfig(file);
    expect(loaded.text).toBe(text);
    expect(loaded.sha256).toBe(createHash('sha256').update(Buffer.from(text)).digest('hex'));
    expect(loaded.config.resources[0]!.providers[1]).toEqual({ identity: {} });
  });

  it('turns a missing file into one clear line (exit 2)', async () => {
    await expect(loadEncryptionConfig('/nonexistent/k8s-encrypt/config.yaml')).rejects.toMatchObject({
      message: 'cannot read /nonexistent/k8s-encrypt/config.yaml: it does not exist',
      exitCode: 2,
    });
  });
});
