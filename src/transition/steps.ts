import { z } from 'zod';
import type { JsonObject } from '../state/journal';
import { CliError, ExitCode } from '../ui/errors';
import type { StepJournal } from './engine';

/**
 * What each journaled step records, as a schema: a step's output is checked when it is written
 * and when a resumed run reads it back, so the executor works with typed values (never casts),
 * and a journal edited by hand or left by another version is one clear error. No key material:
 * paths, hashes, times, counts and evidence lines only.
 */

const nullableString = z.string().nullable();

const kubeadmVolume = z.object({ name: z.string(), dir: z.string(), pathType: z.enum(['Directory', 'DirectoryOrCreate']), readOnly: z.boolean().optional() });
const KubeadmOptionsSchema = z.object({
  configPath: z.string(),
  mountDir: z.string().optional(),
  volumeName: z.string().optional(),
  extraVolumes: z.array(kubeadmVolume).optional(),
  reloadFlag: z.boolean().optional(),
  remove: z.boolean().optional(),
});

/** A stage's manifest change as planned (manifest-change.ts): texts and hashes, no key. */
const ManifestChangeSchema = z.object({
  inputSha256: z.string(),
  outputSha256: z.string(),
  mode: z.enum(['restart', 'reload']),
  changed: z.boolean(),
  newText: z.string(),
  diff: z.string(),
  actions: z.array(z.string()),
  turnsOn: z.boolean(),
  turnsOff: z.boolean(),
  kubeadm: KubeadmOptionsSchema.optional(),
  notes: z.array(z.string()),
});

/** A stage's kubeadm-config change as planned (manifest/kubeadm-config.ts): ClusterConfiguration texts and hashes. */
const KubeadmChangeSchema = z.object({
  status: z.enum(['update', 'unchanged', 'skipped']),
  reason: z.string().optional(),
  inputSha256: nullableString,
  outputSha256: nullableString,
  resourceVersion: nullableString,
  apiVersion: z.string().optional(),
  newText: nullableString,
  diff: z.string(),
  actions: z.array(z.string()),
  options: KubeadmOptionsSchema,
});

export const Step = {
  /** The plan's changes as the run began: a resumed run executes these, not a new plan. Each
   * stage is tied to its config's sha256 (the configs hold keys: they are not recorded). */
  plan: z.object({
    stages: z.array(z.object({ name: z.string(), configSha256: nullableString, manifest: ManifestChangeSchema.optional(), kubeadm: KubeadmChangeSchema.optional() })),
  }),
  /** Before the config write: the file it replaces (sha256, backup) and whether the flag was there. */
  begin: z.object({ from: nullableString, backup: nullableString, flag: z.boolean(), at: z.string() }),
  write: z.object({ at: z.string(), changed: z.boolean() }),
  /** The manifest change as applied: when, how the restart is detected, its backup. */
  apply: z.object({
    mode: z.enum(['restart', 'reload']),
    since: z.string(),
    mirrorHashBefore: nullableString,
    backup: nullableString,
    manifestSha256: z.string().optional(),
    kubeadm: KubeadmOptionsSchema.optional(),
  }),
  wait: z.object({ evidence: z.string(), detail: z.string() }),
  prove: z.object({ method: z.string(), weaker: z.boolean(), observed: z.string(), detail: z.string() }),
  kubeadmConfig: z.object({ status: z.string(), reason: z.string().optional(), apiVersion: z.string().optional(), sha256: z.string().optional(), replanned: z.boolean().optional() }),
  record: z.object({ where: z.string() }),
  check: z.object({ unreadable: z.array(z.object({ resource: z.string(), label: z.string(), count: z.number() })), forced: z.boolean().optional() }),
  gate: z.object({ forced: z.boolean() }),
  rewrite: z.object({
    rewritten: z.number(),
    unchanged: z.number(),
    deleted: z.number(),
    failed: z.number(),
    // Since the fleet's summary: how long it took and where the adaptive concurrency settled.
    seconds: z.number().optional(),
    objectsPerSecond: z.number().optional(),
    concurrency: z.object({ mode: z.enum(['adaptive', 'fixed']), settled: z.number(), peak: z.number(), max: z.number(), cuts: z.number() }).optional(),
  }),
  verify: z.object({ detail: z.string(), weaker: z.boolean().optional() }),
  unpatch: z.object({ since: z.string(), mirrorHashBefore: nullableString, configPathInPod: z.string(), volumeName: nullableString, changed: z.boolean(), backup: nullableString }),
  removeConfig: z.object({ backup: nullableString }),
} as const;

export type StepOutput<K extends keyof typeof Step> = z.infer<(typeof Step)[K]>;

/** A step's recorded output, checked; undefined when the step has not run. */
export function outputOf<K extends keyof typeof Step>(j: Pick<StepJournal, 'output'>, kind: K, name: string): StepOutput<K> | undefined {
  const raw = j.output(name);
  if (raw === undefined) return undefined;
  const r = Step[kind].safeParse(raw);
  if (!r.success) {
    throw new CliError(`the journal's step ${name} does not hold what this version records (${r.error.issues[0]?.path.join('.') || 'output'}: ${r.error.issues[0]?.message})`, {
      exitCode: ExitCode.Refused,
      hint: 'finish it with the version that started it, or move the journal away to start over',
    });
  }
  return r.data as StepOutput<K>;
}

/** Runs a step once: a step the journal has is not run again, its output is read back instead. */
export async function once<K extends keyof typeof Step>(j: StepJournal, kind: K, name: string, fn: () => Promise<StepOutput<K>>): Promise<StepOutput<K>> {
  const done = j.done(name) ? outputOf(j, kind, name) : undefined;
  if (done !== undefined) return done;
  return record(j, kind, name, await fn());
}

/** Records (or records again) a step's output, checked. */
export async function record<K extends keyof typeof Step>(j: StepJournal, kind: K, name: string, out: StepOutput<K>): Promise<StepOutput<K>> {
  const checked = Step[kind].parse(out) as StepOutput<K>;
  await j.complete(name, toJson(checked));
  return checked;
}

/** A checked step output is plain JSON data (strings, numbers, booleans, null, arrays, objects). */
function toJson(v: object): JsonObject {
  const out: JsonObject = {};
  for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = x;
  return out;
}
