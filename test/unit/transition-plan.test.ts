import { describe, expect, it } from 'vitest';
import { parseEncryptionConfig } from '../../src/config/parse';
import { buildEncryptionConfig, renderEncryptionConfig } from '../../src/config/render';
import type { EncryptionConfiguration, ProviderConfig } from '../../src/config/schema';
import { CliError, ExitCode } from '../../src/ui/errors';
import {
  allSteps,
  describeConfigText,
  identityConfigText,
  planTransition,
  printableTransition,
  readersOf,
  resumePoint,
  stageOfSha,
  stepsOf,
  unreadableLabels,
  type TransitionInput,
} from '../../src/transition/plan';
import { assertNothingUnder, plaintextByMetrics, toStorageCounts } from '../../src/transition/run';
import { parseMetrics } from '../../src/cluster/wait';

const K1 = Buffer.alloc(32, 1).toString('base64');
const K2 = Buffer.alloc(32, 2).toString('base64');
const K3 = Buffer.alloc(32, 3).toString('base64');

const baseCfg = (provider: 'aescbc' | 'secretbox' = 'aescbc', name = 'key-20260101T000000Z', key = K1): EncryptionConfiguration =>
  buildEncryptionConfig({ provider, keyName: name, key, resources: ['secrets'] });
const text = (c: EncryptionConfiguration) => renderEncryptionConfig(c);
const el = (kind: 'aescbc' | 'secretbox' | 'aesgcm', name: string, secret: string): ProviderConfig => ({ [kind]: { keys: [{ name, secret }] } });

const input = (o: Partial<TransitionInput>): TransitionInput => ({
  kind: 'rotate',
  baseText: text(baseCfg()),
  configPath: '/etc/kubernetes/encryption/config.yaml',
  element: el('aescbc', 'key-20260301T000000Z', K2),
  controlPlanes: 1,
  kubeVersion: '1.32.6',
  ...o,
});

describe('planTransition: stages per shape', () => {
  const rows: { name: string; in: Partial<TransitionInput>; stages: string[]; writes: (string | undefined)[]; removes: string[][] }[] = [
    {
      name: 'rotate, one control plane: no add-reader',
      in: {},
      stages: ['promote', 'rewrite', 'prune'],
      writes: ['aescbc:key-20260301T000000Z', undefined, 'aescbc:key-20260301T000000Z'],
      removes: [[], [], ['aescbc:key-20260101T000000Z', 'plaintext']],
    },
    {
      name: 'rotate, two control planes: add-reader first, old key still writes',
      in: { controlPlanes: 2 },
      stages: ['add-reader', 'promote', 'rewrite', 'prune'],
      writes: ['aescbc:key-20260101T000000Z', 'aescbc:key-20260301T000000Z', undefined, 'aescbc:key-20260301T000000Z'],
      removes: [[], [], [], ['aescbc:key-20260101T000000Z', 'plaintext']],
    },
    {
      name: 'provider change aescbc → secretbox, two control planes',
      in: { controlPlanes: 2, element: el('secretbox', 'key-20260301T000000Z', K3) },
      stages: ['add-reader', 'promote', 'rewrite', 'prune'],
      writes: ['aescbc:key-20260101T000000Z', 'secretbox:key-20260301T000000Z', undefined, 'secretbox:key-20260301T000000Z'],
      removes: [[], [], [], ['aescbc:key-20260101T000000Z', 'plaintext']],
    },
    {
      name: 'disable, one control plane: identity first, then unpatch',
      in: { kind: 'disable', element: undefined },
      stages: ['promote', 'rewrite', 'prune'],
      writes: ['plaintext', undefined, undefined],
      removes: [[], [], ['aescbc:key-20260101T000000Z']],
    },
    {
      name: 'disable, two control planes, identity already a reader: no add-reader',
      in: { kind: 'disable', element: undefined, controlPlanes: 2 },
      stages: ['promote', 'rewrite', 'prune'],
      writes: ['plaintext', undefined, undefined],
      removes: [[], [], ['aescbc:key-20260101T000000Z']],
    },
    {
      name: 'disable, two control planes, no identity reader: add it first',
      in: {
        kind: 'disable',
        element: undefined,
        controlPlanes: 2,
        baseText: text({ ...baseCfg(), resources: [{ resources: ['secrets'], providers: [el('aescbc', 'k1', K1)] }] }),
      },
      stages: ['add-reader', 'promote', 'rewrite', 'prune'],
      writes: ['aescbc:k1', 'plaintext', undefined, undefined],
      removes: [[], [], [], ['aescbc:k1']],
    },
    {
      name: 'enable, one control plane: the key writes at once, identity stays, no prune',
      in: { kind: 'enable', baseText: identityConfigText(['secrets']) },
      stages: ['promote', 'rewrite'],
      writes: ['aescbc:key-20260301T000000Z', undefined],
      removes: [[], []],
    },
    {
      name: 'enable, two control planes: identity first with the key as reader, then promote',
      in: { kind: 'enable', baseText: identityConfigText(['secrets']), controlPlanes: 2 },
      stages: ['add-reader', 'promote', 'rewrite'],
      writes: ['plaintext', 'aescbc:key-20260301T000000Z', undefined],
      removes: [[], [], []],
    },
  ];
  it.each(rows)('$name', (row) => {
    const plan = planTransition(input(row.in));
    expect(plan.stages.map((s) => s.name)).toEqual(row.stages);
    expect(plan.stages.map((s) => s.config?.writeLabel)).toEqual(row.writes);
    expect(plan.stages.map((s) => s.removes)).toEqual(row.removes);
    // Every stage config reads what the one before it writes: nothing becomes unreadable mid-way.
    let prev = parseEncryptionConfig(plan.base.text, 'base');
    for (const s of plan.stages.filter((x) => x.config)) {
      const next = parseEncryptionConfig(s.config!.text, s.name);
      if (!s.removes.length) expect(readersOf(next, 'secrets')).toContain(readersOf(prev, 'secrets')[0]);
      prev = next;
    }
  });
});

