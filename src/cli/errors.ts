// Exit codes of the `lunar` command and the one table that maps every error a command throws onto a
// message and an exit code.

import { AdminError, AdminUnreachable } from '../admin/client.js';
import type { AdminErrorCode } from '../admin/protocol.js';
import type { Io } from './command.js';
import { shownDir } from './format.js';
import { ServerNotReady } from './readiness.js';

/** Exit codes (also listed in `lunar --help`). */
export const ExitCode = {
  OK: 0,
  FAILED: 1,
  USAGE: 2,
  NOT_FOUND: 4,
  ALREADY_EXISTS: 5,
  BUSY: 6,
  /** No server answered, or it was still starting, within --wait (3 is no longer used: it was "no server"). */
  NOT_READY: 7,
} as const;

export const EXIT_CODES_HELP =
  'Exit codes: 0 ok, 1 failed, 2 bad usage or value, 4 not found, 5 already exists, 6 busy (retry),\n' +
  '  7 server not reachable or not ready within --wait (start it, or retry with a longer --wait).\n';

/** Bad command line: printed with a pointer to `lunar --help`, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

const ADMIN_EXIT_CODE: Readonly<Record<AdminErrorCode, number>> = {
  'invalid-argument': ExitCode.USAGE,
  'out-of-range': ExitCode.USAGE,
  'bad-request': ExitCode.USAGE,
  'unknown-method': ExitCode.USAGE,
  'not-found': ExitCode.NOT_FOUND,
  'already-exists': ExitCode.ALREADY_EXISTS,
  busy: ExitCode.BUSY,
  'failed-precondition': ExitCode.FAILED,
  'resource-exhausted': ExitCode.FAILED,
  internal: ExitCode.FAILED,
};

/** Writes what went wrong to io.err; returns the exit code. dataDir is the directory the command used. */
export function reportError(err: unknown, io: Io, dataDir: string): number {
  if (err instanceof UsageError) {
    io.err(`lunar: ${err.message}\nRun \`lunar --help\` for usage.\n`);
    return ExitCode.USAGE;
  }
  if (err instanceof ServerNotReady && !err.unreachable) {
    io.err(
      `lunar: the Lunar server at ${shownDir(err.path)}${err.pid !== null ? ` (pid ${err.pid})` : ''} is still starting after ${waited(err.waitedMs)}; retry, or wait longer with --wait SECONDS\n`,
    );
    return ExitCode.NOT_READY;
  }
  const unreachable = err instanceof ServerNotReady ? err.unreachable : err instanceof AdminUnreachable ? err : null;
  if (unreachable) {
    const after = err instanceof ServerNotReady && err.waitedMs > 0 ? ` after ${waited(err.waitedMs)}` : '';
    io.err(
      `lunar: no Lunar server at ${shownDir(unreachable.path)} (${unreachable.errno.code ?? unreachable.errno.message})${after} — start one with \`lunar serve --data-dir ${shownDir(dataDir)}\`, or point to a running one with --data-dir or LUNAR_DATA_DIR\n`,
    );
    return ExitCode.NOT_READY;
  }
  if (err instanceof AdminError) {
    io.err(`lunar: ${err.message}\n`);
    // A server of another version may answer with a code this table does not know.
    return Object.hasOwn(ADMIN_EXIT_CODE, err.code) ? ADMIN_EXIT_CODE[err.code] : ExitCode.FAILED;
  }
  io.err(`lunar: ${err instanceof Error ? err.message : String(err)}\n`);
  return ExitCode.FAILED;
}

/** "waiting 1.0 s" */
function waited(ms: number): string {
  return `waiting ${(ms / 1000).toFixed(1)} s`;
}
