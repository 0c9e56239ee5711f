import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/**
 * known_hosts as OpenSSH reads and writes it (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"): one key per
 * line, `[@marker] patterns keytype base64 [comment]`; patterns are comma separated host names,
 * `[host]:port` for a port other than 22, wildcards `*` and `?`, `!` negation, or one hashed name
 * `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`. Pure: the file's text in, a verdict out.
 */

export interface KnownKey {
  marker: '' | '@revoked' | '@cert-authority';
  patterns: string;
  type: string;
  key: Buffer;
}

export function parseKnownHosts(text: string): KnownKey[] {
  const out: KnownKey[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const parts = line.split(/\s+/);
    let marker: KnownKey['marker'] = '';
    if (parts[0] === '@revoked' || parts[0] === '@cert-authority') marker = parts.shift() as KnownKey['marker'];
    const [patterns, type, b64] = parts;
    if (!patterns || !type || !b64 || !/^[A-Za-z0-9+/]+=*$/.test(b64)) continue;
    out.push({ marker, patterns, type, key: Buffer.from(b64, 'base64') });
  }
  return out;
}

/** The name OpenSSH looks a host up by: `host` on port 22, `[host]:port` otherwise. */
export const hostKeyName = (host: string, port: number) => (port === 22 ? host : `[${host}]:${port}`);

function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
  return re.test(name);
}

function hashedMatch(pattern: string, name: string): boolean {
  const m = /^\|1\|([A-Za-z0-9+/=]+)\|([A-Za-z0-9+/=]+)$/.exec(pattern);
  if (!m) return false;
  const want = Buffer.from(m[2]!, 'base64');
  const got = createHmac('sha1', Buffer.from(m[1]!, 'base64')).update(name).digest();
  return want.length === got.length && timingSafeEqual(want, got);
}

/** Whether a line's patterns name this host (a negated match excludes the line). */
export function patternsMatch(patterns: string, host: string, port: number): boolean {
  const name = hostKeyName(host, port);
  if (patterns.startsWith('|1|')) return hashedMatch(patterns, name);
  let hit = false;
  for (const p of patterns.split(',')) {
    const neg = p.startsWith('!');
    const pat = neg ? p.slice(1) : p;
    if (globMatch(pat, name)) {
      if (neg) return false;
      hit = true;
    }
  }
  return hit;
}

/** The key type inside an SSH public key blob (its first string). */
export function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return '';
  const n = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + n).toString('latin1');
}

export type HostKeyVerdict =
  | { verdict: 'known' }
  | { verdict: 'unknown' }
  | { verdict: 'changed'; knownTypes: string[] }
  | { verdict: 'revoked' };

/** What known_hosts says about the key this host presented. */
export function checkHostKey(entries: KnownKey[], host: string, port: number, blob: Buffer): HostKeyVerdict {
  const mine = entries.filter((e) => e.marker !== '@cert-authority' && patternsMatch(e.patterns, host, port));
  if (mine.some((e) => e.marker === '@revoked' && e.key.equals(blob))) return { verdict: 'revoked' };
  const plain = mine.filter((e) => e.marker === '');
  if (plain.some((e) => e.key.equals(blob))) return { verdict: 'known' };
  // Known under another key (of this or another type): a changed key, not a new host.
  if (plain.length) return { verdict: 'changed', knownTypes: [...new Set(plain.map((e) => e.type))] };
  return { verdict: 'unknown' };
}

/** The line `--accept-new-host-keys` appends for a new host. */
export const knownHostsLine = (host: string, port: number, blob: Buffer) => `${hostKeyName(host, port)} ${keyTypeOf(blob)} ${blob.toString('base64')}`;

/** SHA256 fingerprint as `ssh-keygen -lf` prints it. */
export const fingerprint = (blob: Buffer) => `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
