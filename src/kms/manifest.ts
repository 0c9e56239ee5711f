/**
 * KMS plugin manifests from templates/kms/: validated options in, plain YAML out.
 *
 * planPluginManifest (pure) turns the command's options into template variables, refusing any
 * missing or malformed value with one line; renderTemplate / renderPluginManifest (pure) fill a
 * template in and prove the result parses; loadKmsTemplate is the only I/O (the template files
 * ship in the package next to dist/, or inside the single executable).
 */
import { basename, posix } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { CliError, ExitCode, usageError } from '../ui/errors';
import { readAsset } from '../runtime/assets';

export const KMS_PLUGINS = ['ack-kms-plugin', 'aws-encryption-provider'] as const;
type KmsPluginName = (typeof KMS_PLUGINS)[number];
const PLUGIN_VARIANTS = ['static-pod', 'deployment'] as const;
type PluginVariant = (typeof PLUGIN_VARIANTS)[number];

/** Where kubeadm's kubelet reads static pods on a node. */
const NODE_MANIFESTS_DIR = '/etc/kubernetes/manifests';

/** Upstream's published image for ack-kms-plugin (manifests/k8s-kms-plugin.yaml), per region. */
const ACK_KMS_PLUGIN_TAG = 'v1.1.0.1-g2fbff53-aliyun';
const ackDefaultImage = (region: string) => `registry.${region}.aliyuncs.com/acs/ack-kms-plugin:${ACK_KMS_PLUGIN_TAG}`;

const DEFAULT_SOCKET: Record<KmsPluginName, string> = {
  'ack-kms-plugin': '/var/run/kmsplugin/grpc.sock',
  // aws-encryption-provider's own --listen default.
  'aws-encryption-provider': '/var/run/kmsplugin/socket.sock',
};
/** Upstream's advice for hostNetwork: move the health port off 8080 (kube-apiserver's old port). */
const AWS_DEFAULT_HEALTH_PORT = 8083;

export interface PluginManifestInput {
  plugin?: string;
  variant?: string;
  region?: string;
  /** ack-kms-plugin: --key-id */
  keyId?: string;
  /** aws-encryption-provider: --key (a key ARN) */
  keyArn?: string;
  image?: string;
  socket?: string;
  name?: string;
  namespace?: string;
  replicas?: string | number;
  /** Why --replicas could not default to the control planes found through the kubeconfig. */
  replicasUncounted?: string;
  credentialsSecret?: string;
  credentialsFile?: string;
  instanceRole?: boolean;
  healthPort?: string | number;
  /** ack-kms-plugin: also serve KMS v1beta1 (--enable-kms-v1). */
  enableKmsV1?: boolean;
}

type TemplateVars = Record<string, string | boolean>;

interface PluginManifestPlan {
  plugin: KmsPluginName;
  variant: PluginVariant;
  /** File name under templates/kms/. */
  template: string;
  vars: TemplateVars;
  /** What the EncryptionConfiguration's kms.endpoint must be. */
  endpoint: string;
  socketDir: string;
  /** static-pod: where to save the output on each control-plane node. */
  manifestPath?: string;
  /** Things the operator must know or do, for stderr (never values of credentials). */
  notes: string[];
  warnings: string[];
}

