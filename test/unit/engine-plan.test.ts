// The plan is what runs: each stage carries its exact manifest change, tied to the sha256 of the
// manifest text it was planned from; the executor's check takes the plan, recognises a change
// already written, and plans again from a manifest that changed since.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseEncryptionConfig, sha256Hex } from '../../src/config/parse';
import { assertFollowerReads } from '../../src/transition/front';
import { buildEncryptionConfig, renderEncryptionConfig } from '../../src/config/render';
import { CONFIG_HASH_ANNOTATION } from '../../src/manifest/restart';
import { checkPlanned, planInstallChange } from '../../src/transition/manifest-change';
import { identityConfigText, planTransition } from '../../src/transition/plan';
import { planKubeadmConfigPatch } from '../../src/manifest/kubeadm-config';
import { MemoryJournal } from '../../src/transition/engine';
import { PLAN_STEP, planToRun, recordedStages } from '../../src/transition/recorded';
import { provePlaintext, type ProofDeps } from '../../src/cluster/proof';
import { ApiError } from '../../src/cluster/errors';
import { CliError, ExitCode } from '../../src/ui/errors';

const MANIFEST = '/etc/kubernetes/manifests/kube-apiserver.yaml';
const CONFIG = '/etc/kubernetes/encryption/config.yaml';
const fixture = (name: string) => readFileSync(fileURLToPath(new URL(`../fixtures/manifests/${name}`, import.meta.url)), 'utf8');
const K1 = Buffer.alloc(32, 1).toString('base64');
const K2 = Buffer.alloc(32, 2).toString('base64');
const baseText = renderEncryptionConfig(buildEncryptionConfig({ provider: 'aescbc', keyName: 'k1', key: K1, resources: ['secrets'] }));
// A manifest that already runs the config (what rotate-key starts from).
const encrypted = planInstallChange(fixture('kubeadm-1.32.yaml'), { manifestPath: MANIFEST, configPath: CONFIG, config: { text: baseText, redacted: '', sha256: sha256Hex(baseText), writeLabel: 'aescbc:k1' } }).newText;

const rotate = (controlPlanes: number) =>
  planTransition({
    kind: 'rotate', baseText, configPath: CONFIG, element: { aescbc: { keys: [{ name: 'k2', secret: K2 }] } },
    controlPlanes, kubeVersion: '1.32.6', manifest: { text: encrypted, path: MANIFEST },
  });

describe('stage plans carry their manifest change', () => {
  it('each install stage annotates the pod with its own config sha256, planned from the text the stage before leaves', () => {
    const plan = rotate(2);
    let text = encrypted;
    for (const st of plan.stages) {
      if (!st.config) {
        expect(st.manifest).toBeUndefined();
        continue;
      }
      const m = st.manifest!;
      expect(m.inputSha256).toBe(sha256Hex(text));
      expect(m.outputSha256).toBe(sha256Hex(m.newText));
      expect(m.mode).toBe('restart');
      expect(m.changed).toBe(true);
      expect(m.turnsOn).toBe(false);
      expect(m.newText).toContain(`${CONFIG_HASH_ANNOTATION}: "${st.config.sha256}"`);
      text = m.newText;
    }
    expect(plan.stages.filter((s) => s.manifest).map((s) => s.name)).toEqual(['add-reader', 'promote', 'prune']);
  });

  it('disable plans the unpatch of its prune stage: the flag goes', () => {
    const plan = planTransition({ kind: 'disable', baseText, configPath: CONFIG, controlPlanes: 1, kubeVersion: '1.32.6', manifest: { text: encrypted, path: MANIFEST } });
    const prune = plan.stages.find((s) => s.name === 'prune')!;
    expect(prune.manifest?.turnsOff).toBe(true);
    expect(prune.manifest?.newText).not.toContain('--encryption-provider-config');
    expect(prune.manifest?.kubeadm?.remove).toBe(true);
  });

  it('with kubeadm-config read, the stage that turns the flag off carries its exact change, tied to what was read', () => {
    const cc = planKubeadmConfigPatch(fixture('clusterconfiguration-v1beta4.yaml'), { configPath: CONFIG, mountDir: '/etc/kubernetes/encryption', volumeName: 'encryption-config' }).newText;
    const plan = planTransition({
      kind: 'disable', baseText, configPath: CONFIG, controlPlanes: 1, kubeVersion: '1.32.6', manifest: { text: encrypted, path: MANIFEST },
      kubeadm: { found: true, text: cc, resourceVersion: '7' },
    });
    expect(plan.stages.filter((s) => s.kubeadm).map((s) => s.name)).toEqual(['prune']);
    const k = plan.stages.find((s) => s.name === 'prune')!.kubeadm!;
    expect(k).toMatchObject({ status: 'update', inputSha256: sha256Hex(cc), resourceVersion: '7' });
    expect(k.newText).not.toContain('encryption-provider-config');
    expect(k.outputSha256).toBe(sha256Hex(k.newText!));
    expect(k.diff).toMatch(/^-\s+- name: encryption-provider-config$/m);
  });
});

