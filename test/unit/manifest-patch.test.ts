import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { listHostPathMounts, readApiserverFlags } from '../../src/manifest/manifest';
import {
  planManifestPatch,
  planManifestUnpatch,
  planRemoveFlag,
  planSetFlag,
  unifiedDiff,
} from '../../src/manifest/patch';
import { CliError, ExitCode } from '../../src/ui/errors';

const dir = fileURLToPath(new URL('../fixtures/manifests/', import.meta.url));
const fixture = (name: string) => readFileSync(dir + name, 'utf8');
const CONFIG = '/etc/kubernetes/encryption/config.yaml';
const CONFIG_DIR = '/etc/kubernetes/encryption';

/** The diff's own +/- lines, without the file headers. */
function diffLines(diff: string, sign: '+' | '-'): string[] {
  return diff
    .split('\n')
    .filter((l) => l.startsWith(sign) && !l.startsWith(`${sign}${sign}${sign} `))
    .map((l) => l.slice(1));
}

const semantic = (text: string, file: string) => (file.endsWith('.json') ? JSON.parse(text) : parseYaml(text));

const FLAG = `--encryption-provider-config=${CONFIG}`;
const kubeadmStyle = [
  `    - ${FLAG}`,
  `    - mountPath: ${CONFIG_DIR}`,
  '      name: encryption-config',
  '      readOnly: true',
  '  - hostPath:',
  `      path: ${CONFIG_DIR}`,
  '      type: DirectoryOrCreate',
  '    name: encryption-config',
];

interface Case {
  file: string;
  configPath?: string;
  /** Exactly the lines the diff adds, in order. */
  added: string[];
  /** Lines the diff removes (only where a re-render is unavoidable). */
  removed?: number;
  volumeName?: string;
}

const cases: Case[] = [
  { file: 'kubeadm-1.24.yaml', configPath: '/etc/kubernetes/pki/encryption/config.yaml', added: ['    - --encryption-provider-config=/etc/kubernetes/pki/encryption/config.yaml'] },
  { file: 'kubeadm-1.29.yaml', added: kubeadmStyle, volumeName: 'encryption-config' },
  { file: 'kubeadm-1.32.yaml', added: kubeadmStyle, volumeName: 'encryption-config' },
  {
    file: 'args-style.yaml',
    added: [
      `        - ${FLAG}`,
      '        - name: encryption-config',
      `          mountPath: ${CONFIG_DIR}`,
      '          readOnly: true',
      '    - name: encryption-config',
      '      hostPath:',
      `        path: ${CONFIG_DIR}`,
      '        type: DirectoryOrCreate',
    ],
    volumeName: 'encryption-config',
  },
  {
    file: 'split-flags.yaml',
    added: ['    - --encryption-provider-config', `    - ${CONFIG}`, ...kubeadmStyle.slice(1)],
    volumeName: 'encryption-config',
  },
  {
    file: 'comments-quoting.yaml',
    added: [`    - "${FLAG}"`, ...kubeadmStyle.slice(1)],
    volumeName: 'encryption-config',
  },
  {
    file: 'kube-apiserver.json',
    added: [
      `          "${FLAG}",`,
      '            "mountPath": "/etc/kubernetes/encryption",',
      '            "name": "encryption-config",',
      '            "readOnly": true',
      '          },',
      '          {',
      '        "hostPath": {',
      '          "path": "/etc/kubernetes/encryption",',
      '          "type": "DirectoryOrCreate"',
      '        },',
      '        "name": "encryption-config"',
      '      },',
      '      {',
    ],
    volumeName: 'encryption-config',
  },
  { file: 'sidecar-first.yaml', added: kubeadmStyle, volumeName: 'encryption-config' },
  {
    file: 'volume-collision.yaml',
    added: kubeadmStyle.map((l) => l.replace('name: encryption-config', 'name: encryption-config-2')),
    volumeName: 'encryption-config-2',
  },
  { file: 'config-dir-mounted.yaml', added: [`    - ${FLAG}`], volumeName: 'enc' },
  {
    file: 'flow-style.yaml',
    added: [
      `    command: [kube-apiserver, --advertise-address=10.3.3.3, ${FLAG}, --etcd-servers=https://127.0.0.1:2379, --secure-port=6443]`,
      `    volumeMounts: [{mountPath: ${CONFIG_DIR}, name: encryption-config, readOnly: true}, {mountPath: /etc/kubernetes/pki, name: k8s-certs, readOnly: true}]`,
      `  volumes: [{hostPath: {path: ${CONFIG_DIR}, type: DirectoryOrCreate}, name: encryption-config}, {hostPath: {path: /etc/kubernetes/pki, type: DirectoryOrCreate}, name: k8s-certs}]`,
    ],
    removed: 3,
    volumeName: 'encryption-config',
  },
];

