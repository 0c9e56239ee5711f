/**
 * grpc-js (under the etcd client) passes the etcd address as TLS servername, and Node warns
 * (DEP0123) on every connection to an IP endpoint: noise on stderr for a normal etcd URL.
 * Every other warning still prints.
 */
export function silenceIpServernameWarning(): void {
  const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]) => {
    const [, typeOrOpts, code] = args;
    const c = typeof typeOrOpts === 'object' && typeOrOpts ? (typeOrOpts as { code?: string }).code : code;
    if (c !== 'DEP0123') emitWarning(...args);
  }) as typeof process.emitWarning;
}
