// The apiserver stand-in's process: `node dist/test/bed/bin/apiserver.js <kube-apiserver flags>`.
import { silenceIpServernameWarning } from '../../../src/ui/warnings';
import { runApiserver } from '../apiserver/main';

silenceIpServernameWarning();

// A container dies with its pod; a stand-in whose kubelet (a test process) was killed with
// SIGKILL would otherwise live on, holding its port. Re-parenting is the sign.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(1);
}, 1000).unref();

runApiserver(process.argv.slice(2), process.env).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`E apiserver stand-in crashed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
