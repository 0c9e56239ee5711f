import { posix } from 'node:path';
import { isMap, parseDocument, type Document } from 'yaml';
import { CliError, ExitCode } from '../ui/errors';

/**
 * Reading kubeadm's static pod manifest for kube-apiserver. YAML is kept as a yaml Document (with
 * source ranges) so the patcher can splice text and leave every other byte alone; `.json`
 * manifests (the kubelet accepts them) are plain objects re-serialised with their own indentation.
 */

/** The flags k8s-encrypt sets on kube-apiserver (here, not in patch.ts, so readers need no diff). */
export const CONFIG_FLAG = 'encryption-provider-config';
export const RELOAD_FLAG = 'encryption-provider-config-automatic-reload';
/** See restart.ts. */
export const CONFIG_HASH_ANNOTATION = 'k8s-encrypt.io/config-sha256';

type ManifestFormat = 'yaml' | 'json';
/** Where the container's flags live: `command:` (kubeadm) or `args:` (image entrypoint setups). */
export type FlagList = 'command' | 'args';

export interface ParsedManifest {
  path: string;
  text: string;
  format: ManifestFormat;
  /** The YAML document (source ranges kept); undefined for JSON. */
  doc?: Document.Parsed;
  /** The whole manifest as plain data. */
  pod: Pod;
  containerIndex: number;
  container: Container;
}

export interface Pod {
  apiVersion?: unknown;
  kind?: unknown;
  spec?: { containers?: Container[]; initContainers?: Container[]; volumes?: Volume[] };
  [k: string]: unknown;
}
export interface Container {
  name?: unknown;
  image?: unknown;
  command?: unknown[];
  args?: unknown[];
  volumeMounts?: VolumeMount[];
  [k: string]: unknown;
}
interface VolumeMount {
  name?: unknown;
  mountPath?: unknown;
  readOnly?: unknown;
  subPath?: unknown;
  [k: string]: unknown;
}
export interface Volume {
  name?: unknown;
  hostPath?: { path?: unknown; type?: unknown };
  [k: string]: unknown;
}

const APISERVER = 'kube-apiserver';

const manifestError = (path: string, what: string, hint: string) =>
  new CliError(`${path}: ${what}`, { exitCode: ExitCode.Usage, hint });

function isJsonManifest(text: string, path: string): boolean {
  if (path.toLowerCase().endsWith('.json')) return true;
  if (/\.ya?ml$/i.test(path)) return false;
  return text.trimStart().startsWith('{');
}

function lineOfOffset(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text[i] === '\n') line++;
  return line;
}

