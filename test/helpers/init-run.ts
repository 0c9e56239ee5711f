/**
 * What an in-process runInit against a bed node needs: the journal `init` starts for a plan (the
 * inputs the command records) and the transition deps (real etcd from the manifest's flags, real
 * rewrite, every line of output collected). Tests override single deps by spreading.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ApiClient } from '../../src/cluster/api';
import { resolveResources } from '../../src/cluster/discovery';
import { rewriteAll } from '../../src/cluster/rewrite';
import { etcdConnectionFromFlags, openEtcd } from '../../src/etcd/client';
import type { InitPlan } from '../../src/init/plan';
import type { InitJournalInputs } from '../../src/init/run';
import { readApiserverFlags } from '../../src/manifest/manifest';
import { Journal } from '../../src/state/journal';
import type { TransitionDeps } from '../../src/transition/engine';
import type { BedNode } from '../bed/index';

/** The node's tool state dir, where the init journal and backups go. */
export const initStateDir = (node: BedNode): string => join(node.root, 'var/lib/k8s-encrypt');

/** Starts the init journal for `plan` on `node`, as `init` records it (a generated key). */
export function startInitJournal(node: BedNode, plan: InitPlan, o: { timeoutMs: number; key: string }): Promise<Journal<InitJournalInputs>> {
  return Journal.start<InitJournalInputs>(
    initStateDir(node),
    'init',
    {
      mode: plan.mode, provider: plan.provider, keyName: plan.keyName, expectedPrefix: plan.expectedPrefix, resources: plan.resources,
      configPath: plan.configPath, manifestPath: node.manifest, timeoutMs: o.timeoutMs, kubeadmConfig: true, configSha256: plan.config.sha256,
      writeConfigSha256: plan.writeConfig?.sha256 ?? null, nodeName: node.name, hasNode: true, controlPlanes: plan.controlPlanes,
      keySource: 'generated', keyFile: null, fromConfig: null, kms: null,
    },
    { forbidden: [o.key] },
  );
}

/** runInit's deps on `node`; every step/info/warn/success line is pushed to `lines`. */
export async function initDeps(node: BedNode, api: ApiClient, o: { configPath: string; timeoutMs?: number; lines?: string[] }): Promise<TransitionDeps> {
  const lines = o.lines ?? [];
  const sink = (m: string) => void lines.push(m);
  return {
    api,
    now: () => new Date(),
    out: { step: sink, info: sink, warn: sink, success: sink },
    manifestPath: node.manifest,
    manifestsDir: join(node.manifest, '..'),
    configPath: o.configPath,
    backupDir: join(initStateDir(node), 'backups'),
    keepBackups: 10,
    nodeName: node.name,
    hasNode: true,
    timeoutMs: o.timeoutMs ?? 60_000,
    force: false,
    kubeadmConfig: true,
    etcd: etcdConnectionFromFlags(readApiserverFlags(await readFile(node.manifest, 'utf8'), node.manifest).flags),
    openEtcd: (c) => openEtcd(c),
    rewrite: async (resources) => rewriteAll({ api, now: () => new Date() }, { resources: await resolveResources(api, resources) }),
    followCommand: '"k8s-encrypt init --from-config FILE"',
  };
}
