import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import {
  loadKmsTemplate,
  planPluginManifest,
  renderPluginManifest,
  renderTemplate,
  type PluginManifestInput,
} from '../../src/kms/manifest';
import { CliError, ExitCode } from '../../src/ui/errors';

const ACK = { plugin: 'ack-kms-plugin', region: 'cn-hangzhou', keyId: 'key-hzz62f1cb0c3ad1d1a2b3c' };
const ARN = 'arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
const AWS = {
  plugin: 'aws-encryption-provider',
  region: 'us-west-2',
  keyArn: ARN,
  image: 'registry.example.com/kms/aws-encryption-provider:v1.2.0',
};

function render(input: PluginManifestInput) {
  const plan = planPluginManifest(input);
  const text = renderPluginManifest(plan, loadKmsTemplate(plan.template));
  return { plan, text, doc: parse(text) as any };
}

/** The pod spec of either variant. */
const podSpec = (doc: any) => (doc.kind === 'Deployment' ? doc.spec.template.spec : doc.spec);

const CASES: Array<[string, PluginManifestInput]> = [
  ['ack deployment + secret', { ...ACK, variant: 'deployment', replicas: '3', credentialsSecret: 'ack-creds' }],
  ['ack deployment + ram role', { ...ACK, variant: 'deployment', replicas: 1, instanceRole: true }],
  ['ack static pod + file', { ...ACK, variant: 'static-pod', credentialsFile: '/etc/kubernetes/kmsplugin/credentials' }],
  ['ack static pod + ram role + v1', { ...ACK, variant: 'static-pod', instanceRole: true, enableKmsV1: true }],
  ['aws deployment + secret', { ...AWS, variant: 'deployment', replicas: '3', credentialsSecret: 'aws-creds' }],
  ['aws static pod + file', { ...AWS, variant: 'static-pod', credentialsFile: '/etc/kubernetes/kmsplugin/aws-credentials' }],
  ['aws static pod + instance role', { ...AWS, instanceRole: true }],
];

