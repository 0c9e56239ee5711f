import type { ChalkInstance } from 'chalk';
import * as o from './option-schema';
import { DEFAULT_MAX_CONCURRENCY, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, type RewriteSummary } from '../cluster/rewrite';
import { parseResources } from '../config/resources';
import type { EncryptionConfiguration } from '../config/schema';
import type { Context } from '../context';
import { fileExists } from '../state/atomic';
import { CliError, ExitCode } from '../ui/errors';
import { parseOptions } from './options';
import { intOption, type CommandModule } from './types';

const pageSizeOption = (v: string): number | 'auto' => (v === 'auto' ? 'auto' : intOption('--page-size')(v));

const ReEncryptAllOptions = {
  resources: o.str(),
  concurrency: o.int(1).optional(),
  maxConcurrency: o.int(1),
  pageSize: o.intOr('auto', 1),
  resume: o.bool(),
  dryRun: o.bool(),
  verify: o.bool(),
  server: o.str().optional(),
  context: o.str().optional(),
  config: o.str().optional(),
  manifest: o.str().optional(),
};
type Opts = o.OptionsOf<typeof ReEncryptAllOptions>;

/** What `--verify` found in etcd for one resource. */
interface VerifyResult {
  resource: string;
  /** Objects still under another key or provider than the write key. */
  stale: number;
  plaintext: number;
  /** A few namespace/name examples of what remains. */
  examples: string[];
}

interface ReEncryptResult extends RewriteSummary {
  verify?: { ok: boolean; writePrefixes: Record<string, string>; resources: VerifyResult[] };
}

function renderSummary(r: ReEncryptResult, c: ChalkInstance): string {
  const lines: string[] = [];
  const verb = r.dryRun ? 'would rewrite' : 'rewrote';
  lines.push(
    `${r.failed ? c.yellow('!') : c.green('✓')} ${verb} ${r.resources.join(', ')}: ${r.dryRun ? `${r.listed} objects listed` : `${r.rewritten} rewritten, ${r.unchanged} already current`}` +
      `${r.deleted ? `, ${r.deleted} deleted meanwhile` : ''}${r.conflictsRetried ? `, ${r.conflictsRetried} conflicts retried` : ''}` +
      `${r.failed ? c.red(`, ${r.failed} failed`) : ''} in ${r.seconds.toFixed(1)} s (${r.objectsPerSecond}/s${r.dryRun ? '' : `, ${inFlightText(r)}`})`,
  );
  for (const [name, s] of Object.entries(r.perResource)) {
    if (r.resources.length > 1 || s.skipped || s.alreadyComplete) {
      lines.push(
        `  ${name}: ${s.alreadyComplete ? 'already done in the resumed run' : `${s.listed} listed, ${s.rewritten} rewritten, ${s.unchanged} unchanged, ${s.deleted} deleted, ${s.failed} failed${s.skipped ? `, ${s.skipped} skipped (done before the resume)` : ''}`}`,
      );
    }
  }
  if (r.failures.length) {
    lines.push(c.red('failed objects:'));
    for (const f of r.failures) lines.push(`  ${f.resource} ${f.namespace ? `${f.namespace}/` : ''}${f.name}: ${f.error}`);
    if (r.failed > r.failures.length) lines.push(`  ... and ${r.failed - r.failures.length} more`);
  }
  if (r.verify) {
    for (const v of r.verify.resources) {
      const bad = v.stale + v.plaintext;
      lines.push(
        `${bad ? c.red('✗') : c.green('✓')} etcd ${v.resource}: ${bad ? `${v.stale} under an old key, ${v.plaintext} plaintext${v.examples.length ? ` (e.g. ${v.examples.join(', ')})` : ''}` : `everything under ${r.verify.writePrefixes[v.resource] ?? 'the write key'}`}`,
      );
    }
  }
  return lines.join('\n');
}

/** `96 in flight (adaptive, up to 256)` or `32 in flight (fixed)`. */
function inFlightText(r: RewriteSummary): string {
  const c = r.concurrency;
  return c.mode === 'fixed' ? `${c.settled} in flight (fixed)` : `settled at ${c.settled} in flight (adaptive, up to ${c.max})`;
}

