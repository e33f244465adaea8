// A FIFO shared/exclusive gate for one LU's writes: ordinary writes share it; COMPARE AND WRITE, ORWRITE
// and quiesce() (snapshots) take it exclusively, so they are atomic with respect to every other write.

export class AbortedError extends Error {
  constructor() {
    super('task aborted');
    this.name = 'AbortedError';
  }
}

/** What command handlers and the gate use of a task's abort signal (an AbortSignal satisfies it). */
export interface AbortFlag {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

/**
 * A task's abort flag without an AbortController per command: creating one (EventTarget set-up) was
 * ~5 % of the main thread's samples at 4 KiB QD32, and almost no task is ever aborted. Listeners run
 * once, on abort.
 */
export class TaskAbort implements AbortFlag {
  #aborted = false;
  #listeners: (() => void)[] | null = null;

  get aborted(): boolean {
    return this.#aborted;
  }

  addEventListener(_type: 'abort', listener: () => void): void {
    if (this.#aborted) return;
    (this.#listeners ??= []).push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const l = this.#listeners;
    const i = l ? l.indexOf(listener) : -1;
    if (l && i >= 0) l.splice(i, 1);
  }

  abort(): void {
    if (this.#aborted) return;
    this.#aborted = true;
    const l = this.#listeners;
    this.#listeners = null;
    if (l) for (const f of l) f();
  }
}

interface Waiter {
  readonly exclusive: boolean;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
  readonly signal: AbortFlag | undefined;
  readonly onAbort: () => void;
}

export class IoGate {
  #shared = 0;
  #exclusive = false;
  readonly #waiters: Waiter[] = [];

  /** Acquire; resolves with the release function. Rejects with AbortedError when signal aborts first. */
  acquire(exclusive: boolean, signal?: AbortFlag): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(new AbortedError());
    if (this.#waiters.length === 0 && this.#canEnter(exclusive)) {
      this.#enter(exclusive);
      return Promise.resolve(this.#releaser(exclusive));
    }
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        exclusive,
        resolve: () => resolve(this.#releaser(exclusive)),
        reject,
        signal,
        onAbort: () => {
          const i = this.#waiters.indexOf(w);
          if (i >= 0) {
            this.#waiters.splice(i, 1);
            reject(new AbortedError());
            this.#drain();
          }
        },
      };
      signal?.addEventListener('abort', w.onAbort, { once: true });
      this.#waiters.push(w);
    });
  }

  /** Enter shared at once when nobody holds or waits for the gate exclusively: the release function, else null. */
  enterSharedNow(): (() => void) | null {
    if (this.#waiters.length > 0 || !this.#canEnter(false)) return null;
    this.#enter(false);
    return this.#releaser(false);
  }

  /**
   * Run fn while holding the gate. Not async: when the gate is free (every ordinary write but one
   * behind an exclusive holder) fn starts at once, without the acquire promise and the microtask
   * turns of awaiting it.
   */
  run<T>(exclusive: boolean, signal: AbortFlag | undefined, fn: () => Promise<T>): Promise<T> {
    if (!signal?.aborted && this.#waiters.length === 0 && this.#canEnter(exclusive)) {
      this.#enter(exclusive);
      return IoGate.#holding(this.#releaser(exclusive), fn);
    }
    return this.acquire(exclusive, signal).then((release) => IoGate.#holding(release, fn));
  }

  /** fn's promise, with the gate released once it settled (also when fn throws). */
  static #holding<T>(release: () => void, fn: () => Promise<T>): Promise<T> {
    let p: Promise<T>;
    try {
      p = fn();
    } catch (e) {
      release();
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    return p.then(
      (v) => {
        release();
        return v;
      },
      (e: unknown) => {
        release();
        throw e;
      },
    );
  }

  #canEnter(exclusive: boolean): boolean {
    return exclusive ? !this.#exclusive && this.#shared === 0 : !this.#exclusive;
  }

  #enter(exclusive: boolean): void {
    if (exclusive) this.#exclusive = true;
    else this.#shared++;
  }

  #releaser(exclusive: boolean): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (exclusive) this.#exclusive = false;
      else this.#shared--;
      this.#drain();
    };
  }

  #drain(): void {
    while (this.#waiters.length > 0 && this.#canEnter(this.#waiters[0]!.exclusive)) {
      const w = this.#waiters.shift()!;
      w.signal?.removeEventListener('abort', w.onAbort);
      this.#enter(w.exclusive);
      w.resolve();
    }
  }
}