// --- validation rules (one line each) ----------------------------------------------------------

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const ALIBABA_REGION = /^[a-z]{2,}(-[a-z0-9]+)+$/;
const AWS_REGION = /^[a-z]{2}(-[a-z]+)+-\d{1,2}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ACK_KEY_ID = /^(key-[a-z0-9]{10,64}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;
const AWS_KEY_ARN = /^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b):kms:([a-z0-9-]+):(\d{12}):key\/(.+)$/;
const IMAGE =
  /^(?:[a-z0-9]([a-z0-9.-]*[a-z0-9])?(?::\d{1,5})?\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$/;
const SAFE_PATH = /^\/[A-Za-z0-9._/-]+$/;
/** Host directories a socket must not sit in directly: they would be mounted whole, read-write. */
const SHARED_DIRS = new Set(['/', '/etc', '/var', '/run', '/var/run', '/tmp', '/var/lib', '/etc/kubernetes', NODE_MANIFESTS_DIR, '/etc/kubernetes/pki']);
const RESERVED_PORTS: Record<number, string> = {
  2379: 'etcd',
  2380: 'etcd peers',
  6443: 'kube-apiserver',
  8080: "kube-apiserver's old insecure port (upstream moves the plugin off it)",
  10250: 'the kubelet',
  10256: 'kube-proxy health',
  10257: 'kube-controller-manager',
  10259: 'kube-scheduler',
};

function bad(message: string, hint: string): CliError {
  return new CliError(message, { hint, exitCode: ExitCode.Usage });
}

function checkPath(flag: string, value: string, example: string): string {
  if (!SAFE_PATH.test(value) || posix.normalize(value) !== value || value.endsWith('/')) {
    throw bad(`${flag} must be an absolute, normalized path (letters, digits, . _ - /), got "${value}"`, `e.g. ${flag} ${example}`);
  }
  return value;
}

function checkSocket(value: string, example: string): { socketPath: string; socketDir: string } {
  const socketPath = checkPath('--socket', value, example);
  const socketDir = posix.dirname(socketPath);
  if (SHARED_DIRS.has(socketDir)) {
    throw bad(
      `--socket must be in a directory of its own, not directly in ${socketDir} (that directory is mounted into the plugin and the apiserver)`,
      `e.g. --socket ${example}`,
    );
  }
  return { socketPath, socketDir };
}

function checkImage(value: string): string {
  if (!IMAGE.test(value)) {
    throw bad(`--image "${value}" is not an image reference with a tag or digest`, 'e.g. --image registry.example.com/kms/plugin:v1.2.3 (pin a version)');
  }
  return value;
}

function parseIntIn(flag: string, v: string | number, min: number, max: number, hint: string): number {
  const n = typeof v === 'number' ? v : /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) throw bad(`${flag} must be a whole number from ${min} to ${max}, got "${v}"`, hint);
  return n;
}

// --- planning -----------------------------------------------------------------------------------

/**
 * Validates the options for one plugin and variant and returns the template variables.
 * Throws CliError(Usage) with one line for the first problem (all missing options at once).
 */
