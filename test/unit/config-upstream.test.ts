/**
 * The Kubernetes project's own EncryptionConfiguration test corpus, as cases of ours: the files of
 * apiserver/pkg/server/options/encryptionconfig/testdata (our copies in
 * test/fixtures/configs/upstream) and the cases of validation_encryption_test.go and
 * config_test.go, each with upstream's outcome and message and the Kubernetes versions it holds
 * for. checkConfigText is what validate-config prints; every case runs at 1.24, 1.28, 1.32 and the
 * default version. Upstream's tests run with KMSv1=true (and KMSv2 on); so do these, unless a case
 * says otherwise. `by: 'ours'` marks where the tool is knowingly stricter than the apiserver.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { checkConfigText } from '../../src/config/check';
import { findingLine, NEWEST_KUBE_VERSION, type FeatureGates } from '../../src/config/validate';

const DIR = fileURLToPath(new URL('../fixtures/configs/upstream/', import.meta.url));
const VERSIONS = ['1.24', '1.28', '1.32', NEWEST_KUBE_VERSION];
const minorOf = (v: string) => Number(v.split('.')[1]);

interface Expectation {
  /** Kubernetes minors [from, until). */
  from?: number;
  until?: number;
  gates?: FeatureGates;
  reload?: boolean;
  by?: 'upstream' | 'ours';
  valid: boolean;
  /** A substring of one error line (`path: message`), or of one warning line when valid. */
  says?: string;
}

interface Case {
  name: string;
  /** A file under upstream/, or the config as an object (JSON is YAML). */
  file?: string;
  config?: object;
  expect: Expectation[];
}

const K32 = Buffer.alloc(32, 0x66).toString('base64');
const KMS_GATES: FeatureGates = { KMSv1: true, KMSv2: true };
const head = { apiVersion: 'apiserver.config.k8s.io/v1', kind: 'EncryptionConfiguration' };
const cfg = (...resources: object[]) => ({ ...head, resources });
const rule = (resources: string[] | undefined, ...providers: object[]) => ({ ...(resources ? { resources } : {}), ...(providers.length ? { providers } : {}) });
const v1 = (name = 'foo', extra: object = {}) => ({ kms: { apiVersion: 'v1', name, endpoint: 'unix:///tmp/kms-provider.socket', timeout: '3s', cachesize: 1, ...extra } });
const v2 = (name = 'foo', extra: object = {}) => ({ kms: { apiVersion: 'v2', name, endpoint: 'unix:///tmp/kms-provider.socket', timeout: '3s', ...extra } });
const aescbc = (name = 'foo', secret = K32) => ({ aescbc: { keys: [{ name, secret }] } });

// Outcomes by version range.
const valid = (says?: string): Expectation[] => [{ valid: true, ...(says ? { says } : {}) }];
const invalid = (says: string): Expectation[] => [{ valid: false, says }];
/** A 1.27 resource-list rule: refused from 1.27; before, accepted with a warning. */
const from127 = (says: string, before: string): Expectation[] => [
  { from: 27, valid: false, says },
  { until: 27, valid: true, says: before },
];
/** KMS v2 content: the apiserver of 1.24 has no apiVersion field; the tool refuses it there. */
const kmsV2 = (rest: Expectation[]): Expectation[] => [
  { until: 25, by: 'ours', valid: false, says: 'does not exist before 1.25' },
  ...rest.map((e) => ({ ...e, from: Math.max(e.from ?? 25, 25) })),
];
/** KMS v1 content at 1.29+: only with --feature-gates=KMSv1=true (upstream's message without). */
const kmsV1Gate: Expectation = {
  from: 29,
  gates: {},
  valid: false,
  says: 'KMSv1 is deprecated and will only receive security updates going forward. Use KMSv2 instead.  Set --feature-gates=KMSv1=true to use the deprecated KMSv1 feature.',
};
const overlap = "Invalid value: []string{";
const OVERLAP = "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked";
const WILDCARD = 'wildcards match nothing before 1.27';

