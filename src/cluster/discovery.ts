import { resourcesOf } from '../config/model';
import type { EncryptionConfiguration } from '../config/schema';
import { parseGroupResource } from '../config/validate';
import { CliError, ExitCode } from '../ui/errors';
import type { ApiClient } from './api';
import { ApiError, toCliError } from './errors';

/** A resource the rewrite engine can list cluster-wide and update object by object. */
export interface ResolvedResource {
  /** `secrets`, `configmaps`, `widgets.example.com` (the EncryptionConfiguration spelling). */
  resource: string;
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  /** Cluster-wide list: `/api/v1/secrets`, `/apis/example.com/v1/widgets`. */
  listPath: string;
  itemPath(namespace: string | undefined, name: string): string;
}

interface SkippedResource {
  resource: string;
  why: string;
}

interface ApiResource {
  name: string;
  namespaced: boolean;
  kind: string;
  verbs?: string[];
}
interface ApiResourceList {
  groupVersion?: string;
  resources?: ApiResource[];
}
interface ApiGroupList {
  groups?: { name: string; preferredVersion?: { version: string }; versions?: { version: string }[] }[];
}

export function resolvedResource(group: string, version: string, r: Pick<ApiResource, 'name' | 'namespaced' | 'kind'>): ResolvedResource {
  const prefix = group === '' ? `/api/${version}` : `/apis/${group}/${version}`;
  const enc = encodeURIComponent;
  return {
    resource: group === '' ? r.name : `${r.name}.${group}`,
    group,
    version,
    plural: r.name,
    kind: r.kind,
    namespaced: r.namespaced,
    listPath: `${prefix}/${r.name}`,
    itemPath: (ns, name) =>
      r.namespaced ? `${prefix}/namespaces/${enc(ns ?? '')}/${r.name}/${enc(name)}` : `${prefix}/${r.name}/${enc(name)}`,
  };
}

/** What the engine needs when discovery is not served (a minimal apiserver): the core basics. */
const CORE_FALLBACK: ApiResource[] = [
  { name: 'secrets', namespaced: true, kind: 'Secret', verbs: ['get', 'list', 'update'] },
  { name: 'configmaps', namespaced: true, kind: 'ConfigMap', verbs: ['get', 'list', 'update'] },
];

/** Reads API discovery lazily: /api/v1 for the core group, /apis and /apis/G/V for the rest. */
class Discovery {
  private core?: Promise<ApiResource[]>;
  private groups?: Promise<{ name: string; version: string }[]>;
  private byGroup = new Map<string, Promise<{ version: string; resources: ApiResource[] } | undefined>>();

  constructor(private readonly api: ApiClient) {}

  coreResources(): Promise<ApiResource[]> {
    this.core ??= this.api.get<ApiResourceList>('/api/v1').then(
      (l) => topLevel(l.resources),
      (err) => {
        if (err instanceof ApiError && err.status === 404) return CORE_FALLBACK;
        throw toCliError(err, 'read API discovery (/api/v1)');
      },
    );
    return this.core;
  }

  allGroups(): Promise<{ name: string; version: string }[]> {
    this.groups ??= this.api.get<ApiGroupList>('/apis').then(
      (l) =>
        (l.groups ?? []).flatMap((g) => {
          const version = g.preferredVersion?.version ?? g.versions?.[0]?.version;
          return version ? [{ name: g.name, version }] : [];
        }),
      (err) => {
        if (err instanceof ApiError && err.status === 404) return [];
        throw toCliError(err, 'read API discovery (/apis)');
      },
    );
    return this.groups;
  }

  async groupResources(group: string): Promise<{ version: string; resources: ApiResource[] } | undefined> {
    let p = this.byGroup.get(group);
    if (!p) {
      p = (async () => {
        const g = (await this.allGroups()).find((x) => x.name === group);
        if (!g) return undefined;
        try {
          const l = await this.api.get<ApiResourceList>(`/apis/${group}/${g.version}`);
          return { version: g.version, resources: topLevel(l.resources) };
        } catch (err) {
          // An aggregated API that is down answers 503: the group is unusable, not the run.
          if (err instanceof ApiError && (err.status === 404 || err.status === 503)) return undefined;
          throw toCliError(err, `read API discovery (/apis/${group}/${g.version})`);
        }
      })();
      this.byGroup.set(group, p);
    }
    return p;
  }
}

