/** Reading a stored value the way the apiserver's prefix transformers do. */
import { identityTransformer } from './local';
import { ENCRYPTED_PREFIX_BYTES, startsWith, type ValueTransformer } from './value';

export interface Decoded {
  plaintext: Buffer;
  /** Which transformer read it. */
  index: number;
  /** Read through anything other than transformers[0]: the apiserver would rewrite it on update. */
  stale: boolean;
}

const LOCAL_GROUP = /^k8s:enc:(aescbc|aesgcm|secretbox):v1:/;
const NO_KEY_MESSAGE: Record<string, string> = {
  aescbc: 'no matching key was found for the provided AES transformer',
  aesgcm: 'no matching key was found for the provided AES transformer',
  secretbox: 'no matching key was found for the provided Secretbox transformer',
};

/**
 * Reads a stored value as the apiserver's prefix transformers do: providers in order, the first
 * whose prefix matches and that decrypts wins; a failing match does not stop later ones (two
 * providers of one kind share a prefix during rotation); identity reads only values without the
 * `k8s:enc:` prefix. With no transformers at all the resource is not encrypted (identity). Throws
 * with upstream's wording: "no matching prefix found", or "no matching key was found for the
 * provided AES transformer" when the provider matches but none of its keys does.
 */
export async function decodeStored(
  raw: Uint8Array,
  etcdKey: string,
  transformers: ValueTransformer[],
): Promise<Decoded> {
  const list = transformers.length ? transformers : [identityTransformer()];
  const errs: string[] = [];
  // Provider groups (one provider element = consecutive keys with the same `k8s:enc:KIND:v1:`)
  // whose prefix matched but none of whose keys did.
  let group: { prefix: string; kind: string; keyMatched: boolean } | undefined;
  const closeGroup = () => {
    if (group && !group.keyMatched) errs.push(NO_KEY_MESSAGE[group.kind]!);
    group = undefined;
  };
  for (const [index, t] of list.entries()) {
    const local = LOCAL_GROUP.exec(t.prefix);
    if (!local || local[0] !== group?.prefix) closeGroup();
    if (local && !group && startsWith(raw, local[0])) {
      group = { prefix: local[0], kind: local[1]!, keyMatched: false };
    }
    if (t.prefix === '') {
      if (startsWith(raw, ENCRYPTED_PREFIX_BYTES)) continue;
    } else if (!startsWith(raw, t.prefix)) {
      continue;
    }
    if (group) group.keyMatched = true;
    try {
      const plaintext = await t.decrypt(raw, etcdKey);
      return { plaintext, index, stale: index !== 0 };
    } catch (err) {
      errs.push((err as Error).message);
    }
  }
  closeGroup();
  const unique = [...new Set(errs)];
  if (unique.length === 1) throw new Error(unique[0]);
  if (unique.length > 1) throw new Error(`[${unique.join(', ')}]`);
  throw new Error('no matching prefix found');
}
