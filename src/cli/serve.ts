// `lunar serve`: read the configuration from options and environment, start the server (src/server.ts),
// print where it listens, and run until SIGTERM or SIGINT.

import { ADMIN_SOCKET } from '../admin/protocol.js';
import type { LunarConfig } from '../server.js';
import type { ChapCredentials } from '../target/types.js';
import { chapValueProblem } from '../util/ids.js';
import { parsePortals, portalKey, type Portal } from '../util/portal.js';
import { effectivePoolSize, POOL_PRELOAD, WANTED_POOL_SIZE } from '../util/threadpool.js';
import { LUNAR_VERSION } from '../util/version.js';
import { noExtra, splitCreds, str, strs } from './args.js';
import type { Command, CommandContext, Io } from './command.js';
import { ExitCode, UsageError } from './errors.js';
import { logUnhandledRejections, runUntilSignal } from './foreground.js';
import { shownDir } from './format.js';

function portalsOf(ctx: CommandContext): Portal[] {
  const given = strs(ctx.values.portal);
  const specs =
    given.length > 0
      ? given
      : (ctx.io.env.LUNAR_PORTALS ?? '127.0.0.1:3260')
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s.length > 0);
  try {
    return parsePortals(specs);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function discoveryChapOf(ctx: CommandContext): ChapCredentials | null {
  const dchap = str(ctx.values['discovery-chap']) ?? ctx.io.env.LUNAR_DISCOVERY_CHAP;
  if (!dchap) return null;
  const creds = splitCreds(dchap, '--discovery-chap');
  const problem = chapValueProblem('discovery CHAP user', creds.user, 1) ?? chapValueProblem('discovery CHAP secret', creds.secret, 12);
  if (problem) throw new UsageError(problem);
  return creds;
}

/** Why the server could not start, with what to change. */
function explainStartError(err: unknown, io: Io, shownDataDir: string): void {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
  if (e.code === 'EADDRINUSE') {
    io.err(
      `lunar: cannot listen on ${e.address ?? ''}:${e.port ?? ''}: address already in use — another iSCSI target (tgtd, LIO, another Lunar) holds it; pick another with --portal HOST:PORT\n`,
    );
  } else if (e.code === 'EACCES' && e.port !== undefined) {
    io.err(
      `lunar: cannot listen on ${e.address ?? ''}:${e.port}: permission denied — ports below 1024 need root or CAP_NET_BIND_SERVICE\n`,
    );
  } else if (e.code === 'EACCES' || e.code === 'EROFS') {
    io.err(
      `lunar: ${e.message} — check that the data directory ${shownDataDir} is writable by this user, or choose another with --data-dir\n`,
    );
  } else if (e.code === 'EADDRNOTAVAIL') {
    io.err(`lunar: ${e.message} — the portal address is not configured on this machine; check --portal\n`);
  } else {
    io.err(`lunar: cannot start: ${e.message}\n`);
  }
}

async function run(ctx: CommandContext): Promise<number> {
  noExtra(ctx.positionals, 0, 'serve');
  const portals = portalsOf(ctx);
  const discoveryChap = discoveryChapOf(ctx);
  const csiEndpoint = str(ctx.values['csi-endpoint']) ?? ctx.io.env.LUNAR_CSI_ENDPOINT ?? ctx.io.env.CSI_ENDPOINT;
  const config: LunarConfig = { dataDir: ctx.dataDir, portals, discoveryChap, ...(csiEndpoint ? { csiEndpoint } : {}) };
  const shown = shownDir(ctx.dataDir);

  // Loaded here, so that the other commands do not load the server (gRPC, the target, the logger) to talk to it.
  const [{ rootLogger }, { startLunar }] = await Promise.all([import('../log.js'), import('../server.js')]);
  const log = rootLogger.child({ component: 'server' });
  const pool = effectivePoolSize(ctx.poolSizeAtStart);
  if (pool < WANTED_POOL_SIZE) {
    log.warn(
      { uvThreadpoolSize: pool, wanted: WANTED_POOL_SIZE },
      `file I/O runs on ${pool} libuv threads; start Lunar through the \`lunar\` command, or set UV_THREADPOOL_SIZE=${WANTED_POOL_SIZE} (or node --import=${POOL_PRELOAD})`,
    );
  }
  logUnhandledRejections(log);
  let server;
  try {
    server = await startLunar({ ...config, logger: rootLogger });
  } catch (err) {
    explainStartError(err, ctx.io, shown);
    return ExitCode.FAILED;
  }
  ctx.io.out(
    `Lunar ${LUNAR_VERSION} serving ${shown} on ${portals.map((p) => portalKey(p)).join(', ')} ` +
      `(${server.volumes.list().length} volume(s)); admin socket ${shown}/${ADMIN_SOCKET}` +
      (server.csiEndpoint ? `; CSI ${server.csiEndpoint}` : '') +
      '\n',
  );
  return runUntilSignal(server, log);
}

export const serve: Command = {
  usage: '  lunar serve [--data-dir DIR] [--portal HOST:PORT[=ADVERTISE]]... [--discovery-chap USER:SECRET]\n',
  help: `serve:
  --portal HOST:PORT[=ADVERTISE]  listen on HOST:PORT (repeatable; default $LUNAR_PORTALS, a comma list,
                                  else 127.0.0.1:3260). Portal group tags are 1, 2, ... in order.
                                  =ADVERTISE reports that address in SendTargets (NAT, 0.0.0.0 binds).
                                  IPv6: [::1]:3260.
  --discovery-chap USER:SECRET    require CHAP for SendTargets discovery (default $LUNAR_DISCOVERY_CHAP)
  --csi-endpoint ENDPOINT         CSI Identity+Controller endpoint: unix:///path, tcp://host:port or none
                                  (default $LUNAR_CSI_ENDPOINT, $CSI_ENDPOINT, else unix://DIR/csi.sock)
  Stops cleanly on SIGTERM or SIGINT. Logs are JSON lines on stderr (LUNAR_LOG_LEVEL=debug|info|warn).
`,
  options: {
    portal: { type: 'string', multiple: true },
    'discovery-chap': { type: 'string' },
    'csi-endpoint': { type: 'string' },
  },
  run,
};
