/**
 * The pod's view of the host: a container sees only what its hostPath volumes mount. BED_MOUNTS
 * (JSON [{hostPath, mountPath, readOnly}], from the manifest) maps a path inside the pod to the
 * host; anything outside every mount does not exist, as for the real container.
 */
import { readFile } from 'node:fs/promises';
import { posix } from 'node:path';

export interface Mount {
  hostPath: string;
  mountPath: string;
  readOnly?: boolean;
}

export class PodFs {
  /** `undefined`: no mount table given, the process sees the host as is. */
  constructor(private readonly mounts: Mount[] | undefined) {}

  static fromEnv(text: string | undefined): PodFs {
    if (text === undefined || text.trim() === '') return new PodFs(undefined);
    const parsed: unknown = JSON.parse(text);
    if (!Array.isArray(parsed)) throw new Error('BED_MOUNTS must be a JSON array');
    return new PodFs(parsed as Mount[]);
  }

  /** The host path behind a path inside the pod, or undefined when no mount covers it. */
  hostPathOf(podPath: string): string | undefined {
    if (!this.mounts) return podPath;
    const p = posix.normalize(podPath);
    let best: Mount | undefined;
    for (const m of this.mounts) {
      const mp = posix.normalize(m.mountPath).replace(/\/+$/, '') || '/';
      const covers = p === mp || p.startsWith(mp === '/' ? '/' : `${mp}/`);
      if (covers && (!best || mp.length > posix.normalize(best.mountPath).length)) best = m;
    }
    if (!best) return undefined;
    const mp = posix.normalize(best.mountPath).replace(/\/+$/, '');
    return posix.join(best.hostPath, p.slice(mp.length));
  }

  /** Reads a file as the pod would; errors read like Go's os.ReadFile ("open PATH: ..."). */
  async readFile(podPath: string): Promise<Buffer> {
    const host = this.hostPathOf(podPath);
    if (host === undefined) throw new Error(`open ${podPath}: no such file or directory`);
    try {
      return await readFile(host);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const reason =
        code === 'ENOENT' ? 'no such file or directory' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : String(code);
      throw new Error(`open ${podPath}: ${reason}`);
    }
  }
}