/** Parses and checks the manifest: a v1 Pod with a kube-apiserver container. Pure. */
export function parseManifest(text: string, path: string): ParsedManifest {
  let pod: unknown;
  let doc: Document.Parsed | undefined;
  const format: ManifestFormat = isJsonManifest(text, path) ? 'json' : 'yaml';
  if (format === 'json') {
    try {
      pod = JSON.parse(text);
    } catch (err) {
      // Node's message does not always carry a position; the YAML parser (JSON is YAML) does.
      const m = /position (\d+)/.exec((err as Error).message);
      const line = m ? lineOfOffset(text, Number(m[1])) : parseDocument(text).errors[0]?.linePos?.[0]?.line;
      const why = (err as Error).message.split('\n')[0]!.replace(/, ".*$/, '').replace(/ in JSON at position \d+.*$/, '');
      throw manifestError(path, `JSON does not parse${line ? ` at line ${line}` : ''}: ${why}`, 'fix the file or restore it from a backup');
    }
  } else {
    doc = parseDocument(text, { keepSourceTokens: false, uniqueKeys: true });
    const e = doc.errors[0];
    if (e) {
      const line = e.linePos?.[0]?.line;
      const why = e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
      throw manifestError(path, `YAML does not parse${line ? ` at line ${line}` : ''}: ${why}`, 'fix the file or restore it from a backup');
    }
    pod = doc.toJS();
  }
  if (!pod || typeof pod !== 'object' || Array.isArray(pod) || (pod as Pod).kind !== 'Pod') {
    const kind = pod && typeof pod === 'object' && 'kind' in pod ? String((pod as Pod).kind) : 'none';
    throw manifestError(path, `not a Pod manifest (kind: ${kind})`, 'point --manifest at the kube-apiserver static pod, e.g. /etc/kubernetes/manifests/kube-apiserver.yaml');
  }
  const p = pod as Pod;
  const containers = Array.isArray(p.spec?.containers) ? p.spec!.containers! : [];
  const containerIndex = findApiserverContainer(containers);
  if (containerIndex < 0) {
    throw manifestError(path, 'no kube-apiserver container in this Pod', 'point --manifest at the kube-apiserver static pod, e.g. /etc/kubernetes/manifests/kube-apiserver.yaml');
  }
  if (format === 'yaml' && !isMap(doc!.getIn(['spec', 'containers', containerIndex], true))) {
    throw manifestError(path, 'the kube-apiserver container is not a mapping', 'fix the file');
  }
  return { path, text, format, doc, pod: p, containerIndex, container: containers[containerIndex]! };
}

const isApiserverBinary = (v: unknown) => typeof v === 'string' && /(^|\/)kube-apiserver$/.test(v.trim());

/** By name first; else the container whose command or image is kube-apiserver (not always first). */
function findApiserverContainer(containers: Container[]): number {
  const byName = containers.findIndex((c) => c && c.name === APISERVER);
  if (byName >= 0) return byName;
  const byCommand = containers.findIndex(
    (c) => c && [...(Array.isArray(c.command) ? c.command : []), ...(Array.isArray(c.args) ? c.args : [])].some(isApiserverBinary),
  );
  if (byCommand >= 0) return byCommand;
  return containers.findIndex((c) => c && typeof c.image === 'string' && c.image.includes(APISERVER));
}

/** One flag occurrence in the container's command or args list. */
interface FlagOccurrence {
  name: string;
  value: string;
  list: FlagList;
  /** Index of the `--name` item in its list. */
  index: number;
  /** `--name` `value` as two items. */
  split: boolean;
}

const str = (v: unknown): string => (typeof v === 'string' ? v : v === null || v === undefined ? '' : String(v));

export function listOf(c: Container, list: FlagList): string[] {
  const v = c[list];
  return Array.isArray(v) ? v.map(str) : [];
}

/** pflag semantics: `--name=value`, `--name value` (the next item when it is not a flag), bare booleans. */
export function scanFlags(items: string[], list: FlagList): FlagOccurrence[] {
  const out: FlagOccurrence[] = [];
  for (let i = 0; i < items.length; i++) {
    const item = items[i]!.trim();
    if (!item.startsWith('--') || item === '--') continue;
    const eq = item.indexOf('=');
    if (eq > 2) {
      out.push({ name: item.slice(2, eq), value: item.slice(eq + 1), list, index: i, split: false });
      continue;
    }
    const next = items[i + 1];
    if (next !== undefined && !next.trim().startsWith('-')) {
      out.push({ name: item.slice(2), value: next, list, index: i, split: true });
      i++;
    } else {
      out.push({ name: item.slice(2), value: 'true', list, index: i, split: false });
    }
  }
  return out;
}

/**
 * A container's command + args as flags (the last occurrence wins, as with pflag): the one reader
 * for a running pod's flags (status reads its mirror pod with it), `--name value` included. Pure.
 */
export function flagsOfArgs(args: readonly string[]): Map<string, string> {
  return new Map(scanFlags([...args], 'command').map((f) => [f.name, f.value] as const));
}

/** The list the apiserver's flags live in: args when it carries flags or when there is no command. */
export function flagListOf(c: Container): FlagList {
  const args = listOf(c, 'args');
  if (args.some((a) => a.trim().startsWith('--'))) return 'args';
  if (!Array.isArray(c.command) || c.command.length === 0) return 'args';
  return 'command';
}

export function flagOccurrences(c: Container): FlagOccurrence[] {
  return [...scanFlags(listOf(c, 'command'), 'command'), ...scanFlags(listOf(c, 'args'), 'args')];
}

export interface ApiserverFlags {
  /** The full argv (command then args), as the kubelet stand-in runs it. */
  args: string[];
  /** Flag name (without dashes) -> value; the last occurrence wins, as in pflag. */
  flags: Map<string, string>;
  where: FlagList;
  image?: string;
  /** MAJOR.MINOR.PATCH from the image tag (registry.k8s.io/kube-apiserver:v1.29.3 -> 1.29.3). */
  kubeVersionFromImage?: string;
}

export function kubeVersionOfImage(image: string | undefined): string | undefined {
  if (!image) return undefined;
  const tag = /:(v?\d+\.\d+\.\d+)[^/@]*(@.*)?$/.exec(image);
  return tag ? tag[1]!.replace(/^v/, '') : undefined;
}

export function apiserverFlagsOf(m: ParsedManifest): ApiserverFlags {
  const c = m.container;
  const flags = new Map<string, string>();
  for (const f of flagOccurrences(c)) flags.set(f.name, f.value);
  const image = typeof c.image === 'string' ? c.image : undefined;
  return {
    args: [...listOf(c, 'command'), ...listOf(c, 'args')],
    flags,
    where: flagListOf(c),
    ...(image ? { image } : {}),
    ...(kubeVersionOfImage(image) ? { kubeVersionFromImage: kubeVersionOfImage(image) } : {}),
  };
}

export function readApiserverFlags(text: string, path: string): ApiserverFlags {
  return apiserverFlagsOf(parseManifest(text, path));
}

export function getFlag(text: string, name: string, path = 'manifest'): string | undefined {
  return readApiserverFlags(text, path).flags.get(name.replace(/^--/, ''));
}

interface HostPathMount {
  volumeName: string;
  /** Host directory or file (hostPath.path joined with the mount's subPath). */
  hostPath: string;
  mountPath: string;
  readOnly: boolean;
  type?: string;
}

/** Normalised absolute path without a trailing slash (hostPath values are compared as paths). */
export const normPath = (p: string) => (p === '/' ? '/' : posix.normalize(p).replace(/\/+$/, '') || '/');

export function hostPathMountsOf(m: ParsedManifest): HostPathMount[] {
  const volumes = Array.isArray(m.pod.spec?.volumes) ? m.pod.spec!.volumes! : [];
  const mounts = Array.isArray(m.container.volumeMounts) ? m.container.volumeMounts : [];
  const out: HostPathMount[] = [];
  for (const vm of mounts) {
    if (!vm || typeof vm.name !== 'string' || typeof vm.mountPath !== 'string') continue;
    const vol = volumes.find((v) => v && v.name === vm.name);
    const hp = vol?.hostPath;
    if (!hp || typeof hp.path !== 'string') continue;
    const sub = typeof vm.subPath === 'string' && vm.subPath ? vm.subPath : '';
    out.push({
      volumeName: vm.name,
      hostPath: normPath(sub ? posix.join(hp.path, sub) : hp.path),
      mountPath: normPath(vm.mountPath),
      readOnly: vm.readOnly === true,
      ...(typeof hp.type === 'string' && hp.type ? { type: hp.type } : {}),
    });
  }
  return out;
}

export function listHostPathMounts(text: string, path = 'manifest'): HostPathMount[] {
  return hostPathMountsOf(parseManifest(text, path));
}

/** Where `hostFile` appears inside the container through `mount`, or undefined when it does not. */
export function containerPathVia(mount: HostPathMount, hostFile: string): string | undefined {
  const f = normPath(hostFile);
  if (f === mount.hostPath) return mount.mountPath;
  if (mount.type === 'File' || mount.type === 'FileOrCreate') return undefined;
  const prefix = mount.hostPath === '/' ? '/' : `${mount.hostPath}/`;
  if (!f.startsWith(prefix)) return undefined;
  return posix.join(mount.mountPath, f.slice(prefix.length));
}

const WILDCARD = new Set(['', '0.0.0.0', '::', '[::]']);

/**
 * This node's own apiserver (not a load balancer): a specific --bind-address, else
 * --advertise-address (kubeadm's serving certificate names it), else loopback.
 */
export function apiserverEndpoint(text: string, path = 'manifest'): { host: string; port: number } {
  const f = readApiserverFlags(text, path).flags;
  const bind = f.get('bind-address')?.trim() ?? '';
  const adv = f.get('advertise-address')?.trim() ?? '';
  const host = !WILDCARD.has(bind) ? bind : !WILDCARD.has(adv) ? adv : '127.0.0.1';
  const portText = f.get('secure-port')?.trim();
  const port = portText && /^\d+$/.test(portText) && Number(portText) > 0 ? Number(portText) : 6443;
  return { host, port };
}

interface EtcdFlags {
  servers: string[];
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

export function etcdFlags(text: string, path = 'manifest'): EtcdFlags {
  const f = readApiserverFlags(text, path).flags;
  const pick = (k: string) => {
    const v = f.get(k)?.trim();
    return v ? v : undefined;
  };
  const caFile = pick('etcd-cafile');
  const certFile = pick('etcd-certfile');
  const keyFile = pick('etcd-keyfile');
  return {
    servers: (f.get('etcd-servers') ?? '').split(',').map((s) => s.trim()).filter(Boolean),
    ...(caFile ? { caFile } : {}),
    ...(certFile ? { certFile } : {}),
    ...(keyFile ? { keyFile } : {}),
  };
}

/** kubeadm's own kube-apiserver volumes: never removed by `disable`. */
export const KUBEADM_APISERVER_VOLUMES = new Set([
  'ca-certs',
  'etc-ca-certificates',
  'etc-pki',
  'k8s-certs',
  'usr-local-share-ca-certificates',
  'usr-share-ca-certificates',
  'audit',
]);
