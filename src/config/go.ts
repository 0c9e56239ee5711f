/**
 * The parts of Go's standard library whose behaviour the apiserver's config loading relies on,
 * reproduced with Go's own error texts: net/url.Parse (KMS endpoints), time.ParseDuration and
 * Duration.String (KMS timeouts), base64.StdEncoding (keys), %q quoting. Pure.
 */

/** Go's strconv.Quote / fmt %q for the strings a config holds. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\x07') out += '\\a';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (ch === '\v') out += '\\v';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/** The parts of a parsed URL upstream looks at. */
interface GoUrl {
  scheme: string;
  host: string;
  path: string;
}

class UrlError extends Error {}

const isHex = (c: string | undefined) => c !== undefined && /^[0-9A-Fa-f]$/.test(c);
const isAlnum = (c: string) => /^[A-Za-z0-9]$/.test(c);

type Mode = 'path' | 'host' | 'user' | 'fragment';

/** url.shouldEscape, for the modes unescape consults (host). */
function hostNeedsEscape(c: string): boolean {
  if (isAlnum(c)) return false;
  return !"-_.~!$&'()*+,;=:[]<>\"".includes(c);
}

/** url.unescape: only its errors matter here. */
function unescape(s: string, mode: Mode): string {
  for (let i = 0; i < s.length; ) {
    const c = s[i]!;
    if (c === '%') {
      if (i + 2 >= s.length || !isHex(s[i + 1]) || !isHex(s[i + 2])) {
        throw new UrlError(`invalid URL escape ${goQuote(s.slice(i, i + 3))}`);
      }
      // In a host, %-encoding is for non-ASCII bytes only (RFC 3986 3.2.2).
      if (mode === 'host' && parseInt(s[i + 1]!, 16) < 8 && s.slice(i, i + 3) !== '%25') {
        throw new UrlError(`invalid URL escape ${goQuote(s.slice(i, i + 3))}`);
      }
      i += 3;
      continue;
    }
    if (mode === 'host' && c.charCodeAt(0) < 0x80 && hostNeedsEscape(c)) {
      throw new UrlError(`invalid character ${goQuote(c)} in host name`);
    }
    i++;
  }
  return s;
}

const validOptionalPort = (port: string) => port === '' || /^:[0-9]*$/.test(port);

function parseHost(host: string): string {
  if (host.startsWith('[')) {
    const i = host.lastIndexOf(']');
    if (i < 0) throw new UrlError("missing ']' in host");
    const colonPort = host.slice(i + 1);
    if (!validOptionalPort(colonPort)) throw new UrlError(`invalid port ${goQuote(colonPort)} after host`);
  } else {
    const i = host.lastIndexOf(':');
    if (i !== -1 && !validOptionalPort(host.slice(i))) throw new UrlError(`invalid port ${goQuote(host.slice(i))} after host`);
  }
  return unescape(host, 'host');
}