describe('planTransition: the configs themselves', () => {
  it('enable: only its first stage brings the flag, and identity is kept as the last reader', () => {
    const plan = planTransition(input({ kind: 'enable', baseText: identityConfigText(['secrets']), controlPlanes: 2 }));
    expect(plan.stages.map((s) => Boolean(s.patch))).toEqual([true, false, false]);
    expect(stepsOf(plan.stages[0]!, 2)).toContain('add-reader:kubeadm-config');
    expect(stepsOf(plan.stages[1]!, 2)).not.toContain('promote:kubeadm-config');
    const promote = parseEncryptionConfig(plan.stages[1]!.config!.text, 'promote');
    expect(readersOf(promote, 'secrets')).toEqual(['aescbc:key-20260301T000000Z', 'plaintext']);
    expect(plan.kept.join()).toMatch(/identity stays as the last reader/);
  });

  it('add-reader puts the new key second, promote first, prune keeps only it', () => {
    const plan = planTransition(input({ controlPlanes: 2 }));
    const [add, promote, , prune] = plan.stages.map((s) => (s.config ? parseEncryptionConfig(s.config.text, s.name) : undefined));
    expect(readersOf(add!, 'secrets')).toEqual(['aescbc:key-20260101T000000Z', 'aescbc:key-20260301T000000Z', 'plaintext']);
    expect(readersOf(promote!, 'secrets')).toEqual(['aescbc:key-20260301T000000Z', 'aescbc:key-20260101T000000Z', 'plaintext']);
    expect(readersOf(prune!, 'secrets')).toEqual(['aescbc:key-20260301T000000Z']);
    expect(plan.kept).toEqual(['aescbc "key-20260301T000000Z" (the write key)']);
  });

  it('keeps identity at prune where a wildcard rule may cover unlisted plaintext, and says why', () => {
    const cfg: EncryptionConfiguration = { ...baseCfg(), resources: [{ resources: ['secrets'], providers: [el('aescbc', 'k1', K1), { identity: {} }] }, { resources: ['*.*'], providers: [el('aescbc', 'k0', K3), { identity: {} }] }] };
    const plan = planTransition(input({ baseText: text(cfg) }));
    const prune = parseEncryptionConfig(plan.stages.at(-1)!.config!.text, 'prune');
    expect(readersOf(prune, 'secrets')).toEqual(['aescbc:key-20260301T000000Z', 'plaintext']);
    expect(plan.kept[0]).toMatch(/identity stays.*wildcard/);
    expect(plan.resources).toEqual(['secrets']);
  });

  it('is deterministic (a resumed run recognises its files by sha256) and redacts every key', () => {
    const a = planTransition(input({ controlPlanes: 2 }));
    const b = planTransition(input({ controlPlanes: 2 }));
    expect(a.stages.map((s) => s.config?.sha256)).toEqual(b.stages.map((s) => s.config?.sha256));
    const printed = JSON.stringify(printableTransition(a));
    for (const k of [K1, K2]) expect(printed).not.toContain(k);
    expect(printed).toContain('<redacted>');
    expect(a.stages[0]!.diff).toMatch(/^\+.*key-20260301T000000Z/m);
  });

  it.each([
    ['rotating a config that writes plaintext', { baseText: text({ ...baseCfg(), resources: [{ resources: ['secrets'], providers: [{ identity: {} }, el('aescbc', 'k1', K1)] }] }) }],
    ['a new key under a name already there', { element: el('aescbc', 'key-20260101T000000Z', K2) }],
    ['disabling a config with nothing but identity', { kind: 'disable' as const, element: undefined, baseText: text({ ...baseCfg(), resources: [{ resources: ['secrets'], providers: [{ identity: {} }] }] }) }],
  ])('refuses %s', (_, o) => {
    try {
      planTransition(input(o));
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(CliError);
      expect((err as CliError).exitCode).toBe(ExitCode.Refused);
    }
  });
});

