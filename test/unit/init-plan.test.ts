import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { enableStageOf, planInit, printablePlan, type InitInput } from '../../src/init/plan';
import { parseEncryptionConfig, sha256Hex } from '../../src/config/parse';
import { planKubeadmConfigPatch } from '../../src/manifest/kubeadm-config';
import { planRestartAnnotation, CONFIG_HASH_ANNOTATION } from '../../src/manifest/restart';
import { CliError, ExitCode } from '../../src/ui/errors';

const fixture = (name: string) => readFileSync(fileURLToPath(new URL(`../fixtures/manifests/${name}`, import.meta.url)), 'utf8');
const KEY = Buffer.alloc(32, 7).toString('base64');
const MANIFEST = '/etc/kubernetes/manifests/kube-apiserver.yaml';
const CONFIG = '/etc/kubernetes/encryption/config.yaml';

function input(over: Omit<Partial<InitInput>, 'options'> & { options?: Partial<InitInput['options']> } = {}): InitInput {
  const { options, ...rest } = over;
  return {
    manifestText: fixture('kubeadm-1.32.yaml'),
    kubeVersion: '1.32.6',
    kubeVersionSource: '/version',
    controlPlanes: 1,
    key: KEY,
    keyName: 'key-20261126T140000Z',
    ...rest,
    options: {
      provider: 'aescbc',
      resources: ['secrets'],
      configPath: CONFIG,
      manifestPath: MANIFEST,
      timeoutMs: 300_000,
      kubeadmConfig: true,
      force: false,
      ...options,
    },
  };
}

const providersOf = (text: string) => (parse(text).resources[0].providers as object[]).map((p) => Object.keys(p)[0]);

