import { posix } from 'node:path';
import { fileExists, readText } from '../state/atomic';
import { CliError, ExitCode } from '../ui/errors';
import { confirm } from '../ui/prompt';
import * as o from './option-schema';
import { parseOptions } from './options';
import type { CommandModule } from './types';

const PatchManifestOptions = {
  manifest: o.str().optional(),
  configPath: o.str().optional(),
  dryRun: o.bool(),
  replace: o.bool(),
  automaticReload: o.bool(),
};

/** --encryption-provider-config-automatic-reload exists since 1.26; older apiservers crash-loop on it. */
const RELOAD_SINCE: [number, number] = [1, 26];

export const patchManifestCommand: CommandModule = {
  register(program, wrap) {
    program
      .command('patch-manifest')
      .description('add --encryption-provider-config and a read-only mount of its directory to the kube-apiserver static pod')
      .option('--manifest <path>', 'kube-apiserver static pod manifest (default ROOT/etc/kubernetes/manifests/kube-apiserver.yaml)')
      .option('--config-path <path>', 'absolute path of the EncryptionConfiguration (default ROOT/etc/kubernetes/encryption/config.yaml)')
      .option('--dry-run', 'print the diff and change nothing', false)
      .option('--replace', 'point an existing --encryption-provider-config at this file instead of refusing', false)
      .option('--automatic-reload', 'also set --encryption-provider-config-automatic-reload=true (Kubernetes 1.26+)', false)
      .addHelpText(
        'after',
        '\nThe original is copied to the backup dir (0600) before the manifest is rewritten atomically.\n' +
          'Re-running is safe: an already patched manifest is left alone.\n' +
          'The kubelet restarts the apiserver when the manifest changes: it asks first (--yes answers for CI).',
      )
      .action(
        wrap<Record<string, unknown>>(async (ctx, raw) => {
          const opts = parseOptions(PatchManifestOptions, raw, 'patch-manifest');
          const [{ applyManifestPatch }, { readApiserverFlags }] = await Promise.all([
            import('../manifest/apply'),
            import('../manifest/manifest'),
          ]);
          const manifest = ctx.paths.manifest;
          const configPath = opts.configPath ?? ctx.paths.config;
          if (!posix.isAbsolute(configPath)) {
            throw new CliError(`--config-path must be an absolute path, got "${configPath}"`, {
              exitCode: ExitCode.Usage,
              hint: 'the kubelet resolves hostPath volumes on the node; give the full path',
            });
          }
          if (opts.automaticReload) {
            const version = readApiserverFlags(await readText(manifest, 'read manifest'), manifest).kubeVersionFromImage;
            const [maj, min] = (version ?? '').split('.').map(Number);
            if (version && (maj! < RELOAD_SINCE[0] || (maj === RELOAD_SINCE[0] && min! < RELOAD_SINCE[1]))) {
              throw new CliError(`--automatic-reload needs Kubernetes 1.26+, the manifest runs ${version}`, {
                exitCode: ExitCode.Usage,
                hint: 'an older apiserver does not know the flag and would not start; drop --automatic-reload',
              });
            }
            if (!version) ctx.out.warn('cannot tell the Kubernetes version from the image tag; the reload flag needs 1.26+');
          }
          const patchOptions = {
            manifest,
            backupDir: ctx.paths.backupDir,
            manifestsDir: ctx.paths.manifestsDir,
            configPath,
            replace: opts.replace,
            reloadFlag: opts.automaticReload,
          };
          if (!opts.dryRun) {
            // A changed manifest restarts the apiserver: ask first, but only when it would change.
            const planned = await applyManifestPatch({ now: ctx.now }, { ...patchOptions, dryRun: true });
            if (planned.changed) {
              await confirm(ctx, `patch ${manifest} (${planned.actions.join('; ')})? The kubelet restarts the apiserver.`);
            }
          }
          const r = await applyManifestPatch({ now: ctx.now }, { ...patchOptions, dryRun: opts.dryRun });
          if (r.changed && !(await fileExists(configPath))) {
            ctx.out.warn(`${configPath} does not exist yet: the apiserver will not start until it does (write-config creates it)`);
          }
          for (const n of r.notes) ctx.out.info(n);
          if (!opts.dryRun) for (const a of r.actions) ctx.out.step(a);
          ctx.out.result(
            {
              manifest: r.manifest,
              changed: r.changed,
              dryRun: r.dryRun,
              actions: r.actions,
              ...(r.backup ? { backup: r.backup } : {}),
              ...(r.diff ? { diff: r.diff } : {}),
              ...(r.volumeName ? { volumeName: r.volumeName } : {}),
            },
            (c) => {
              if (!r.changed) return `${manifest}: already configured, nothing to do`;
              if (r.dryRun) return `${r.diff}${c.dim(`dry run: ${manifest} not changed`)}`;
              return `${c.green('patched')} ${manifest} (backup: ${r.backup}); the kubelet restarts the apiserver`;
            },
          );
        }),
      );
  },
};
