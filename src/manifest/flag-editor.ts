import type { DocPath, Edit } from './edit';
import { flagListOf, flagOccurrences, listOf, scanFlags, type Container, type FlagList, type ParsedManifest } from './manifest';

/** Edits of the kube-apiserver container's flag lists (command/args), as the planners in patch.ts use them. */

export const containerPath = (m: ParsedManifest): DocPath => ['spec', 'containers', m.containerIndex];

/** pflag accepts `--name=value` for every flag; the split form only when the manifest uses it
 * throughout, and never for booleans (`--flag true` would be a stray positional argument). */
function usesSplitForm(c: Container, list: FlagList): boolean {
  const items = listOf(c, list);
  const occ = scanFlags(items, list);
  return occ.some((f) => f.split) && occ.every((f) => f.split || !items[f.index]!.includes('='));
}

const isSortedBy = (names: string[]) => names.every((n, i) => i === 0 || names[i - 1]! <= n);

/** Inserts at the alphabetical position when the list is sorted (as kubeadm writes it), else last. */
export function sortedIndex(names: string[], name: string): number {
  if (!isSortedBy(names)) return names.length;
  const i = names.findIndex((n) => n > name);
  return i === -1 ? names.length : i;
}

/** Working state of the container's flag lists while a plan accumulates inserts. */
export class FlagEditor {
  readonly edits: Edit[] = [];
  readonly sets: Edit[] = [];
  private readonly lists: Record<FlagList, string[]>;

  constructor(private readonly m: ParsedManifest) {
    this.lists = { command: listOf(m.container, 'command'), args: listOf(m.container, 'args') };
  }

  /** Sets --name=value: rewrites the winning occurrence in place, or inserts a new one. */
  set(name: string, value: string): 'added' | 'set' | 'unchanged' {
    const occ = flagOccurrences(this.m.container).filter((f) => f.name === name);
    const last = occ[occ.length - 1];
    if (last) {
      if (last.value === value) return 'unchanged';
      const base = [...containerPath(this.m), last.list];
      this.sets.push(
        last.split
          ? { op: 'set', path: [...base, last.index + 1], value }
          : { op: 'set', path: [...base, last.index], value: `--${name}=${value}` },
      );
      return 'set';
    }
    const list = flagListOf(this.m.container);
    const items = this.lists[list];
    const flags = scanFlags(items, list);
    const pos = sortedIndex(flags.map((f) => f.name), name);
    const index = pos < flags.length ? flags[pos]!.index : items.length;
    const split = usesSplitForm(this.m.container, list) && value !== 'true' && value !== 'false';
    const seq = [...containerPath(this.m), list];
    const added = split ? [`--${name}`, value] : [`--${name}=${value}`];
    added.forEach((v, i) => this.edits.push({ op: 'insert', seq, index: index + i, value: v }));
    items.splice(index, 0, ...added);
    return 'added';
  }

  /** Removes every occurrence (and a split value), last first so indices stay valid. */
  remove(name: string): number {
    const occ = flagOccurrences(this.m.container).filter((f) => f.name === name);
    const removals: Array<{ list: FlagList; index: number }> = [];
    for (const f of occ) {
      removals.push({ list: f.list, index: f.index });
      if (f.split) removals.push({ list: f.list, index: f.index + 1 });
    }
    removals.sort((a, b) => (a.list === b.list ? b.index - a.index : a.list < b.list ? -1 : 1));
    for (const r of removals) this.edits.push({ op: 'remove', seq: [...containerPath(this.m), r.list], index: r.index });
    return occ.length;
  }

  all(): Edit[] {
    return [...this.sets, ...this.edits];
  }
}
