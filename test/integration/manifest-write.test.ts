// writeManifestPlan is the one place every manifest write goes through (patch-manifest, init and
// the transition engine): it must refuse a backup dir inside the manifests directory on its own,
// before it backs up or writes anything.
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { writeManifestPlan } from '../../src/manifest/apply';
import { planManifestPatch } from '../../src/manifest/patch';
import { CliError } from '../../src/ui/errors';

describe('writeManifestPlan', () => {
  let dir: string;
  let manifest: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-manifest-write-'));
    await mkdir(join(dir, 'manifests'));
    manifest = join(dir, 'manifests/kube-apiserver.yaml');
  });
  beforeEach(async () => {
    await copyFile(fileURLToPath(new URL('../fixtures/manifests/kubeadm-1.32.yaml', import.meta.url)), manifest);
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const plan = async () => {
    const text = await readFile(manifest, 'utf8');
    return { text, plan: planManifestPatch(text, manifest, { configPath: '/etc/kubernetes/encryption/config.yaml' }) };
  };

  it('refuses a backup dir inside the manifests directory and writes nothing', async () => {
    const { text, plan: p } = await plan();
    expect(p.changed).toBe(true);
    const err = await writeManifestPlan({ now: () => new Date() }, { manifest, backupDir: join(dir, 'manifests/bk') }, text, p).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(2);
    expect((err as CliError).message).toMatch(/lies inside the kubelet's manifests directory/);
    expect(await readdir(join(dir, 'manifests'))).toEqual(['kube-apiserver.yaml']);
    expect(await readFile(manifest, 'utf8')).toBe(text);
  });

  it('writes with a backup outside it', async () => {
    const { text, plan: p } = await plan();
    const r = await writeManifestPlan({ now: () => new Date() }, { manifest, backupDir: join(dir, 'bk') }, text, p);
    expect(r.backup?.startsWith(join(dir, 'bk/'))).toBe(true);
    expect(await readFile(r.backup!, 'utf8')).toBe(text);
    expect(await readFile(manifest, 'utf8')).toBe(p.newText);
  });
});
