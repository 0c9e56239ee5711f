// `status` through the built CLI on the local control plane, in each state a cluster goes
// through: never encrypted, encrypted with one key, mid-rotation, fully rotated, a plaintext
// Secret written into etcd behind the apiserver's back, a corrupted value. Needs `npm run build`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aescbcConfig, applyEncryptionConfig, newKey, type WriteKey } from '../../bench/reencrypt';
import { ProtoWriter } from '../../src/etcd/protobuf';
import { startBed, type Bed, type BedNode } from '../bed/index';
import { jsonOf, runCli } from '../helpers/cli';

const N = 12;
let bed: Bed;
let node: BedNode;
const k1 = newKey('key-20250102T030405Z');
const k2 = newKey('key2');

const status = (...args: string[]) => runCli([...node.cliArgs, 'status', ...args], { timeoutMs: 60_000 });
const statusJson = async (...args: string[]) => {
  const r = await status('--json', ...args);
  return { r, report: jsonOf(r) };
};
const reencrypt = async () => {
  const r = await runCli([...node.cliArgs, 're-encrypt-all', '--json'], { timeoutMs: 60_000 });
  expect(r.exitCode, String(r.stderr)).toBe(0);
};
const secrets = (report: any) => report.etcd.resources.find((x: any) => x.resource === 'secrets');
const names = (list: { namespace: string; name: string }[]) => list.map((o) => `${o.namespace}/${o.name}`);
const findingIds = (report: any) => report.findings.filter((f: any) => f.level === 'fail').map((f: any) => f.id);

/** A Secret as the apiserver stores it unencrypted: k8s\0 + runtime.Unknown{typeMeta, raw}. */
function plaintextSecret(): Buffer {
  const typeMeta = new ProtoWriter().bytes(1, 'v1').bytes(2, 'Secret');
  const unknown = new ProtoWriter().message(1, typeMeta).bytes(2, Buffer.from('sneaky-password')).finish();
  return Buffer.concat([Buffer.from('k8s\0', 'latin1'), unknown]);
}

async function applyKeys(write: WriteKey, readers: WriteKey[] = []) {
  await applyEncryptionConfig(node, aescbcConfig(write, readers));
}

beforeAll(async () => {
  bed = await startBed({ secrets: N });
  node = bed.nodes[0]!;
}, 120_000);

afterAll(async () => {
  await bed?.stop();
});

