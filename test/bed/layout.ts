import { join } from 'node:path';
import { parseDocument, stringify, type YAMLMap, type YAMLSeq } from 'yaml';

/**
 * The kubeadm layout of one bed node, rendered by pure functions: the kube-apiserver static pod
 * manifest, admin.conf and the kubeadm-config ConfigMap. Every path is absolute under the node root,
 * so the CLI only needs `--root` to find them.
 */

export interface NodePaths {
  root: string;
  etcKubernetes: string;
  pki: string;
  manifestsDir: string;
  manifest: string;
  adminConf: string;
  knobs: string;
  podLogDir: string;
}

export function nodePaths(root: string): NodePaths {
  const etcKubernetes = join(root, 'etc/kubernetes');
  return {
    root,
    etcKubernetes,
    pki: join(etcKubernetes, 'pki'),
    manifestsDir: join(etcKubernetes, 'manifests'),
    manifest: join(etcKubernetes, 'manifests/kube-apiserver.yaml'),
    adminConf: join(etcKubernetes, 'admin.conf'),
    knobs: join(root, 'bed/knobs.json'),
    podLogDir: join(root, 'var/log/pods'),
  };
}

/** kubeadm's CA-certificate hostPath volumes (Debian set), mounted only when the dir exists. */
export const KUBEADM_CA_DIRS = [
  { name: 'ca-certs', path: 'etc/ssl/certs' },
  { name: 'etc-ca-certificates', path: 'etc/ca-certificates' },
  { name: 'usr-local-share-ca-certificates', path: 'usr/local/share/ca-certificates' },
  { name: 'usr-share-ca-certificates', path: 'usr/share/ca-certificates' },
] as const;

export interface ManifestInput {
  root: string;
  nodeName: string;
  port: number;
  kubeVersion: string; // '1.32.6'
  etcdEndpoint: string; // https://127.0.0.1:NNNN
  /** Names from KUBEADM_CA_DIRS whose dir exists under the root. */
  caDirs: string[];
}

/** [major, minor] of '1.32.6' or 'v1.32.6'. */
export function parseKubeVersion(v: string): [number, number] {
  const m = /^v?(\d+)\.(\d+)(\.\d+)?$/.exec(v);
  if (!m) throw new Error(`not a Kubernetes version: ${v} (expected e.g. 1.32.6)`);
  return [Number(m[1]), Number(m[2])];
}

const atLeast = (v: string, minor: number) => {
  const [maj, min] = parseKubeVersion(v);
  return maj > 1 || min >= minor;
};

/** Flags the bed adds the way an operator would through ClusterConfiguration apiServer.extraArgs. */
export const BED_EXTRA_ARGS: Record<string, string> = { 'bind-address': '127.0.0.1' };

/** kubeadm's kube-apiserver flags for a version (kubeadm sorts them by name). */
export function kubeadmApiserverFlags(i: ManifestInput): string[] {
  const pki = (f: string) => join(i.root, 'etc/kubernetes/pki', f);
  const flags: Record<string, string> = {
    'advertise-address': '127.0.0.1',
    'allow-privileged': 'true',
    'authorization-mode': 'Node,RBAC',
    'client-ca-file': pki('ca.crt'),
    'enable-admission-plugins': 'NodeRestriction',
    'enable-bootstrap-token-auth': 'true',
    'etcd-cafile': pki('etcd/ca.crt'),
    'etcd-certfile': pki('apiserver-etcd-client.crt'),
    'etcd-keyfile': pki('apiserver-etcd-client.key'),
    'etcd-servers': i.etcdEndpoint,
    'kubelet-client-certificate': pki('apiserver-kubelet-client.crt'),
    'kubelet-client-key': pki('apiserver-kubelet-client.key'),
    'kubelet-preferred-address-types': 'InternalIP,ExternalIP,Hostname',
    'proxy-client-cert-file': pki('front-proxy-client.crt'),
    'proxy-client-key-file': pki('front-proxy-client.key'),
    'requestheader-allowed-names': 'front-proxy-client',
    'requestheader-client-ca-file': pki('front-proxy-ca.crt'),
    'requestheader-extra-headers-prefix': 'X-Remote-Extra-',
    'requestheader-group-headers': 'X-Remote-Group',
    'requestheader-username-headers': 'X-Remote-User',
    'secure-port': String(i.port),
    'service-account-key-file': pki('sa.pub'),
    'service-cluster-ip-range': '10.96.0.0/12',
    'tls-cert-file': pki('apiserver.crt'),
    'tls-private-key-file': pki('apiserver.key'),
    ...BED_EXTRA_ARGS,
  };
  if (atLeast(i.kubeVersion, 20)) {
    // kubeadm 1.20+ configures bound service-account tokens.
    flags['service-account-issuer'] = 'https://kubernetes.default.svc.cluster.local';
    flags['service-account-signing-key-file'] = pki('sa.key');
  } else {
    flags['insecure-port'] = '0';
  }
  return Object.keys(flags)
    .sort()
    .map((k) => `--${k}=${flags[k]}`);
}

