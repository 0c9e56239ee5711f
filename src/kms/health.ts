/**
 * The check run before the apiserver is switched to a KMS provider: does the plugin answer, is it
 * healthy, does it speak the configured API version, and can it wrap and unwrap a value?
 * A plugin that fails any of these would take the control plane down once the apiserver
 * depends on it.
 */
import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { CliError, ExitCode } from '../ui/errors';
import {
  connectKmsV1,
  connectKmsV2,
  DEFAULT_KMS_TIMEOUT_MS,
  formatDurationMs,
  isUnreachableError,
  KMS_V1_API_VERSION,
  parseKmsEndpoint,
  type KmsV1Client,
  type KmsV2Client,
} from './client';

type KmsApiVersion = 'v1' | 'v2';

interface KmsHealthCheck {
  name: string;
  ok: boolean;
  /** One line, never key material. */
  detail: string;
  ms: number;
}

export interface KmsHealthReport {
  endpoint: string;
  apiVersion: KmsApiVersion;
  ok: boolean;
  /** v2: the key id from Status. */
  keyId?: string;
  /** v2: Status.version; v1: Version.version. */
  pluginVersion?: string;
  /** v1: runtime name and version from Version. */
  runtime?: string;
  checks: KmsHealthCheck[];
}

export interface KmsHealthOptions {
  apiVersion?: KmsApiVersion;
  timeoutMs?: number;
}

interface KmsHealthDeps {
  connectV2?: typeof connectKmsV2;
  connectV1?: typeof connectKmsV1;
}

const ROUND_TRIP_BYTES = 32;
/** Upstream's limit on a v2 key id (KeyIDMaxSize). */
const MAX_KEY_ID_BYTES = 1024;

const elapsed = (start: bigint) => Math.round(Number(process.hrtime.bigint() - start) / 1e6);
const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));


