import { describe, expect, it } from 'vitest';
import { redactConfig, redactConfigText, REDACTED, UNPARSEABLE_CONFIG } from '../../src/ui/redact';

const K = 'c2VjcmV0LWtleS0zMi1ieXRlcy1sb25nLi4uLi4uLi4=';
const head = 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n';

describe('redactConfigText', () => {
  it.each([
    ['flow', `${head}resources: [{resources: [secrets], providers: [{aescbc: {keys: [{name: k1, secret: ${K}}]}}]}]\n`],
    ['literal block scalar', `${head}resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k1\n        secret: |\n          ${K}\n`],
    ['folded block scalar', `${head}resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k1\n        secret: >-\n          ${K}\n`],
    ['quoted key', `${head}resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k1\n        "secret": "${K}"\n`],
    ['alias elsewhere', `${head}resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: &n ${K}\n        secret: *n\n`],
    ['comment', `# secret: ${K}\n${head}resources: []\n`],
    ['tag', `${head}resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - {name: k1, secret: !!str ${K}}\n`],
  ])('hides the key in the %s form and re-renders block YAML', (_, text) => {
    const r = redactConfig(text);
    expect(r.ok).toBe(true);
    expect(r.text).not.toContain(K.slice(0, 8));
    expect(r.text).not.toContain('#');
    if (text.includes('secret:') && !text.startsWith('#')) expect(r.text).toContain(`secret: ${REDACTED}`);
  });

  it('shows nothing of a text that does not parse', () => {
    for (const text of [`secret: ${K}\n  bad: [`, `secret: ${K}\nsecret: ${K}\n`, `a: &a [*a]`]) {
      expect(redactConfig(text)).toEqual({ ok: false, text: UNPARSEABLE_CONFIG });
    }
  });

  it('keeps an empty text empty and the header of a rendered file', () => {
    expect(redactConfigText('')).toBe('');
    expect(redactConfigText('# Written by k8s-encrypt. This file holds encryption keys: keep it mode 0600 (owner root only)\n# and back it up somewhere safe; a lost key means data that can no longer be read.\nkind: x\n')).toMatch(/^# Written by k8s-encrypt\.[^]*\nkind: x\n$/);
  });
});