function probe(path: string, i: ManifestInput, failureThreshold: number, periodSeconds: number, initialDelaySeconds?: number) {
  return {
    failureThreshold,
    httpGet: { host: '127.0.0.1', path, port: i.port, scheme: 'HTTPS' },
    ...(initialDelaySeconds === undefined ? {} : { initialDelaySeconds }),
    periodSeconds,
    timeoutSeconds: 15,
  };
}

/** The static pod manifest kubeadm writes for kube-apiserver, for this node. */
export function renderApiserverManifest(i: ManifestInput): string {
  parseKubeVersion(i.kubeVersion);
  const volumes: { name: string; path: string }[] = [
    ...KUBEADM_CA_DIRS.filter((d) => i.caDirs.includes(d.name)).map((d) => ({ name: d.name, path: join(i.root, d.path) })),
    { name: 'k8s-certs', path: join(i.root, 'etc/kubernetes/pki') },
  ].sort((a, b) => a.name.localeCompare(b.name));
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      annotations: { 'kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint': `127.0.0.1:${i.port}` },
      labels: { component: 'kube-apiserver', tier: 'control-plane' },
      name: 'kube-apiserver',
      namespace: 'kube-system',
    },
    spec: {
      containers: [
        {
          command: ['kube-apiserver', ...kubeadmApiserverFlags(i)],
          image: `registry.k8s.io/kube-apiserver:v${i.kubeVersion.replace(/^v/, '')}`,
          imagePullPolicy: 'IfNotPresent',
          livenessProbe: probe('/livez', i, 8, 10, 10),
          name: 'kube-apiserver',
          readinessProbe: probe('/readyz', i, 3, 1),
          resources: { requests: { cpu: '250m' } },
          startupProbe: probe('/livez', i, 24, 10, 10),
          volumeMounts: volumes.map((v) => ({ mountPath: v.path, name: v.name, readOnly: true })),
        },
      ],
      hostNetwork: true,
      priority: 2000001000,
      priorityClassName: 'system-node-critical',
      securityContext: { seccompProfile: { type: 'RuntimeDefault' } },
      volumes: volumes.map((v) => ({ hostPath: { path: v.path, type: 'DirectoryOrCreate' }, name: v.name })),
    },
    status: {},
  };
  return stringify(pod);
}

