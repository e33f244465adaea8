// `lunar serve`: start the server, print where it listens, stop cleanly on SIGTERM/SIGINT.

import type { Io } from './commands.js';
import { rootLogger } from '../log.js';
import { startLunar, type LunarConfig } from '../server.js';
import { portalKey } from '../util/portal.js';
import { LUNAR_VERSION } from '../util/version.js';
import { effectivePoolSize, POOL_PRELOAD, WANTED_POOL_SIZE } from '../util/threadpool.js';

export async function serve(config: LunarConfig, io: Io, shownDataDir: string, poolSizeAtStart?: string): Promise<number> {
  const log = rootLogger.child({ component: 'server' });
  const pool = effectivePoolSize(poolSizeAtStart);
  if (pool < WANTED_POOL_SIZE) {
    log.warn(
      { uvThreadpoolSize: pool, wanted: WANTED_POOL_SIZE },
      `file I/O runs on ${pool} libuv threads; start Lunar through the \`lunar\` command, or set UV_THREADPOOL_SIZE=${WANTED_POOL_SIZE} (or node --import=${POOL_PRELOAD})`,
    );
  }
  process.on('unhandledRejection', (reason) => {
    // A bug somewhere let a promise reject unobserved; keep serving the other volumes, but say so loudly.
    log.error({ err: reason instanceof Error ? reason.stack : String(reason) }, 'unhandled promise rejection');
  });
  let server;
  try {
    server = await startLunar({ ...config, logger: rootLogger });
  } catch (err) {
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
    return 1;
  }
  const s = server;
  io.out(
    `Lunar ${LUNAR_VERSION} serving ${shownDataDir} on ${config.portals.map((p) => portalKey(p)).join(', ')} ` +
      `(${s.volumes.list().length} volume(s)); admin socket ${shownDataDir}/admin.sock` +
      (s.csiEndpoint ? `; CSI ${s.csiEndpoint}` : '') +
      '\n',
  );
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting without waiting');
        process.exit(130);
      }
      stopping = true;
      log.info({ signal }, 'stopping');
      const done = (code: number): void => {
        // Everything is closed; should some handle still keep the event loop alive, do not hang.
        setTimeout(() => {
          log.warn('event loop still busy 5 s after shutdown; exiting');
          process.exit(code);
        }, 5000).unref();
        resolve(code);
      };
      s.close().then(
        () => done(0),
        (err: unknown) => {
          log.error({ err: String(err) }, 'shutdown failed');
          done(1);
        },
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
