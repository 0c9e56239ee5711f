// Key material never reaches stdout or stderr: one config, written in every form kube-apiserver's
// YAML 1.1 decoder accepts, fed to every command that prints config text (dry runs, followers,
// rollback, status, validate-config), human and --json. Neither the key's base64, nor its raw bytes
// (latin1, utf8, hex), nor any 8-character window of its base64 may appear.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBed, type Bed } from '../bed/index';
import { runCli } from '../helpers/cli';

const CONFIG_REL = 'etc/kubernetes/encryption/config.yaml';
const BACKUPS_REL = 'var/lib/k8s-encrypt/backups';
const HEAD = 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n';

const KEY = randomBytes(32).toString('base64');
const RAW = Buffer.from(KEY, 'base64');

/**
 * Every form of one config: aescbc holding the key under each of `names`, then identity. Rollback
 * and follower files hold one name more than the node's config, so their diffs are not empty.
 */
function forms(names: string[]): Record<string, string> {
  const k = KEY;
  const name = names[0]!;
  const rest = names.slice(1);
  const each = (f: (n: string) => string) => names.map(f).join('');
  const obj = { apiVersion: 'apiserver.config.k8s.io/v1', kind: 'EncryptionConfiguration', resources: [{ resources: ['secrets'], providers: [{ aescbc: { keys: names.map((n) => ({ name: n, secret: k })) } }, { identity: {} }] }] };
  const block = (entry: (n: string) => string) => `${HEAD}resources:\n  - resources:\n      - secrets\n    providers:\n      - aescbc:\n          keys:\n${each(entry)}      - identity: {}\n`;
  return {
    block: block((n) => `            - name: ${n}\n              secret: ${k}\n`),
    flow: `${HEAD}resources: [{resources: [secrets], providers: [{aescbc: {keys: [${names.map((n) => `{name: ${n}, secret: ${k}}`).join(', ')}]}}, {identity: {}}]}]\n`,
    'flow over lines': `${HEAD}resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys: [${names.map((n) => `{name: ${n},\n        secret:\n          ${k}}`).join(',\n        ')}]\n  - identity: {}\n`,
    json: JSON.stringify(obj),
    'json, pretty': JSON.stringify(obj, null, 2),
    'quoted keys': block((n) => `            - "name": ${n}\n              "secret": "${k}"\n`).replace('- resources:', '- "resources":').replace('providers:', "'providers':"),
    'single-quoted key': block((n) => `            - name: ${n}\n              'secret': '${k}'\n`),
    'literal block scalar': block((n) => `            - name: ${n}\n              secret: |-\n                ${k}\n`),
    'folded block scalar': block((n) => `            - name: ${n}\n              secret: >-\n                ${k}\n`),
    'tagged value': block((n) => `            - name: ${n}\n              secret: !!str ${k}\n`),
    'explicit key': block((n) => `            - name: ${n}\n              ? secret\n              : ${k}\n`),
    'anchor and alias': `${HEAD}resources:\n  - resources: [secrets]\n    providers:\n      - aescbc: &cbc\n          keys:\n            - name: ${name}\n              secret: &s ${k}\n${rest.map((n) => `            - name: ${n}\n              secret: *s\n`).join('')}      - identity: {}\n  - resources: [configmaps]\n    providers:\n      - aescbc: *cbc\n      - identity: {}\n`,
    'merge key': block((n) => (n === name ? `            - &base {name: ${n}, secret: ${k}}\n` : `            - <<: *base\n              name: ${n}\n`)),
    'comments holding the key': `# the old secret: ${k}\n${block((n) => `            - name: ${n} # secret: ${k}\n              secret: ${k}  # was secret:${k}\n`)}`,
  };
}

/** What a printed text must not hold: the key in any encoding, or any 8-character piece of it. */
function leaks(out: string): string[] {
  const found: string[] = [];
  for (const [what, s] of [['base64', KEY], ['latin1', RAW.toString('latin1')], ['utf8', RAW.toString('utf8')], ['hex', RAW.toString('hex')], ['HEX', RAW.toString('hex').toUpperCase()]] as const) {
    if (out.includes(s)) found.push(what);
  }
  for (let i = 0; i + 8 <= KEY.length; i++) if (out.includes(KEY.slice(i, i + 8))) found.push(`base64[${i}..${i + 8}]`);
  return found;
}

let bed: Bed;
let dir: string;
let keyName: string;
const root = () => bed.nodes[0]!.root;