describe('plugin-manifest renders valid manifests for every plugin and variant', () => {
  it.each(CASES)('%s', (_label, input) => {
    const { plan, text, doc } = render(input);
    expect(parseAllDocuments(text)).toHaveLength(1);
    expect(text).not.toMatch(/\{\{|\}\}/);
    const spec = podSpec(doc);
    const [container] = spec.containers;
    expect(spec.containers).toHaveLength(1);
    expect(spec.hostNetwork).toBe(true);

    // The socket directory, created on the plugin side, mounted where the plugin listens.
    const socketVol = spec.volumes.find((v: any) => v.name === 'kms-socket');
    expect(socketVol.hostPath).toEqual({ path: plan.socketDir, type: 'DirectoryOrCreate' });
    expect(container.volumeMounts).toContainEqual({ name: 'kms-socket', mountPath: plan.socketDir });
    expect(text).toContain(plan.endpoint.replace('unix://', ''));

    if (input.variant === 'deployment') {
      expect(doc.apiVersion).toBe('apps/v1');
      expect(doc.kind).toBe('Deployment');
      expect(doc.spec.replicas).toBe(Number(input.replicas));
      expect(spec.nodeSelector).toEqual({ 'node-role.kubernetes.io/control-plane': '' });
      expect(spec.tolerations).toContainEqual({ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' });
      expect(spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey).toBe('kubernetes.io/hostname');
      expect(doc.spec.strategy.rollingUpdate).toEqual({ maxSurge: 0, maxUnavailable: 1 });
      expect(text).toContain('WARNING: a KMS plugin that only runs as a cluster workload can deadlock a control-plane reboot');
      expect(plan.warnings.join(' ')).toContain('deadlock');
      expect(plan.manifestPath).toBeUndefined();
    } else {
      expect(doc.apiVersion).toBe('v1');
      expect(doc.kind).toBe('Pod');
      expect(doc.metadata.namespace).toBe('kube-system');
      expect(spec.priorityClassName).toBe('system-node-critical');
      expect(spec.nodeSelector).toBeUndefined();
      expect(plan.manifestPath).toBe(`/etc/kubernetes/manifests/${doc.metadata.name}.yaml`);
      expect(text).toContain('This is NOT for kubectl');
    }

    // Credentials: referenced from a Secret or a host file, never literal.
    const env: any[] = container.env ?? [];
    for (const e of env) expect(e.value === undefined || !/SECRET|ACCESS_KEY/.test(e.name)).toBe(true);
    if (input.credentialsSecret) {
      const refs = env.filter((e) => e.valueFrom?.secretKeyRef).map((e) => [e.name, e.valueFrom.secretKeyRef.name, e.valueFrom.secretKeyRef.key]);
      expect(refs).toEqual(
        input.plugin === 'ack-kms-plugin'
          ? [
              ['ACCESS_KEY_ID', 'ack-creds', 'ACCESS_KEY_ID'],
              ['ACCESS_KEY_SECRET', 'ack-creds', 'ACCESS_KEY_SECRET'],
            ]
          : [
              ['AWS_ACCESS_KEY_ID', 'aws-creds', 'AWS_ACCESS_KEY_ID'],
              ['AWS_SECRET_ACCESS_KEY', 'aws-creds', 'AWS_SECRET_ACCESS_KEY'],
            ],
      );
    } else {
      expect(env.some((e) => e.valueFrom)).toBe(false);
    }
    if (input.credentialsFile) {
      const credVol = spec.volumes.find((v: any) => v.name === 'kms-credentials');
      expect(credVol.hostPath).toEqual({ path: input.credentialsFile, type: 'File' });
      expect(container.volumeMounts.find((m: any) => m.name === 'kms-credentials').readOnly).toBe(true);
    } else {
      expect(spec.volumes.some((v: any) => v.name === 'kms-credentials')).toBe(false);
    }

    if (input.plugin === 'ack-kms-plugin') {
      expect(container.image).toBe('registry.cn-hangzhou.aliyuncs.com/acs/ack-kms-plugin:v1.1.0.1-g2fbff53-aliyun');
      expect(env).toContainEqual({ name: 'ACK_KMS_REGION_ID', value: 'cn-hangzhou' });
      const cmd = container.command.join(' ');
      expect(cmd).toContain('--key-id=key-hzz62f1cb0c3ad1d1a2b3c');
      expect(cmd).toContain(`--path-to-unix-socket=${plan.vars.socketPath}`);
      expect(cmd.includes('--enable-kms-v1')).toBe(Boolean(input.enableKmsV1));
      expect(container.livenessProbe.exec.command).toEqual(['ack-kms-plugin', 'health', `--path-to-unix-socket=${plan.vars.socketPath}`]);
    } else {
      expect(container.image).toBe(AWS.image);
      expect(container.command).toEqual([
        '/aws-encryption-provider',
        `--key=${ARN}`,
        '--region=us-west-2',
        '--listen=/var/run/kmsplugin/socket.sock',
        '--health-port=:8083',
      ]);
      expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 8083 });
      expect(container.ports).toContainEqual({ name: 'healthz', containerPort: 8083, protocol: 'TCP' });
      if (input.credentialsFile) {
        expect(env).toContainEqual({ name: 'AWS_SHARED_CREDENTIALS_FILE', value: '/etc/kmsplugin-credentials/aws-credentials' });
      }
    }
  });

  it('defaults to the static pod variant', () => {
    expect(render({ ...AWS, instanceRole: true }).doc.kind).toBe('Pod');
  });

  it('honours --socket, --name, --namespace and --health-port', () => {
    const { doc, plan } = render({
      ...AWS,
      variant: 'deployment',
      replicas: 2,
      instanceRole: true,
      socket: '/run/aws-kms/kms.sock',
      name: 'aws-kms',
      namespace: 'kms-system',
      healthPort: '9443',
    });
    expect(plan.endpoint).toBe('unix:///run/aws-kms/kms.sock');
    expect(doc.metadata).toMatchObject({ name: 'aws-kms', namespace: 'kms-system' });
    expect(podSpec(doc).volumes[0].hostPath.path).toBe('/run/aws-kms');
    expect(podSpec(doc).containers[0].livenessProbe.httpGet.port).toBe(9443);
  });
});

