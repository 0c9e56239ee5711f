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
import { renderEncryptionConfig } from '../../src/config/render';

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
    ['wrong type', `${head}resources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: k\n              secret: 12345\n`, 'resources[0].providers[0].aescbc.keys[0].secret', /^cannot be decoded: expected a string, found a number$/],
    ['wrong kind', 'apiVersion: apiserver.config.k8s.io/v1\nkind: Pod\nresources: []\n', '', /^the file is not an EncryptionConfiguration: no kind "Pod" is registered for version "apiserver.config.k8s.io\/v1" \(expected a mapping with apiVersion: apiserver.config.k8s.io\/v1 and kind: EncryptionConfiguration\)$/],
    ['wrong apiVersion', 'apiVersion: v1\nkind: EncryptionConfiguration\nresources: []\n', '', /no kind "EncryptionConfiguration" is registered for version "v1"/],
    ['no kind', 'apiVersion: apiserver.config.k8s.io/v1\nresources: []\n', '', /not an EncryptionConfiguration: Object 'Kind' is missing/],
    ['not a mapping', '- a\n- b\n', '', /not an EncryptionConfiguration: it holds a list/],
    ['a text file (/etc/passwd)', 'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n', '', /^the file is not an EncryptionConfiguration: it holds a string \(expected a mapping with apiVersion: apiserver.config.k8s.io\/v1 and kind: EncryptionConfiguration\)$/],
    ['a YAML 1.1 boolean as a key name, as the apiserver reads it', `${head}resources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: on\n              secret: abcd\n`, 'resources[0].providers[0].aescbc.keys[0].name', /expected a string, found a boolean/],
  ])('reports a shape error with its document path: %s', (_name, text, path, message) => {
    const r = parseConfigText(text);
    expect(r.ok).toBe(false);
    expect(r.problems).toContainEqual({ level: 'error', path, message: expect.stringMatching(message) });
    const e = thrown(() => parseEncryptionConfig(text, 'cfg.yaml'));
    expect(e.exitCode).toBe(2);
    expect(e.message).toContain(path ? `${path}: ` : 'cfg.yaml');
    expect(e.message).not.toContain('\n');
  });

  it('decodes missing and null fields as Go zero values, for validation to name them', () => {
    const r = parseConfigText(`${head}resources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          name: k\n      - identity:\n      - aescbc:\n          keys:\n            - name: k\n              secret: null\n`);
    expect(r.ok && r.config.resources[0]!.providers).toEqual([{ kms: { name: 'k', endpoint: '' } }, {}, { aescbc: { keys: [{ name: 'k', secret: '' }] } }]);
  });

  it('reads the legacy form (apiVersion: v1, kind: EncryptionConfig) into the current one, with a warning', () => {
    const r = parseConfigText(`apiVersion: v1\nkind: EncryptionConfig\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n`);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.config).toMatchObject({ apiVersion: 'apiserver.config.k8s.io/v1', kind: 'EncryptionConfiguration' });
    expect(r.warnings).toEqual([{ level: 'warning', path: '', message: expect.stringMatching(/legacy form the apiserver still loads; the current form is apiVersion: apiserver.config.k8s.io\/v1 and kind: EncryptionConfiguration/) }]);
    expect(parseEncryptionConfig(`apiVersion: v1\nkind: EncryptionConfig\nresources: []\n`, 'x').kind).toBe('EncryptionConfiguration');
    // What rotate-key and write-config write back is the current form.
    const rewritten = renderEncryptionConfig(r.config);
    expect(rewritten).toMatch(/^apiVersion: apiserver.config.k8s.io\/v1\nkind: EncryptionConfiguration$/m);
    expect(rewritten).not.toMatch(/EncryptionConfig$/m);
  });

  it.each([
    ['an unknown field', `${head}resources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: k\n              secret: ${K32A}\n              secrt: abc\n`, 'resources[0].providers[0].aescbc.keys[0].secrt', 'unknown field'],
    ['a duplicate field', `${head}kind: EncryptionConfiguration\nresources: []\n`, '', 'duplicate field at line 3'],
  ])('decodes %s as a non-strict apiserver does, noting it for the version to judge', (_name, text, path, message) => {
    const r = parseConfigText(text);
    expect(r.ok).toBe(true);
    expect(r.ok && r.strict).toEqual([{ level: 'error', path, message }]);
    // The transition commands rewrite the file: they refuse what they would silently drop.
    expect(thrown(() => parseEncryptionConfig(text, 'x')).message).toMatch(/drops it before 1.31 and refuses the file from 1.31/);
  });

  it.each([
    ['empty', '', /the file is empty/],
    ['only a comment', '# nothing\n', /the file is empty/],
    ['two documents', `${head}resources: []\n---\n${head}resources: []\n`, /2 YAML documents/],
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
    expect(e.message).toContain('resources[0].providers[0].aescbc.keys[0].extra: unknown field');
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