export function planPluginManifest(input: PluginManifestInput): PluginManifestPlan {
  const plugin = input.plugin as KmsPluginName;
  if (!input.plugin) throw bad('--plugin is required', `one of: ${KMS_PLUGINS.join(', ')}`);
  if (!KMS_PLUGINS.includes(plugin)) {
    throw bad(`unknown --plugin "${input.plugin}"`, `one of: ${KMS_PLUGINS.join(', ')}`);
  }
  const variant = (input.variant ?? 'static-pod') as PluginVariant;
  if (!PLUGIN_VARIANTS.includes(variant)) {
    throw bad(`unknown --variant "${input.variant}"`, `one of: ${PLUGIN_VARIANTS.join(', ')}`);
  }
  const isAck = plugin === 'ack-kms-plugin';

  // Options that belong to the other plugin or variant are mistakes, not noise.
  const foreign: Array<[boolean, string, string]> = [
    [!isAck && input.keyId !== undefined, '--key-id', 'aws-encryption-provider takes the key as --key-arn'],
    [isAck && input.keyArn !== undefined, '--key-arn', 'ack-kms-plugin takes the key as --key-id'],
    [isAck && input.healthPort !== undefined, '--health-port', 'ack-kms-plugin has no health port (its liveness probe runs `ack-kms-plugin health`)'],
    [!isAck && Boolean(input.enableKmsV1), '--enable-kms-v1', 'only ack-kms-plugin has a KMS v1 switch'],
    [variant === 'static-pod' && input.credentialsSecret !== undefined, '--credentials-secret', 'a static pod cannot read Secrets: use --credentials-file (a root-only host file) or --instance-role'],
    [variant === 'deployment' && input.credentialsFile !== undefined, '--credentials-file', 'a Deployment takes credentials from a Secret: use --credentials-secret or --instance-role'],
    [variant === 'static-pod' && input.replicas !== undefined, '--replicas', 'a static pod runs once on every node whose manifests directory holds it'],
  ];
  for (const [is, flag, why] of foreign) {
    if (is) throw bad(`${flag} does not apply to ${plugin} --variant ${variant}`, why);
  }

  const credentialFlags = variant === 'deployment' ? '--credentials-secret NAME or --instance-role' : '--credentials-file PATH or --instance-role';
  const missing = [
    input.region === undefined && '--region',
    isAck && input.keyId === undefined && '--key-id',
    !isAck && input.keyArn === undefined && '--key-arn',
    !isAck && input.image === undefined && '--image',
    variant === 'deployment' && input.replicas === undefined && `--replicas${input.replicasUncounted ? ` (the control planes could not be counted: ${input.replicasUncounted})` : ''}`,
    input.credentialsSecret === undefined && input.credentialsFile === undefined && !input.instanceRole && credentialFlags,
  ].filter((m): m is string => Boolean(m));
  if (missing.length) {
    throw bad(
      `missing required option${missing.length > 1 ? 's' : ''} for ${plugin} --variant ${variant}: ${missing.join(', ')}`,
      isAck
        ? 'e.g. --region cn-hangzhou --key-id key-hzz62f1cb0c3ad1d1a2b3c'
        : 'e.g. --region us-west-2 --key-arn arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab --image REGISTRY/aws-encryption-provider:TAG',
    );
  }
  const credentialModes = [input.credentialsSecret !== undefined, input.credentialsFile !== undefined, Boolean(input.instanceRole)].filter(Boolean);
  if (credentialModes.length > 1) throw bad('give one way to get credentials, not several', `use ${credentialFlags}`);

  const warnings: string[] = [];
  const notes: string[] = [];
  const region = input.region!;
  if (!(isAck ? ALIBABA_REGION : AWS_REGION).test(region)) {
    throw bad(`--region "${region}" is not ${isAck ? 'an Alibaba Cloud' : 'an AWS'} region id`, isAck ? 'e.g. --region cn-hangzhou' : 'e.g. --region us-west-2');
  }

  const vars: TemplateVars = { region, kmsV1: Boolean(input.enableKmsV1) };
  if (isAck) {
    const keyId = input.keyId!;
    if (!ACK_KEY_ID.test(keyId)) {
      throw bad(`--key-id "${keyId}" is not an Alibaba Cloud KMS key id`, 'a key id looks like key-hzz62f1cb0c3ad1d1a2b3c or 1234abcd-12ab-34cd-56ef-1234567890ab (KMS console: Resources > Keys)');
    }
    vars.keyId = keyId;
    vars.image = input.image === undefined ? ackDefaultImage(region) : checkImage(input.image);
  } else {
    const arn = input.keyArn!;
    if (/:alias\//.test(arn) || arn.startsWith('alias/')) {
      throw bad('--key-arn must name a key, not an alias', 'an alias can be re-pointed to another key, which makes every Secret encrypted before unreadable (upstream advice): give the key ARN');
    }
    const m = AWS_KEY_ARN.exec(arn);
    if (!m || !(UUID.test(m[4]!) || /^mrk-[0-9a-f]{32}$/.test(m[4]!))) {
      throw bad(`--key-arn "${arn}" is not an AWS KMS key ARN`, 'e.g. arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab');
    }
    if (m[2] !== region) throw bad(`--key-arn is in region ${m[2]} but --region is ${region}`, 'give the region the key lives in');
    vars.keyArn = arn;
    vars.image = checkImage(input.image!);
    vars.healthPort = String(
      input.healthPort === undefined
        ? AWS_DEFAULT_HEALTH_PORT
        : parseIntIn('--health-port', input.healthPort, 1024, 65535, `e.g. --health-port ${AWS_DEFAULT_HEALTH_PORT}`),
    );
    const reserved = RESERVED_PORTS[Number(vars.healthPort)];
    if (reserved) throw bad(`--health-port ${vars.healthPort} is used by ${reserved} on control-plane nodes (the plugin shares the host network)`, `e.g. --health-port ${AWS_DEFAULT_HEALTH_PORT}`);
  }
  if (/:latest$/.test(String(vars.image))) warnings.push(`--image ${vars.image} is not pinned: a node that pulls a newer plugin may stop decrypting`);

  const { socketPath, socketDir } = checkSocket(input.socket ?? DEFAULT_SOCKET[plugin], DEFAULT_SOCKET[plugin]);
  Object.assign(vars, { socketPath, socketDir });

  const name = input.name ?? plugin;
  if (!DNS_LABEL.test(name)) throw bad(`--name "${name}" is not a valid object name (lowercase letters, digits, -; at most 63)`, `e.g. --name ${plugin}`);
  const namespace = input.namespace ?? 'kube-system';
  if (!DNS_LABEL.test(namespace)) throw bad(`--namespace "${namespace}" is not a valid namespace name`, 'e.g. --namespace kube-system');
  Object.assign(vars, { name, namespace });

  if (input.credentialsSecret !== undefined) {
    if (!DNS_SUBDOMAIN.test(input.credentialsSecret)) {
      throw bad(`--credentials-secret "${input.credentialsSecret}" is not a valid Secret name`, 'lowercase letters, digits, - and .; e.g. --credentials-secret kms-plugin-credentials');
    }
    vars.credentialsSecret = input.credentialsSecret;
    notes.push(
      `create the Secret ${namespace}/${input.credentialsSecret} first (keys ${isAck ? 'ACCESS_KEY_ID, ACCESS_KEY_SECRET' : 'AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY'}); the manifest only references it`,
    );
  }
  if (input.credentialsFile !== undefined) {
    const file = checkPath('--credentials-file', input.credentialsFile, '/etc/kubernetes/kmsplugin/credentials');
    if (posix.dirname(file) === NODE_MANIFESTS_DIR || file.startsWith(`${NODE_MANIFESTS_DIR}/`)) {
      throw bad('--credentials-file must not be in the manifests directory (the kubelet reads every file there)', 'e.g. --credentials-file /etc/kubernetes/kmsplugin/credentials');
    }
    vars.credentialsFile = file;
    vars.credentialsFileName = posix.basename(file);
    notes.push(
      `put the credentials in ${file} on every control-plane node, owned by root, mode 0600 (${isAck ? 'lines ACCESS_KEY_ID=... and ACCESS_KEY_SECRET=...' : 'an AWS shared credentials file with a [default] profile'}); a static pod cannot read Secrets`,
    );
  }
  vars.instanceRole = Boolean(input.instanceRole);

  let manifestPath: string | undefined;
  if (variant === 'deployment') {
    vars.replicas = String(parseIntIn('--replicas', input.replicas!, 1, 15, 'give the number of control-plane nodes, e.g. --replicas 3'));
    warnings.push(
      'a KMS plugin that only runs as a Deployment can deadlock a control-plane reboot (the apiserver waits for the plugin, the plugin waits to be scheduled): prefer --variant static-pod',
    );
    notes.push(`apply it with: kubectl apply -f -   (one replica on each of the ${vars.replicas} control-plane nodes)`);
  } else {
    manifestPath = `${NODE_MANIFESTS_DIR}/${name}.yaml`;
    vars.manifestPath = manifestPath;
    notes.push(`this is a static pod, not for kubectl: save it as ${manifestPath} on every control-plane node`);
  }
  const endpoint = `unix://${socketPath}`;
  notes.push(`the apiserver must mount ${socketDir}; check the plugin with: k8s-encrypt kms health --endpoint ${endpoint}`);

  return { plugin, variant, template: `${plugin}.${variant}.yaml`, vars, endpoint, socketDir, manifestPath, notes, warnings };
}