const files: Case[] = (<Case[]>[
  // TestEncryptionProviderConfigCorrect, TestLegacyConfig, TestKMSPluginHealthz, TestCBCKeyRotation*
  { name: 'valid/aes-cbc-first.yaml', expect: [...kmsV2(valid()), kmsV1Gate] },
  { name: 'valid/aes-gcm-first.yaml', expect: [...kmsV2(valid()), kmsV1Gate] },
  { name: 'valid/kmsv2-first.yaml', expect: [...kmsV2(valid()), kmsV1Gate] },
  { name: 'valid/identity-first.yaml', expect: [...valid('identity is the first provider'), kmsV1Gate] },
  { name: 'valid/kms-first.yaml', expect: [...valid(), kmsV1Gate] },
  { name: 'valid/secret-box-first.yaml', expect: [...valid(), kmsV1Gate] },
  { name: 'valid/legacy.yaml', expect: [...valid('is a legacy form the apiserver still loads'), kmsV1Gate] },
  { name: 'valid/aes/aes-gcm.yaml', expect: valid() },
  { name: 'valid/aes/aes-cbc-multiple-keys.json', expect: valid() },
  { name: 'valid/aes/aes-cbc-multiple-keys-reversed.json', expect: valid() },
  { name: 'valid/aes/aes-cbc-multiple-providers.json', expect: valid() },
  { name: 'valid/aes/aes-cbc-multiple-providers-reversed.json', expect: valid() },
  { name: 'valid/kms/default-timeout.yaml', expect: [...valid(), kmsV1Gate] },
  // TestKMSv1Deprecation: KMSv1=false fails, KMSv1=true loads.
  { name: 'valid/kms/multiple-providers.yaml', expect: [...valid(), kmsV1Gate] },
  // TestKMSvsEnablement
  { name: 'valid/kms/multiple-providers-kmsv2.yaml', expect: kmsV2([{ valid: true }, { from: 29, gates: {}, valid: true }]) },
  { name: 'valid/kms/multiple-providers-mixed.yaml', expect: [...kmsV2(valid()), kmsV1Gate] },
  { name: 'valid/kms/valid-timeout.yaml', expect: [...valid(), kmsV1Gate] },
  { name: 'invalid/aes/invalid-key.yaml', expect: invalid('resources[0].providers[0].aesgcm.keys[1].secret: Invalid value: "REDACTED": secret is not of the expected length, got 17, expected one of [16 24 32]') },
  { name: 'invalid/aes/no-key.yaml', expect: invalid('resources[0].providers[0].aesgcm.keys[0].secret: Required value: secret is a mandatory field for a key') },
  // "error while parsing file"
  { name: 'invalid/invalid-aes-gcm.yaml', expect: invalid('resources[0].providers[0].aesgcm.keys: Required value: at least one keys is required') },
  // strict decoding error: unknown field "resources[0].providers[3].kms.pandas" (1.31+)
  {
    name: 'invalid/invalid-typo.yaml',
    expect: kmsV2([
      { from: 31, valid: false, says: 'strict decoding error: unknown field "resources[0].providers[3].kms.pandas"' },
      { until: 31, valid: true, says: 'resources[0].providers[3].kms.pandas: unknown field: a 1.28 apiserver decodes without strict checks, so the field is dropped' },
    ]),
  },
  { name: 'invalid/kms/invalid-apiversion.yaml', expect: [{ from: 25, valid: false, says: 'resources[0].providers[0].kms.apiVersion: Invalid value: "v3": unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported' }, { until: 25, by: 'ours', valid: false, says: 'KMS v3 does not exist before 1.25' }] },
  { name: 'invalid/kms/invalid-config-type.yaml', expect: invalid('no kind "EncryptionConfigurations" is registered for version "apiserver.config.k8s.io/v1"') },
  { name: 'invalid/kms/invalid-gvk.yaml', expect: invalid("the file is not an EncryptionConfiguration: Object 'Kind' is missing") },
  { name: 'invalid/kms/invalid-content.yaml', expect: invalid('the file is empty') },
  { name: 'invalid/kms/negative-timeout.yaml', expect: invalid('resources[0].providers[0].kms.timeout: Invalid value: -15s: timeout should be a positive value') },
  { name: 'invalid/kms/no-endpoint.yaml', expect: invalid('resources[0].providers[0].kms.endpoint: Invalid value: "": endpoint is a mandatory field for a kms') },
  { name: 'invalid/kms/zero-timeout.yaml', expect: invalid('resources[0].providers[0].kms.timeout: Invalid value: 0s: timeout should be a positive value') },
]).map((c) => ({ ...c, file: c.name }));

