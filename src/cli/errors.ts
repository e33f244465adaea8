// Exit codes of the `lunar` command and the one table that maps every error a command throws onto a
// message and an exit code.

import { AdminError, AdminUnreachable } from '../admin/client.js';
import type { AdminErrorCode } from '../admin/protocol.js';
import type { Io } from './command.js';
import { shownDir } from './format.js';

/** Exit codes (also listed in `lunar --help`). */
export const ExitCode = {
  OK: 0,
  FAILED: 1,
  USAGE: 2,
  NO_SERVER: 3,
  NOT_FOUND: 4,
  ALREADY_EXISTS: 5,
  BUSY: 6,
} as const;

export const EXIT_CODES_HELP =
  'Exit codes: 0 ok, 1 failed, 2 bad usage or value, 3 no server, 4 not found, 5 already exists, 6 busy (retry).\n';

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
  if (err instanceof AdminUnreachable) {
    io.err(
      `lunar: no Lunar server at ${shownDir(err.path)} (${err.errno.code ?? err.errno.message}) — start one with \`lunar serve --data-dir ${shownDir(dataDir)}\`, or point to a running one with --data-dir or LUNAR_DATA_DIR\n`,
    );
    return ExitCode.NO_SERVER;
  }
  if (err instanceof AdminError) {
    io.err(`lunar: ${err.message}\n`);
    // A server of another version may answer with a code this table does not know.
    return Object.hasOwn(ADMIN_EXIT_CODE, err.code) ? ADMIN_EXIT_CODE[err.code] : ExitCode.FAILED;
  }
  io.err(`lunar: ${err instanceof Error ? err.message : String(err)}\n`);
  return ExitCode.FAILED;
}