describe('a resumed run executes the plan its journal recorded', () => {
  const enable = (manifestText: string, key = K1) =>
    planTransition({
      kind: 'enable', baseText: identityConfigText(['secrets']), configPath: CONFIG, element: { aescbc: { keys: [{ name: 'k1', secret: key }] } },
      controlPlanes: 1, kubeVersion: '1.32.6', manifest: { text: manifestText, path: MANIFEST },
      kubeadm: { found: true, text: fixture('clusterconfiguration-v1beta4.yaml'), resourceVersion: '3' },
    });

  it('records the changes first, and a re-plan from the patched manifest does not replace them', async () => {
    const j = new MemoryJournal();
    const lines: string[] = [];
    const out = { info: (m: string) => void lines.push(m) };
    const first = enable(fixture('kubeadm-1.32.yaml'));
    expect(await planToRun(j, out, first.stages)).toEqual(first.stages);
    expect(lines).toEqual([]);
    const recorded = j.output(PLAN_STEP)!;
    expect(JSON.stringify(recorded)).not.toContain(K1);

    // Resumed after the manifest was patched: the new plan would annotate instead of patching.
    const again = enable(first.stages[0]!.manifest!.newText);
    expect(again.stages[0]!.manifest!.turnsOn).toBe(false);
    // A resumed --dry-run shows what will run, and records nothing.
    expect(recordedStages(j, again.stages)[0]!.manifest).toEqual(first.stages[0]!.manifest);
    expect(j.output(PLAN_STEP)).toBe(recorded);
    const run = await planToRun(j, out, again.stages);
    expect(lines).toEqual([expect.stringMatching(/^resumed from the plan recorded in the journal/)]);
    expect(run[0]!.manifest).toEqual(first.stages[0]!.manifest);
    expect(run[0]!.kubeadm).toEqual(first.stages[0]!.kubeadm);
    expect(run[0]!.config).toBe(again.stages[0]!.config);
    // And the executor's check sees the patch already written: nothing to write, kubeadm-config still to record.
    const c = checkPlanned(run[0]!.manifest, first.stages[0]!.manifest!.newText, () => again.stages[0]!.manifest!);
    expect(c).toMatchObject({ alreadyApplied: true, replanned: false, change: { turnsOn: true, changed: false } });
  });

  it('stage configs planned anew (a new key before any was written) are recorded again, and said so', async () => {
    const j = new MemoryJournal();
    const lines: string[] = [];
    const out = { info: (m: string) => void lines.push(m) };
    await planToRun(j, out, enable(fixture('kubeadm-1.32.yaml')).stages);
    const other = enable(fixture('kubeadm-1.32.yaml'), K2);
    expect(await planToRun(j, out, other.stages)).toEqual(other.stages);
    expect(lines).toEqual([expect.stringMatching(/planned anew .* recorded again/)]);
    expect(j.output(PLAN_STEP)).toMatchObject({ stages: [{ configSha256: other.stages[0]!.config!.sha256 }, { configSha256: null }] });
  });
});

