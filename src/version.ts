// Replaced at build time from package.json and git; the fallbacks serve tests that import sources.
declare const __K8S_ENCRYPT_VERSION__: string | undefined;
declare const __K8S_ENCRYPT_COMMIT__: string | undefined;
export const VERSION: string =
  typeof __K8S_ENCRYPT_VERSION__ === 'string' ? __K8S_ENCRYPT_VERSION__ : '0.0.0-dev';
/** The git commit the build was made from (`-dirty` when tracked files differed), or `unknown`. */
export const COMMIT: string = typeof __K8S_ENCRYPT_COMMIT__ === 'string' ? __K8S_ENCRYPT_COMMIT__ : 'unknown';

export interface VersionInfo {
  version: string;
  commit: string;
  /** The Node.js that runs the CLI: the embedded one in the single executable. */
  node: string;
  /** os-arch as Node.js names them, as in the executables' names (linux-x64, linux-arm64). */
  platform: string;
}

export function versionInfo(proc: Pick<NodeJS.Process, 'version' | 'platform' | 'arch'> = process): VersionInfo {
  return { version: VERSION, commit: COMMIT, node: proc.version, platform: `${proc.platform}-${proc.arch}` };
}

/** package.json's engines.node. Older Nodes fail deep inside dependencies (undici needs zstd). */
const MIN_NODE_MAJOR = 22;

/** Why this Node cannot run k8s-encrypt, or undefined when it can. */
export function unsupportedNode(version: string): { message: string; hint: string } | undefined {
  const major = Number(version.split('.')[0]);
  if (major >= MIN_NODE_MAJOR) return undefined;
  return {
    message: `k8s-encrypt needs Node.js >= ${MIN_NODE_MAJOR}, this is v${version}; nothing was done`,
    hint: `install Node.js ${MIN_NODE_MAJOR} or newer and run it with that node`,
  };
}
