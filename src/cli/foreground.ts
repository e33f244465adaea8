// Running a long-lived Lunar process in the foreground: unhandled rejections logged instead of ending
// the process, and a clean stop on SIGTERM or SIGINT.

import type { Logger } from '../log.js';

/** A bug somewhere let a promise reject unobserved: keep serving, but say so loudly. */
export function logUnhandledRejections(log: Logger): void {
  process.on('unhandledRejection', (reason) => {
    log.error({ err: reason instanceof Error ? reason.stack : String(reason) }, 'unhandled promise rejection');
  });
}

/**
 * Waits for SIGTERM or SIGINT, then closes the server; resolves with the exit code (0, or 1 when closing
 * failed). A second signal exits at once with 130.
 */
export function runUntilSignal(server: { close(): Promise<void> }, log: Logger): Promise<number> {
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
      server.close().then(
        () => {
          done(0);
        },
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