describe('a resumed --dry-run checks the recorded changes against the manifest as the run does', () => {
  const rotateFrom = (text: string) =>
    planTransition({
      kind: 'rotate', baseText, configPath: CONFIG, element: { aescbc: { keys: [{ name: 'k2', secret: K2 }] } },
      controlPlanes: 1, kubeVersion: '1.32.6', manifest: { text, path: MANIFEST },
    });

  it('says "would re-plan: FILE changed since the plan" in the run\'s words, and shows the change planned from the file', async () => {
    const j = new MemoryJournal();
    const first = rotateFrom(encrypted);
    await planToRun(j, { info: () => undefined }, first.stages);
    const recorded = j.output(PLAN_STEP);
    const said: string[] = [];
    const say = (m: string) => void said.push(m);
    // The manifest as planned: the recorded changes, nothing said.
    expect(recordedStages(j, first.stages, { path: MANIFEST, text: encrypted, say })).toEqual(first.stages);
    expect(said).toEqual([]);

    const edited = `${encrypted}# an operator's edit\n`;
    const again = rotateFrom(edited);
    const shown = recordedStages(j, again.stages, { path: MANIFEST, text: edited, say });
    const i = first.stages.findIndex((st) => st.manifest);
    expect(said[0]).toBe(
      `would re-plan: ${MANIFEST} changed since the plan (sha256 ${sha256Hex(encrypted).slice(0, 12)}… is now ${sha256Hex(edited).slice(0, 12)}…): its change is planned again from the file as it is`,
    );
    expect(said.every((m) => m.startsWith(`would re-plan: ${MANIFEST} changed since the plan (`))).toBe(true);
    expect(shown[i]!.manifest).toEqual(again.stages[i]!.manifest);
    expect(shown[i]!.manifest!.newText).toContain("# an operator's edit");
    // Read-only: the journal's plan is kept.
    expect(j.output(PLAN_STEP)).toBe(recorded);
  });
});

describe('checkPlanned: the executor applies a change only while its input hashes as planned', () => {
  const planned = rotate(1).stages.find((s) => s.manifest)!.manifest!;
  const replan = (t: string) => ({ ...planned, inputSha256: sha256Hex(t), newText: `${t}# replanned\n` });

  it('the manifest as planned: the planned change, not re-planned', () => {
    const r = checkPlanned(planned, encrypted, replan);
    expect(r).toMatchObject({ replanned: false, alreadyApplied: false });
    expect(r.change).toBe(planned);
  });

  it('the manifest already holds the change (written before kill -9): nothing to write', () => {
    const r = checkPlanned(planned, planned.newText, replan);
    expect(r).toMatchObject({ replanned: false, alreadyApplied: true });
    expect(r.change.changed).toBe(false);
  });

  it('a manifest changed since the plan: planned again from the file as it is, and flagged', () => {
    const edited = `${encrypted}# an operator's edit\n`;
    const r = checkPlanned(planned, edited, replan);
    expect(r.replanned).toBe(true);
    expect(r.change.inputSha256).toBe(sha256Hex(edited));
    expect(r.change.newText).toContain('# replanned');
  });
});

describe('the plaintext proof', () => {
  it('an API error creating the canary is a cluster error (exit 3) naming the canary, not an internal error', async () => {
    const api: ProofDeps<object>['api'] = {
      delete: async () => {
        throw new Error('not there');
      },
      getText: async () => '',
      post: async () => {
        throw new ApiError({ status: 403, method: 'POST', path: '/api/v1/namespaces/kube-system/secrets', url: 'https://127.0.0.1:6443/api/v1/namespaces/kube-system/secrets', message: 'secrets is forbidden: User "x" cannot create resource "secrets"' });
      },
    };
    let err: unknown;
    try {
      await provePlaintext({ api, openEtcd: async () => ({ get: async () => undefined, close() {} }) }, { etcd: {}, name: 'k8s-encrypt-canary-test' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Cluster);
    expect((err as CliError).message).toMatch(/cannot create the canary Secret kube-system\/k8s-encrypt-canary-test/);
  });
});

describe('assertFollowerReads (init --from-config and the rotate-key/disable followers)', () => {
  const parse = (t: string) => parseEncryptionConfig(t, 'x');
  const current = parse(baseText);
  const skipped = renderEncryptionConfig(buildEncryptionConfig({ provider: 'aescbc', keyName: 'k2', key: K2, resources: ['secrets'] }));
  const warnings: string[] = [];
  const o = { label: 'copy.yaml', text: skipped, cfg: parse(skipped), current, configPath: CONFIG, warn: (m: string) => warnings.push(m) };

  it('a file that writes with a key this node does not read yet is refused (exit 6)', () => {
    let err: unknown;
    try {
      assertFollowerReads({ ...o, force: false });
    } catch (e) {
      err = e;
    }
    expect((err as CliError).exitCode).toBe(ExitCode.Refused);
    expect((err as CliError).message).toMatch(/copy\.yaml writes with aescbc:k2, which .* does not read yet/);
  });

  it('--force goes ahead with a warning; a writer it already reads passes', () => {
    assertFollowerReads({ ...o, force: true });
    expect(warnings.join('\n')).toMatch(/^--force: copy\.yaml writes with aescbc:k2/);
    expect(() => assertFollowerReads({ ...o, text: baseText, cfg: current, force: false })).not.toThrow();
  });
});
