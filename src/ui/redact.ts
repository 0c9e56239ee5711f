/** The placeholder shown wherever a key would be. */
export const REDACTED = '<redacted>';

/**
 * Replaces every `secret:` value of an EncryptionConfiguration text (YAML or JSON) with a
 * placeholder, so that config contents and diffs can be printed.
 */
export function redactConfigText(text: string): string {
  return text
    .replace(/^(\s*-?\s*secret:\s*)(["']?)[^\s"'#]+\2/gm, `$1${REDACTED}`)
    .replace(/("secret"\s*:\s*)"[^"]*"/g, `$1"${REDACTED}"`);
}
