/**
 * Fault knobs of the apiserver stand-in. The kubelet stand-in reads them from
 * <nodeRoot>/bed/knobs.json at every start of an apiserver container and passes them as env.
 */
export interface ApiserverKnobs {
  rate429?: number;
  retryAfterSeconds?: number;
  rate409?: number;
  latencyMs?: number;
  startDelayMs?: number;
  crashOnStart?: boolean;
  /** Crash only when the container's command line carries this flag, e.g. '--encryption-provider-config'. */
  crashOnStartIfFlag?: string;
  /** Automatic-reload poll period (real: about 60 s). */
  reloadIntervalMs?: number;
  /** API paths (prefixes) answered 403 Forbidden, as RBAC would for a user without that right. */
  forbidPaths?: string[];
  /** Serve HTTP/1.1 only, no h2 in ALPN (a proxy in front that does not speak HTTP/2). */
  http1Only?: boolean;
  /** SETTINGS_MAX_CONCURRENT_STREAMS of each HTTP/2 connection (default 250, as kube-apiserver). */
  maxStreams?: number;
}

/** The bed's reload period when no knob sets one: fast enough for tests. */
export const BED_RELOAD_INTERVAL_MS = 1000;

const hasFlag = (argv: string[], flag: string) => argv.some((a) => a === flag || a.startsWith(`${flag}=`));

/** The env variables the apiserver stand-in reads, for one container start. */
export function knobsEnv(k: ApiserverKnobs, argv: string[]): Record<string, string> {
  const env: Record<string, string> = {
    BED_RELOAD_INTERVAL_MS: String(k.reloadIntervalMs ?? BED_RELOAD_INTERVAL_MS),
  };
  const num = (name: string, v: number | undefined) => {
    if (v !== undefined) env[name] = String(v);
  };
  num('BED_RATE_429', k.rate429);
  num('BED_RETRY_AFTER', k.retryAfterSeconds);
  num('BED_RATE_409', k.rate409);
  num('BED_LATENCY_MS', k.latencyMs);
  num('BED_START_DELAY_MS', k.startDelayMs);
  num('BED_MAX_STREAMS', k.maxStreams);
  if (k.http1Only) env.BED_HTTP1_ONLY = '1';
  if (k.forbidPaths?.length) env.BED_FORBID_PATHS = k.forbidPaths.join(',');
  if (k.crashOnStart || (k.crashOnStartIfFlag && hasFlag(argv, k.crashOnStartIfFlag))) env.BED_CRASH_ON_START = '1';
  return env;
}
