// Every way the fleet refuses or stops names the node first, with the reason (with --json the
// message is the error document's `message` as it is), and says which node in `details.node`.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { namedError, onEveryNode } from '../../src/fleet/command';
import { driveStaged, type DriverDeps } from '../../src/fleet/driver';
import { parseInventory, type FleetNode } from '../../src/fleet/inventory';
import type { FleetJournalState } from '../../src/fleet/journal';
import { checkNode, plannedUpload, type NodeFacts } from '../../src/fleet/preflight';
import type { NodeRun } from '../../src/fleet/remote';
import { nodeCredentials } from '../../src/fleet/ssh';
import { CliError } from '../../src/ui/errors';

const node = (name: string, over: Partial<FleetNode> = {}): FleetNode => ({ host: '10.0.0.1', port: 22, user: 'root', nodeName: name, nameGiven: true, root: '/', ...over });
const nodes = ['cp-0', 'cp-1', 'cp-2'].map((n) => node(n));
const sha = 'a'.repeat(64);
const ok = (body: Record<string, unknown>): NodeRun => ({ exitCode: 0, body, stderrTail: '' });
const failed = (exitCode: number, message: string): NodeRun => ({ exitCode, body: { ok: false, error: { exitCode, message, kind: 'x' } }, stderrTail: '' });
const waiting = (stage: string, lagging: string[]) => ok({ state: 'waiting', stage, sha256: sha, lagging: lagging.map((n) => ({ node: n })) });

/** The driver over scripted node answers (what each node's k8s-encrypt would print). */
function drive(answers: Record<string, NodeRun[]>, configSha = sha) {
  let saved: FleetJournalState | undefined;
  const deps: DriverDeps = {
    nodes,
    async run(n) {
      const a = answers[n.nodeName]?.shift();
      if (!a) throw new Error(`no answer left for ${n.nodeName}`);
      return a;
    },
    fetchConfig: async () => ({ text: 'cfg', sha256: configSha }),
    journal: { load: async () => saved, save: async (s) => void (saved = s) },
    line: () => {},
    signal: new AbortController().signal,
  };
  return driveStaged(deps, { operation: 'rotate-key', firstArgs: [], followerArgs: [] });
}

let home: string;
beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), 'k8s-encrypt-home-'));
  await mkdir(join(home, '.ssh', 'a-dir'), { recursive: true });
  await writeFile(join(home, '.ssh', 'not-a-key'), 'hello\n', { mode: 0o600 });
});
afterAll(async () => rm(home, { recursive: true, force: true }));

const facts = (over: Partial<NodeFacts> = {}): NodeFacts => ({ uid: 0, manifest: '/etc/kubernetes/manifests/kube-apiserver.yaml', hasManifest: true, arch: 'x64', freeAt: '/var/lib', freeBytes: 10 << 30, ...over });