describe('k8s-encrypt status on the bed', () => {
  it('never encrypted: everything plaintext, CIS fails, --exit-code 4 (0 without it)', async () => {
    const { r, report } = await statusJson();
    expect(r.exitCode).toBe(0);
    expect(report.schemaVersion).toBe(1);
    expect(report.healthy).toBe(false);
    expect(report.ok).toBe(false);
    const s = secrets(report);
    expect(s.writeLabel).toBe('plaintext');
    expect(s.counts.plaintext).toBe(s.total);
    expect(s.total).toBeGreaterThanOrEqual(N);
    expect(s.plaintext.count).toBe(s.total);
    expect(report.audit.map((a: any) => [a.id, a.result])).toEqual([
      ['1.2.27', 'fail'],
      ['1.2.28', 'fail'],
    ]);
    expect(findingIds(report)).toEqual(expect.arrayContaining(['node.flag', 'etcd.not-encrypted', 'audit.cis-1.2.27']));
    expect(report.apiservers.nodes.map((n: any) => n.name)).toEqual([node.name]);

    const human = await status('--exit-code');
    expect(human.exitCode).toBe(4);
    expect(human.stdout).toContain('This node');
    expect(human.stdout).toMatch(/✗ CIS 1\.2\.27/);
    expect(human.stdout).toContain('default/bed-secret-0');
    expect(human.stdout).not.toMatch(/\u001b\[/); // NO_COLOR
  });

  it('encrypted with one key: every Secret under it, this apiserver proven on it, --exit-code 0', async () => {
    await applyKeys(k1);
    await reencrypt();
    const r = await status('--json', '--exit-code');
    const report = jsonOf(r);
    expect(report.findings.filter((f: any) => f.level === 'fail')).toEqual([]);
    expect(r.exitCode).toBe(0);
    const s = secrets(report);
    expect(s.writeLabel).toBe(`aescbc:${k1.name}`);
    expect(s.counts).toEqual({ [`aescbc:${k1.name}`]: s.total });
    expect(report.node.config.writeKey).toMatchObject({ label: `aescbc:${k1.name}`, createdAt: '2025-01-02T03:04:05.000Z' });
    expect(report.node.config.mode).toBe('0600');
    expect(report.node.manifest.mount).toMatchObject({ readOnly: true });
    const me = report.apiservers.nodes.find((n: any) => n.thisNode);
    expect(me.runsCurrentConfig).toBe('yes');
    expect(report.audit.every((a: any) => a.result === 'pass')).toBe(true);
    // No key material anywhere in the output.
    expect(r.stdout).not.toContain(k1.secret);
  });

  it('mid-rotation with two keys: objects under the old key are listed as stale', async () => {
    await applyKeys(k2, [k1]);
    const api = await bed.api();
    const fresh = await api.create('/api/v1/namespaces/default/secrets', {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'written-after-rotation' },
      data: { a: Buffer.from('b').toString('base64') },
    });
    expect(fresh.status).toBe(201);
    const { r, report } = await statusJson('--exit-code');
    expect(r.exitCode).toBe(4);
    const s = secrets(report);
    expect(s.writeLabel).toBe(`aescbc:${k2.name}`);
    expect(s.counts[`aescbc:${k2.name}`]).toBe(1);
    expect(s.counts[`aescbc:${k1.name}`]).toBe(s.total - 1);
    expect(s.stale.count).toBe(s.total - 1);
    expect(names(s.stale.items)).toContain('default/bed-secret-0');
    expect(names(s.stale.items)).not.toContain('default/written-after-rotation');
    expect(findingIds(report)).toContain('etcd.stale');
    expect(report.node.config.rules[0].providers[0].keys).toEqual([k2.name, k1.name]);
  });

  it('fully rotated: healthy again after the rewrite', async () => {
    await reencrypt();
    const { r, report } = await statusJson('--exit-code', '--decrypt-check');
    expect(report.findings.filter((f: any) => f.level === 'fail')).toEqual([]);
    expect(r.exitCode).toBe(0);
    expect(secrets(report).stale.count).toBe(0);
    expect(secrets(report).decryptFailures.count).toBe(0);
  });

  it('finds and names a plaintext Secret written straight into etcd', async () => {
    await bed.etcdPut('/registry/secrets/team-a/sneaky', plaintextSecret());
    const { r, report } = await statusJson('--exit-code');
    expect(r.exitCode).toBe(4);
    const s = secrets(report);
    expect(s.plaintext).toEqual({ count: 1, items: [{ namespace: 'team-a', name: 'sneaky' }] });
    expect(s.stale.items).toContainEqual({ namespace: 'team-a', name: 'sneaky', label: 'plaintext' });
    const human = await status();
    expect(human.stdout).toMatch(/plaintext \(1\):\n\s+team-a\/sneaky/);
  });

  it('a corrupted value is found by --decrypt-check (and only with it)', async () => {
    const api = await bed.api();
    expect((await api.delete('/api/v1/namespaces/team-a/secrets/sneaky')).status).toBe(200);
    const key = '/registry/secrets/default/bed-secret-0';
    const raw = (await bed.etcdGet(key))!;
    expect(raw.subarray(0, 8).toString('latin1')).toBe('k8s:enc:');
    const corrupted = Buffer.from(raw);
    for (let i = corrupted.length - 20; i < corrupted.length; i++) corrupted[i] = corrupted[i]! ^ 0x5a;
    await bed.etcdPut(key, corrupted);

    const plain = await statusJson('--exit-code');
    expect(plain.r.exitCode).toBe(0);
    const { r, report } = await statusJson('--exit-code', '--decrypt-check');
    expect(r.exitCode).toBe(4);
    const s = secrets(report);
    expect(s.decryptFailures.count).toBe(1);
    expect(s.decryptFailures.items[0]).toMatchObject({ namespace: 'default', name: 'bed-secret-0', label: `aescbc:${k2.name}` });
    expect(findingIds(report)).toEqual(['etcd.decrypt-failed']);
  });
});
