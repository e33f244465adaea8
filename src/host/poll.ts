// Waiting for the kernel (a SCSI device after a scan, a multipath map after its paths): poll a check until
// it answers or the time runs out. The budget is the smaller of the step's own limit and what is left
// of the request's deadline, so no wait outlives the call it serves.

import { hostError } from './errors.js';

export interface PollOptions {
  /** Longest wait (ms). */
  readonly timeoutMs: number;
  /** The request's deadline (epoch ms); Infinity = none. */
  readonly deadline: number;
  /** Longest pause between checks (ms). */
  readonly intervalMs: number;
  /**
   * First pause (ms; default intervalMs): the pauses start there and double up to intervalMs, so that a
   * wait that ends soon is not held a whole interval, and a long one costs no more checks than needed.
   */
  readonly firstIntervalMs?: number;
  /** What is waited for, for the timeout message. */
  readonly what: string;
}

/** Calls check until it returns a value other than undefined; a timeout error ends the wait. */
export async function pollUntil<T>(check: () => Promise<T | undefined>, opts: PollOptions, lastState?: () => string): Promise<T> {
  const started = Date.now();
  const until = Math.min(started + opts.timeoutMs, opts.deadline);
  let pause = Math.min(opts.firstIntervalMs ?? opts.intervalMs, opts.intervalMs);
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() + pause > until) {
      const state = lastState?.();
      throw hostError('timeout', `${opts.what}: not there after ${Date.now() - started} ms${state ? ` (${state})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, opts.intervalMs);
  }
}

export interface RetryOptions {
  /** Most attempts in all. */
  readonly attempts: number;
  /** Pause between two attempts (ms). */
  readonly intervalMs: number;
  /** The request's deadline (epoch ms): no attempt starts after it. */
  readonly deadline: number;
}

/**
 * Runs attempt (n = 1, 2, …) again while again(result) says the failure has a short-lived cause (a
 * racing udev opener, a session vanishing under iscsiadm), at most opts.attempts times, intervalMs apart,
 * within the deadline; returns the last result, for the caller to judge.
 */
export async function retryWhile<T>(
  attempt: (n: number) => Promise<T>,
  again: (result: T) => boolean | Promise<boolean>,
  opts: RetryOptions,
): Promise<{ result: T; attempts: number }> {
  for (let n = 1; ; n++) {
    const result = await attempt(n);
    if (n >= opts.attempts || Date.now() + opts.intervalMs >= opts.deadline || !(await again(result))) return { result, attempts: n };
    await new Promise((r) => setTimeout(r, opts.intervalMs));
  }
}