async function run(ctx: Context, opts: Opts): Promise<void> {
  const [{ loadKubeconfig, createApiClient }, { resolveResources }, rewrite, cp, progress, parse] =
    await Promise.all([
      import('../cluster/api'),
      import('../cluster/discovery'),
      import('../cluster/rewrite'),
      import('../state/checkpoint'),
      import('../ui/progress'),
      import('../config/parse'),
    ]);
  const spec = opts.resources.trim() === 'from-config' ? 'from-config' : parseResources(opts.resources);

  // The config gives the run its identity (a resume after another key change starts over) and,
  // with --resources from-config, the resources to rewrite.
  let loaded: Awaited<ReturnType<typeof parse.loadEncryptionConfig>> | undefined;
  try {
    loaded = await parse.loadEncryptionConfig(ctx.paths.config);
  } catch (err) {
    if (spec === 'from-config' || opts.verify) throw err;
    ctx.out.debug(`no readable EncryptionConfiguration at ${ctx.paths.config}: ${(err as Error).message}`);
  }

  const target = await loadKubeconfig(ctx.paths.kubeconfig, { server: opts.server, context: opts.context });
  if (opts.concurrency !== undefined && opts.concurrency > opts.maxConcurrency) {
    throw new CliError(`--concurrency ${opts.concurrency} is above --max-concurrency ${opts.maxConcurrency}`, {
      exitCode: ExitCode.Usage,
      hint: 'lower --concurrency, raise --max-concurrency, or leave --concurrency out to let the rate decide',
    });
  }
  const api = createApiClient(target, { maxSockets: (opts.concurrency ?? opts.maxConcurrency) + 2 });
  const reporter = progress.createProgressReporter(ctx.out);
  try {
    const resources = await resolveResources(api, spec, loaded?.config, (s) =>
      ctx.out.warn(`skipping ${s.resource}: ${s.why}`),
    );
    if (resources.length === 0) {
      throw new CliError('no resources to rewrite', {
        exitCode: ExitCode.Usage,
        hint: 'the EncryptionConfiguration names no resource the apiserver serves; pass --resources',
      });
    }
    const store = new cp.FileCheckpointStore({
      stateDir: ctx.paths.stateDir,
      runId: cp.rewriteRunId(
        resources.map((r) => r.resource),
        loaded ? `sha256:${loaded.sha256}` : 'no-config',
      ),
      warn: (m) => ctx.out.warn(m),
    });
    if (!opts.resume && !opts.dryRun && (await fileExists(store.path))) {
      ctx.out.info(`a checkpoint of an interrupted run exists (${store.path}); starting over (--resume continues it)`);
    }
    const verifier = opts.verify && !opts.dryRun ? await openEtcdVerifier(ctx) : undefined;
    ctx.out.step(
      `${opts.dryRun ? 'counting' : 'rewriting'} ${resources.map((r) => r.resource).join(', ')} through ${api.server} (${opts.concurrency !== undefined ? `${opts.concurrency} in flight` : `in flight: adaptive, up to ${opts.maxConcurrency}`}, ${opts.pageSize !== 'auto' ? `pages of ${opts.pageSize}` : `pages of ${DEFAULT_PAGE_SIZE}-${MAX_PAGE_SIZE}, sized to the budget`})`,
    );
    let summary: ReEncryptResult;
    try {
      try {
        summary = await rewrite.rewriteAll(
          {
            api,
            checkpoint: store,
            now: ctx.now,
            onProgress: (p) => reporter.update(p),
            onNotice: (m) => ctx.out.info(m),
            onConcurrency: (n, why) => ctx.out.debug(`in flight: ${n} (${why})`),
            signal: ctx.signal,
          },
          {
            resources,
            concurrency: opts.concurrency,
            maxConcurrency: opts.maxConcurrency,
            pageSize: opts.pageSize,
            resume: opts.resume,
            dryRun: opts.dryRun,
          },
        );
      } finally {
        reporter.stop();
      }
      if (verifier) {
        ctx.out.step('verifying in etcd');
        summary.verify = await verifier.verify(resources.map((r) => r.resource), loaded!.config);
      }
    } finally {
      verifier?.close();
    }
    const problems: string[] = [];
    if (summary.failed) problems.push(`${summary.failed} objects could not be rewritten`);
    if (summary.verify && !summary.verify.ok) problems.push('etcd still holds objects not under the write key');
    if (problems.length) {
      if (!ctx.out.json) ctx.out.result(summary, (c) => renderSummary(summary, c));
      throw new CliError(problems.join('; '), {
        exitCode: ExitCode.Verification,
        hint: summary.failed
          ? 'fix the listed objects (or their admission webhooks) and re-run; objects already rewritten stay rewritten'
          : 're-run re-encrypt-all (objects written by an apiserver still on the old config stay stale)',
        details: { summary },
      });
    }
    ctx.out.result(summary, (c) => renderSummary(summary, c));
  } finally {
    api.close();
  }
}

