import { isIP } from 'node:net';
import tls from 'node:tls';

/**
 * grpc-js (under the bed's etcd3) passes the etcd address as TLS servername even when it is an IP
 * address, and so does a kubeconfig whose tls-server-name is one (the CLI's etcd client never does). SNI carries host names only (RFC 6066): Node.js up to 24 dropped an IP servername with
 * a warning (DEP0123) on every connection, Node.js 26 (the single executable's) refuses the
 * connection. Dropping it before tls.connect sees it does what older Nodes did, without the noise;
 * the certificate is still checked against the address. Every other warning still prints.
 */
export function silenceIpServernameWarning(): void {
  const t = tls as { connect: (...args: unknown[]) => tls.TLSSocket };
  const connect = t.connect;
  if (!(connect as { ipServernameDropped?: boolean }).ipServernameDropped) {
    const wrapped = (...args: unknown[]) => {
      for (const a of args) {
        if (a && typeof a === 'object' && typeof (a as tls.ConnectionOptions).servername === 'string' && isIP((a as tls.ConnectionOptions).servername!)) {
          delete (a as tls.ConnectionOptions).servername;
        }
      }
      return connect.apply(tls, args);
    };
    t.connect = Object.assign(wrapped, { ipServernameDropped: true });
  }
  const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]) => {
    const [, typeOrOpts, code] = args;
    const c = typeof typeOrOpts === 'object' && typeOrOpts ? (typeOrOpts as { code?: string }).code : code;
    if (c !== 'DEP0123') emitWarning(...args);
  }) as typeof process.emitWarning;
}