describe('planInit', () => {
  const cases: { name: string; in: InitInput; mode: string; providers: string[]; prefix: string; steps: string[] }[] = [
    {
      name: 'one control plane, defaults',
      in: input(),
      mode: 'single',
      providers: ['aescbc', 'identity'],
      prefix: 'k8s:enc:aescbc:v1:key-20261126T140000Z:',
      steps: ['promote', 'rewrite'],
    },
    {
      name: 'secretbox, configmaps too, no kubeadm-config',
      in: input({ options: { provider: 'secretbox', resources: ['secrets', 'configmaps'], kubeadmConfig: false } }),
      mode: 'single',
      providers: ['secretbox', 'identity'],
      prefix: 'k8s:enc:secretbox:v1:key-20261126T140000Z:',
      steps: ['promote', 'rewrite'],
    },
    {
      name: 'kms v2',
      in: input({ key: undefined, options: { provider: 'kms', kms: { name: 'vault', endpoint: 'unix:///var/run/kmsplugin/socket.sock', apiVersion: 'v2' } } }),
      mode: 'single',
      providers: ['kms', 'identity'],
      prefix: 'k8s:enc:kms:v2:vault:',
      steps: ['promote', 'rewrite'],
    },
    {
      name: 'two control planes: staged, identity first',
      in: input({ controlPlanes: 2 }),
      mode: 'staged',
      providers: ['identity', 'aescbc'],
      prefix: 'k8s:enc:aescbc:v1:key-20261126T140000Z:',
      steps: ['add-reader', 'promote', 'rewrite'],
    },
    {
      name: 'older kubeadm manifest (1.24)',
      in: input({ manifestText: fixture('kubeadm-1.24.yaml'), kubeVersion: '1.24.17' }),
      mode: 'single',
      providers: ['aescbc', 'identity'],
      prefix: 'k8s:enc:aescbc:v1:key-20261126T140000Z:',
      steps: ['promote', 'rewrite'],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const p = planInit(c.in);
      expect(p.mode).toBe(c.mode);
      expect(providersOf(p.config.text)).toEqual(c.providers);
      expect(p.expectedPrefix).toBe(c.prefix);
      expect(p.steps.map((s) => s.name)).toEqual(c.steps);
      // The transition engine's stages, the flag and mount coming with the first; no prune.
      expect(p.transition!.stages.map((s) => s.name)).toEqual(c.steps);
      expect(p.transition!.stages.map((s) => Boolean(s.patch))).toEqual(c.steps.map((_, i) => i === 0));
      expect(p.kept.join()).toMatch(/identity stays as the last reader/);
      expect(p.manifest.changed).toBe(true);
      expect(p.manifest.diff).toContain(`--encryption-provider-config=${CONFIG}`);
      // The key is in the file text only, never in anything printable.
      expect(JSON.stringify(printablePlan(p))).not.toContain(KEY);
      if (c.in.key) expect(p.config.text).toContain(KEY);
    });
  }

  it('staged: the key-first config has the same key and differs only in order', () => {
    const p = planInit(input({ controlPlanes: 3 }));
    expect(providersOf(p.writeConfig!.text)).toEqual(['aescbc', 'identity']);
    expect(p.writeConfig!.writePrefix).toBe(p.expectedPrefix);
    expect(p.config.writePrefix).toBeUndefined();
    expect(p.writeConfig!.sha256).not.toBe(p.config.sha256);
  });

  it('from-config installs the given bytes and takes its stage from them', () => {
    const staged = planInit(input({ controlPlanes: 2 }));
    for (const [text, stage] of [[staged.config.text, 'add-reader'], [staged.writeConfig!.text, 'promote']] as const) {
      const p = planInit(input({ key: undefined, configText: text, configSource: 'from-config', controlPlanes: 2 }));
      expect(p.mode).toBe('from-config');
      expect(p.config.text).toBe(text);
      expect(p.config.sha256).toBe(stage === 'add-reader' ? staged.config.sha256 : staged.writeConfig!.sha256);
      expect(p.config.stage).toBe(stage);
      expect(p.steps.map((s) => s.name)).toEqual([stage]);
    }
  });

  it('from-config on a node already using the config path: only a restart annotation changes', () => {
    const staged = planInit(input({ controlPlanes: 2 }));
    const p = planInit(input({ key: undefined, manifestText: staged.manifest.newText, configText: staged.writeConfig!.text, configSource: 'from-config', existingConfigText: staged.config.text }));
    expect(p.manifest.changed).toBe(false);
    expect(p.restart?.changed).toBe(true);
    expect(p.restart?.diff).toContain(`${CONFIG_HASH_ANNOTATION}: "${staged.writeConfig!.sha256}"`);
  });

  it('a resumed run reuses the config file it wrote (same key, same sha)', () => {
    const first = planInit(input());
    const again = planInit(input({ key: undefined, configText: first.config.text, configSource: 'resume', existingConfigText: first.config.text, resuming: true, manifestText: first.manifest.newText }));
    expect(again.config.sha256).toBe(first.config.sha256);
    expect(again.manifest.changed).toBe(false);
    expect(again.replacesConfig).toBe(false);
  });

  const refusals: { name: string; in: InitInput; code: number; msg: RegExp }[] = [
    { name: 'already encrypted', in: input({ manifestText: fixture('already-configured.yaml') }), code: ExitCode.Refused, msg: /already configured/ },
    { name: 'a foreign config file at the path', in: input({ existingConfigText: 'apiVersion: v1\n' }), code: ExitCode.Refused, msg: /already exists/ },
    { name: 'secretbox key of the wrong size', in: input({ key: Buffer.alloc(16).toString('base64'), options: { provider: 'secretbox' } }), code: ExitCode.Usage, msg: /16 bytes; a secretbox key must be 32 bytes/ },
    { name: 'wildcards before 1.27', in: input({ manifestText: fixture('kubeadm-1.24.yaml'), kubeVersion: '1.24.17', options: { resources: ['*.*'] } }), code: ExitCode.Usage, msg: /1\.24/ },
    { name: 'a from-config that encrypts nothing', in: input({ key: undefined, configText: 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - identity: {}\n', configSource: 'from-config' }), code: ExitCode.Usage, msg: /encrypts nothing/ },
  ];
  for (const r of refusals) {
    it(`refuses: ${r.name}`, () => {
      let err: unknown;
      try {
        planInit(r.in);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CliError);
      expect((err as CliError).exitCode).toBe(r.code);
      expect((err as CliError).message).toMatch(r.msg);
      expect((err as CliError).message).not.toContain(KEY);
    });
  }

  it('--force replaces a foreign config file (the executor backs it up)', () => {
    const p = planInit(input({ existingConfigText: 'apiVersion: v1\n', options: { force: true } }));
    expect(p.replacesConfig).toBe(true);
  });
});

describe('enableStageOf', () => {
  const cfg = (providers: string) =>
    parseEncryptionConfig(`apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n${providers}`, 'x');
  const rows: [string, string][] = [
    ['identity first, the key as reader', `  - identity: {}\n  - aescbc: {keys: [{name: k, secret: "${KEY}"}]}\n`],
    ['the key first, identity last', `  - aescbc: {keys: [{name: k, secret: "${KEY}"}]}\n  - identity: {}\n`],
  ];
  it.each(rows)('%s', (name, providers) => {
    expect(enableStageOf(cfg(providers))).toBe(name.startsWith('identity first') ? 'add-reader' : 'promote');
  });
});

describe('planRestartAnnotation', () => {
  it('adds the annotation (and annotations:) once, then replaces its value', () => {
    const text = fixture('kubeadm-1.32.yaml');
    const a = planRestartAnnotation(text, MANIFEST, 'a'.repeat(64));
    expect(a.changed).toBe(true);
    expect(parse(a.newText).metadata.annotations[CONFIG_HASH_ANNOTATION]).toBe('a'.repeat(64));
    const b = planRestartAnnotation(a.newText, MANIFEST, 'b'.repeat(64));
    expect(parse(b.newText).metadata.annotations[CONFIG_HASH_ANNOTATION]).toBe('b'.repeat(64));
    expect(b.diff.split('\n').filter((l) => /^[-+] /.test(l))).toHaveLength(2);
    expect(planRestartAnnotation(b.newText, MANIFEST, 'b'.repeat(64)).changed).toBe(false);
  });

  it('a manifest whose metadata is not in block style is one usage error naming the file, not an internal error', () => {
    const text = fixture('kubeadm-1.32.yaml').replace(/^metadata:\n(?:  .*\n)+/m, 'metadata: {name: kube-apiserver, namespace: kube-system}\n');
    expect(text).toMatch(/^metadata: \{/m);
    let err: unknown;
    try {
      planRestartAnnotation(text, MANIFEST, 'd'.repeat(64));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).message).toContain(`${MANIFEST} has no block-style top-level "metadata:" mapping`);
  });

  it('works on JSON manifests', () => {
    const text = fixture('kube-apiserver.json');
    const a = planRestartAnnotation(text, '/x/kube-apiserver.json', 'c'.repeat(64));
    expect(JSON.parse(a.newText).metadata.annotations[CONFIG_HASH_ANNOTATION]).toBe('c'.repeat(64));
  });
});

describe('planInit: the kubeadm-config change', () => {
  const cc = (name: string) => ({ found: true as const, text: readFileSync(fileURLToPath(new URL(`../fixtures/manifests/${name}`, import.meta.url)), 'utf8'), resourceVersion: '42' });
  const cases: { name: string; over: Parameters<typeof input>[0]; status: string; diff?: RegExp }[] = [
    { name: 'v1beta4: extraArgs as a name/value list', over: { kubeadm: cc('clusterconfiguration-v1beta4.yaml') }, status: 'update', diff: /\+\s+- name: encryption-provider-config\n\+\s+value: \/etc\/kubernetes\/encryption\/config\.yaml/ },
    { name: 'v1beta3: extraArgs as a map', over: { kubeadm: cc('clusterconfiguration-v1beta3.yaml') }, status: 'update', diff: /\+\s+encryption-provider-config: \/etc\/kubernetes\/encryption\/config\.yaml/ },
    { name: 'no kubeadm-config ConfigMap', over: { kubeadm: { found: false, reason: 'no kube-system/kubeadm-config ConfigMap (not a kubeadm cluster?)' } }, status: 'skipped' },
    { name: '--no-kubeadm-config', over: { kubeadm: cc('clusterconfiguration-v1beta4.yaml'), options: { kubeadmConfig: false } }, status: 'skipped' },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const k = printablePlan(planInit(input(c.over))).kubeadmConfig as { status: string; diff?: string };
      expect(k.status).toBe(c.status);
      if (c.diff) expect(k.diff).toMatch(c.diff);
    });
  }
  it('is not planned when kubeadm-config could not be read', () => {
    expect(planInit(input()).kubeadmChange).toBeUndefined();
  });
  it('is the exact change: the text written, tied to the sha256 and resourceVersion it was planned from', () => {
    const read = cc('clusterconfiguration-v1beta4.yaml');
    const plan = planInit(input({ kubeadm: read }));
    const k = plan.kubeadmChange!;
    expect(k).toMatchObject({ status: 'update', inputSha256: sha256Hex(read.text), resourceVersion: '42' });
    expect(k.newText).toBe(planKubeadmConfigPatch(read.text, k.options).newText);
    expect(k.outputSha256).toBe(sha256Hex(k.newText!));
    // The stage that turns the flag on carries the same change, and the dry run shows it whole but the text.
    expect(plan.transition!.stages[0]!.kubeadm).toEqual(k);
    const shown = printablePlan(plan).kubeadmConfig as Record<string, unknown>;
    expect(shown).toMatchObject({ inputSha256: k.inputSha256, outputSha256: k.outputSha256, resourceVersion: '42', diff: k.diff });
    expect(shown).not.toHaveProperty('newText');
  });
});

describe('planInit and the apiserver\'s feature gates', () => {
  const kmsV1 = { provider: 'kms' as const, kms: { name: 'legacy', endpoint: 'unix:///var/run/kmsplugin/socket.sock', apiVersion: 'v1' as const } };
  it('refuses KMS v1 on 1.32 when the apiserver does not enable it', () => {
    expect(() => planInit(input({ key: undefined, options: kmsV1 }))).toThrow(/KMSv1 is deprecated and will only receive security updates going forward/);
  });
  it('plans KMS v1 on 1.32 with a warning when the manifest runs --feature-gates=KMSv1=true', () => {
    const manifestText = fixture('kubeadm-1.32.yaml').replace('    - kube-apiserver\n', '    - kube-apiserver\n    - --feature-gates=KMSv1=true\n');
    expect(manifestText).toContain('--feature-gates=KMSv1=true');
    const plan = planInit(input({ key: undefined, manifestText, options: kmsV1 }));
    expect(plan.expectedPrefix).toBe('k8s:enc:kms:v1:legacy:');
    expect(plan.warnings.join('\n')).toMatch(/KMSv1=true/);
  });
});
