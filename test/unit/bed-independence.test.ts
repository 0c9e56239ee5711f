import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The test bed stands in for kube-apiserver, etcd's observer and a KMS plugin; a stand-in that
 * imported the src module it checks would agree with it by construction. Only utilities that
 * check nothing (atomic file writes, a warning filter) may come from src/.
 */
const ALLOWED = new Set(['src/state/atomic', 'src/ui/warnings']);
const BED = join(__dirname, '..', 'bed');
const ROOT = join(__dirname, '..', '..');

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => join(e.parentPath, e.name));
}

describe('test bed independence', () => {
  it('imports nothing from src/ but plain utilities', () => {
    const found: string[] = [];
    for (const file of tsFiles(BED)) {
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?:from|import)\s*\(?\s*['"]([^'"]+)['"]/g)) {
        const spec = m[1]!;
        if (!spec.startsWith('.')) continue;
        const target = relative(ROOT, join(file, '..', spec));
        if (target.startsWith('src/') && !ALLOWED.has(target)) found.push(`${relative(ROOT, file)} -> ${target}`);
      }
    }
    expect(found).toEqual([]);
  });
});
