import { sha256Hex } from '../config/parse';
import { KUBEADM_CONFIGMAP, planKubeadmChange, type KubeadmChange, type KubeadmConfigPatchOptions, type KubeadmConfigRead } from '../manifest/kubeadm-config';
import { CliError, ExitCode } from '../ui/errors';
import type { ApiClient } from './api';
import { ApiError, toCliError } from './errors';

/**
 * I/O for the kube-system/kubeadm-config ConfigMap: read it for a plan, and write a planned
 * change (planKubeadmChange, pure) only while the ConfigMap is what the plan read. A cluster
 * without that ConfigMap (not made by kubeadm) is not an error: the change says it is skipped.
 */

const PATH = `/api/v1/namespaces/${KUBEADM_CONFIGMAP.namespace}/configmaps/${KUBEADM_CONFIGMAP.name}`;
const NAME = `${KUBEADM_CONFIGMAP.namespace}/${KUBEADM_CONFIGMAP.name}`;

interface ConfigMap {
  metadata?: { resourceVersion?: string };
  data?: Record<string, string>;
}

async function getConfigMap(api: Pick<ApiClient, 'get'>): Promise<{ cm?: ConfigMap; read: KubeadmConfigRead }> {
  let cm: ConfigMap;
  try {
    cm = await api.get<ConfigMap>(PATH);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return { read: { found: false, reason: `no ${NAME} ConfigMap (not a kubeadm cluster?)` } };
    throw toCliError(err, `read ${NAME}`);
  }
  const text = cm.data?.[KUBEADM_CONFIGMAP.key];
  if (text === undefined) return { cm, read: { found: false, reason: `${NAME} has no ${KUBEADM_CONFIGMAP.key}` } };
  return { cm, read: { found: true, text, resourceVersion: cm.metadata?.resourceVersion ?? '' } };
}

/** The ConfigMap as a plan reads it: the ClusterConfiguration text and the resourceVersion. */
export async function readKubeadmConfig(api: Pick<ApiClient, 'get'>): Promise<KubeadmConfigRead> {
  return (await getConfigMap(api)).read;
}

/** Reads the current ClusterConfiguration text (undefined: no ConfigMap or no such key). */
export async function readClusterConfiguration(api: Pick<ApiClient, 'get'>): Promise<string | undefined> {
  const read = await readKubeadmConfig(api);
  return read.found ? read.text : undefined;
}

const short = (sha: string | null) => (sha ? `${sha.slice(0, 12)}…` : 'none');

/** What differs between the ConfigMap a change was planned from and the one read now. */
function whatChanged(planned: KubeadmChange, now: KubeadmConfigRead): string {
  const sha = now.found ? sha256Hex(now.text) : null;
  const rv = now.found ? now.resourceVersion : null;
  if (sha !== planned.inputSha256) return `${KUBEADM_CONFIGMAP.key} sha256 ${short(planned.inputSha256)} is now ${short(sha)}`;
  return `resourceVersion ${planned.resourceVersion ?? 'none'} is now ${rv ?? 'none'}, ${KUBEADM_CONFIGMAP.key} as planned`;
}

const isPlannedFrom = (c: KubeadmChange, now: KubeadmConfigRead) =>
  now.found ? c.inputSha256 === sha256Hex(now.text) && c.resourceVersion === now.resourceVersion : c.inputSha256 === null;

/**
 * Applies a planned change while the ConfigMap is what the plan read (the ClusterConfiguration's
 * sha256 and the resourceVersion). The PUT carries the plan's resourceVersion, so a write in
 * between is a 409 Conflict, never a lost update. Otherwise (or after a 409) the change is planned
 * again from the ConfigMap as it is, and `replanned` gets one line saying so. Without a planned
 * change (the plan could not read the ConfigMap), it is planned here from `options`.
 */
export async function applyKubeadmChange(
  api: Pick<ApiClient, 'get' | 'put'>,
  planned: KubeadmChange | undefined,
  options: KubeadmConfigPatchOptions,
  replanned: (line: string) => void,
): Promise<KubeadmChange & { replanned: boolean }> {
  let change = planned;
  let again = false;
  for (let attempt = 0; ; attempt++) {
    const { cm, read } = await getConfigMap(api);
    // Written before an interruption (the step not journaled yet): nothing to write, nothing changed.
    if (change?.status === 'update' && read.found && sha256Hex(read.text) === change.outputSha256) return { ...change, replanned: again };
    if (!change || !isPlannedFrom(change, read)) {
      if (change) {
        replanned(`${NAME} changed since the plan (${whatChanged(change, read)}): its change is planned again from the ConfigMap as it is`);
        again = true;
      }
      change = planKubeadmChange(read, options);
    }
    if (change.status !== 'update' || !cm || change.newText === null) return { ...change, replanned: again };
    try {
      await api.put(PATH, { ...cm, metadata: { ...cm.metadata, resourceVersion: change.resourceVersion }, data: { ...cm.data, [KUBEADM_CONFIGMAP.key]: change.newText } });
      return { ...change, replanned: again };
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
