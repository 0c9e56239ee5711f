/**
 * The bed's KMS plugin as a process (dist/test/bed/bin/kms-plugin.js), the way a plugin runs next
 * to a control plane. Flags win over environment variables:
 *
 *   --socket PATH            BED_KMS_SOCKET            unix socket to serve on (required)
 *   --api v1|v2|both         BED_KMS_API               services to serve (default v2)
 *   --key-id ID              BED_KMS_KEY_ID            current key id (default bed-kek-1)
 *   --delay-ms N             BED_KMS_DELAY_MS          answer every call after N ms
 *   --unhealthy              BED_KMS_UNHEALTHY=1       Status answers healthz "err"
 *   --wrong-version          BED_KMS_WRONG_VERSION=1   Status answers version "v1"
 *   --broken-round-trip      BED_KMS_BROKEN_ROUND_TRIP=1  Decrypt answers other bytes
 *   --down                   BED_KMS_DOWN=1            start without a socket
 *   --knobs-file PATH        BED_KMS_KNOBS_FILE        JSON knobs, re-read every 200 ms
 *                                                      ({down, delayMs, unhealthy, wrongVersion,
 *                                                        brokenRoundTrip, keyId}); once in force,
 *                                                      the same text is written to PATH.applied;
 *                                                      knobs it leaves out keep their start values
 *
 * Prints `ready unix:///PATH` on stdout once it serves; stops cleanly on SIGTERM/SIGINT.
 * Serves Node (grpc-js) clients only; it is not meant for a real kube-apiserver.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { startKmsPlugin, type KmsPluginApi, type KmsPluginKnobs } from '../kms-plugin';

const { values } = parseArgs({
  options: {
    socket: { type: 'string' },
    api: { type: 'string' },
    'key-id': { type: 'string' },
    'delay-ms': { type: 'string' },
    unhealthy: { type: 'boolean' },
    'wrong-version': { type: 'boolean' },
    'broken-round-trip': { type: 'boolean' },
    down: { type: 'boolean' },
    'knobs-file': { type: 'string' },
  },
  strict: true,
});

const env = process.env;
const flag = (v: boolean | undefined, name: string) => v ?? (env[name] === '1' || env[name] === 'true');
const fail = (msg: string): never => {
  process.stderr.write(`kms-plugin: ${msg}\n`);
  process.exit(2);
};

const socketPath = values.socket ?? env.BED_KMS_SOCKET ?? fail('--socket PATH (or BED_KMS_SOCKET) is required');
const api = (values.api ?? env.BED_KMS_API ?? 'v2') as KmsPluginApi;
if (!['v1', 'v2', 'both'].includes(api)) fail(`--api must be v1, v2 or both, got "${api}"`);
const delayText = values['delay-ms'] ?? env.BED_KMS_DELAY_MS ?? '0';
const delayMs = Number(delayText);
if (!Number.isInteger(delayMs) || delayMs < 0) fail(`--delay-ms must be a whole number, got "${delayText}"`);
const knobsFile = values['knobs-file'] ?? env.BED_KMS_KNOBS_FILE;

const plugin = await startKmsPlugin({
  socketPath,
  api,
  keyId: values['key-id'] ?? env.BED_KMS_KEY_ID,
  delayMs,
  unhealthy: flag(values.unhealthy, 'BED_KMS_UNHEALTHY'),
  wrongVersion: flag(values['wrong-version'], 'BED_KMS_WRONG_VERSION'),
  brokenRoundTrip: flag(values['broken-round-trip'], 'BED_KMS_BROKEN_ROUND_TRIP'),
  down: flag(values.down, 'BED_KMS_DOWN'),
}).catch((err) => fail(`cannot serve on ${socketPath}: ${(err as Error).message}`));

const { keyId: _startKeyId, ...startKnobs } = plugin.knobs();
let lastKnobs = '';
let polling: NodeJS.Timeout | undefined;
if (knobsFile) {
  const poll = async () => {
    const text = await readFile(knobsFile, 'utf8').catch(() => '');
    if (text && text !== lastKnobs) {
      lastKnobs = text;
      try {
        // The file is the whole set of knobs: what it leaves out is as the flags started it.
        await plugin.setKnobs({ ...startKnobs, ...(JSON.parse(text) as KmsPluginKnobs) });
        // Tells whoever wrote the knobs that they are in force.
        await writeFile(`${knobsFile}.applied`, text);
      } catch (err) {
        process.stderr.write(`kms-plugin: ignoring knobs file ${knobsFile}: ${(err as Error).message}\n`);
      }
    }
    polling = setTimeout(poll, 200);
  };
  await poll();
}

process.stdout.write(`ready ${plugin.endpoint}\n`);

for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    if (polling) clearTimeout(polling);
    void plugin.stop().then(() => process.exit(0));
  });
}