describe.each(cases)('planManifestPatch on $file', (c) => {
  const original = fixture(c.file);
  const configPath = c.configPath ?? CONFIG;
  const plan = planManifestPatch(original, c.file, { configPath });

  it('adds exactly the flag and the mount, nothing else', () => {
    expect(plan.changed).toBe(true);
    // Sorted: where a new item lands between look-alike items, the diff may align it differently.
    expect(diffLines(plan.diff, '+').sort()).toEqual([...c.added].sort());
    expect(diffLines(plan.diff, '-')).toHaveLength(c.removed ?? 0);
    expect(plan.volumeName).toBe(c.volumeName);
    expect(plan.configPathInPod).toBe(configPath);
  });

  it('yields a manifest whose apiserver reads the config through a mount', () => {
    const flags = readApiserverFlags(plan.newText, c.file);
    expect(flags.flags.get('encryption-provider-config')).toBe(configPath);
    const mounts = listHostPathMounts(plan.newText, c.file);
    expect(mounts.some((m) => configPath.startsWith(`${m.hostPath}/`) && m.mountPath === m.hostPath && m.readOnly)).toBe(true);
  });

  it('is a no-op when re-planned on its own output', () => {
    const again = planManifestPatch(plan.newText, c.file, { configPath });
    expect(again).toMatchObject({ changed: false, diff: '', actions: [] });
    expect(again.newText).toBe(plan.newText);
    expect(again.volumeName).toBe(c.volumeName);
  });

  it('keeps every comment line', () => {
    const comments = original.split('\n').filter((l) => l.includes('#'));
    for (const line of comments) expect(plan.newText.split('\n')).toContain(line);
  });

  it('is undone byte for byte by planManifestUnpatch, which is itself idempotent', () => {
    const undo = planManifestUnpatch(plan.newText, c.file, { configPath });
    expect(undo.changed).toBe(true);
    expect(undo.newText).toBe(original);
    expect(semantic(undo.newText, c.file)).toEqual(semantic(original, c.file));
    expect(planManifestUnpatch(undo.newText, c.file, { configPath }).changed).toBe(false);
  });
});