export interface AdminConfInput {
  server: string;
  caPem: string;
  certPem: string;
  keyPem: string;
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

/** kubeadm's admin.conf: the kubernetes-admin client cert (O=system:masters) embedded. */
export function renderAdminConf(i: AdminConfInput): string {
  return stringify({
    apiVersion: 'v1',
    clusters: [{ cluster: { 'certificate-authority-data': b64(i.caPem), server: i.server }, name: 'kubernetes' }],
    contexts: [{ context: { cluster: 'kubernetes', user: 'kubernetes-admin' }, name: 'kubernetes-admin@kubernetes' }],
    'current-context': 'kubernetes-admin@kubernetes',
    kind: 'Config',
    preferences: {},
    users: [
      {
        name: 'kubernetes-admin',
        user: { 'client-certificate-data': b64(i.certPem), 'client-key-data': b64(i.keyPem) },
      },
    ],
  });
}

export interface ClusterConfigInput {
  kubeVersion: string;
  controlPlaneEndpoint: string; // 127.0.0.1:PORT of the first node
  certificatesDir: string;
  etcd: { endpoint: string; caFile: string; certFile: string; keyFile: string };
}

/**
 * The `kube-system/kubeadm-config` ConfigMap: kubeadm upgrade regenerates the manifest from it, so
 * flags that are not recorded here get lost. v1beta4 (extraArgs as a name/value list) from 1.31,
 * v1beta3 (a map) before.
 */
export function renderKubeadmConfigMap(i: ClusterConfigInput): Record<string, unknown> {
  const v4 = atLeast(i.kubeVersion, 31);
  const extraArgs = v4
    ? Object.entries(BED_EXTRA_ARGS).map(([name, value]) => ({ name, value }))
    : { ...BED_EXTRA_ARGS };
  const cluster = {
    apiVersion: v4 ? 'kubeadm.k8s.io/v1beta4' : 'kubeadm.k8s.io/v1beta3',
    kind: 'ClusterConfiguration',
    apiServer: { extraArgs },
    certificatesDir: i.certificatesDir,
    clusterName: 'kubernetes',
    controlPlaneEndpoint: i.controlPlaneEndpoint,
    controllerManager: {},
    dns: {},
    ...(v4 ? { encryptionAlgorithm: 'ECDSA-P256', proxy: {} } : {}),
    etcd: {
      external: {
        caFile: i.etcd.caFile,
        certFile: i.etcd.certFile,
        endpoints: [i.etcd.endpoint],
        keyFile: i.etcd.keyFile,
      },
    },
    imageRepository: 'registry.k8s.io',
    kubernetesVersion: `v${i.kubeVersion.replace(/^v/, '')}`,
    networking: { dnsDomain: 'cluster.local', serviceSubnet: '10.96.0.0/12' },
    scheduler: {},
  };
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'kubeadm-config', namespace: 'kube-system' },
    data: { ClusterConfiguration: stringify(cluster) },
  };
}

export interface EncryptionFlagEdit {
  /** Path of the EncryptionConfiguration as the apiserver sees it. */
  configFile: string;
  /** Mount this directory (hostPath, same path inside the pod); omit to add the flag only. */
  mountDir?: string;
  volumeName?: string;
}

/**
 * The documented manual edit of a kube-apiserver static pod manifest: the
 * --encryption-provider-config flag plus a read-only hostPath volume and mount. Written for the
 * bed's demo and the contract tests, independently of the CLI's own manifest patcher.
 */
export function addEncryptionConfigFlag(manifestText: string, e: EncryptionFlagEdit): string {
  const doc = parseDocument(manifestText);
  const containers = doc.getIn(['spec', 'containers']) as YAMLSeq<YAMLMap>;
  const c = containers.items.find((x) => x.get('name') === 'kube-apiserver') ?? containers.items[0];
  if (!c) throw new Error('the manifest has no container');
  const list = (c.get('command') as YAMLSeq | undefined) ?? (c.get('args') as YAMLSeq);
  list.add(`--encryption-provider-config=${e.configFile}`);
  if (e.mountDir) {
    const name = e.volumeName ?? 'encryption-config';
    if (!c.get('volumeMounts')) c.set('volumeMounts', doc.createNode([]));
    (c.get('volumeMounts') as YAMLSeq).add(doc.createNode({ mountPath: e.mountDir, name, readOnly: true }));
    if (!doc.getIn(['spec', 'volumes'])) doc.setIn(['spec', 'volumes'], doc.createNode([]));
    (doc.getIn(['spec', 'volumes']) as YAMLSeq).add(doc.createNode({ hostPath: { path: e.mountDir, type: 'DirectoryOrCreate' }, name }));
  }
  return doc.toString();
}
