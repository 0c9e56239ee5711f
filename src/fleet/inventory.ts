import { homedir } from 'node:os';
import { posix } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { usageError } from '../ui/errors';

/**
 * The fleet inventory: the control planes the orchestrator drives over SSH, first node first.
 * Pure: `parseInventory` takes the file's text (and the home `~` stands for), `parseSshList` the
 * `--ssh` short form.
 */

export interface FleetNode {
  host: string;
  port: number;
  user: string;
  identityFile?: string;
  nodeName: string;
  /** False for the `--ssh` short form: the name is the host's, until the node's own run says. */
  nameGiven: boolean;
  /** The `--root` prefix on that node (default `/`). */
  root: string;
}

const hostname = z
  .string()
  .min(1, 'must not be empty')
  .regex(/^[A-Za-z0-9._:-]+$/, 'must be a host name or an IP address');

const nodeSchema = z
  .object({
    host: hostname,
    port: z.number().int().min(1).max(65535).default(22),
    user: z.string().regex(/^[A-Za-z0-9._-]+$/, 'must be a user name').default('root'),
    identityFile: z.string().min(1).optional(),
    nodeName: z.string().regex(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/, 'must be the Kubernetes node name (lower case, digits, "-", ".")'),
    root: z.string().startsWith('/', 'must be an absolute path').default('/'),
  })
  .strict();

const inventorySchema = z.object({ controlPlanes: z.array(nodeSchema).min(1, 'must list at least one control plane') }).strict();

function checkUnique(nodes: FleetNode[], where: string): FleetNode[] {
  const seen = new Map<string, number>();
  for (const [i, n] of nodes.entries()) {
    const before = seen.get(n.nodeName);
    if (before !== undefined) throw usageError(`${where}: controlPlanes[${i}] repeats nodeName "${n.nodeName}" of controlPlanes[${before}]`, 'each control plane once');
    seen.set(n.nodeName, i);
  }
  return nodes;
}

/**
 * `~` and `~/...` are the orchestrator's home, as OpenSSH expands an IdentityFile; `~user/...`
 * is refused (whose home that is depends on the machine the inventory was written for).
 */
export function expandHome(path: string, home: string, what: string): string {
  if (path === '~') return home;
  if (path.startsWith('~/')) return posix.join(home, path.slice(2));
  if (path.startsWith('~')) throw usageError(`${what} ${path}: only ~ and ~/ (this user's home) are expanded`, 'write the path out, or start it with ~/');
  return path;
}

export function parseInventory(text: string, file: string, home: string = homedir()): FleetNode[] {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw usageError(`${file} is not YAML: ${(err as Error).message.split('\n')[0]}`, 'see the README for the inventory format');
  }
  const r = inventorySchema.safeParse(doc);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const path = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '');
    throw usageError(`${file}: ${path || 'the document'}: ${issue.message}`, 'the inventory is "controlPlanes: [{host, port, user, identityFile, nodeName, root}]", host and nodeName required');
  }
  const nodes = r.data.controlPlanes.map((n, i) => ({
    ...n,
    ...(n.identityFile ? { identityFile: expandHome(n.identityFile, home, `${file}: controlPlanes[${i}].identityFile (${n.nodeName})`) } : {}),
    nameGiven: true,
  }));
  return checkUnique(nodes as FleetNode[], file);
}

/**
 * `--ssh root@cp-0,root@cp-1:2222`: user@host[:port] per control plane, first node first. The node
 * name is taken from the node's own run (its mirror pod), the host name until then.
 */
export function parseSshList(list: string): FleetNode[] {
  const nodes = list.split(',').map((raw, i) => {
    const item = raw.trim();
    const m = /^(?:([A-Za-z0-9._-]+)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d+))?$/.exec(item);
    if (!m) throw usageError(`--ssh item ${i + 1} "${item}" is not user@host[:port]`, 'e.g. --ssh root@cp-0,root@cp-1:2222');
    const host = m[2]!.replace(/^\[|\]$/g, '');
    const port = m[3] ? Number(m[3]) : 22;
    if (port < 1 || port > 65535) throw usageError(`--ssh item ${i + 1} "${item}": port ${port} is out of range`);
    return { host, port, user: m[1] ?? 'root', nodeName: host, nameGiven: false, root: '/' };
  });
  return checkUnique(nodes, '--ssh');
}

/** How a node is named in every line and error: `cp-1 (root@10.0.0.2:22)`. */
export const describeNode = (n: FleetNode) => `${n.nodeName} (${n.user}@${n.host}:${n.port})`;