describe('plugin-manifest refuses missing and invalid options with one line (exit 2)', () => {
  const CASES_BAD: Array<[string, PluginManifestInput, RegExp]> = [
    ['no plugin', {}, /^--plugin is required$/],
    ['unknown plugin', { plugin: 'vault' }, /unknown --plugin "vault"/],
    ['unknown variant', { ...ACK, variant: 'daemonset', instanceRole: true }, /unknown --variant "daemonset"/],
    ['ack without region/key', { plugin: 'ack-kms-plugin', instanceRole: true }, /missing required options for ack-kms-plugin --variant static-pod: --region, --key-id$/],
    ['aws without anything', { plugin: 'aws-encryption-provider' }, /missing required options .*: --region, --key-arn, --image, --credentials-file PATH or --instance-role$/],
    ['deployment without replicas', { ...ACK, variant: 'deployment', credentialsSecret: 'x' }, /missing required option for .*: --replicas$/],
    ['no credentials', { ...ACK }, /--credentials-file PATH or --instance-role$/],
    ['two credential modes', { ...ACK, credentialsFile: '/etc/k/creds', instanceRole: true }, /one way to get credentials/],
    ['secret in a static pod', { ...ACK, credentialsSecret: 'x' }, /--credentials-secret does not apply to ack-kms-plugin --variant static-pod/],
    ['file in a deployment', { ...ACK, variant: 'deployment', replicas: 1, credentialsFile: '/etc/k/c' }, /--credentials-file does not apply/],
    ['key id for aws', { ...AWS, keyId: 'key-abcdefabcdef', instanceRole: true }, /--key-id does not apply to aws-encryption-provider/],
    ['key arn for ack', { ...ACK, keyArn: ARN, instanceRole: true }, /--key-arn does not apply to ack-kms-plugin/],
    ['kms v1 for aws', { ...AWS, enableKmsV1: true, instanceRole: true }, /--enable-kms-v1 does not apply/],
    ['bad ack region', { ...ACK, region: 'Hangzhou', instanceRole: true }, /--region "Hangzhou" is not an Alibaba Cloud region id/],
    ['bad aws region', { ...AWS, region: 'us-west', instanceRole: true }, /--region "us-west" is not an AWS region id/],
    ['bad ack key id', { ...ACK, keyId: 'my key', instanceRole: true }, /--key-id "my key" is not an Alibaba Cloud KMS key id/],
    ['aws alias', { ...AWS, keyArn: 'arn:aws:kms:us-west-2:111122223333:alias/k8s', instanceRole: true }, /must name a key, not an alias/],
    ['aws bad arn', { ...AWS, keyArn: 'arn:aws:kms:us-west-2:1111:key/abc', instanceRole: true }, /is not an AWS KMS key ARN/],
    ['aws arn region mismatch', { ...AWS, region: 'eu-west-1', instanceRole: true }, /--key-arn is in region us-west-2 but --region is eu-west-1/],
    ['image without tag', { ...AWS, image: 'registry.example.com/aws-encryption-provider', instanceRole: true }, /not an image reference with a tag or digest/],
    ['image with spaces', { ...ACK, image: 'a b:1', instanceRole: true }, /not an image reference/],
    ['relative socket', { ...ACK, socket: 'kms/grpc.sock', instanceRole: true }, /--socket must be an absolute, normalized path/],
    ['socket with ..', { ...ACK, socket: '/var/run/../grpc.sock', instanceRole: true }, /--socket must be an absolute, normalized path/],
    ['socket in /tmp', { ...ACK, socket: '/tmp/grpc.sock', instanceRole: true }, /not directly in \/tmp/],
    ['socket in /', { ...ACK, socket: '/grpc.sock', instanceRole: true }, /not directly in \/ /],
    ['bad name', { ...ACK, name: 'KMS_Plugin', instanceRole: true }, /--name "KMS_Plugin" is not a valid object name/],
    ['bad secret name', { ...ACK, variant: 'deployment', replicas: 1, credentialsSecret: 'Creds!' }, /is not a valid Secret name/],
    ['credentials in the manifests dir', { ...ACK, credentialsFile: '/etc/kubernetes/manifests/creds' }, /must not be in the manifests directory/],
    ['zero replicas', { ...ACK, variant: 'deployment', replicas: '0', instanceRole: true }, /--replicas must be a whole number from 1 to 15/],
    ['health port of the apiserver', { ...AWS, healthPort: 6443, instanceRole: true }, /--health-port 6443 is used by kube-apiserver/],
    ['health port out of range', { ...AWS, healthPort: '80', instanceRole: true }, /--health-port must be a whole number from 1024 to 65535/],
  ];
  it.each(CASES_BAD)('%s', (_label, input, message) => {
    let err: unknown;
    try {
      planPluginManifest(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).message).toMatch(message);
    expect((err as CliError).message).not.toContain('\n');
    expect((err as CliError).hint).toBeTruthy();
  });
});

describe('renderTemplate', () => {
  it('fills placeholders and keeps or drops blocks, standalone tag lines included', () => {
    const t = 'a: {{x}}\n{{#on}}\nb: 1\n{{/on}}\n{{#off}}\nc: 2\n{{/off}}\n{{^off}}\nd: 3\n{{/off}}\ne: [{{#on}}y{{#off}}z{{/off}}{{/on}}]\n';
    expect(renderTemplate(t, { x: 'v', on: true, off: false })).toBe('a: v\nb: 1\nd: 3\ne: [y]\n');
  });

  it.each([
    ['unknown placeholder', '{{nope}}', /no value for \{\{nope\}\}/],
    ['unclosed block', '{{#on}}x', /\{\{#on\}\} is not closed/],
    ['stray close', 'x{{/on}}', /unexpected \{\{\/on\}\}/],
  ])('throws on a template bug: %s', (_l, t, re) => {
    expect(() => renderTemplate(t, { on: true })).toThrow(re);
  });
});
