/** How a value of the wrong type was received, as option and config decoding messages name it
 * (the wording of zod's English messages, which those checks used before). */
export function receivedType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  return typeof v;
}
