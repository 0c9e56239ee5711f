// Replaced at build time from package.json; the fallback serves tests that import sources.
declare const __K8S_ENCRYPT_VERSION__: string | undefined;
export const VERSION: string =
  typeof __K8S_ENCRYPT_VERSION__ === 'string' ? __K8S_ENCRYPT_VERSION__ : '0.0.0-dev';