const r0 = 'resources[0].resources';
const structure: Case[] = [
  // validation_encryption_test.go TestStructure
  { name: 'empty encryption config', config: head, expect: invalid('resources: Required value: at least one resources is required') },
  { name: 'no k8s resources', config: cfg(rule(undefined, aescbc())), expect: invalid(`${r0}: Required value: at least one resources[0].resources is required`) },
  { name: 'no providers', config: cfg(rule(['secrets'])), expect: invalid('resources[0].providers: Required value: at least one resources[0].providers is required') },
  { name: 'multiple providers', config: cfg(rule(['secrets'], { ...aescbc(), aesgcm: { keys: [{ name: 'foo', secret: K32 }] } })), expect: invalid('resources[0].providers[0]: more than one provider specified in a single element, should split into different list elements') },
  { name: 'valid config', config: cfg(rule(['secrets'], { aesgcm: { keys: [{ name: 'foo', secret: K32 }] } })), expect: valid() },
  { name: 'duplicate kms v2 config name with kms v1 config', config: cfg(rule(['secrets'], v1(), v2())), expect: kmsV2(invalid('resources[0].providers[1].kms.name: Invalid value: "foo": duplicate KMS provider name foo, names must be unique')) },
  { name: 'duplicate kms v2 config names', config: cfg(rule(['secrets'], v2(), v2())), expect: kmsV2(invalid('resources[0].providers[1].kms.name: Invalid value: "foo": duplicate KMS provider name foo')) },
  { name: 'duplicate kms v2 config name across providers', config: cfg(rule(['secrets'], v2()), rule(['secrets'], v2())), expect: kmsV2(invalid('resources[1].providers[0].kms.name: Invalid value: "foo": duplicate KMS provider name foo')) },
  { name: 'duplicate kms config name with v1 and v2 across providers', config: cfg(rule(['secrets'], v1()), rule(['secrets'], v2())), expect: kmsV2(invalid('resources[1].providers[0].kms.name: Invalid value: "foo": duplicate KMS provider name foo')) },
  { name: "duplicate kms v1 config names shouldn't error", config: cfg(rule(['secrets'], v1(), v1())), expect: valid('duplicate KMS provider name foo, names must be unique (a KMS v1 duplicate is refused once') },
  { name: 'duplicate kms v1 config names should error when reload=true', config: cfg(rule(['secrets'], v1(), v1())), expect: [{ reload: true, valid: false, says: 'resources[0].providers[1].kms.name: Invalid value: "foo": duplicate KMS provider name foo' }] },
  { name: 'events.k8s.io group', config: cfg(rule(['events.events.k8s.io'], v1())), expect: from127(`${r0}[0]: Invalid value: "events.events.k8s.io": '*.events.k8s.io' objects are stored using the 'events' API group in etcd`, 'events are stored in the "events" group') },
  { name: 'events.k8s.io group later in the list', config: cfg(rule(['secrets'], v1()), rule(['secret', 'events.events.k8s.io'], v1())), expect: from127('resources[1].resources[1]: Invalid value: "events.events.k8s.io"', 'has no effect on 1.24') },
  { name: '*.events.k8s.io group', config: cfg(rule(['*.events.k8s.io'], v1())), expect: from127(`${r0}[0]: Invalid value: "*.events.k8s.io": '*.events.k8s.io' objects`, 'has no effect') },
  { name: 'extensions group', config: cfg(rule(['*.extensions'], v1())), expect: from127(`${r0}[0]: Invalid value: "*.extensions": 'extensions' group has been removed and cannot be used for encryption`, 'has no effect') },
  { name: 'foo.extensions group', config: cfg(rule(['foo.extensions'], v1())), expect: from127(`${r0}[0]: Invalid value: "foo.extensions": 'extensions' group has been removed`, 'has no effect') },
  { name: "'*' resource", config: cfg(rule(['*'], v1())), expect: from127(`${r0}[0]: Invalid value: "*": use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources`, WILDCARD) },
  { name: 'resource name with capital letters', config: cfg(rule(['apiServerIPInfo'], v1())), expect: from127(`${r0}[0]: Invalid value: "apiServerIPInfo": resource name should not contain capital letters`, 'matches no resource') },
  ...['apiserveripinfo', 'serviceipallocations', 'servicenodeportallocations'].map((r) => ({
    name: `resource name ${r}`,
    config: cfg(rule([r], v1())),
    expect: from127(`${r0}[0]: Invalid value: "${r}": resources which do not have REST API/s cannot be encrypted`, 'has no REST API'),
  })),
  { name: "'*.apps' and '*.' in one list", config: cfg(rule(['*.apps', '*.'], v1())), expect: [{ from: 27, valid: true }, { until: 27, valid: true, says: WILDCARD }] },
  { name: 'the same resource across groups', config: cfg(rule(['*.', 'foos.*'], v1())), expect: from127(`${r0}[1]: Invalid value: "foos.*": encrypting the same resource across groups is not supported`, WILDCARD) },
  { name: 'secrets twice', config: cfg(rule(['secrets', 'secrets'], v1())), expect: from127(`${r0}: Invalid value: []string{"secrets", "secrets"}: the same resource cannot be specified multiple times`, 'listed twice') },
  { name: 'secrets four times', config: cfg(rule(['secrets', 'secrets', 'secrets', 'secrets'], v1())), expect: from127('the same resource cannot be specified multiple times', 'listed twice') },
  { name: 'secrets twice, via dot', config: cfg(rule(['secrets', 'secrets.'], v1())), expect: from127(`${r0}: Invalid value: []string{"secrets", "secrets."}: the same resource`, 'listed twice') },
  ...[['*.apps', '*.', '*.*'], ['deployments.apps', '*.apps'], ['secrets', '*.'], ['pods', '*.'], ['secrets', '*.*'], ['*.', '*.*']].map((list) => ({
    name: `overlap: ${list.join(', ')}`,
    config: cfg(rule(list, v1())),
    expect: from127(`${r0}: ${overlap}${list.map((x) => `"${x}"`).join(', ')}}: ${OVERLAP}`, WILDCARD),
  })),
  { name: "deployments.apps with '*.'", config: cfg(rule(['deployments.apps', '*.'], v1())), expect: [{ from: 27, valid: true }, { until: 27, valid: true, says: WILDCARD }] },
];

