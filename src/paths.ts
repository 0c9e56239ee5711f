import { isAbsolute, join, resolve } from 'node:path';

/**
 * kubeadm's layout, relative to a root (`--root`, default `/`). Every path can also be set on its
 * own; tests and the local control plane point the root at a temporary directory.
 */
export interface Paths {
  root: string;
  manifestsDir: string;
  manifest: string;
  configDir: string;
  config: string;
  kubeconfig: string;
  pkiDir: string;
  stateDir: string;
  backupDir: string;
}

export interface PathOverrides {
  root?: string;
  manifest?: string;
  config?: string;
  kubeconfig?: string;
  stateDir?: string;
  backupDir?: string;
}

const DEFAULT_CONFIG_FILE = 'etc/kubernetes/encryption/config.yaml';

export function resolvePaths(o: PathOverrides = {}, cwd = process.cwd()): Paths {
  const root = resolve(cwd, o.root ?? '/');
  const under = (p: string) => join(root, p);
  const given = (p: string | undefined, dflt: string) =>
    p === undefined ? under(dflt) : isAbsolute(p) ? p : resolve(cwd, p);
  const manifest = given(o.manifest, 'etc/kubernetes/manifests/kube-apiserver.yaml');
  const config = given(o.config, DEFAULT_CONFIG_FILE);
  const stateDir = given(o.stateDir, 'var/lib/k8s-encrypt');
  return {
    root,
    manifestsDir: join(manifest, '..'),
    manifest,
    configDir: join(config, '..'),
    config,
    kubeconfig: given(o.kubeconfig, 'etc/kubernetes/admin.conf'),
    pkiDir: under('etc/kubernetes/pki'),
    stateDir,
    backupDir: o.backupDir === undefined ? join(stateDir, 'backups') : given(o.backupDir, ''),
  };
}

