/** The Kubernetes version the stand-in emulates (BED_KUBE_VERSION, from the manifest's image tag). */
export interface KubeVersion {
  major: number;
  minor: number;
  patch: number;
  /** e.g. `v1.32.6`, as /version's gitVersion reports it. */
  gitVersion: string;
}

export const DEFAULT_KUBE_VERSION = '1.32.6';

export function parseKubeVersion(text: string | undefined): KubeVersion {
  const raw = (text ?? '').trim() || DEFAULT_KUBE_VERSION;
  const m = /^v?(\d+)\.(\d+)(?:\.(\d+))?/.exec(raw);
  if (!m) throw new Error(`BED_KUBE_VERSION "${raw}" is not a Kubernetes version like 1.32.6`);
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  return { major, minor, patch, gitVersion: `v${raw.replace(/^v/, '')}` };
}

/** Whether the emulated version is at least 1.<minor> (only major 1 exists). */
export function atLeast(v: KubeVersion, minor: number): boolean {
  return v.major > 1 || (v.major === 1 && v.minor >= minor);
}