describe('resumption from each journal state', () => {
  const plan = planTransition(input({ controlPlanes: 2 }));
  const steps = allSteps(plan);
  it('lists the steps of each stage in order, the commit point bracketed', () => {
    expect(stepsOf(plan.stages[0]!, 2)).toEqual(['add-reader:begin', 'add-reader:write', 'add-reader:apply', 'add-reader:wait', 'add-reader:prove', 'add-reader:record', 'add-reader:gate']);
    expect(stepsOf(plan.stages[2]!, 2)).toEqual(['rewrite:run', 'rewrite:verify']);
    expect(stepsOf(plan.stages[3]!, 1)[0]).toBe('prune:check');
    expect(stepsOf(plan.stages[3]!, 1)).not.toContain('prune:gate');
  });
  it.each(steps.map((s, i) => [s, i] as const))('after everything before %s, the run continues there', (step, i) => {
    const at = resumePoint(plan, steps.slice(0, i));
    expect(at.step).toBe(step);
    expect(at.stage).toBe(step.split(':')[0]);
    expect(at.done).toEqual(plan.stages.filter((s) => stepsOf(s, 2).every((x) => steps.indexOf(x) < i)).map((s) => s.name));
  });
  it('with every step done there is nothing left', () => {
    expect(resumePoint(plan, steps)).toEqual({ done: ['add-reader', 'promote', 'rewrite', 'prune'] });
  });
  it('names the stage a config file stands for', () => {
    expect(stageOfSha(plan, plan.base.sha256)).toBe('base');
    expect(stageOfSha(plan, plan.stages[1]!.config!.sha256)).toBe('promote');
    expect(stageOfSha(plan, 'f'.repeat(64))).toBeUndefined();
  });
});

describe('unreadableLabels: what a config could no longer read', () => {
  const cfg = parseEncryptionConfig(text(baseCfg()), 'c');
  it.each([
    [{ 'aescbc:key-20260101T000000Z': 5, plaintext: 2 }, []],
    [{ 'aescbc:old': 3 }, [{ resource: 'secrets', label: 'aescbc:old', count: 3 }]],
    [{ 'secretbox:key-20260101T000000Z': 1, 'aescbc:old': 0 }, [{ resource: 'secrets', label: 'secretbox:key-20260101T000000Z', count: 1 }]],
  ])('%j', (counts, want) => {
    expect(unreadableLabels(cfg, [{ resource: 'secrets', counts }])).toEqual(want);
  });
  it('a resource no rule covers reads plaintext only', () => {
    expect(unreadableLabels(cfg, [{ resource: 'configmaps', counts: { plaintext: 4, 'aescbc:x': 1 } }])).toEqual([{ resource: 'configmaps', label: 'aescbc:x', count: 1 }]);
  });
});

describe('assertNothingUnder: the refusal names what etcd holds, with the caller\'s hint', () => {
  const cfg = parseEncryptionConfig(text(baseCfg()), 'c');
  const scan = [{ resource: 'secrets', counts: { 'aescbc:old': 3 }, examples: { 'aescbc:old': ['default/a'] }, writeLabel: 'aescbc:key-20260101T000000Z', stale: 3 }];
  const quiet = { step() {}, info() {}, warn() {}, success() {} };
  const refusal = (hint?: string) => {
    try {
      assertNothingUnder(scan, cfg, 'restore x', false, quiet, ...(hint === undefined ? [] : [hint]));
    } catch (err) {
      return err as CliError;
    }
    throw new Error('not refused');
  };
  it.each([
    ['a command with --force (default)', undefined, /re-encrypt-all --verify.*pass --force/],
    ['rollback, which has no --force', 'restore a copy that still reads them (--to FILE)', /^restore a copy that still reads them \(--to FILE\)$/],
  ])('%s', (_what, hint, want) => {
    const err = refusal(hint);
    expect(err.exitCode).toBe(ExitCode.Refused);
    expect(err.message).toBe('refusing to restore x: etcd still holds 3 secrets under aescbc:old (e.g. default/a)');
    expect(err.hint).toMatch(want);
  });
});

