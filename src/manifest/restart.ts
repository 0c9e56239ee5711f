import { CliError, ExitCode } from '../ui/errors';
import { CONFIG_HASH_ANNOTATION, parseManifest } from './manifest';
import { unifiedDiff } from './patch';

/**
 * The kubelet restarts a static pod only when its manifest changes; a new config behind an
 * unchanged --encryption-provider-config flag (a staged transition, --from-config on a node that
 * already has the flag) would never be loaded. Stamping the config's sha256 into a pod annotation
 * changes the manifest exactly when the config changes, and tells `status` which config the pod
 * was restarted for. Pure.
 */
export { CONFIG_HASH_ANNOTATION } from './manifest';

export interface RestartPlan {
  changed: boolean;
  newText: string;
  diff: string;
}

export function planRestartAnnotation(text: string, path: string, sha256: string): RestartPlan {
  const m = parseManifest(text, path);
  let newText: string;
  if (m.format === 'json') {
    const pod = JSON.parse(text) as { metadata?: { annotations?: Record<string, string> } };
    pod.metadata ??= {};
    pod.metadata.annotations = { ...(pod.metadata.annotations ?? {}), [CONFIG_HASH_ANNOTATION]: sha256 };
    const indent = /\n([ \t]+)"/.exec(text)?.[1] ?? '  ';
    newText = JSON.stringify(pod, null, indent) + (text.endsWith('\n') ? '\n' : '');
  } else {
    newText = setYamlAnnotation(text, path, sha256);
  }
  // Re-parse: a splice that broke the document must never reach the kubelet.
  parseManifest(newText, path);
  return { changed: newText !== text, newText, diff: unifiedDiff(text, newText, path) };
}

/** Line splice in block YAML: replace our annotation, or add it (and `annotations:`) under metadata. */
function setYamlAnnotation(text: string, path: string, sha: string): string {
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  const lines = text.split(/\r?\n/);
  const meta = lines.findIndex((l) => /^metadata:\s*(#.*)?$/.test(l));
  if (meta === -1) {
    throw new CliError(`${path} has no block-style top-level "metadata:" mapping, where the restart annotation goes`, {
      exitCode: ExitCode.Usage,
      hint: 'write metadata in block style (metadata: on its own line, its keys indented below), as kubeadm does',
    });
  }
  const end = (() => {
    for (let i = meta + 1; i < lines.length; i++) if (/^\S/.test(lines[i]!) && !lines[i]!.startsWith('#')) return i;
    return lines.length;
  })();
  const childIndent = /^(\s+)\S/.exec(lines.slice(meta + 1, end).find((l) => /^\s+\S/.test(l) && !/^\s*#/.test(l)) ?? '  x')![1]!;
  const ann = lines.findIndex((l, i) => i > meta && i < end && new RegExp(`^${childIndent}annotations:\\s*(#.*)?$`).test(l));
  const entry = (indent: string) => `${indent}${CONFIG_HASH_ANNOTATION}: "${sha}"`;
  if (ann === -1) {
    lines.splice(meta + 1, 0, `${childIndent}annotations:`, entry(childIndent + childIndent));
    return lines.join(eol);
  }
  let annEnd = ann + 1;
  while (annEnd < end && (lines[annEnd]!.startsWith(childIndent + ' ') || lines[annEnd]!.trim() === '')) annEnd++;
  const grand = /^(\s+)\S/.exec(lines[ann + 1] ?? '')?.[1] ?? childIndent + childIndent;
  const mine = lines.findIndex((l, i) => i > ann && i < annEnd && l.trimStart().startsWith(`${CONFIG_HASH_ANNOTATION}:`));
  if (mine !== -1) lines[mine] = entry(/^(\s*)/.exec(lines[mine]!)![1]!);
  else lines.splice(ann + 1, 0, entry(grand.length > childIndent.length ? grand : childIndent + childIndent));
  return lines.join(eol);
}
