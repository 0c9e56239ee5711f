import { usageError } from '../ui/errors';

// On its own (no config, render or validation code) because every command's options use it at
// start-up: --help must not load the YAML and validation modules.

/** A name the apiserver serves a resource under: plural, lower case, optionally `.group`. */
const REST_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
/** The wildcards a rule may name: `*.` (the core group), `*.*`, `*.group`. */
const isWildcard = (r: string) => r === '*.' || r === '*.*' || (r.startsWith('*.') && REST_NAME.test(r.slice(2)));

/**
 * `--resources`, the one parser (write-config, init, re-encrypt-all, status): comma-separated
 * resource names (`secrets`, `secrets,configmaps`, `widgets.example.com`), each as the apiserver
 * serves it, since any other name only makes a rule or a scan that silently matches nothing.
 * Wildcards where the command can use them (a rule, a rewrite); may be empty (the caller decides
 * what no resource means).
 */
export function resourceList(v: string, opts: { wildcards: boolean }): string[] {
  const list = v.split(',').map((r) => r.trim()).filter((r) => r !== '');
  const bad = list.find((r) => !REST_NAME.test(r) && !(opts.wildcards && isWildcard(r)));
  if (bad !== undefined) {
    throw usageError(
      `--resources: "${bad}" is not a resource name (lower-case letters, digits, '-' and '.', as the apiserver serves it)`,
      `give plural resource names, comma-separated: secrets,configmaps,widgets.example.com${opts.wildcards ? " (wildcards: '*.' for the core group, '*.group', '*.*')" : ''}`,
    );
  }
  return list;
}

/** `--resources` for a rule or a rewrite: at least one name, wildcards allowed. */
export function parseResources(v: string): string[] {
  const list = resourceList(v, { wildcards: true });
  if (list.length === 0) throw usageError('--resources names no resource', 'e.g. --resources secrets,configmaps');
  return list;
}
