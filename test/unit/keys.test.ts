import { describe, expect, it } from 'vitest';
import { checkKeyLength, decodeKey, generateKey, KEY_LENGTHS, LOCAL_PROVIDERS } from '../../src/config/keys';

describe('generateKey', () => {
  it.each(LOCAL_PROVIDERS.flatMap((p) => KEY_LENGTHS[p].map((n) => [p, n] as const)))(
    '%s with %i bytes decodes to that many random bytes',
    (provider, bytes) => {
      const a = generateKey(provider, bytes);
      const b = generateKey(provider, bytes);
      expect(Buffer.from(a, 'base64')).toHaveLength(bytes);
      expect(a).not.toEqual(b);
      expect(decodeKey(provider, a)).toHaveLength(bytes);
    },
  );

  it.each([
    ['aescbc', 8],
    ['aescbc', 31],
    ['aesgcm', 64],
    ['secretbox', 16],
    ['secretbox', 24],
  ] as const)('refuses %s with %i bytes', (provider, bytes) => {
    expect(() => generateKey(provider, bytes)).toThrow(/must be/);
    expect(() => checkKeyLength(provider, bytes)).toThrow(/must be/);
  });
});

describe('key length messages', () => {
  it.each([
    ['aescbc', 'an aescbc key must be 16, 24 or 32 bytes, not 8'],
    ['aesgcm', 'an aesgcm key must be 16, 24 or 32 bytes, not 8'],
    ['secretbox', 'a secretbox key must be 32 bytes, not 8'],
  ] as const)('%s: %s', (provider, message) => {
    expect(() => checkKeyLength(provider, 8)).toThrow(message);
  });
});

describe('decodeKey', () => {
  const key = Buffer.alloc(32, 7).toString('base64');
  it('accepts a trailing newline', () => {
    expect(decodeKey('aescbc', `${key}\n`)).toHaveLength(32);
  });
  it.each(['not base64!', 'abc', '', '====', 'AAAA AAAA'])('refuses %j without echoing it', (bad) => {
    let msg = '';
    try {
      decodeKey('aescbc', bad);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/not valid base64/);
    if (bad.trim()) expect(msg).not.toContain(bad);
  });
  it('refuses a wrong length and does not echo the key', () => {
    const short = Buffer.alloc(20, 1).toString('base64');
    expect(() => decodeKey('aescbc', short)).toThrow(/20 bytes/);
    try {
      decodeKey('secretbox', Buffer.alloc(16).toString('base64'));
    } catch (e) {
      expect((e as Error).message).not.toContain(Buffer.alloc(16).toString('base64'));
    }
  });
});
