/**
 * `npm run bed`: a local control plane to try the CLI against by hand. Prints where everything is,
 * then waits for Ctrl-C and removes all it made.
 */
import { silenceIpServernameWarning } from '../../../src/ui/warnings';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot, startBed, type BedOptions } from '../index';

silenceIpServernameWarning();

const USAGE = 'usage: npm run bed -- [--nodes 1|2] [--secrets N] [--kube-version X.Y.Z]';

function options(): BedOptions {
  const { values } = parseArgs({
    options: {
      nodes: { type: 'string', default: '1' },
      secrets: { type: 'string', default: '20' },
      'kube-version': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const nodes = Number(values.nodes);
  const secrets = Number(values.secrets);
  if (nodes !== 1 && nodes !== 2) throw new Error(`--nodes must be 1 or 2, not ${values.nodes}\n${USAGE}`);
  if (!Number.isInteger(secrets) || secrets < 0) throw new Error(`--secrets must be a whole number, not ${values.secrets}\n${USAGE}`);
  return { nodes, secrets, kubeVersion: values['kube-version'] };
}

async function main(): Promise<void> {
  const opts = options();
  const t0 = Date.now();
  const bed = await startBed(opts);
  const cli = `node ${join(repoRoot(), 'bin/k8s-encrypt.js')}`;
  const lines = [
    `bed up in ${((Date.now() - t0) / 1000).toFixed(1)} s: Kubernetes v${bed.kubeVersion} (stand-ins), ${opts.secrets} Secrets`,
    `etcd:        ${bed.etcd.endpoint}`,
    `  --cacert ${bed.etcd.caFile} --cert ${bed.etcd.certFile} --key ${bed.etcd.keyFile}`,
  ];
  for (const n of bed.nodes) {
    lines.push(
      '',
      `node ${n.name}`,
      `  root:       ${n.root}`,
      `  kubeconfig: ${n.kubeconfig}`,
      `  apiserver:  ${n.apiserverUrl}`,
      `  manifest:   ${n.manifest}`,
      `  pod log:    ${join(n.root, 'var/log/pods/kube-apiserver.log')}`,
    );
  }
  const root = bed.nodes[0]!.root;
  lines.push(
    '',
    'try:',
    `  ${cli} --root ${root} status`,
    `  ${cli} --root ${root} init --yes`,
    `  ETCDCTL_API=3 etcdctl --endpoints ${bed.etcd.endpoint} --cacert ${bed.etcd.caFile} --cert ${bed.etcd.certFile} --key ${bed.etcd.keyFile} get /registry/secrets/default/bed-secret-0 | hexdump -C | head`,
    `  kubectl --kubeconfig ${bed.nodes[0]!.kubeconfig} get secrets -A   (if kubectl is installed)`,
    '',
    'Ctrl-C stops the bed and removes everything it made.',
  );
  console.log(lines.join('\n'));
  await new Promise<void>((resolve) => {
    const done = () => {
      // Stay alive through the signal the etcd helper re-raises while we stop.
      process.on('SIGINT', () => {});
      process.on('SIGTERM', () => {});
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  console.log('\nstopping the bed...');
  await bed.stop();
  console.log('removed', bed.dir);
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
