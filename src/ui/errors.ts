/**
 * The one error type commands throw. src/cli.ts is the only place that prints it and exits.
 * `message` says what is wrong, `hint` what to do; neither may ever contain key material.
 */
export const ExitCode = {
  Ok: 0,
  /** A bug or an unexpected failure. */
  Internal: 1,
  /** Bad flags or input, an invalid file, a missing confirmation: nothing was changed. */
  Usage: 2,
  /** The apiserver, etcd or a KMS plugin refused or could not be reached (files that cannot be
   * read or written are Usage: the operator fixes a path or a permission). */
  Cluster: 3,
  /** The work ran but the result is not what it must be (objects not encrypted, checks failed). */
  Verification: 4,
  /** The apiserver did not come back in time; the previous state was restored. */
  RolledBack: 5,
  /** A safety rule refused the step (already done elsewhere, nodes disagree, key still in use). */
  Refused: 6,
  /** Interrupted (SIGINT); the journal lets a re-run continue. */
  Interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export const exitCodeNames: Record<number, string> = {
  0: 'ok',
  1: 'internal',
  2: 'usage',
  3: 'cluster',
  4: 'verification',
  5: 'rolled-back',
  6: 'refused',
  130: 'interrupted',
};

interface CliErrorOptions {
  hint?: string;
  exitCode?: ExitCode;
  cause?: unknown;
  /** Extra machine-readable detail for --json (never key material). */
  details?: Record<string, unknown>;
}

export class CliError extends Error {
  readonly hint?: string;
  readonly exitCode: ExitCode;
  readonly details?: Record<string, unknown>;

  constructor(message: string, opts: CliErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CliError';
    this.hint = opts.hint;
    this.exitCode = opts.exitCode ?? ExitCode.Usage;
    this.details = opts.details;
  }
}

export const usageError = (message: string, hint?: string, cause?: unknown) =>
  new CliError(message, { hint, exitCode: ExitCode.Usage, cause });

/** Node's fs errors as one clear line: what failed, on which path, and why. */
export function fsError(action: string, path: string, err: unknown): CliError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const reasons: Record<string, [string, string]> = {
    ENOENT: ['it does not exist', 'check the path (or pass the right one with its flag)'],
    EACCES: ['permission denied', 'run as root or as a user that may write there'],
    EPERM: ['operation not permitted', 'run as root or as a user that may write there'],
    EROFS: ['the filesystem is read-only', 'choose a writable location'],
    ENOTDIR: ['a parent is not a directory', 'check the path'],
    EISDIR: ['it is a directory', 'give a file path'],
    ENOSPC: ['no space left on the device', 'free some space and re-run'],
    EEXIST: ['it already exists', 'remove it or choose another path'],
    ELOOP: ['it is a symbolic link, which k8s-encrypt does not follow', 'replace the link with the file itself, or pass the real path'],
  };
  const [why, hint] = (code && reasons[code]) || [
    (err as Error | undefined)?.message ?? String(err),
    'check the path and permissions',
  ];
  return new CliError(`cannot ${action} ${path}: ${why}`, {
    hint,
    exitCode: ExitCode.Usage,
    cause: err,
  });
}
