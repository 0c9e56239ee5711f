// The apiserver stand-in's process: `node dist/test/bed/bin/apiserver.js <kube-apiserver flags>`.
import { runApiserver } from '../apiserver/main';

runApiserver(process.argv.slice(2), process.env).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`E apiserver stand-in crashed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
