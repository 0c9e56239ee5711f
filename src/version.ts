// Replaced at build time from package.json; the fallback serves tests that import sources.
declare const __K8S_ENCRYPT_VERSION__: string | undefined;
export const VERSION: string =
  typeof __K8S_ENCRYPT_VERSION__ === 'string' ? __K8S_ENCRYPT_VERSION__ : '0.0.0-dev';

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