describe('fleet refusals name the node and the reason', () => {
  const cases: Array<[string, () => Promise<unknown>, string, RegExp | (() => RegExp)]> = [
    ['the first node fails its stage', () => drive({ 'cp-0': [failed(5, 'the apiserver did not come back')] }), 'cp-0', /^cp-0: rotate-key: the apiserver did not come back$/],
    ['a follower fails its stage', () => drive({ 'cp-0': [waiting('add-reader', ['cp-1', 'cp-2'])], 'cp-1': [failed(5, 'rolled back')] }), 'cp-1', /^cp-1: rotate-key --from-config -: rolled back$/],
    ['a follower answers without JSON (exit only)', () => drive({ 'cp-0': [waiting('add-reader', ['cp-1'])], 'cp-1': [{ exitCode: 3, body: {}, stderrTail: '' }] }), 'cp-1', /^cp-1: rotate-key --from-config -: exited 3$/],
    ['the first node\'s config changed meanwhile', () => drive({ 'cp-0': [waiting('promote', ['cp-1'])] }, 'b'.repeat(64)), 'cp-0', /^cp-0: its config \(sha256 bbbbbbbbbbbb…\) is no longer the stage promote config/],
    ['a lagging node the inventory does not list', () => drive({ 'cp-0': [waiting('promote', ['cp-9'])] }), 'cp-9', /^cp-9: control plane\(s\) at stage promote that the inventory does not list$/],
    ['the first node answers an unknown state', () => drive({ 'cp-0': [ok({ state: 'stopped' })] }), 'cp-0', /^cp-0: rotate-key answered state "stopped"$/],
    ['not root on the real layout', async () => checkNode(node('cp-1', { user: 'ops' }), facts({ uid: 1000 })), 'cp-1', /^cp-1: ops is uid 1000 there, not root/],
    ['no apiserver manifest', async () => checkNode(node('cp-2'), facts({ hasManifest: false })), 'cp-2', /^cp-2: no kube-apiserver manifest at \/etc\/kubernetes\/manifests\/kube-apiserver\.yaml$/],
    ['another architecture (dry run)', () => plannedUpload(node('cp-1'), facts({ arch: 'arm64' }), { version: '1.0.0', arch: 'x64', path: '/bin/sh', sha256: sha }), 'cp-1', /^cp-1: the node is arm64, this executable is linux-x64$/],
    ['no room for the upload (dry run)', () => plannedUpload(node('cp-1'), facts({ freeBytes: 1024 }), { version: '1.0.0', arch: 'x64', path: '/bin/sh', sha256: sha }), 'cp-1', /^cp-1: 0\.0 MiB free at \/var\/lib, the upload to \/var\/lib\/k8s-encrypt\/bin\/k8s-encrypt-1\.0\.0 needs \d+\.\d MiB$/],
    ['a missing identity file (~ expanded)', () => nodeCredentials(parseInventory('controlPlanes: [{host: h, nodeName: cp-1, identityFile: ~/.ssh/gone}]', 'inv', home)[0]!, { defaultIdentities: [] }), 'cp-1', () => new RegExp(`^cp-1: cannot read identityFile ${home}/\\.ssh/gone: no such file$`)],
    ['an identity file that is a directory', () => nodeCredentials(node('cp-2', { identityFile: join(home, '.ssh', 'a-dir') }), { defaultIdentities: [] }), 'cp-2', /^cp-2: cannot read identityFile .*\/a-dir: it is a directory$/],
    ['an identity file that is no key', () => nodeCredentials(node('cp-0', { identityFile: join(home, '.ssh', 'not-a-key') }), { defaultIdentities: [] }), 'cp-0', /^cp-0: identityFile .*\/not-a-key is not a private key ssh2 can read/],
    ['no identity at all', () => nodeCredentials(node('cp-0'), { defaultIdentities: [join(home, '.ssh', 'id_ed25519')] }), 'cp-0', /^cp-0: no SSH identity: /],
    ['an error of the orchestrator\'s own files on a node\'s account', async () => {
      throw namedError(node('cp-2'), new CliError('cannot read known_hosts /x: permission denied', { exitCode: 2, hint: 'fix it' }));
    }, 'cp-2', /^cp-2: cannot read known_hosts \/x: permission denied$/],
    ['a failure of the SSH library (an SFTP write)', async () => {
      throw namedError(node('cp-1'), Object.assign(new Error('Permission denied'), { code: 3 }));
    }, 'cp-1', /^cp-1: Permission denied$/],
  ];

  it.each(cases)('%s', async (_, fn, name, message) => {
    const err = await fn().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CliError);
    const e = err as CliError;
    expect(e.message).toMatch(typeof message === 'function' ? message() : message);
    expect(e.message.split('\n')).toHaveLength(1);
    expect(e.details?.node ?? (e.details?.nodes as string[] | undefined)?.[0]).toBe(name);
  });

  it('a message that already names the node is not named twice', () => {
    const e = new CliError('cp-1: cannot connect', { details: { node: 'cp-1' } });
    expect(namedError(node('cp-1'), e)).toBe(e);
  });

  it('a preflight step runs on every node at once, and the first failure in inventory order is reported once all answered', async () => {
    // Each node answers only once all three have started: run node after node, this never ends.
    let started = 0;
    let release!: () => void;
    const allStarted = new Promise<void>((r) => (release = r));
    const answered: string[] = [];
    const step = async (n: FleetNode) => {
      if (++started === nodes.length) release();
      await allStarted;
      // cp-2 fails first, cp-1 last: cp-1's failure is the one reported.
      await new Promise((r) => setTimeout(r, n.nodeName === 'cp-1' ? 30 : n.nodeName === 'cp-2' ? 0 : 10));
      answered.push(n.nodeName);
      if (n.nodeName !== 'cp-0') throw new CliError(`${n.nodeName === 'cp-2' ? 'cp-2: ' : ''}refused`, { exitCode: 6 });
      return n.nodeName;
    };
    await expect(onEveryNode(nodes, step)).rejects.toMatchObject({ message: 'cp-1: refused', exitCode: 6, details: { node: 'cp-1' } });
    expect(answered).toEqual(['cp-2', 'cp-0', 'cp-1']);
    started = 0;
    expect(await onEveryNode(nodes, async (n) => n.nodeName)).toEqual(['cp-0', 'cp-1', 'cp-2']);
  });
});
