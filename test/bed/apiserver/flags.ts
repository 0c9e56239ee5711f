/**
 * The kube-apiserver command line, as far as the stand-in needs it. pflag accepts `--name=value`
 * and `--name value`; boolean flags may stand alone. Flags the stand-in does not model are kept
 * (and ignored), except the ones the emulated version does not know, which make the real binary
 * exit with "unknown flag".
 */
import { atLeast, type KubeVersion } from './version';

export interface ApiserverFlags {
  securePort: number;
  bindAddress: string;
  advertiseAddress?: string;
  tlsCertFile?: string;
  tlsPrivateKeyFile?: string;
  clientCaFile?: string;
  etcdServers: string[];
  etcdCaFile?: string;
  etcdCertFile?: string;
  etcdKeyFile?: string;
  etcdPrefix: string;
  encryptionProviderConfig?: string;
  automaticReload: boolean;
  featureGates: Record<string, boolean>;
}

/** A start-up failure: printed like the real binary does and turned into exit code 1. */
export class StartupError extends Error {
  /** pflag errors print "Error: ..." plus usage instead of klog's "command failed". */
  constructor(
    message: string,
    readonly style: 'klog' | 'cobra' = 'klog',
  ) {
    super(message);
  }
}

// Boolean flags kubeadm or tests may pass without a value.
const BOOLEAN_FLAGS = new Set([
  'encryption-provider-config-automatic-reload',
  'allow-privileged',
  'enable-bootstrap-token-auth',
  'anonymous-auth',
  'profiling',
  'enable-aggregator-routing',
]);

/** Flags that only exist from a given minor version on (pflag: "unknown flag" before). */
const FLAG_SINCE: Record<string, number> = {
  'encryption-provider-config-automatic-reload': 26,
};

export function parseFlags(argv: string[], version: KubeVersion): ApiserverFlags {
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === 'kube-apiserver') continue;
    if (!arg.startsWith('--')) continue; // positional arguments are ignored by kube-apiserver too
    const eq = arg.indexOf('=');
    let name: string;
    let value: string;
    if (eq !== -1) {
      name = arg.slice(2, eq);
      value = arg.slice(eq + 1);
    } else {
      name = arg.slice(2);
      const next = argv[i + 1];
      if (BOOLEAN_FLAGS.has(name) || next === undefined || next.startsWith('--')) value = 'true';
      else {
        value = next;
        i++;
      }
    }
    const since = FLAG_SINCE[name];
    if (since !== undefined && !atLeast(version, since)) {
      throw new StartupError(`unknown flag: --${name}`, 'cobra');
    }
    values.set(name, value);
  }

  const bool = (name: string): boolean => {
    const v = values.get(name);
    if (v === undefined) return false;
    if (/^(true|1|t)$/i.test(v)) return true;
    if (/^(false|0|f)$/i.test(v)) return false;
    throw new StartupError(`invalid argument "${v}" for "--${name}" flag: strconv.ParseBool: parsing "${v}": invalid syntax`, 'cobra');
  };

  const port = Number(values.get('secure-port') ?? '6443');
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new StartupError(`invalid argument "${values.get('secure-port')}" for "--secure-port" flag`, 'cobra');
  }
  const etcdServers = (values.get('etcd-servers') ?? '').split(',').filter(Boolean);
  if (etcdServers.length === 0) {
    throw new StartupError('[--etcd-servers must be specified]');
  }

  return {
    securePort: port,
    bindAddress: values.get('bind-address') ?? '0.0.0.0',
    advertiseAddress: values.get('advertise-address'),
    tlsCertFile: values.get('tls-cert-file'),
    tlsPrivateKeyFile: values.get('tls-private-key-file'),
    clientCaFile: values.get('client-ca-file'),
    etcdServers,
    etcdCaFile: values.get('etcd-cafile'),
    etcdCertFile: values.get('etcd-certfile'),
    etcdKeyFile: values.get('etcd-keyfile'),
    etcdPrefix: values.get('etcd-prefix') ?? '/registry',
    encryptionProviderConfig: values.get('encryption-provider-config'),
    automaticReload: bool('encryption-provider-config-automatic-reload'),
    featureGates: parseFeatureGates(values.get('feature-gates') ?? ''),
  };
}

function parseFeatureGates(text: string): Record<string, boolean> {
  const gates: Record<string, boolean> = {};
  for (const item of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [k, v] = item.split('=');
    if (!k || (v !== 'true' && v !== 'false')) {
      throw new StartupError(`invalid argument "${text}" for "--feature-gates" flag: missing bool value for ${k}`, 'cobra');
    }
    gates[k] = v === 'true';
  }
  return gates;
}
