import { describe, expect, it } from 'vitest';
import { formatGoDuration, goQuote, parseGoUrl } from '../../src/config/go';

describe('parseGoUrl (Go net/url.Parse, as the apiserver checks a KMS endpoint)', () => {
  it.each([
    ['unix:///var/run/kms.sock', { scheme: 'unix', host: '', path: '/var/run/kms.sock' }],
    ['UNIX:///a.sock', { scheme: 'unix', host: '', path: '/a.sock' }],
    ['unix://var/run/kms.sock', { scheme: 'unix', host: 'var', path: '/run/kms.sock' }],
    ['unix:/a.sock', { scheme: 'unix', host: '', path: '/a.sock' }],
    ['/var/run/kms.sock', { scheme: '', host: '', path: '/var/run/kms.sock' }],
    ['tcp://10.0.0.1:9000', { scheme: 'tcp', host: '10.0.0.1:9000', path: '' }],
    ['unix:///a%20b.sock', { scheme: 'unix', host: '', path: '/a%20b.sock' }],
  ])('parses %j', (raw, url) => expect(parseGoUrl(raw)).toEqual({ url }));

  it.each([
    ['unix:///foo\n.socket', 'parse "unix:///foo\\n.socket": net/url: invalid control character in URL'],
    ['unix:///a%zz.sock', 'parse "unix:///a%zz.sock": invalid URL escape "%zz"'],
    ['unix:///a%2', 'parse "unix:///a%2": invalid URL escape "%2"'],
    ['unix://ho st/a.sock', 'parse "unix://ho st/a.sock": invalid character " " in host name'],
    ['unix://host:12x/a.sock', 'parse "unix://host:12x/a.sock": invalid port ":12x" after host'],
    ['unix://[::1/a.sock', `parse "unix://[::1/a.sock": missing ']' in host`],
    ['unix://us{er@host/a', 'parse "unix://us{er@host/a": net/url: invalid userinfo'],
    [':foo', 'parse ":foo": missing protocol scheme'],
    ['unix:///a.sock#%zz', 'parse "unix:///a.sock#%zz": invalid URL escape "%zz"'],
  ])('refuses %j as Go does', (raw, error) => {
    expect(parseGoUrl(raw)).toEqual({ error });
  });

  it('takes an opaque URL ("a:b/c") and refuses a colon in the first segment of a scheme-less one', () => {
    expect(parseGoUrl('a:b/c')).toEqual({ url: { scheme: 'a', host: '', path: '' } });
    expect(parseGoUrl('1a:b')).toEqual({ error: 'parse "1a:b": first path segment in URL cannot contain colon' });
  });
});

describe('Go formatting', () => {
  it.each([
    [15e9, '15s'],
    [-15e9, '-15s'],
    [0, '0s'],
    [-60e9, '-1m0s'],
    [90e9, '1m30s'],
    [1e8, '100ms'],
    [3600e9, '1h0m0s'],
  ])('Duration %d is %s', (ns, s) => expect(formatGoDuration(ns)).toBe(s));
  it('quotes as %q does', () => {
    expect(goQuote('a"b\\c\n\t\x01é')).toBe('"a\\"b\\\\c\\n\\t\\x01é"');
  });
});