/**
 * Reads etcd the way kube-apiserver does (connection from the manifest's flags) and counts, per
 * resource, the objects not stored the way new writes are: the shared scanner `status` uses.
 * Connects before the rewrite starts, so an unreachable etcd fails the run before any PUT.
 */
async function openEtcdVerifier(ctx: Context) {
  const [manifest, etcd, scan, codec, { readText }, { currentKmsKeyIds }, { hostPathOf }] = await Promise.all([
    import('../manifest/manifest'),
    import('../etcd/client'),
    import('../etcd/scan'),
    import('../etcd/codec'),
    import('../state/atomic'),
    import('../kms/key-ids'),
    import('../status/gather'),
  ]);
  const text = await readText(ctx.paths.manifest, 'read the kube-apiserver manifest');
  const conn = etcd.etcdConnectionFromFlags(manifest.readApiserverFlags(text, ctx.paths.manifest).flags);
  const mounts = manifest.hostPathMountsOf(manifest.parseManifest(text, ctx.paths.manifest));
  const reader = await etcd.openEtcd(conn);
  return {
    close: () => reader.close(),
    async verify(resources: string[], config: EncryptionConfiguration): Promise<NonNullable<ReEncryptResult['verify']>> {
      // A KMS v2 value under a key id other than its plugin's current one is stale too.
      const kms = await currentKmsKeyIds(config, (p) => hostPathOf(mounts, p)?.hostPath ?? p);
      for (const u of kms.unknown) ctx.out.warn(`KMS provider ${u.name}: no current key id (${u.reason}); its values are not checked for an old key id`);
      let report;
      try {
        report = await scan.scanEncryptionState(reader, {
          prefix: conn.prefix,
          resources: resources.map((r) => ({ resource: r, etcdPrefix: scan.etcdPrefixFor(r, conn.prefix) })),
          transformersFor: (r) => codec.transformersForResource(config, r),
          kmsKeyIds: kms.keyIds,
          signal: ctx.signal,
        });
      } catch (err) {
        throw etcd.etcdError(conn, 'scan', err);
      }
      const writePrefixes: Record<string, string> = {};
      const out: VerifyResult[] = report.resources.map((r) => {
        writePrefixes[r.resource] = r.writeLabel;
        // Plaintext is only wrong when the resource is meant to be encrypted.
        const plaintext = r.writeLabel === 'plaintext' ? 0 : r.plaintext.count;
        return {
          resource: r.resource,
          stale: r.stale.count - plaintext,
          plaintext,
          examples: r.stale.items.slice(0, 5).map((o) => (o.namespace ? `${o.namespace}/${o.name}` : o.name)),
        };
      });
      return { ok: report.staleTotal === 0, writePrefixes, resources: out };
    },
  };
}

export const reEncryptAllCommand: CommandModule = {
  register(program, wrap) {
    program
      .command('re-encrypt-all')
      .description('rewrite every object so it is stored with the current write key (paged, concurrent, resumable)')
      .option('--resources <list>', 'secrets, a comma-separated list (configmaps, plural.group), or from-config', 'secrets')
      .option('--concurrency <n>', 'a fixed number of requests in flight (default: adaptive, from the rate the apiserver sustains)', intOption('--concurrency'))
      .option('--max-concurrency <n>', 'the most requests in flight the adaptive limit may reach', intOption('--max-concurrency'), DEFAULT_MAX_CONCURRENCY)
      .option('--page-size <n|auto>', `objects per list page; auto sizes pages (${DEFAULT_PAGE_SIZE}-${MAX_PAGE_SIZE}) to keep the requests in flight fed, at a cost in memory`, pageSizeOption, DEFAULT_PAGE_SIZE)
      .option('--resume', 'continue the interrupted run from its checkpoint', false)
      .option('--dry-run', 'list and count the objects, write nothing', false)
      .option('--verify', 'afterwards, read etcd and fail if objects remain under another key or in plaintext', false)
      .option('--server <url>', "talk to this apiserver (e.g. this node's) with the kubeconfig's credentials")
      .option('--context <name>', 'kubeconfig context to use')
      .option('--config <path>', 'EncryptionConfiguration (default ROOT/etc/kubernetes/encryption/config.yaml)')
      .option('--manifest <path>', 'kube-apiserver manifest, for the etcd connection of --verify')
      .action(wrap<Record<string, unknown>>((ctx, raw) => run(ctx, parseOptions(ReEncryptAllOptions, raw, 're-encrypt-all'))));
  },
};
