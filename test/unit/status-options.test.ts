import { describe, expect, it } from 'vitest';
import { scanResources } from '../../src/commands/status';
import { CliError, ExitCode } from '../../src/ui/errors';

describe('status --resources', () => {
  it.each([
    ['secrets', ['secrets']],
    ['secrets, configmaps,widgets.example.com', ['secrets', 'configmaps', 'widgets.example.com']],
    [',', undefined],
  ])('%j parses', (v, want) => {
    expect(scanResources(v)).toEqual(want);
  });

  it.each(['X!', 'Secrets', 'secrets/status', '*.*', 'a b'])('%j is refused with a usage error', (v) => {
    let err: unknown;
    try {
      scanResources(v);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).message).toMatch(/is not a resource name/);
  });
});
