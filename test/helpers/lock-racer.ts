// A separate process that races for the state lock (test/integration/state-files.test.ts): it waits
// for a common start time, takes the lock, holds it a moment and reports whether it stayed its own.
import { readFile } from 'node:fs/promises';
import { acquireLock } from '../../src/state/lock';

const [dir, startAt] = process.argv.slice(2) as [string, string];
while (Date.now() < Number(startAt)) {
  // a busy wait: every racer leaves the barrier in the same millisecond
}
try {
  const lock = await acquireLock(dir, 'race', { warn: () => {} });
  const t0 = Date.now();
  await new Promise((r) => setTimeout(r, 200));
  const still = (await readFile(lock.path, 'utf8')) === `${JSON.stringify(lock.info)}\n`;
  const t1 = Date.now();
  await lock.release();
  console.log(JSON.stringify({ got: true, t0, t1, still }));
} catch (err) {
  console.log(JSON.stringify({ got: false, message: (err as Error).message }));
}