const fields: Case[] = [
  // TestKey (aescbc sizes)
  { name: 'valid key', config: cfg(rule(['secrets'], aescbc('foo', Buffer.alloc(16, 1).toString('base64')))), expect: valid() },
  { name: 'key without name', config: cfg(rule(['secrets'], { aescbc: { keys: [{ secret: K32 }] } })), expect: invalid('resources[0].providers[0].aescbc.keys[0].name: Required value: name is a mandatory field for a key') },
  { name: 'key without secret', config: cfg(rule(['secrets'], { aescbc: { keys: [{ name: 'foo' }] } })), expect: invalid('resources[0].providers[0].aescbc.keys[0].secret: Required value: secret is a mandatory field for a key') },
  { name: 'key is not base64 encoded', config: cfg(rule(['secrets'], aescbc('foo', 'P@ssword'))), expect: invalid('aescbc.keys[0].secret: Invalid value: "REDACTED": secrets must be base64 encoded') },
  { name: 'key is not of expected length', config: cfg(rule(['secrets'], aescbc('foo', 'cGFzc3dvcmQK'))), expect: invalid('Invalid value: "REDACTED": secret is not of the expected length, got 9, expected one of [16 24 32]') },
  // TestKMSProviderTimeout
  { name: 'valid timeout', config: cfg(rule(['secrets'], v1('foo', { timeout: '1m' }))), expect: valid() },
  { name: 'negative timeout', config: cfg(rule(['secrets'], v1('foo', { timeout: '-1m' }))), expect: invalid('kms.timeout: Invalid value: -1m0s: timeout should be a positive value') },
  { name: 'zero timeout', config: cfg(rule(['secrets'], v1('foo', { timeout: '0m' }))), expect: invalid('kms.timeout: Invalid value: 0s: timeout should be a positive value') },
  // TestKMSEndpoint
  { name: 'valid endpoint', config: cfg(rule(['secrets'], v1('foo', { endpoint: 'unix:///socket.sock' }))), expect: valid() },
  { name: 'empty endpoint', config: cfg(rule(['secrets'], v1('foo', { endpoint: '' }))), expect: invalid('kms.endpoint: Invalid value: "": endpoint is a mandatory field for a kms') },
  { name: 'non unix endpoint', config: cfg(rule(['secrets'], v1('foo', { endpoint: 'https://www.foo.com' }))), expect: invalid('kms.endpoint: Invalid value: "https://www.foo.com": unsupported scheme "https" for KMS provider, only unix is supported') },
  { name: 'invalid url', config: cfg(rule(['secrets'], v1('foo', { endpoint: 'unix:///foo\n.socket' }))), expect: invalid('kms.endpoint: Invalid value: "unix:///foo\\n.socket": invalid endpoint for kms provider, error: parse "unix:///foo\\n.socket": net/url: invalid control character in URL') },
  // TestKMSProviderCacheSize
  { name: 'valid positive cache size', config: cfg(rule(['secrets'], v1('foo', { cachesize: 10 }))), expect: valid() },
  { name: 'invalid zero cache size', config: cfg(rule(['secrets'], v1('foo', { cachesize: 0 }))), expect: invalid('kms.cachesize: Invalid value: 0: cachesize should be a positive value, or negative to disable') },
  { name: 'valid negative cache size', config: cfg(rule(['secrets'], v1('foo', { cachesize: -1 }))), expect: valid() },
  { name: 'cache size set with v2 provider', config: cfg(rule(['secrets'], v2('foo', { cachesize: 10 }))), expect: kmsV2(invalid('kms.cachesize: Invalid value: 10: cachesize is not supported in v2')) },
  // TestKMSProviderAPIVersion
  { name: 'valid v1 api version', config: cfg(rule(['secrets'], v1())), expect: valid() },
  { name: 'valid v2 api version', config: cfg(rule(['secrets'], v2())), expect: kmsV2(valid()) },
  { name: 'invalid api version', config: cfg(rule(['secrets'], v2('foo', { apiVersion: 'v3' }))), expect: [{ from: 25, valid: false, says: 'kms.apiVersion: Invalid value: "v3": unsupported apiVersion apiVersion for KMS provider' }, { until: 25, by: 'ours', valid: false, says: 'KMS v3 does not exist before 1.25' }] },
  // TestKMSProviderName (an omitted apiVersion is defaulted to v1 in a file: upstream's "" is v2 here)
  { name: 'valid name', config: cfg(rule(['secrets'], v2('foo'))), expect: kmsV2(valid()) },
  { name: 'empty name', config: cfg(rule(['secrets'], v1(''))), expect: invalid('kms.name: Required value: name is a mandatory field for a provider') },
  { name: 'invalid name with :', config: cfg(rule(['secrets'], v2('foo:bar'))), expect: kmsV2(invalid(`kms.name: Invalid value: "foo:bar": invalid KMS provider name foo:bar, must not contain ':'`)) },
  { name: 'invalid name with : but api version is v1', config: cfg(rule(['secrets'], v1('foo:bar'))), expect: valid() },
];