// --- rendering ----------------------------------------------------------------------------------

/**
 * Fills `{{name}}` placeholders and keeps `{{#flag}}...{{/flag}}` blocks only when the flag is
 * truthy (`{{^flag}}` when falsy); blocks nest, and a tag alone on its line takes the line with it.
 * An unknown placeholder or an unbalanced block is a template bug and throws.
 */
export function renderTemplate(template: string, vars: TemplateVars): string {
  const text = template.replace(/^[ \t]*(\{\{[#^/]\w+\}\})[ \t]*\r?\n/gm, '$1');
  const tokens = text.split(/(\{\{[#^/]?\w+\}\})/);
  let pos = 0;
  const render = (closing: string | undefined, active: boolean): string => {
    let out = '';
    while (pos < tokens.length) {
      const tok = tokens[pos++]!;
      const m = /^\{\{([#^/]?)(\w+)\}\}$/.exec(tok);
      if (!m) {
        if (active) out += tok;
        continue;
      }
      const [, sigil, key] = m as unknown as [string, string, string];
      if (sigil === '/') {
        if (key !== closing) throw new Error(`template: unexpected {{/${key}}}`);
        return out;
      }
      if (sigil === '#' || sigil === '^') {
        // A dropped block is still parsed (to find its end) but its placeholders need no values.
        const keep = active && Boolean(vars[key]) === (sigil === '#');
        out += render(key, keep);
        continue;
      }
      if (!active) continue;
      const v = vars[key];
      if (typeof v !== 'string') throw new Error(`template: no value for {{${key}}}`);
      out += v;
    }
    if (closing) throw new Error(`template: {{#${closing}}} is not closed`);
    return out;
  };
  return render(undefined, true);
}

/** The manifest text; proves it is one YAML document of the expected kind. */
export function renderPluginManifest(plan: PluginManifestPlan, template: string): string {
  const text = renderTemplate(template, plan.vars);
  const docs = parseAllDocuments(text);
  const kind = plan.variant === 'deployment' ? 'Deployment' : 'Pod';
  if (!Array.isArray(docs) || docs.length !== 1 || docs[0]!.errors.length || docs[0]!.get('kind') !== kind) {
    throw new CliError(`internal error: the ${plan.template} template did not render to one ${kind}`, { exitCode: ExitCode.Internal });
  }
  return text;
}

/** A template of templates/kms/: embedded in the single executable, a package file otherwise. */
export function loadKmsTemplate(name: string): string {
  if (basename(name) !== name) throw usageError(`bad template name ${name}`);
  return readAsset(posix.join('templates', 'kms', name));
}
