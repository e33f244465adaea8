// The contract between the `lunar` dispatcher (main.ts) and its command groups. A group is one module
// exporting Command objects and one entry per command in main.ts's table. The dispatcher parses the
// options every command takes (--data-dir, --json, --help) together with the command's own, answers
// --help, resolves the data directory and maps thrown errors to messages and exit codes (errors.ts); a
// command reads its own options, does its work and returns an exit code.

import type { ParseArgsConfig } from 'node:util';

/** Where the command writes and what environment it reads; injectable for tests. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
  env: Record<string, string | undefined>;
}

/** node:util parseArgs option declarations of one command. */
export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

/** Parsed option values, by option name. */
export type OptionValues = Readonly<Record<string, string | boolean | (string | boolean)[] | undefined>>;

export interface CommandContext {
  readonly io: Io;
  readonly values: OptionValues;
  readonly positionals: readonly string[];
  /** Absolute data directory: --data-dir, else $LUNAR_DATA_DIR, else ./.lunar. */
  readonly dataDir: string;
  /** --json: print JSON instead of text. */
  readonly json: boolean;
  /** One request to the server of dataDir over its admin socket. */
  call(method: string, params?: Record<string, unknown>): Promise<unknown>;
  /** UV_THREADPOOL_SIZE as the process found it at start (see src/cli.ts). */
  readonly poolSizeAtStart: string | undefined;
}

export interface Command {
  /** The command's lines of the "Usage:" section of `lunar --help`, each ending in a newline. */
  readonly usage: string;
  /** A section of its own in `lunar --help` (options explained), each line ending in a newline. */
  readonly help?: string;
  /** Its options besides the common ones (and, unless runsServer, the client ones: --wait). */
  readonly options: OptionSpec;
  /** A command that runs a server itself (serve, node) rather than talking to one: no --wait. */
  readonly runsServer?: boolean;
  run(ctx: CommandContext): Promise<number>;
}
