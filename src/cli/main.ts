// The `lunar` command line: `lunar serve` runs the server; every other command talks to a running server
// over <data-dir>/admin.sock. COMMANDS is the dispatch table, one entry per command, each from its group's
// module; this file does what every command shares: --help and --version, the common options, the data
// directory, and errors turned into messages and exit codes (errors.ts).

import { resolve } from 'node:path';
import { adminCall } from '../admin/client.js';
import { ADMIN_SOCKET, adminSocketPath } from '../admin/protocol.js';
import { LUNAR_VERSION } from '../util/version.js';
import { CLIENT_OPTIONS, parseOptions, str, waitArg } from './args.js';
import type { Command, Io } from './command.js';
import { EXIT_CODES_HELP, ExitCode, reportError, UsageError } from './errors.js';
import { node } from './node.js';
import { awaitReady, DEFAULT_WAIT_SECONDS } from './readiness.js';
import { orphans } from './orphans.js';
import { serve } from './serve.js';
import { snapshot } from './snapshot.js';
import { sessions, status } from './status.js';
import { volume } from './volume.js';

/** Command name -> command; the order is the order of `lunar --help`. */
const COMMANDS: Readonly<Record<string, Command>> = { serve, node, volume, snapshot, orphans, sessions, status };

const commands = Object.values(COMMANDS);

export const USAGE =
  `Lunar ${LUNAR_VERSION} — iSCSI target and Kubernetes CSI driver

Usage:
${commands.map((c) => c.usage).join('')}  lunar --help | --version

Every command takes --data-dir DIR (default: $LUNAR_DATA_DIR, else ./.lunar); all but serve and node talk
to the server through DIR/${ADMIN_SOCKET}, and wait for it to be ready (its socket may not exist yet) for
at most --wait SECONDS (default ${DEFAULT_WAIT_SECONDS}; 0: ask once), else exit 7. VOLUME and SNAPSHOT are a name or an id.

` +
  commands.flatMap((c) => (c.help === undefined ? [] : [c.help + '\n'])).join('') +
  EXIT_CODES_HELP;

const processIo: Io = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  env: process.env,
};

/** --data-dir, else $LUNAR_DATA_DIR, else ./.lunar (an empty value counts as not given). */
function dataDirOf(given: string | undefined, env: Io['env']): string {
  return resolve(given || env.LUNAR_DATA_DIR || '.lunar');
}

/** Runs the command line argv; returns the exit code. */
export async function main(argv: readonly string[], io: Io = processIo, poolSizeAtStart?: string): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.out(USAGE);
    return name === undefined ? ExitCode.USAGE : ExitCode.OK;
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    io.out(`lunar ${LUNAR_VERSION}\n`);
    return ExitCode.OK;
  }
  let dataDir = dataDirOf(undefined, io.env);
  try {
    const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (command === undefined) {
      throw new UsageError(`unknown command "${name}" (${Object.keys(COMMANDS).join(', ')}; see \`lunar --help\`)`);
    }
    const { values, positionals } = parseOptions(rest, command.runsServer ? command.options : { ...command.options, ...CLIENT_OPTIONS });
    if (values.help === true) {
      io.out(USAGE);
      return ExitCode.OK;
    }
    dataDir = dataDirOf(str(values['data-dir']), io.env);
    const socket = adminSocketPath(dataDir);
    const wait = command.runsServer ? 0 : waitArg(str(values.wait));
    // The first request waits for readiness (readiness.ts); later ones go straight to the server.
    let ready: Promise<void> | null = null;
    return await command.run({
      io,
      values,
      positionals,
      dataDir,
      json: values.json === true,
      call: async (method, params = {}) => {
        ready ??= awaitReady(socket, wait);
        await ready;
        return adminCall(socket, method, params);
      },
      poolSizeAtStart,
    });
  } catch (err) {
    return reportError(err, io, dataDir);
  }
}