// config_test.go: the transformers built from a validated config (masking, KMS use).
const kms = (name: string) => v1(name, { endpoint: 'unix:///tmp/testprovider.sock', cachesize: 10 });
const masked = (r: string, by: string) => `is masked by earlier rule "${by}"`.replace(/^/, `resource "${r}" `);
const loading: Case[] = [
  { name: 'config with bad provider', config: cfg(rule(['secrets'], {})), expect: invalid('resources[0].providers[0]: provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity') },
  { name: 'KMSMaxTimeout: with v1 provider', config: cfg(rule(['secrets'], kms('kms')), rule(['configmaps'], kms('kms'))), expect: [...valid(), kmsV1Gate] },
  { name: 'KMSMaxTimeout: with v2 provider', config: cfg(rule(['secrets'], v2('kms'), v2('new-kms')), rule(['configmaps'], v2('another-kms'), v2('yet-another-kms'))), expect: kmsV2(valid()) },
  { name: 'KMSMaxTimeout: with v1 and v2 provider', config: cfg(rule(['secrets'], kms('kms'), v2('another-kms')), rule(['configmaps'], kms('kms'), kms('yet-another-kms'))), expect: [...kmsV2(valid()), kmsV1Gate] },
  // Built without validation upstream (KMSvsEnablement); as a file, validation refuses the v2 cachesize.
  { name: 'KMSvsEnablement: with kmsv1 and kmsv2', config: cfg(rule(['secrets'], v1('kms', { cachesize: 1000 }), v2('another-kms', { cachesize: 1000 }))), expect: kmsV2(invalid('resources[0].providers[1].kms.cachesize: Invalid value: 1000: cachesize is not supported in v2')) },
  // TestWildcardMasking: within one list validation's overlap rule refuses first.
  { name: 'resources masked by *. group', config: cfg(rule(['configmaps', '*.', 'secrets'], kms('kms'))), expect: from127(OVERLAP, WILDCARD) },
  { name: '*. masked by *. group', config: cfg(rule(['*.'], kms('kms')), rule(['*.'], kms('kms2'))), expect: from127(masked('*.', '*.'), WILDCARD) },
  { name: '*.foo masked by *.foo', config: cfg(rule(['*.foo'], kms('kms')), rule(['*.foo'], kms('kms2'))), expect: from127(masked('*.foo', '*.foo'), WILDCARD) },
  { name: '*.* masked by *.*', config: cfg(rule(['*.*'], kms('kms')), rule(['*.*'], kms('kms2'))), expect: from127(masked('*.*', '*.*'), WILDCARD) },
  { name: 'resources masked by *. group in multiple configurations', config: cfg(rule(['configmaps'], kms('kms')), rule(['*.', 'secrets'], kms('another-kms'))), expect: from127(OVERLAP, WILDCARD) },
  { name: 'resources masked by *.*', config: cfg(rule(['configmaps', '*.*', 'secrets'], kms('kms'))), expect: from127(OVERLAP, WILDCARD) },
  { name: 'resources masked by *.* in multiple configurations', config: cfg(rule(['configmaps'], kms('kms')), rule(['*.*', 'secrets'], kms('another-kms'))), expect: from127(OVERLAP, WILDCARD) },
  { name: 'resources *. masked by *.*', config: cfg(rule(['configmaps', '*.*', '*.'], kms('kms'))), expect: from127(OVERLAP, WILDCARD) },
  { name: 'resources *. masked by *.* in multiple configurations', config: cfg(rule(['configmaps', '*.*'], kms('kms')), rule(['*.'], kms('another-kms'))), expect: from127(masked('*.', '*.*'), WILDCARD) },
  // Upstream builds this one without validation; ValidateEncryptionConfiguration refuses '*.*' next to others.
  { name: 'resources not masked by any rule', config: cfg(rule(['configmaps', 'secrets', '*.*'], kms('kms'))), expect: from127(OVERLAP, WILDCARD) },
  { name: 'resources not masked by any rule in multiple configurations', config: cfg(rule(['configmaps', 'secrets'], kms('kms')), rule(['*.*'], kms('another-kms'))), expect: [{ from: 27, valid: true }, { until: 27, valid: true, says: WILDCARD }, kmsV1Gate] },
  // TestWildcardStructure
  { name: 'wildcard structure: should not result in error', config: cfg(rule(['configmaps', '*.apps'], kms('kms')), rule(['secrets'], kms('another-kms'), { identity: {} }), rule(['*.'], kms('fancy')), rule(['*.*'], kms('yet-another-provider'))), expect: [{ from: 27, valid: true }, { until: 27, valid: true, says: WILDCARD }, kmsV1Gate] },
  { name: 'wildcard structure: should result in error', config: cfg(rule(['configmaps', '*.'], kms('kms')), rule(['*.*', 'secrets'], kms('kms'), { identity: {} })), expect: from127(masked('secrets', '*.'), WILDCARD) },
];

