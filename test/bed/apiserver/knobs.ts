/** Fault injection for tests, from the environment the kubelet stand-in passes (see bed-contract). */
export interface Knobs {
  /** Share (0..1) of API requests answered 429 TooManyRequests. */
  rate429: number;
  retryAfterSeconds: number;
  /** Share (0..1) of PUTs answered 409 Conflict although the resourceVersion matches. */
  rate409: number;
  latencyMs: number;
  startDelayMs: number;
  crashOnStart: boolean;
  reloadIntervalMs: number;
  /** Path prefixes answered 403 Forbidden. */
  forbidPaths: string[];
  /** Serve HTTP/1.1 only, no h2 in ALPN (a proxy that does not speak HTTP/2); HTTP/2 and 1.1 otherwise. */
  http1Only: boolean;
  /** SETTINGS_MAX_CONCURRENT_STREAMS of each HTTP/2 connection (kube-apiserver: 250 unless set). */
  maxStreams: number;
}

function num(env: NodeJS.ProcessEnv, name: string, dflt: number, max = Number.POSITIVE_INFINITY): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || n > max) throw new Error(`${name}="${raw}" is not a number between 0 and ${max}`);
  return n;
}

export function knobsFromEnv(env: NodeJS.ProcessEnv): Knobs {
  return {
    rate429: num(env, 'BED_RATE_429', 0, 1),
    retryAfterSeconds: num(env, 'BED_RETRY_AFTER', 1),
    rate409: num(env, 'BED_RATE_409', 0, 1),
    latencyMs: num(env, 'BED_LATENCY_MS', 0),
    startDelayMs: num(env, 'BED_START_DELAY_MS', 0),
    crashOnStart: env.BED_CRASH_ON_START === '1' || env.BED_CRASH_ON_START === 'true',
    reloadIntervalMs: num(env, 'BED_RELOAD_INTERVAL_MS', 1000) || 1000,
    forbidPaths: (env.BED_FORBID_PATHS ?? '').split(',').filter(Boolean),
    http1Only: env.BED_HTTP1_ONLY === '1' || env.BED_HTTP1_ONLY === 'true',
    maxStreams: num(env, 'BED_MAX_STREAMS', 250) || 250,
  };
}
