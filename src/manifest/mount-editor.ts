import { CliError, ExitCode } from '../ui/errors';
import type { Edit } from './edit';
import { containerPath, sortedIndex } from './flag-editor';
import { containerPathVia, hostPathMountsOf, KUBEADM_APISERVER_VOLUMES, normPath, type ParsedManifest, type Volume } from './manifest';

/** Edits of the kube-apiserver pod's hostPath volumes and the container's mounts of them. */

export const DEFAULT_CONFIG_VOLUME = 'encryption-config';
export const DEFAULT_SOCKET_VOLUME = 'kms-socket';

/** Names this tool gives its volumes (a collision adds -2, -3, ...). */
function isOwnVolumeName(name: string, extra: string[] = []): boolean {
  return [DEFAULT_CONFIG_VOLUME, DEFAULT_SOCKET_VOLUME, ...extra].some(
    (n) => name === n || (name.startsWith(`${n}-`) && /^\d+$/.test(name.slice(n.length + 1))),
  );
}

export interface PlannedMount {
  volumeName: string;
  hostPath: string;
  mountPath: string;
  readOnly: boolean;
  type?: string;
  /** Already in the manifest (false: this plan adds it). */
  existing: boolean;
}

/** Orders an object's keys like its sibling's (so a new item reads like its neighbours). */
function orderLike(obj: Record<string, unknown>, sibling: unknown): Record<string, unknown> {
  if (!sibling || typeof sibling !== 'object' || Array.isArray(sibling)) return obj;
  const sib = sibling as Record<string, unknown>;
  const keys = [...Object.keys(sib).filter((k) => k in obj), ...Object.keys(obj).filter((k) => !(k in sib))];
  return Object.fromEntries(
    keys.map((k) => {
      const v = obj[k];
      return [k, v && typeof v === 'object' && !Array.isArray(v) ? orderLike(v as Record<string, unknown>, sib[k]) : v];
    }),
  );
}

export class MountEditor {
  readonly edits: Edit[] = [];
  readonly actions: string[] = [];
  readonly notes: string[] = [];
  private readonly volumes: Volume[];
  private readonly volumeNames: string[];
  private readonly mountNames: string[];
  private readonly mounts;

  constructor(private readonly m: ParsedManifest) {
    this.volumes = Array.isArray(m.pod.spec?.volumes) ? m.pod.spec!.volumes! : [];
    this.volumeNames = this.volumes.map((v) => String(v?.name ?? ''));
    const vms = Array.isArray(m.container.volumeMounts) ? m.container.volumeMounts : [];
    this.mountNames = vms.map((v) => String(v?.name ?? ''));
    this.mounts = hostPathMountsOf(m);
  }

  /** The existing mount through which the container sees `hostFile`, with its in-container path. */
  covering(hostFile: string): { mount: PlannedMount; inPod: string } | undefined {
    for (const mt of this.mounts) {
      const inPod = containerPathVia(mt, hostFile);
      if (inPod !== undefined) return { mount: { ...mt, existing: true }, inPod };
    }
    return undefined;
  }