function topLevel(rs: ApiResource[] | undefined): ApiResource[] {
  return (rs ?? []).filter((r) => !r.name.includes('/'));
}

function missingVerbs(r: ApiResource): string[] {
  // Discovery without verbs (old or minimal servers): assume the usual verbs are there.
  if (!r.verbs) return [];
  return ['list', 'get', 'update'].filter((v) => !r.verbs!.includes(v));
}

/**
 * Resolves what `re-encrypt-all --resources` names into list/update paths through discovery.
 * `spec` is a list such as `['secrets', 'widgets.example.com']`, or `'from-config'` for every
 * resource `cfg` covers (wildcards `*.*`, `*.group`, `*.` expanded). Named resources that do not
 * exist or cannot be listed and updated are usage errors; wildcard matches that cannot are skipped
 * and reported through `onSkip`.
 */
export async function resolveResources(
  api: ApiClient,
  spec: string[] | 'from-config',
  cfg?: EncryptionConfiguration,
  onSkip?: (s: SkippedResource) => void,
): Promise<ResolvedResource[]> {
  const d = new Discovery(api);
  let names: string[];
  if (spec === 'from-config') {
    if (!cfg) {
      throw new CliError('--resources from-config needs the EncryptionConfiguration', {
        exitCode: ExitCode.Usage,
        hint: 'pass --config (or --root) so the config file can be read, or list the resources',
      });
    }
    names = resourcesOf(cfg);
  } else {
    names = spec;
  }
  const out = new Map<string, ResolvedResource>();
  const add = (r: ResolvedResource) => {
    if (!out.has(r.resource)) out.set(r.resource, r);
  };
  const fromWildcard = (group: string, version: string, rs: ApiResource[]) => {
    for (const r of rs) {
      const name = group === '' ? r.name : `${r.name}.${group}`;
      const missing = missingVerbs(r);
      if (missing.length) onSkip?.({ resource: name, why: `the API does not allow ${missing.join(', ')}` });
      else add(resolvedResource(group, version, r));
    }
  };

  for (const raw of names) {
    const name = raw.trim();
    if (!name) continue;
    const gr = parseGroupResource(name);
    if (gr.resource === '*') {
      if (gr.group === '*') {
        fromWildcard('', 'v1', await d.coreResources());
        for (const g of await d.allGroups()) {
          const got = await d.groupResources(g.name);
          if (got) fromWildcard(g.name, got.version, got.resources);
          else onSkip?.({ resource: `*.${g.name}`, why: 'its API group is not served right now' });
        }
      } else if (gr.group === '') {
        fromWildcard('', 'v1', await d.coreResources());
      } else {
        const got = await d.groupResources(gr.group);
        if (got) fromWildcard(gr.group, got.version, got.resources);
        else onSkip?.({ resource: name, why: `the API group ${gr.group} is not served` });
      }
      continue;
    }
    const found =
      gr.group === ''
        ? { version: 'v1', resources: await d.coreResources() }
        : await d.groupResources(gr.group);
    const r = found?.resources.find((x) => x.name === gr.resource);
    if (!found || !r) {
      const msg = `the apiserver does not serve the resource "${name}"`;
      const hint = 'name it as plural[.group], e.g. secrets, configmaps, widgets.example.com';
      if (spec === 'from-config') {
        onSkip?.({ resource: name, why: 'the apiserver does not serve it' });
        continue;
      }
      throw new CliError(msg, { exitCode: ExitCode.Usage, hint });
    }
    const missing = missingVerbs(r);
    if (missing.length) {
      if (spec === 'from-config') {
        onSkip?.({ resource: name, why: `the API does not allow ${missing.join(', ')}` });
        continue;
      }
      throw new CliError(`the resource "${name}" cannot be rewritten: the API does not allow ${missing.join(', ')}`, {
        exitCode: ExitCode.Usage,
        hint: 'choose resources that can be listed and updated',
      });
    }
    add(resolvedResource(gr.group, found.version, r));
  }
  return [...out.values()];
}
