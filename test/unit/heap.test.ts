import { describe, expect, it } from 'vitest';
import { boundYoungGeneration } from '../../src/heap';

describe('boundYoungGeneration', () => {
  it('does nothing where the bound is set at start-up (the single executable) or turned off', () => {
    expect(boundYoungGeneration({}, ['--max-semi-space-size=8'])).toBe(false);
    expect(boundYoungGeneration({}, ['--max-semi-space-size', '8'])).toBe(false);
    expect(boundYoungGeneration({ K8S_ENCRYPT_YOUNG_GEN: 'unbounded' }, [])).toBe(false);
  });
});
