// npm run bench:startup [-- --runs 15 --no-cache-variant]: start-up time of the CLI, node + dist
// and the single executable (dist/exe, from npm run build:exe) side by side, for `--help` and
// `validate-config` on a small file. Prints per variant and command the median and p90 wall time,
// the mean CPU time (user + sys of the child, from /proc) and the machine's load, and each
// executable's size. --no-cache-variant also builds an x64 executable without V8's code cache
// (dist/exe/build/k8s-encrypt-linux-x64-nocache) to show what the cache buys.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = resolve(import.meta.dirname, '..', '..');
const { values } = parseArgs({ options: { runs: { type: 'string', default: '15' }, 'no-cache-variant': { type: 'boolean', default: false } } });
const RUNS = Number(values.runs);
const EXE = join(ROOT, 'dist', 'exe');
const SMALL = join(ROOT, 'test', 'fixtures', 'configs', 'aescbc-two-keys.yaml');

interface Variant {
  name: string;
  file: string;
  pre: string[];
}
const variants: Variant[] = [{ name: 'node + dist', file: process.execPath, pre: [join(ROOT, 'bin', 'k8s-encrypt.js')] }];
const x64 = join(EXE, `k8s-encrypt-linux-${process.arch}`);
if (existsSync(x64)) variants.push({ name: `executable (linux-${process.arch})`, file: x64, pre: [] });
else console.error(`no ${x64}: run npm run build:exe first to compare the executable`);

if (values['no-cache-variant'] && existsSync(join(EXE, 'build', `sea-${process.arch}.json`))) {
  const cfg = JSON.parse(readFileSync(join(EXE, 'build', `sea-${process.arch}.json`), 'utf8'));
  const out = join(EXE, 'build', `k8s-encrypt-linux-${process.arch}-nocache`);
  const cfgPath = join(EXE, 'build', 'sea-nocache.json');
  writeFileSync(cfgPath, JSON.stringify({ ...cfg, output: out, useCodeCache: false }));
  execFileSync(cfg.executable, ['--build-sea', cfgPath], { stdio: ['ignore', 'ignore', 'inherit'] });
  variants.push({ name: 'executable, no code cache', file: out, pre: [] });
}

const commands: Array<[string, string[]]> = [
  ['--help', ['--help']],
  ['validate-config (small file)', ['validate-config', SMALL]],
];

/** cutime + cstime of this process: CPU of the children it has waited for, in clock ticks. */
function childTicks(): number {
  const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  return Number(f[13]) + Number(f[14]);
}
const TICK_MS = 10; // USER_HZ is 100 on Linux

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
console.log(`start-up, ${RUNS} runs each (after one warm-up), load average ${loadavg().map((l) => l.toFixed(1)).join(' ')} on this machine`);
console.log('| variant | command | median ms | p90 ms | CPU ms (mean) |');
console.log('| --- | --- | --- | --- | --- |');
for (const v of variants) {
  for (const [label, args] of commands) {
    const env = { ...process.env, NO_COLOR: '1' };
    spawnSync(v.file, [...v.pre, ...args], { stdio: 'ignore', env });
    const wall: number[] = [];
    const t0 = childTicks();
    for (let i = 0; i < RUNS; i++) {
      const s = process.hrtime.bigint();
      const r = spawnSync(v.file, [...v.pre, ...args], { stdio: 'ignore', env });
      wall.push(Number(process.hrtime.bigint() - s) / 1e6);
      if (r.status !== 0) throw new Error(`${v.name} ${label}: exit ${r.status}`);
    }
    const cpu = ((childTicks() - t0) * TICK_MS) / RUNS;
    console.log(`| ${v.name} | ${label} | ${pct(wall, 0.5).toFixed(0)} | ${pct(wall, 0.9).toFixed(0)} | ${cpu.toFixed(0)} |`);
  }
}
for (const v of variants.slice(1)) console.log(`${v.name}: ${(statSync(v.file).size / 1e6).toFixed(1)} MB`);
