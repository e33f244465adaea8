// The per-object in-flight guard of a CSI service: one call at a time per object key ("volume:<id>",
// "volume name:<name>", "snapshot:<id>", ...). The CSI spec lets a plugin answer ABORTED when "an
// operation is already pending for the specified volume", and the CO retries with backoff. Two policies:
//  - fail-fast (Controller): a second call on a key that is held is answered ABORTED at once;
//  - wait (Node): a second call waits for the holder, in arrival order, until shortly before its own
//    deadline, then is answered ABORTED. A CO whose own timeout ended a slow node call (a login, a mkfs)
//    sends it again while the first still runs; waiting lets the retry run as soon as the first ends,
//    and find its work done, instead of failing and backing off. A key is never held longer than its
//    holder's call: the caller releases it when the call settles, whether it answered, failed or threw.

import { status } from '@grpc/grpc-js';
import { CsiError } from './errors.js';

export type InFlightPolicy = 'fail-fast' | 'wait';

export interface AcquireOptions {
  /** Epoch milliseconds after which a waiting call gives up with ABORTED; Infinity = no limit. */
  readonly waitUntil: number;
  /** Aborts the wait (the caller cancelled the call); the acquire rejects with CANCELLED. */
  readonly signal?: AbortSignal;
}

export interface InFlightGuard {
  readonly policy: InFlightPolicy;
  /** Takes every key for one call; resolves with the function that releases them all, exactly once. */
  acquire(keys: readonly string[], opts: AcquireOptions): Promise<() => void>;
  /** true while some call holds key. */
  isHeld(key: string): boolean;
}

/** How a key appears in a message: "volume:vol-1" -> "volume vol-1". */
function shown(key: string): string {
  return key.replace(':', ' ');
}

/**
 * The moment a waiting call stops waiting, given its gRPC deadline: a little before the deadline, so that
 * ABORTED, which says what is in the way, reaches the caller before its own timer turns the call into
 * DEADLINE_EXCEEDED. The margin is a tenth of the time left, at most one second.
 */
export function waitUntilFor(deadline: number, now: number = Date.now()): number {
  if (!Number.isFinite(deadline)) return Infinity;
  const left = Math.max(0, deadline - now);
  return now + left - Math.min(1000, left / 10);
}

function failFastGuard(): InFlightGuard {
  const held = new Set<string>();
  return {
    policy: 'fail-fast',
    isHeld: (key) => held.has(key),
    acquire(keys): Promise<() => void> {
      const busy = keys.find((k) => held.has(k));
      if (busy !== undefined) {
        return Promise.reject(
          new CsiError(status.ABORTED, `an operation on ${shown(busy)} is already in progress; retry after it completes`),
        );
      }
      const mine = [...new Set(keys)];
      for (const k of mine) held.add(k);
      let released = false;
      return Promise.resolve(() => {
        if (released) return;
        released = true;
        for (const k of mine) held.delete(k);
      });
    },
  };
}

function waitingGuard(): InFlightGuard {
  // key -> calls waiting for it, first come first served. A key is held while it is in the map.
  const queues = new Map<string, Array<() => void>>();

  const release = (key: string): void => {
    const next = queues.get(key)?.shift();
    if (next)
      next(); // ownership passes to the next waiter
    else queues.delete(key);
  };

  const take = (key: string, opts: AcquireOptions, started: number): Promise<void> => {
    const queue = queues.get(key);
    if (!queue) {
      queues.set(key, []);
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const stopWaiting = (): void => {
        const i = queue.indexOf(grant);
        if (i >= 0) queue.splice(i, 1);
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const grant = (): void => {
        stopWaiting();
        resolve();
      };
      const onAbort = (): void => {
        stopWaiting();
        reject(new CsiError(status.CANCELLED, `cancelled while waiting for the operation on ${shown(key)} in progress`));
      };
      queue.push(grant);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      if (Number.isFinite(opts.waitUntil)) {
        timer = setTimeout(
          () => {
            stopWaiting();
            reject(
              new CsiError(
                status.ABORTED,
                `an operation on ${shown(key)} is still in progress after waiting ${Date.now() - started} ms (until shortly before this call's deadline); retry after it completes`,
              ),
            );
          },
          Math.max(0, opts.waitUntil - Date.now()),
        );
      }
    });
  };

  return {
    policy: 'wait',
    isHeld: (key) => queues.has(key),
    async acquire(keys, opts): Promise<() => void> {
      if (opts.signal?.aborted) throw new CsiError(status.CANCELLED, 'call cancelled');
      // Keys are taken one at a time in one global order, so two calls that share keys never deadlock.
      const order = [...new Set(keys)].sort();
      const mine: string[] = [];
      const releaseAll = (): void => {
        for (const k of mine.splice(0)) release(k);
      };
      const started = Date.now();
      try {
        for (const k of order) {
          await take(k, opts, started);
          mine.push(k);
        }
      } catch (err) {
        releaseAll();
        throw err;
      }
      return releaseAll;
    },
  };
}

export function inFlightGuard(policy: InFlightPolicy): InFlightGuard {
  return policy === 'wait' ? waitingGuard() : failFastGuard();
}
