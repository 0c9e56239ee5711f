import { execa } from 'execa';
import { chmod, mkdir, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * kubeadm's PKI for one bed, generated fresh at every start (EC P-256: a whole set takes well under
 * a second). Both nodes of a two-node bed get copies of the same files: one cluster CA, one etcd.
 * File names are kubeadm's, relative to etc/kubernetes/pki.
 */
export interface BedPki {
  dir: string;
  /** Absolute paths of the files the bed and tests use. */
  caCrt: string;
  caKey: string;
  apiserverCrt: string;
  apiserverKey: string;
  etcdCaCrt: string;
  etcdServerCrt: string;
  etcdServerKey: string;
  etcdClientCrt: string;
  etcdClientKey: string;
  adminCrt: string;
  adminKey: string;
}

/** Every file kubeadm writes under a control-plane node's pki/ (copied into each node root). */
export const NODE_PKI_FILES = [
  'ca.crt', 'ca.key',
  'apiserver.crt', 'apiserver.key',
  'apiserver-kubelet-client.crt', 'apiserver-kubelet-client.key',
  'apiserver-etcd-client.crt', 'apiserver-etcd-client.key',
  'front-proxy-ca.crt', 'front-proxy-ca.key',
  'front-proxy-client.crt', 'front-proxy-client.key',
  'sa.key', 'sa.pub',
  'etcd/ca.crt', 'etcd/ca.key',
  'etcd/server.crt', 'etcd/server.key',
  'etcd/peer.crt', 'etcd/peer.key',
  'etcd/healthcheck-client.crt', 'etcd/healthcheck-client.key',
] as const;

type Usage = 'ca' | 'server' | 'client' | 'server+client';

function extensions(usage: Usage, sans: string[]): string {
  if (usage === 'ca') {
    return [
      'basicConstraints = critical,CA:TRUE',
      'keyUsage = critical,keyCertSign,cRLSign,digitalSignature',
      'subjectKeyIdentifier = hash',
    ].join('\n');
  }
  const eku = { server: 'serverAuth', client: 'clientAuth', 'server+client': 'serverAuth,clientAuth' }[usage];
  return [
    'basicConstraints = critical,CA:FALSE',
    'keyUsage = critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage = ${eku}`,
    ...(sans.length ? [`subjectAltName = ${sans.join(',')}`] : []),
  ].join('\n');
}

interface CertSpec {
  name: string; // path without extension, relative to the pki dir
  subject: string; // openssl -subj form
  usage: Usage;
  sans?: string[];
  signer?: string; // CA name (path without extension); self-signed when absent
}

async function makeCert(dir: string, spec: CertSpec): Promise<void> {
  const config = `[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n[ext]\n${extensions(spec.usage, spec.sans ?? [])}\n`;
  const signer = spec.signer
    ? ['-CA', join(dir, `${spec.signer}.crt`), '-CAkey', join(dir, `${spec.signer}.key`)]
    : [];
  // openssl cannot read its config from a pipe: a short-lived file next to the key.
  const cnf = join(dir, `${spec.name}.cnf`);
  await writeFile(cnf, config);
  await execa('openssl', [
    'req', '-x509', '-new', '-config', cnf, '-extensions', 'ext',
    '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', join(dir, `${spec.name}.key`), '-out', join(dir, `${spec.name}.crt`),
    '-subj', spec.subject, '-days', spec.usage === 'ca' ? '3650' : '365',
    ...signer,
  ]).finally(() => unlink(cnf));
  await chmod(join(dir, `${spec.name}.key`), 0o600);
}

const LOOPBACK_SANS = ['IP:127.0.0.1', 'DNS:localhost'];

/**
 * Generates kubeadm's PKI into `dir`, plus admin.crt/admin.key (the kubernetes-admin client pair
 * that kubeadm only embeds in admin.conf; it stays in this shared dir, not in node roots).
 */
export async function generatePki(dir: string): Promise<BedPki> {
  await mkdir(join(dir, 'etcd'), { recursive: true, mode: 0o700 });
  const cas: CertSpec[] = [
    { name: 'ca', subject: '/CN=kubernetes', usage: 'ca' },
    { name: 'etcd/ca', subject: '/CN=etcd-ca', usage: 'ca' },
    { name: 'front-proxy-ca', subject: '/CN=front-proxy-ca', usage: 'ca' },
  ];
  const saKey = join(dir, 'sa.key');
  await Promise.all([
    ...cas.map((c) => makeCert(dir, c)),
    execa('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', saKey])
      .then(() => execa('openssl', ['pkey', '-in', saKey, '-pubout', '-out', join(dir, 'sa.pub')]))
      .then(() => chmod(saKey, 0o600)),
  ]);
  const leaves: CertSpec[] = [
    {
      name: 'apiserver', subject: '/CN=kube-apiserver', usage: 'server', signer: 'ca',
      sans: [...LOOPBACK_SANS, 'DNS:kubernetes', 'DNS:kubernetes.default', 'DNS:kubernetes.default.svc',
        'DNS:kubernetes.default.svc.cluster.local', 'IP:10.96.0.1'],
    },
    { name: 'apiserver-kubelet-client', subject: '/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client', usage: 'client', signer: 'ca' },
    { name: 'admin', subject: '/O=system:masters/CN=kubernetes-admin', usage: 'client', signer: 'ca' },
    { name: 'apiserver-etcd-client', subject: '/CN=kube-apiserver-etcd-client', usage: 'client', signer: 'etcd/ca' },
    { name: 'etcd/server', subject: '/CN=localhost', usage: 'server+client', signer: 'etcd/ca', sans: LOOPBACK_SANS },
    { name: 'etcd/peer', subject: '/CN=localhost', usage: 'server+client', signer: 'etcd/ca', sans: LOOPBACK_SANS },
    { name: 'etcd/healthcheck-client', subject: '/CN=kube-etcd-healthcheck-client', usage: 'client', signer: 'etcd/ca' },
    { name: 'front-proxy-client', subject: '/CN=front-proxy-client', usage: 'client', signer: 'front-proxy-ca' },
  ];
  await Promise.all(leaves.map((c) => makeCert(dir, c)));
  const p = (f: string) => join(dir, f);
  return {
    dir,
    caCrt: p('ca.crt'),
    caKey: p('ca.key'),
    apiserverCrt: p('apiserver.crt'),
    apiserverKey: p('apiserver.key'),
    etcdCaCrt: p('etcd/ca.crt'),
    etcdServerCrt: p('etcd/server.crt'),
    etcdServerKey: p('etcd/server.key'),
    etcdClientCrt: p('apiserver-etcd-client.crt'),
    etcdClientKey: p('apiserver-etcd-client.key'),
    adminCrt: p('admin.crt'),
    adminKey: p('admin.key'),
  };
}