function run(c: Case, version: string, e: Expectation) {
  const text = c.file ? readFileSync(join(DIR, c.file), 'utf8') : JSON.stringify(c.config, null, 2);
  return checkConfigText(text, c.file ?? 'inline.yaml', { kubeVersion: version, featureGates: e.gates ?? KMS_GATES, reload: e.reload });
}

describe.each([
  ['testdata files', files],
  ['validation_encryption_test.go TestStructure', structure],
  ['validation_encryption_test.go field rules', fields],
  ['config_test.go transformer cases', loading],
])('upstream corpus: %s', (_group, cases) => {
  const rows = cases.flatMap((c) =>
    VERSIONS.flatMap((version) =>
      c.expect
        .filter((e) => (e.from ?? 0) <= minorOf(version) && minorOf(version) < (e.until ?? 1000))
        .map((e) => ({ label: `${c.name} @ ${version}${e.gates ? ` gates=${JSON.stringify(e.gates)}` : ''}${e.by === 'ours' ? ' (ours)' : ''}`, c, version, e })),
    ),
  );
  it.each(rows)('$label', ({ c, version, e }) => {
    const r = run(c, version, e);
    const lines = (e.valid ? r.warnings : r.errors).map(findingLine);
    expect(r.valid, JSON.stringify([...r.errors, ...r.warnings].map(findingLine), null, 1)).toBe(e.valid);
    if (e.says) expect(lines.some((l) => l.includes(e.says!)), `no line says ${JSON.stringify(e.says)}: ${JSON.stringify(lines, null, 1)}`).toBe(true);
  });
});

describe('upstream corpus: the count', () => {
  it('covers every file of testdata and every case named above', () => {
    expect(files).toHaveLength(28);
    expect(files.length + structure.length + fields.length + loading.length).toBeGreaterThanOrEqual(84);
  });
});