async function timed<T>(fn: () => Promise<T>): Promise<{ value?: T; error?: unknown; ms: number }> {
  const start = process.hrtime.bigint();
  try {
    const value = await fn();
    return { value, ms: elapsed(start) };
  } catch (error) {
    return { error, ms: elapsed(start) };
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A check's first call: a failure is reported under `name`; 'unreachable' ends the check. */
async function firstCall<T>(report: KmsHealthReport, name: string, fn: () => Promise<T>): Promise<{ value?: T; ms: number } | 'unreachable'> {
  const r = await timed(fn);
  if (!r.error) return r;
  report.checks.push({ name, ok: false, detail: errorText(r.error), ms: r.ms });
  return isUnreachableError(r.error) ? 'unreachable' : { ms: r.ms };
}

async function checkV2(client: KmsV2Client, report: KmsHealthReport): Promise<void> {
  const status = await firstCall(report, 'status', () => client.status());
  if (status === 'unreachable') return;
  if (status.value) {
    const s = status.value;
    report.keyId = s.keyId || undefined;
    report.pluginVersion = s.version;
    report.checks.push({ name: 'status', ok: true, detail: 'Status answered', ms: status.ms });
    report.checks.push(
      s.healthz === 'ok'
        ? { name: 'healthz', ok: true, detail: 'healthz "ok"', ms: 0 }
        : { name: 'healthz', ok: false, detail: `healthz is "${oneLine(s.healthz)}", expected "ok"`, ms: 0 },
    );
    report.checks.push(
      s.version === 'v2'
        ? { name: 'version', ok: true, detail: 'version "v2"', ms: 0 }
        : {
            name: 'version',
            ok: false,
            detail: `version is "${oneLine(s.version)}", expected "v2" (the apiserver refuses a v2 provider otherwise)`,
            ms: 0,
          },
    );
    const keyIdBytes = Buffer.byteLength(s.keyId);
    report.checks.push(
      keyIdBytes === 0
        ? { name: 'key-id', ok: false, detail: 'key id is empty (the apiserver needs one to track the write key)', ms: 0 }
        : keyIdBytes > MAX_KEY_ID_BYTES
          ? { name: 'key-id', ok: false, detail: `key id is ${keyIdBytes} bytes, more than ${MAX_KEY_ID_BYTES}`, ms: 0 }
          : { name: 'key-id', ok: true, detail: `key id "${oneLine(s.keyId)}"`, ms: 0 },
    );
  }

  const uid = randomUUID();
  report.checks.push(
    await roundTripCheck(
      (plaintext) => client.encrypt(uid, plaintext),
      (enc) => client.decrypt(uid, enc),
    ),
  );
}

async function checkV1(client: KmsV1Client, report: KmsHealthReport): Promise<void> {
  const version = await firstCall(report, 'version', () => client.version());
  if (version === 'unreachable') return;
  if (version.value) {
    const v = version.value;
    report.pluginVersion = v.version;
    report.runtime = [v.runtimeName, v.runtimeVersion].filter(Boolean).join(' ') || undefined;
    report.checks.push(
      v.version === KMS_V1_API_VERSION
        ? { name: 'version', ok: true, detail: `version "${KMS_V1_API_VERSION}"${report.runtime ? ` (${oneLine(report.runtime)})` : ''}`, ms: version.ms }
        : { name: 'version', ok: false, detail: `version is "${oneLine(v.version)}", expected "${KMS_V1_API_VERSION}"`, ms: version.ms },
    );
  }
  report.checks.push(
    await roundTripCheck(
      async (plaintext) => ({ ciphertext: await client.encrypt(plaintext) }),
      (enc) => client.decrypt(enc.ciphertext),
    ),
  );
}

/**
 * Encrypt a random value, decrypt what came back, compare. A v2 Encrypt must also name the key
 * id it used (the apiserver stores it with every object).
 */
async function roundTripCheck<E extends { ciphertext: Uint8Array; keyId?: string }>(
  encrypt: (plaintext: Buffer) => Promise<E>,
  decrypt: (encrypted: E) => Promise<Uint8Array>,
): Promise<KmsHealthCheck> {
  const plaintext = randomBytes(ROUND_TRIP_BYTES);
  const rt = await timed(async () => {
    const enc = await encrypt(plaintext);
    if (enc.ciphertext.length === 0) return 'Encrypt returned an empty ciphertext';
    if ('keyId' in enc && !enc.keyId) return 'Encrypt returned an empty key id';
    if (sameBytes(enc.ciphertext, plaintext)) return 'Encrypt returned the plaintext unchanged';
    if (!sameBytes(await decrypt(enc), plaintext)) return 'Decrypt did not return the value that was encrypted';
    return undefined;
  });
  const problem = rt.error ? errorText(rt.error) : rt.value;
  return {
    name: 'round-trip',
    ok: !problem,
    detail: problem ?? `Encrypt then Decrypt of ${ROUND_TRIP_BYTES} random bytes gave them back`,
    ms: rt.ms,
  };
}

/** Plugin-provided strings, shortened and kept on one line for reports. */
function oneLine(s: string): string {
  const t = s.replace(/[\r\n\t]+/g, ' ');
  return t.length > 120 ? `${t.slice(0, 117)}...` : t;
}

/**
 * Runs every check against the plugin and reports each one. Never throws for an unhealthy plugin
 * (that is in the report); throws CliError(Usage) for an endpoint that is not unix://.
 */
export async function checkKmsHealth(
  endpoint: string,
  opts: KmsHealthOptions = {},
  deps: KmsHealthDeps = {},
): Promise<KmsHealthReport> {
  parseKmsEndpoint(endpoint);
  const apiVersion = opts.apiVersion ?? 'v2';
  const timeoutMs = opts.timeoutMs ?? DEFAULT_KMS_TIMEOUT_MS;
  const report: KmsHealthReport = { endpoint, apiVersion, ok: false, checks: [] };
  if (apiVersion === 'v2') {
    const client = (deps.connectV2 ?? connectKmsV2)(endpoint, { timeoutMs });
    try {
      await checkV2(client, report);
    } finally {
      client.close();
    }
  } else {
    const client = (deps.connectV1 ?? connectKmsV1)(endpoint, { timeoutMs });
    try {
      await checkV1(client, report);
    } finally {
      client.close();
    }
  }
  const expected = apiVersion === 'v2' ? ['status', 'healthz', 'version', 'key-id', 'round-trip'] : ['version', 'round-trip'];
  report.ok = expected.every((name) => report.checks.some((c) => c.name === name && c.ok));
  return report;
}

/** The failed checks as one line: "healthz: healthz is "err", expected "ok"; round-trip: ...". */
export function summarizeFailures(report: KmsHealthReport): string {
  return report.checks
    .filter((c) => !c.ok)
    .map((c) => `${c.name}: ${c.detail}`)
    .join('; ');
}

/**
 * For init/rotate-key: refuses (CliError, ExitCode.Cluster) to go on with a plugin that is not
 * healthy, naming every failed check. Returns the report when all checks pass.
 */
export async function assertKmsHealthy(
  endpoint: string,
  opts: KmsHealthOptions = {},
  deps: KmsHealthDeps = {},
): Promise<KmsHealthReport> {
  const report = await checkKmsHealth(endpoint, opts, deps);
  if (!report.ok) {
    throw new CliError(`KMS plugin at ${endpoint} is not healthy (${report.apiVersion}): ${summarizeFailures(report)}`, {
      hint: `fix the plugin, then check it with: k8s-encrypt kms health --endpoint ${endpoint} --kms-api-version ${report.apiVersion} --timeout ${formatDurationMs(opts.timeoutMs ?? DEFAULT_KMS_TIMEOUT_MS)}`,
      exitCode: ExitCode.Cluster,
      details: { kmsHealth: report },
    });
  }
  return report;
}
