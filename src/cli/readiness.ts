// The CLI's bounded wait for a server that is not up yet. `lunar serve &` followed at once by another
// `lunar` command finds no admin socket yet, or a server still loading its state ("ping" says
// ready:false and every other request is refused). Before its first request a command pings the
// server until it is ready, for at most --wait SECONDS (default DEFAULT_WAIT_SECONDS; 0: ask once), then
// gives up with ServerNotReady (exit code 7, errors.ts).

import { AdminUnreachable, adminCall } from '../admin/client.js';

/** Default of --wait, seconds. */
export const DEFAULT_WAIT_SECONDS = 5;
/** Pause between two pings. */
const RETRY_MS = 100;
/** How long one ping may take when the wait has (almost) run out: a live server answers ping at once. */
const MIN_PING_MS = 2000;
/** Largest --wait, seconds (a day). */
export const MAX_WAIT_SECONDS = 86_400;

/** No server became ready within the wait: none answered (unreachable set), or it was still starting. */
export class ServerNotReady extends Error {
  override readonly name = 'ServerNotReady';
  constructor(
    readonly path: string,
    readonly waitedMs: number,
    /** The last attempt found nothing listening (ENOENT, ECONNREFUSED, ...); null: a server answered, not ready. */
    readonly unreachable: AdminUnreachable | null,
    /** pid of the server that answered "not ready". */
    readonly pid: number | null,
  ) {
    super(
      unreachable
        ? `no Lunar server at ${path} (${unreachable.errno.code ?? unreachable.errno.message})`
        : `the Lunar server at ${path} is still starting`,
    );
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves once the server at path says ready; rejects with ServerNotReady after ms (other errors as they come). */
export async function awaitReady(path: string, ms: number): Promise<void> {
  const started = Date.now();
  const deadline = started + ms;
  for (;;) {
    let unreachable: AdminUnreachable | null = null;
    let pid: number | null = null;
    try {
      const info = (await adminCall(path, 'ping', {}, Math.max(deadline - Date.now(), MIN_PING_MS))) as { ready?: unknown; pid?: unknown };
      if (info.ready === true) return;
      pid = typeof info.pid === 'number' ? info.pid : null;
    } catch (err) {
      if (!(err instanceof AdminUnreachable)) throw err;
      unreachable = err;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new ServerNotReady(path, Date.now() - started, unreachable, pid);
    await sleep(Math.min(RETRY_MS, left));
  }
}