  /** Makes `dir` visible at the same path in the container, reusing what is there. */
  ensure(dir: string, type: string, readOnly: boolean, preferredName: string, purpose: string): PlannedMount {
    const cover = this.covering(dir);
    if (cover && cover.inPod === dir) {
      const by = cover.mount.hostPath === dir ? `volume ${cover.mount.volumeName}` : `${cover.mount.hostPath} (volume ${cover.mount.volumeName})`;
      this.notes.push(`${purpose} ${dir} is already mounted through ${by}`);
      return cover.mount;
    }
    const clash = this.mounts.find((mt) => mt.mountPath === dir);
    const vms = Array.isArray(this.m.container.volumeMounts) ? this.m.container.volumeMounts : [];
    if (clash || vms.some((v) => typeof v?.mountPath === 'string' && normPath(v.mountPath) === dir)) {
      throw new CliError(`${this.m.path}: the kube-apiserver container already mounts something else at ${dir}`, {
        exitCode: ExitCode.Refused,
        hint: `put the ${purpose} in another directory, or fix that volume by hand`,
      });
    }
    const reuse = this.volumes.find((v) => typeof v?.hostPath?.path === 'string' && normPath(v.hostPath.path) === dir);
    let name: string;
    if (reuse) {
      name = String(reuse.name);
      this.notes.push(`reusing the pod's volume ${name} for ${dir}`);
    } else {
      name = preferredName;
      for (let i = 2; this.volumeNames.includes(name); i++) name = `${preferredName}-${i}`;
      if (name !== preferredName) this.notes.push(`volume name ${preferredName} is taken; using ${name}`);
      const sibling = this.volumes.find((v) => v?.hostPath) ?? this.volumes[0];
      const value = orderLike({ hostPath: { path: dir, type }, name }, sibling);
      const index = sortedIndex(this.volumeNames, name);
      this.volumeNames.splice(index, 0, name);
      this.edits.push({ op: 'insert', seq: ['spec', 'volumes'], index, value });
      this.actions.push(`add volume ${name}: hostPath ${dir} (${type})`);
    }
    const vmSibling = vms[0];
    const mountValue = orderLike({ mountPath: dir, name, ...(readOnly ? { readOnly: true } : {}) }, vmSibling);
    const index = sortedIndex(this.mountNames, name);
    this.mountNames.splice(index, 0, name);
    this.edits.push({ op: 'insert', seq: [...containerPath(this.m), 'volumeMounts'], index, value: mountValue });
    this.actions.push(`mount ${dir} into kube-apiserver${readOnly ? ' read-only' : ''} (volume ${name})`);
    const planned: PlannedMount = { volumeName: name, hostPath: dir, mountPath: dir, readOnly, type, existing: false };
    this.mounts.push(planned);
    return planned;
  }

  /**
   * Removes this tool's mount of `dir` and its volume when nothing else uses it. Only volumes that
   * carry this tool's names and map `dir` to itself: never kubeadm's own, never a hand-made mount.
   */
  removeOwn(dir: string, ownNamesExtra: string[] = []): void {
    const vms = Array.isArray(this.m.container.volumeMounts) ? this.m.container.volumeMounts : [];
    const own = this.mounts.filter(
      (mt) =>
        mt.hostPath === dir &&
        mt.mountPath === dir &&
        !KUBEADM_APISERVER_VOLUMES.has(mt.volumeName) &&
        isOwnVolumeName(mt.volumeName, ownNamesExtra),
    );
    const ownNames = new Set(own.map((mt) => mt.volumeName));
    const mountIdx = vms
      .map((v, i) => ({ v, i }))
      .filter(({ v }) => typeof v?.name === 'string' && ownNames.has(v.name) && typeof v.mountPath === 'string' && normPath(v.mountPath) === dir)
      .map(({ i }) => i)
      .sort((a, b) => b - a);
    for (const index of mountIdx) {
      this.edits.push({ op: 'remove', seq: [...containerPath(this.m), 'volumeMounts'], index });
      this.actions.push(`unmount ${dir} from kube-apiserver (volume ${String(vms[index]!.name)})`);
    }
    const users = new Set<string>();
    const spec = this.m.pod.spec ?? {};
    [...(spec.containers ?? []), ...(spec.initContainers ?? [])].forEach((c, ci) => {
      (Array.isArray(c?.volumeMounts) ? c.volumeMounts : []).forEach((v, vi) => {
        const removed = ci === this.m.containerIndex && c === this.m.container && mountIdx.includes(vi);
        if (!removed && typeof v?.name === 'string') users.add(v.name);
      });
    });
    const volIdx = this.volumes
      .map((v, i) => ({ v, i }))
      .filter(({ v }) => typeof v?.name === 'string' && ownNames.has(v.name) && !users.has(v.name))
      .map(({ i }) => i)
      .sort((a, b) => b - a);
    for (const index of volIdx) {
      this.edits.push({ op: 'remove', seq: ['spec', 'volumes'], index });
      this.actions.push(`remove volume ${String(this.volumes[index]!.name)} (hostPath ${dir})`);
    }
  }
}