describe('manifests that already carry a config', () => {
  it('leaves an already configured manifest alone and says so', () => {
    const text = fixture('already-configured.yaml');
    const plan = planManifestPatch(text, 'already-configured.yaml', { configPath: CONFIG });
    expect(plan).toMatchObject({ changed: false, diff: '', actions: [], volumeName: 'encryption-config' });
    expect(plan.newText).toBe(text);
  });

  it('unpatches what this tool wrote, and re-patching restores the same bytes', () => {
    const text = fixture('already-configured.yaml');
    const undo = planManifestUnpatch(text, 'x.yaml', { configPath: CONFIG });
    expect(undo.actions).toEqual([
      'remove flag --encryption-provider-config',
      `unmount ${CONFIG_DIR} from kube-apiserver (volume encryption-config)`,
      `remove volume encryption-config (hostPath ${CONFIG_DIR})`,
    ]);
    expect(undo.newText).not.toContain('encryption');
    expect(planManifestPatch(undo.newText, 'x.yaml', { configPath: CONFIG }).newText).toBe(text);
  });

  it('refuses to point the apiserver at another config without --replace', () => {
    const text = fixture('different-config.yaml');
    const err = (() => {
      try {
        planManifestPatch(text, 'different-config.yaml', { configPath: CONFIG });
      } catch (e) {
        return e;
      }
    })() as CliError;
    expect(err).toBeInstanceOf(CliError);
    expect(err.exitCode).toBe(ExitCode.Refused);
    expect(err.message).toBe(
      'different-config.yaml already sets --encryption-provider-config=/etc/kubernetes/pki/encryption-old.yaml, not /etc/kubernetes/encryption/config.yaml',
    );
    expect(err.hint).toMatch(/rotate-key.*--replace/);
  });

  it('replaces the flag in place with --replace and mounts the new directory', () => {
    const plan = planManifestPatch(fixture('different-config.yaml'), 'd.yaml', { configPath: CONFIG, replace: true });
    expect(diffLines(plan.diff, '-')).toEqual(['    - --encryption-provider-config=/etc/kubernetes/pki/encryption-old.yaml']);
    expect(diffLines(plan.diff, '+').sort()).toEqual([...kubeadmStyle].sort());
    expect(plan.actions[0]).toBe(`replace --encryption-provider-config=/etc/kubernetes/pki/encryption-old.yaml with ${CONFIG}`);
  });

  it('unpatch refuses when the manifest uses another config', () => {
    expect(() => planManifestUnpatch(fixture('different-config.yaml'), 'd.yaml', { configPath: CONFIG })).toThrow(
      /sets --encryption-provider-config=\/etc\/kubernetes\/pki\/encryption-old.yaml, not/,
    );
  });

  it('never removes kubeadm volumes or a hand-made mount of the config dir', () => {
    const text = fixture('config-dir-mounted.yaml');
    const patched = planManifestPatch(text, 'c.yaml', { configPath: CONFIG }).newText;
    const undo2 = planManifestUnpatch(patched, 'c.yaml', { configPath: CONFIG });
    expect(undo2.actions).toEqual(['remove flag --encryption-provider-config']);
    expect(undo2.newText).toBe(text);
  });
});

describe('mounts through an existing volume at another path', () => {
  const text = fixture('kubeadm-1.29.yaml')
    .replace('    - mountPath: /etc/ca-certificates\n', '    - mountPath: /host-etc-k8s\n      name: etc-kubernetes\n      readOnly: true\n    - mountPath: /etc/ca-certificates\n')
    .replace('  - hostPath:\n      path: /etc/ca-certificates\n', '  - hostPath:\n      path: /etc/kubernetes\n      type: Directory\n    name: etc-kubernetes\n  - hostPath:\n      path: /etc/ca-certificates\n');

  it('points the flag at the in-container path and adds no volume', () => {
    const plan = planManifestPatch(text, 'k.yaml', { configPath: CONFIG });
    expect(plan.configPathInPod).toBe('/host-etc-k8s/encryption/config.yaml');
    expect(diffLines(plan.diff, '+')).toEqual(['    - --encryption-provider-config=/host-etc-k8s/encryption/config.yaml']);
    expect(plan.volumeName).toBeUndefined();
  });
});

