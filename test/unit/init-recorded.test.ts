// A resumed init executes the changes its journal recorded: its --dry-run shows those (the
// manifest change, the kubeadm-config change), not a plan made again from the files it changed.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/config/parse';
import { planInit, printablePlan, type InitInput } from '../../src/init/plan';
import { recordedInitPlan } from '../../src/init/run';
import { MemoryJournal } from '../../src/transition/engine';
import { PLAN_STEP, planToRun } from '../../src/transition/recorded';

const fixture = (name: string) => readFileSync(fileURLToPath(new URL(`../fixtures/manifests/${name}`, import.meta.url)), 'utf8');
const KEY = Buffer.alloc(32, 7).toString('base64');
const MANIFEST = '/etc/kubernetes/manifests/kube-apiserver.yaml';
const CONFIG = '/etc/kubernetes/encryption/config.yaml';
const kubeadm = { found: true as const, text: fixture('clusterconfiguration-v1beta4.yaml'), resourceVersion: '42' };

const input = (over: Partial<InitInput> = {}): InitInput => ({
  manifestText: fixture('kubeadm-1.32.yaml'),
  kubeVersion: '1.32.6',
  kubeVersionSource: '/version',
  controlPlanes: 1,
  key: KEY,
  keyName: 'key-resume',
  kubeadm,
  ...over,
  options: { provider: 'aescbc', resources: ['secrets'], configPath: CONFIG, manifestPath: MANIFEST, timeoutMs: 300_000, kubeadmConfig: true, force: false },
});

/** The first run: planned and recorded as the engine records it; then its manifest patch written. */
async function interrupted() {
  const j = new MemoryJournal();
  const first = planInit(input());
  await planToRun(j, { info: () => undefined }, first.transition!.stages);
  const patched = first.install.newText;
  // The resumed run plans again from the patched manifest and the config it wrote.
  const resumed = (manifestText: string) =>
    planInit(input({ manifestText, configText: first.config.text, configSource: 'resume', existingConfigText: first.config.text, resuming: true }));
  return { j, first, patched, resumed };
}

describe('a resumed init --dry-run shows the recorded plan', () => {
  it('the manifest and kubeadm-config changes the run will execute, not those planned from the patched manifest', async () => {
    const { j, first, patched, resumed } = await interrupted();
    const again = resumed(patched);
    // Planned again, the patch is gone (the flag is there) and kubeadm-config is skipped.
    expect(printablePlan(again)).toMatchObject({ manifest: { changed: false }, kubeadmConfig: { status: 'skipped' } });
    const recorded = j.output(PLAN_STEP);
    const said: string[] = [];
    const shown = recordedInitPlan(j, again, { path: MANIFEST, text: patched, say: (m) => void said.push(m) });
    expect(said).toEqual([]);
    const p = printablePlan(shown);
    expect(p.manifest).toEqual(printablePlan(first).manifest);
    expect(p.kubeadmConfig).toEqual(printablePlan(first).kubeadmConfig);
    expect(p.restartAnnotation).toBeUndefined();
    expect(shown.transition!.stages).toEqual(first.transition!.stages);
    // Read-only: the journal's plan is kept.
    expect(j.output(PLAN_STEP)).toBe(recorded);
    expect(JSON.stringify(p)).not.toContain(KEY);
  });

  it('a manifest changed since the plan: "would re-plan: ..." in the run\'s words, and the change planned from the file', async () => {
    const { j, first, patched, resumed } = await interrupted();
    const edited = `${patched}# an operator's edit\n`;
    expect(first.install.inputSha256).toBe(sha256Hex(fixture('kubeadm-1.32.yaml')));
    const again = resumed(edited);
    const said: string[] = [];
    const shown = recordedInitPlan(j, again, { path: MANIFEST, text: edited, say: (m) => void said.push(m) });
    expect(said).toEqual([
      `would re-plan: ${MANIFEST} changed since the plan (sha256 ${first.install.inputSha256.slice(0, 12)}… is now ${sha256Hex(edited).slice(0, 12)}…): its change is planned again from the file as it is`,
    ]);
    expect(shown.install).toEqual(again.install);
    expect(printablePlan(shown).manifest).toEqual(printablePlan(again).manifest);
    // The kubeadm-config change stays the recorded one (the run checks it against the ConfigMap).
    expect(shown.kubeadmChange).toEqual(first.kubeadmChange);
  });

  it('a journal without a recorded plan: the plan as made', () => {
    const plan = planInit(input());
    const shown = recordedInitPlan(new MemoryJournal(), plan, { path: MANIFEST, text: plan.install.newText, say: () => undefined });
    expect(printablePlan(shown)).toEqual(printablePlan(plan));
  });
});