describe('plaintextByMetrics: the weaker proof of plaintext writes from the transformation counts', () => {
  // What kube-apiserver exposes: identity is counted under its empty prefix.
  const metrics = (identity: number, encrypted: number, extra = '') =>
    parseMetrics(
      [
        `apiserver_storage_transformation_operations_total{status="OK",transformation_type="to_storage",transformer_prefix=""} ${identity}`,
        `apiserver_storage_transformation_operations_total{status="OK",transformation_type="to_storage",transformer_prefix="k8s:enc:aescbc:v1:key-1:"} ${encrypted}`,
        `apiserver_storage_transformation_operations_total{status="OK",transformation_type="from_storage",transformer_prefix="k8s:enc:aescbc:v1:key-1:"} 50`,
        `apiserver_storage_transformation_operations_total{status="Unknown",transformation_type="to_storage",transformer_prefix=""} 7`,
        extra,
      ].join('\n'),
    );
  it('counts to_storage OK samples, identity apart from k8s:enc: prefixes', () => {
    expect(toStorageCounts(metrics(4, 2))).toEqual({ identity: 4, encrypted: 2 });
    expect(toStorageCounts(parseMetrics('process_start_time_seconds 1\n'))).toEqual({ identity: 0, encrypted: 0 });
  });
  it.each([
    ['the canary counted under identity only', metrics(4, 2), metrics(5, 2), 'plaintext'],
    ['an encrypted write with the canary (the config is not running)', metrics(4, 2), metrics(5, 3), 'encrypted'],
    ['encrypted only', metrics(4, 2), metrics(4, 3), 'encrypted'],
    ['nothing counted (no config loaded at all)', metrics(0, 0), metrics(0, 0), 'unproven'],
    ['a failed identity write does not count', metrics(4, 2), metrics(4, 2, 'apiserver_storage_transformation_operations_total{status="Unknown",transformation_type="to_storage",transformer_prefix=""} 9'), 'unproven'],
  ])('%s: %s', (_what, before, after, want) => {
    expect(plaintextByMetrics(toStorageCounts(before), toStorageCounts(after))).toBe(want);
  });
});

describe('one rule for which providers serve a resource', () => {
  // Upstream appends every rule naming a group/resource (encryptionconfig/config.go), so a second
  // rule for secrets is a reader of secrets; and the writer of secrets may come from a wildcard.
  const cfg: EncryptionConfiguration = {
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: [
      { resources: ['configmaps'], providers: [el('aescbc', 'cm', K1)] },
      { resources: ['secrets'], providers: [el('secretbox', 'new', K2)] },
      { resources: ['secrets'], providers: [el('aesgcm', 'old', K3)] },
      { resources: ['*.*'], providers: [el('aescbc', 'all', K3)] },
    ],
  };

  it('reads through every exact rule, in file order', () => {
    expect(readersOf(cfg, 'secrets')).toEqual(['secretbox:new', 'aesgcm:old']);
    expect(readersOf(cfg, 'pods')).toEqual(['aescbc:all']);
    expect(unreadableLabels(cfg, [{ resource: 'secrets', counts: { 'aesgcm:old': 2, 'aescbc:all': 1 } }])).toEqual([
      { resource: 'secrets', label: 'aescbc:all', count: 1 },
    ]);
  });

  it('describes the writer of secrets by one resource (prefix and label agree)', () => {
    const wild: EncryptionConfiguration = { ...cfg, resources: [cfg.resources[0]!, cfg.resources[3]!] };
    expect(describeConfigText(text(wild), wild)).toMatchObject({ writeLabel: 'aescbc:all', writePrefix: 'k8s:enc:aescbc:v1:all:' });
    expect(describeConfigText(text(cfg), cfg)).toMatchObject({ writeLabel: 'secretbox:new', writePrefix: 'k8s:enc:secretbox:v1:new:' });
  });
});