describe('KMS socket directory and the automatic reload flag', () => {
  const kms = { dir: '/var/run/kmsplugin', type: 'Directory' as const };

  it('mounts the socket dir (type Directory, read-only) once', () => {
    const plan = planManifestPatch(fixture('kubeadm-1.32.yaml'), 'k.yaml', { configPath: CONFIG, extraMounts: [kms] });
    expect(diffLines(plan.diff, '+')).toEqual(
      expect.arrayContaining(['    - mountPath: /var/run/kmsplugin', '    name: kms-socket', '      type: Directory']),
    );
    const m = listHostPathMounts(plan.newText).find((x) => x.volumeName === 'kms-socket');
    expect(m).toEqual({ volumeName: 'kms-socket', hostPath: '/var/run/kmsplugin', mountPath: '/var/run/kmsplugin', readOnly: true, type: 'Directory' });
    expect(planManifestPatch(plan.newText, 'k.yaml', { configPath: CONFIG, extraMounts: [kms] }).changed).toBe(false);
    const undo = planManifestUnpatch(plan.newText, 'k.yaml', { configPath: CONFIG, extraMountDirs: [kms.dir] });
    expect(undo.newText).toBe(fixture('kubeadm-1.32.yaml'));
  });

  it('does not duplicate a socket dir that an existing mount already covers', () => {
    const text = fixture('kubeadm-1.29.yaml')
      .replace('    - mountPath: /etc/ca-certificates\n', '    - mountPath: /var/run\n      name: var-run\n    - mountPath: /etc/ca-certificates\n')
      .replace('  - hostPath:\n      path: /etc/ca-certificates\n', '  - hostPath:\n      path: /var/run\n    name: var-run\n  - hostPath:\n      path: /etc/ca-certificates\n');
    const plan = planManifestPatch(text, 'k.yaml', { configPath: CONFIG, extraMounts: [kms] });
    expect(plan.actions.some((a) => a.includes('kmsplugin'))).toBe(false);
    expect(plan.notes).toContain('directory /var/run/kmsplugin is already mounted through /var/run (volume var-run)');
  });

  it('adds --encryption-provider-config-automatic-reload=true only when asked, in --x=y form even among split flags', () => {
    const text = fixture('split-flags.yaml');
    expect(planManifestPatch(text, 's.yaml', { configPath: CONFIG }).newText).not.toContain('automatic-reload');
    const plan = planManifestPatch(text, 's.yaml', { configPath: CONFIG, reloadFlag: true });
    expect(diffLines(plan.diff, '+')).toContain('    - --encryption-provider-config-automatic-reload=true');
    expect(readApiserverFlags(plan.newText, 's.yaml').flags.get('encryption-provider-config-automatic-reload')).toBe('true');
    const undo = planManifestUnpatch(plan.newText, 's.yaml', { configPath: CONFIG });
    expect(undo.newText).toBe(text);
  });

  it('refuses a second mount at a path that already holds another volume', () => {
    const text = fixture('kubeadm-1.29.yaml')
      .replace('    - mountPath: /etc/ca-certificates\n', `    - mountPath: ${CONFIG_DIR}\n      name: other\n    - mountPath: /etc/ca-certificates\n`)
      .replace('  - hostPath:\n      path: /etc/ca-certificates\n', '  - emptyDir: {}\n    name: other\n  - hostPath:\n      path: /etc/ca-certificates\n');
    expect(() => planManifestPatch(text, 'k.yaml', { configPath: CONFIG })).toThrow(/already mounts something else at \/etc\/kubernetes\/encryption/);
  });
});

describe('flag helpers and diff', () => {
  it('planSetFlag edits in place and planRemoveFlag removes split pairs', () => {
    const text = fixture('split-flags.yaml');
    const set = planSetFlag(text, 's.yaml', 'secure-port', '7443');
    expect(diffLines(set.diff, '-')).toEqual(['    - "6443"']);
    expect(diffLines(set.diff, '+')).toEqual(['    - "7443"']);
    const removed = planRemoveFlag(text, 's.yaml', '--secure-port');
    expect(diffLines(removed.diff, '-')).toEqual(['    - --secure-port', '    - "6443"']);
    expect(planRemoveFlag(removed.newText, 's.yaml', 'secure-port').changed).toBe(false);
  });

  it('unifiedDiff is empty for equal texts and names both sides', () => {
    expect(unifiedDiff('a\n', 'a\n', '/etc/x.yaml')).toBe('');
    expect(unifiedDiff('a\n', 'a\nb\n', '/etc/x.yaml')).toBe('--- a/etc/x.yaml\n+++ b/etc/x.yaml\n@@ -1,1 +1,2 @@\n a\n+b\n');
  });

  it('keeps CRLF line endings', () => {
    const text = fixture('kubeadm-1.29.yaml').replace(/\n/g, '\r\n');
    const plan = planManifestPatch(text, 'k.yaml', { configPath: CONFIG });
    expect(plan.newText.replace(/\r\n/g, '')).not.toContain('\n');
    expect(planManifestUnpatch(plan.newText, 'k.yaml', { configPath: CONFIG }).newText).toBe(text);
  });
});