function parseAuthority(authority: string): string {
  const i = authority.lastIndexOf('@');
  const host = parseHost(i < 0 ? authority : authority.slice(i + 1));
  if (i >= 0) {
    const userinfo = authority.slice(0, i);
    if (!/^[A-Za-z0-9\-._:~!$&'()*+,;=%@]*$/.test(userinfo)) throw new UrlError('net/url: invalid userinfo');
    for (const part of userinfo.split(':', 2)) unescape(part, 'user');
  }
  return host;
}

function getScheme(raw: string): [string, string] {
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (/[A-Za-z]/.test(c)) continue;
    if (/[0-9+\-.]/.test(c)) {
      if (i === 0) return ['', raw];
      continue;
    }
    if (c === ':') {
      if (i === 0) throw new UrlError('missing protocol scheme');
      return [raw.slice(0, i), raw.slice(i + 1)];
    }
    return ['', raw];
  }
  return ['', raw];
}

function parse(raw: string): GoUrl {
  // stringContainsCTLByte
  if (/[\x00-\x1f\x7f]/.test(raw)) throw new UrlError('net/url: invalid control character in URL');
  if (raw === '*') return { scheme: '', host: '', path: '*' };
  const [schemeRaw, afterScheme] = getScheme(raw);
  const scheme = schemeRaw.toLowerCase();
  let rest = afterScheme;
  if (rest.endsWith('?') && rest.split('?').length === 2) rest = rest.slice(0, -1);
  else rest = rest.split('?')[0]!;
  if (!rest.startsWith('/')) {
    if (scheme !== '') return { scheme, host: '', path: '' }; // opaque
    const segment = rest.split('/')[0]!;
    if (segment.includes(':')) throw new UrlError('first path segment in URL cannot contain colon');
  }
  let host = '';
  if ((scheme !== '' || !rest.startsWith('///')) && rest.startsWith('//')) {
    let authority = rest.slice(2);
    rest = '';
    const i = authority.indexOf('/');
    if (i >= 0) [authority, rest] = [authority.slice(0, i), authority.slice(i)];
    host = parseAuthority(authority);
  }
  return { scheme, host, path: unescape(rest, 'path') };
}

/** Go's url.Parse: the URL, or the error text Go prints (`parse "…": net/url: …`). */
export function parseGoUrl(raw: string): { url: GoUrl } | { error: string } {
  const hash = raw.indexOf('#');
  const u = hash < 0 ? raw : raw.slice(0, hash);
  try {
    const url = parse(u);
    if (hash >= 0) {
      try {
        unescape(raw.slice(hash + 1), 'fragment');
      } catch (err) {
        return { error: `parse ${goQuote(raw)}: ${(err as Error).message}` };
      }
    }
    return { url };
  } catch (err) {
    if (!(err instanceof UrlError)) throw err;
    return { error: `parse ${goQuote(u)}: ${err.message}` };
  }
}

const UNIT_NS: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, μs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/** Go's time.ParseDuration, in nanoseconds; undefined when it does not parse. */
export function parseGoDuration(s: string): number | undefined {
  if (s === '0' || s === '+0' || s === '-0') return 0;
  // \u00b5 and \u03bc (micro sign, Greek mu) as escapes: a regex literal is the one place the
  // bundler leaves non-ASCII as is, and one such character makes V8 hold the whole single-executable
  // script as a two-byte string (7 MB instead of 3.5).
  const m = /^([-+]?)((?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)$/.exec(s);
  if (!m) return undefined;
  let total = 0;
  for (const part of m[2]!.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)/g)) {
    total += Number(part[1]) * UNIT_NS[part[2]!]!;
  }
  return m[1] === '-' ? -total : total;
}

/** Go's time.Duration.String: 15s, 1m30s, 100ms, 0s, -15s. */
export function formatGoDuration(ns: number): string {
  if (ns === 0) return '0s';
  const sign = ns < 0 ? '-' : '';
  const a = Math.abs(ns);
  if (a < 1e3) return `${sign}${a}ns`;
  if (a < 1e6) return `${sign}${trim(a / 1e3)}µs`;
  if (a < 1e9) return `${sign}${trim(a / 1e6)}ms`;
  const h = Math.floor(a / 3600e9);
  const m = Math.floor((a % 3600e9) / 60e9);
  const s = (a % 60e9) / 1e9;
  if (h > 0) return `${sign}${h}h${m}m${trim(s)}s`;
  if (m > 0) return `${sign}${m}m${trim(s)}s`;
  return `${sign}${trim(s)}s`;
}
const trim = (n: number) => String(Number(n.toFixed(9)));

/** Go's base64.StdEncoding.DecodeString: padding required, CR/LF ignored, nothing else. */
export function decodeBase64Strict(s: string): Buffer | undefined {
  const t = s.replace(/[\r\n]/g, '');
  if (t.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(t)) return undefined;
  return Buffer.from(t, 'base64');
}
