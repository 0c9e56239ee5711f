import { stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { CliError, ExitCode } from '../ui/errors';
import type { FleetNode } from './inventory';
import { installDir, installPath, refused, unameArch, type SelfExecutable } from './remote';
import { shellQuote, type SshSession } from './ssh';

/**
 * What is checked on a node before any k8s-encrypt runs there, in one read-only command: the SSH
 * user is root, the apiserver manifest is there, and (for an upload) the architecture and the
 * free space where the executable would go. A dry run that would upload stops after these: even a
 * private staging copy changes the node.
 */

export interface NodeFacts {
  uid: number;
  manifest: string;
  hasManifest: boolean;
  arch: string;
  /** The nearest existing directory of the upload path, and its free bytes (df). */
  freeAt?: string;
  freeBytes?: number;
}

/** The upload a dry run would do. */
export interface PlannedUpload {
  path: string;
  sha256: string;
  bytes: number;
  freeBytes: number | null;
}

/** Where the node's own run looks for the manifest: `--manifest` if given, else under its root. */
export const nodeManifest = (node: FleetNode, manifest: string | undefined) => manifest ?? posix.join(node.root, 'etc/kubernetes/manifests/kube-apiserver.yaml');

export async function probeNode(s: SshSession, manifest: string): Promise<NodeFacts> {
  const m = shellQuote(manifest);
  const script =
    `echo "uid=$(id -u)"; if [ -f ${m} ]; then echo manifest=yes; else echo manifest=no; fi; echo "arch=$(uname -m)"; ` +
    `d=${shellQuote(installDir(s.node.root))}; while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done; echo "at=$d"; ` +
    `df -Pk "$d" 2>/dev/null | awk 'NR==2 {print "freeKiB=" $4}'`;
  const r = await s.exec(script, { timeoutMs: 30_000 });
  const kv = new Map(
    r.stdout
      .toString('utf8')
      .split('\n')
      .map((l) => /^(\w+)=(.*)$/.exec(l))
      .filter((x): x is RegExpExecArray => x !== null)
      .map((x) => [x[1]!, x[2]!] as const),
  );
  const uid = Number(kv.get('uid'));
  if (r.code !== 0 || !Number.isInteger(uid)) {
    throw new CliError(`${s.node.nodeName}: the preflight command failed there (exit ${r.code})${r.stderr.trim() ? `: ${r.stderr.trim().split('\n').pop()}` : ''}`, {
      exitCode: ExitCode.Cluster,
      hint: 'the node needs a POSIX shell with id, uname and df; nothing was changed',
      details: { node: s.node.nodeName },
    });
  }
  const free = Number(kv.get('freeKiB'));
  const arch = kv.get('arch') ?? '';
  return {
    uid,
    manifest,
    hasManifest: kv.get('manifest') === 'yes',
    arch: unameArch[arch] ?? arch,
    ...(kv.get('at') ? { freeAt: kv.get('at')! } : {}),
    ...(Number.isFinite(free) && kv.has('freeKiB') ? { freeBytes: free * 1024 } : {}),
  };
}

/**
 * The checks every changing fleet command makes on every node before the first upload: root
 * (k8s-encrypt writes the manifest and config; it never uses sudo; a test layout under another
 * `root` may run as anyone) and the manifest. Returns what passed, for the dry run.
 */
export function checkNode(node: FleetNode, f: NodeFacts): string[] {
  if (f.uid !== 0 && node.root === '/') {
    throw refused(node, `${node.user} is uid ${f.uid} there, not root: k8s-encrypt writes the apiserver manifest and config as root`, `log in as root (user: root in the inventory); k8s-encrypt does not use sudo; nothing was changed`);
  }
  if (!f.hasManifest) {
    throw refused(node, `no kube-apiserver manifest at ${f.manifest}`, `is ${node.host} a kubeadm control plane? Check its root${node.root === '/' ? '' : ` (${node.root})`} or --manifest; nothing was changed`);
  }
  return [`logged in as ${node.user} (uid ${f.uid})`, `manifest ${f.manifest}`];
}

/** Room for the executable beside the one it may replace, and a little for the directory. */
const UPLOAD_SLACK = 1 << 20;

/** What a dry run reports for an upload it does not do, refused if it could not be done. */
export async function plannedUpload(node: FleetNode, f: NodeFacts, self: SelfExecutable): Promise<PlannedUpload> {
  const path = installPath(node.root, self.version);
  if (!self.path || !self.sha256) throw refused(node, `no k8s-encrypt ${self.version} at ${path}, and this one cannot upload itself`, 'run the fleet from the self-contained executable, or pass --node-bin PATH');
  if (f.arch !== self.arch) throw refused(node, `the node is ${f.arch}, this executable is linux-${self.arch}`, `run the fleet from k8s-encrypt-linux-${f.arch}, or install it on the nodes and pass --node-bin PATH`);
  const bytes = (await stat(self.path)).size;
  if (f.freeBytes !== undefined && f.freeBytes < bytes + UPLOAD_SLACK) {
    const mib = (n: number) => `${(n / (1 << 20)).toFixed(1)} MiB`;
    throw refused(node, `${mib(f.freeBytes)} free at ${f.freeAt ?? installDir(node.root)}, the upload to ${path} needs ${mib(bytes + UPLOAD_SLACK)}`, 'free some space on the node; nothing was changed');
  }
  return { path, sha256: self.sha256, bytes, freeBytes: f.freeBytes ?? null };
}
