import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { expandHome, parseInventory, parseSshList } from '../../src/fleet/inventory';
import { checkHostKey, parseKnownHosts, patternsMatch } from '../../src/fleet/known-hosts';
import { waitingOf } from '../../src/fleet/driver';

describe('fleet inventory', () => {
  it('fills the defaults and keeps the order', () => {
    expect(parseInventory('controlPlanes:\n  - {host: 10.0.0.1, nodeName: cp-0}\n  - {host: cp-1.example.com, port: 2222, user: ops, nodeName: cp-1, root: /srv/n1, identityFile: /k}\n', 'inv.yaml')).toEqual([
      { host: '10.0.0.1', port: 22, user: 'root', nodeName: 'cp-0', root: '/', nameGiven: true },
      { host: 'cp-1.example.com', port: 2222, user: 'ops', nodeName: 'cp-1', root: '/srv/n1', identityFile: '/k', nameGiven: true },
    ]);
  });

  it.each([
    ['controlPlanes: []', /^inv.yaml: controlPlanes: must list at least one control plane$/],
    ['controlPlanes: [{host: h}]', /^inv.yaml: controlPlanes\[0\]\.nodeName: /],
    ['controlPlanes: [{host: h, nodeName: a, port: 0}]', /^inv.yaml: controlPlanes\[0\]\.port: /],
    ['controlPlanes: [{host: h, nodeName: a, password: x}]', /^inv.yaml: controlPlanes\[0\]: /],
    ['controlPlanes: [{host: h, nodeName: a, root: rel}]', /root: must be an absolute path/],
    ['controlPlanes: [{host: h, nodeName: a}, {host: i, nodeName: a}]', /controlPlanes\[1\] repeats nodeName "a"/],
    ['controlPlanes: [', /^inv.yaml is not YAML: /],
  ])('refuses %s in one line', (text, msg) => {
    expect(() => parseInventory(text, 'inv.yaml')).toThrow(msg);
  });

  it('expands ~ and ~/ in identityFile to the given home, as OpenSSH does; ~user is refused', () => {
    const home = '/tmp/home-of-the-test';
    const text = (f: string) => `controlPlanes:\n  - {host: h, nodeName: cp-0, identityFile: "${f}"}\n`;
    expect(parseInventory(text('~/.ssh/id_ed25519'), 'inv.yaml', home)[0]!.identityFile).toBe(`${home}/.ssh/id_ed25519`);
    expect(parseInventory(text('~'), 'inv.yaml', home)[0]!.identityFile).toBe(home);
    expect(parseInventory(text('/abs/~/k'), 'inv.yaml', home)[0]!.identityFile).toBe('/abs/~/k');
    expect(parseInventory(text('keys/~k'), 'inv.yaml', home)[0]!.identityFile).toBe('keys/~k');
    expect(() => parseInventory(text('~bob/.ssh/id'), 'inv.yaml', home)).toThrow(/^inv.yaml: controlPlanes\[0\]\.identityFile \(cp-0\) ~bob\/\.ssh\/id: only ~ and ~\/ \(this user's home\) are expanded$/);
    expect(expandHome('~/known_hosts', home, '--known-hosts')).toBe(`${home}/known_hosts`);
  });

  it('--ssh short form: user@host[:port], first node first', () => {
    expect(parseSshList('root@cp-0,ops@cp-1:2222,[::1]:22')).toMatchObject([
      { user: 'root', host: 'cp-0', port: 22, nameGiven: false },
      { user: 'ops', host: 'cp-1', port: 2222 },
      { user: 'root', host: '::1', port: 22 },
    ]);
    expect(() => parseSshList('root@cp-0,bad host')).toThrow(/--ssh item 2 "bad host" is not user@host\[:port\]/);
  });
});

describe('known_hosts', () => {
  const key = Buffer.concat([Buffer.from([0, 0, 0, 11]), Buffer.from('ssh-ed25519'), Buffer.alloc(36, 7)]);
  const other = Buffer.concat([Buffer.from([0, 0, 0, 11]), Buffer.from('ssh-ed25519'), Buffer.alloc(36, 9)]);
  const b64 = key.toString('base64');

  it('matches plain, [host]:port, wildcard, negated and hashed names as OpenSSH does', () => {
    expect(patternsMatch('cp-0,10.0.0.1', '10.0.0.1', 22)).toBe(true);
    expect(patternsMatch('10.0.0.1', '10.0.0.1', 2222)).toBe(false);
    expect(patternsMatch('[10.0.0.1]:2222', '10.0.0.1', 2222)).toBe(true);
    expect(patternsMatch('*.example.com,!bad.example.com', 'bad.example.com', 22)).toBe(false);
    expect(patternsMatch('cp-?.example.com', 'cp-1.example.com', 22)).toBe(true);
    const salt = Buffer.alloc(20, 1);
    const hashed = `|1|${salt.toString('base64')}|${createHmac('sha1', salt).update('[h]:2').digest('base64')}`;
    expect(patternsMatch(hashed, 'h', 2)).toBe(true);
    expect(patternsMatch(hashed, 'h', 22)).toBe(false);
  });

  it('tells known, unknown, changed and revoked apart', () => {
    const entries = parseKnownHosts(`# c\n\nh ssh-ed25519 ${b64}\n@revoked r ssh-ed25519 ${b64}\nr ssh-ed25519 ${b64}\n`);
    expect(checkHostKey(entries, 'h', 22, key)).toEqual({ verdict: 'known' });
    expect(checkHostKey(entries, 'x', 22, key)).toEqual({ verdict: 'unknown' });
    expect(checkHostKey(entries, 'h', 22, other)).toEqual({ verdict: 'changed', knownTypes: ['ssh-ed25519'] });
    expect(checkHostKey(entries, 'r', 22, key)).toEqual({ verdict: 'revoked' });
  });
});

describe('fleet driver', () => {
  const sha = 'a'.repeat(64);
  it('reads where the fleet waits from init, a transition, and a gate refusal', () => {
    expect(waitingOf({ state: 'waiting', configSha256: sha, multiNode: { stage: 'add-reader', nodes: [{ node: 'cp-1' }] } })).toEqual({ stage: 'add-reader', sha256: sha, lagging: ['cp-1'] });
    expect(waitingOf({ state: 'waiting', stage: 'promote', sha256: sha, lagging: [{ node: 'cp-2' }] })).toEqual({ stage: 'promote', sha256: sha, lagging: ['cp-2'] });
    expect(waitingOf({ ok: false, error: { exitCode: 6, details: { want: `prune:sha256:${sha}`, lagging: [{ node: 'cp-1' }] } } })).toEqual({ stage: 'prune', sha256: sha, lagging: ['cp-1'] });
    expect(waitingOf({ ok: false, error: { exitCode: 5 } })).toBeUndefined();
    expect(waitingOf({ state: 'done' })).toBeUndefined();
  });
});