beforeAll(async () => {
  bed = await startBed({ secrets: 5 });
  dir = await mkdtemp(join(tmpdir(), 'k8s-encrypt-leak-'));
  await writeFile(join(dir, 'key'), `${KEY}\n`, { mode: 0o600 });
}, 120_000);
afterAll(async () => {
  await bed?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

type Case = [command: string, args: (f: string) => string[]];

async function table(cases: Case[], names: string[], install?: (form: string) => Promise<void>) {
  const results: string[] = [];
  for (const [form, text] of Object.entries(forms(names))) {
    const file = join(dir, `${form.replace(/\W+/g, '-')}.yaml`);
    await writeFile(file, text, { mode: 0o600 });
    await install?.(form);
    // Read-only runs: a few at a time (the machine is shared), in a fixed order of results.
    const runs = cases.flatMap(([command, args]) => [[], ['--json']].map((json) => ({ command, json, args: args(file) })));
    const outs: string[][] = [];
    for (let i = 0; i < runs.length; i += 3) {
      outs.push(
        ...(await Promise.all(
          runs.slice(i, i + 3).map(async ({ command, json, args }) => {
            const r = await runCli([...bed.nodes[0]!.cliArgs, ...json, ...args], { timeoutMs: 60_000 });
            const bad = leaks(`${r.stdout}\n${r.stderr}`);
            return bad.length ? [`${command}${json.length ? ' --json' : ''} on the ${form} form (exit ${r.exitCode}): ${bad.slice(0, 3).join(', ')}${bad.length > 3 ? ', …' : ''}`] : [];
          }),
        )),
      );
    }
    results.push(...outs.flat());
  }
  return results;
}

describe('no key in any printed output, whatever form the config takes', () => {
  it('init --from-config --dry-run, write-config --dry-run and validate-config on a node without encryption', async () => {
    const bad = await table(
      [
        ['init --from-config', (f) => ['init', '--from-config', f, '--dry-run']],
        ['write-config --dry-run', () => ['write-config', '--dry-run', '--force', '--out', join(dir, 'out.yaml'), '--key-file', join(dir, 'key')]],
        ['validate-config', (f) => ['validate-config', f]],
      ],
      ['k1'],
      (form) => writeFile(join(dir, 'out.yaml'), forms(['k1'])[form]!, { mode: 0o600 }),
    );
    expect(bad).toEqual([]);
  }, 600_000);

  it('the dry runs of rotate-key, disable, rollback and their followers, and status', async () => {
    const init = await runCli([...bed.nodes[0]!.cliArgs, '--yes', '--json', 'init', '--key-file', join(dir, 'key')], { timeoutMs: 120_000 });
    expect(init.exitCode, `${init.stdout}\n${init.stderr}`).toBe(0);
    expect(leaks(`${init.stdout}\n${init.stderr}`)).toEqual([]);
    const cfg = parse(await readFile(join(root(), CONFIG_REL), 'utf8'));
    keyName = cfg.resources[0].providers[0].aescbc.keys[0].name;
    expect(cfg.resources[0].providers[0].aescbc.keys[0].secret).toBe(KEY);
    await mkdir(join(root(), BACKUPS_REL), { recursive: true, mode: 0o700 });

    // The table means something only if the commands get as far as printing config text.
    await writeFile(join(root(), CONFIG_REL), forms([keyName]).block!, { mode: 0o600 });
    await writeFile(join(root(), BACKUPS_REL, 'config.yaml.20260101T000000Z.bak'), forms([keyName, 'again']).block!, { mode: 0o600 });
    for (const args of [['rotate-key', '--dry-run'], ['rollback', '--dry-run'], ['disable', '--from-config', join(root(), BACKUPS_REL, 'config.yaml.20260101T000000Z.bak'), '--stage', 'promote', '--dry-run']]) {
      const dry = await runCli([...bed.nodes[0]!.cliArgs, '--json', ...args]);
      expect(dry.exitCode, `${dry.stdout}\n${dry.stderr}`).toBe(0);
      expect(String(dry.stdout)).toMatch(/secret: <redacted>/);
    }

    const bad = await table(
      [
        ['rotate-key --dry-run', () => ['rotate-key', '--dry-run']],
        ['disable --dry-run', () => ['disable', '--dry-run']],
        ['rollback --dry-run', () => ['rollback', '--dry-run']],
        ['rollback --to --dry-run', (f) => ['rollback', '--to', f, '--dry-run']],
        ['rotate-key --from-config --dry-run', (f) => ['rotate-key', '--from-config', f, '--stage', 'promote', '--dry-run']],
        ['disable --from-config --dry-run', (f) => ['disable', '--from-config', f, '--stage', 'promote', '--dry-run']],
        ['status', () => ['status']],
        ['validate-config', (f) => ['validate-config', f]],
      ],
      [keyName, 'again'],
      async (form) => {
        // The node's config, and a backup that rollback picks (it holds one name more).
        await writeFile(join(root(), CONFIG_REL), forms([keyName])[form]!, { mode: 0o600 });
        await writeFile(join(root(), BACKUPS_REL, 'config.yaml.20260101T000000Z.bak'), forms([keyName, 'again'])[form]!, { mode: 0o600 });
      },
    );
    expect(bad).toEqual([]);
  }, 900_000);
});
