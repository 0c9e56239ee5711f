import { KUBEADM_CONFIGMAP, planKubeadmConfigPatch, type KubeadmConfigPatchOptions } from '../manifest/kubeadm-config';
import { unifiedDiff } from '../manifest/patch';
import { CliError, ExitCode } from '../ui/errors';
import type { ApiClient } from './api';
import { ApiError, toCliError } from './errors';

/**
 * Executor for the kube-system/kubeadm-config ConfigMap: records the encryption flag and mounts in
 * ClusterConfiguration so that `kubeadm upgrade` (which regenerates the manifest from it) keeps
 * them. The change itself is planned by the pure planKubeadmConfigPatch. A cluster without that
 * ConfigMap (not made by kubeadm) is not an error: the result says it was skipped.
 */

interface KubeadmConfigResult {
  status: 'updated' | 'unchanged' | 'skipped';
  /** Why it was skipped (no ConfigMap, no ClusterConfiguration key). */
  reason?: string;
  apiVersion?: string;
  actions: string[];
  diff: string;
  /** The ClusterConfiguration before the change (to undo it). */
  previous?: string;
}

const PATH = `/api/v1/namespaces/${KUBEADM_CONFIGMAP.namespace}/configmaps/${KUBEADM_CONFIGMAP.name}`;
const NAME = `${KUBEADM_CONFIGMAP.namespace}/${KUBEADM_CONFIGMAP.name}`;

interface ConfigMap {
  metadata?: { resourceVersion?: string };
  data?: Record<string, string>;
}

/** Reads the current ClusterConfiguration text (undefined: no ConfigMap or no such key). */
export async function readClusterConfiguration(api: Pick<ApiClient, 'get'>): Promise<string | undefined> {
  try {
    const cm = await api.get<ConfigMap>(PATH);
    return cm.data?.[KUBEADM_CONFIGMAP.key];
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return undefined;
    throw toCliError(err, `read ${NAME}`);
  }
}

/**
 * Applies the planned change with optimistic concurrency (resourceVersion): on a 409 the
 * ConfigMap is read and planned again, a few times, so a concurrent edit is never overwritten.
 */
export async function updateKubeadmConfig(
  api: Pick<ApiClient, 'get' | 'put'>,
  opts: KubeadmConfigPatchOptions,
  { dryRun = false }: { dryRun?: boolean } = {},
): Promise<KubeadmConfigResult> {
  for (let attempt = 0; ; attempt++) {
    let cm: ConfigMap;
    try {
      cm = await api.get<ConfigMap>(PATH);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        return { status: 'skipped', reason: `no ${NAME} ConfigMap (not a kubeadm cluster?)`, actions: [], diff: '' };
      }
      throw toCliError(err, `read ${NAME}`);
    }
    const text = cm.data?.[KUBEADM_CONFIGMAP.key];
    if (text === undefined) {
      return { status: 'skipped', reason: `${NAME} has no ${KUBEADM_CONFIGMAP.key}`, actions: [], diff: '' };
    }
    const plan = planKubeadmConfigPatch(text, opts);
    const diff = unifiedDiff(text, plan.newText, `${NAME}/${KUBEADM_CONFIGMAP.key}`);
    if (!plan.changed || dryRun) {
      return { status: plan.changed ? 'updated' : 'unchanged', apiVersion: plan.apiVersion, actions: plan.actions, diff, previous: text };
    }
    try {
      await api.put(PATH, { ...cm, data: { ...cm.data, [KUBEADM_CONFIGMAP.key]: plan.newText } });
      return { status: 'updated', apiVersion: plan.apiVersion, actions: plan.actions, diff, previous: text };
    } catch (err) {
      if (err instanceof ApiError && err.status === 409 && attempt < 4) continue;
      if (err instanceof ApiError && err.status === 409) {
        throw new CliError(`${NAME} keeps changing while it is being updated`, {
          exitCode: ExitCode.Cluster,
          hint: 're-run the command (or skip this step with --no-kubeadm-config)',
        });
      }
      throw toCliError(err, `update ${NAME}`);
    }
  }
}
