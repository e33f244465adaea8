// A FIFO shared/exclusive gate for one LU's writes: ordinary writes share it; COMPARE AND WRITE, ORWRITE
// and quiesce() (snapshots) take it exclusively, so they are atomic with respect to every other write.

export class AbortedError extends Error {
  constructor() {
    super('task aborted');
    this.name = 'AbortedError';
  }
}

interface Waiter {
  readonly exclusive: boolean;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
}

export class IoGate {
  #shared = 0;
  #exclusive = false;
  readonly #waiters: Waiter[] = [];

  /** Acquire; resolves with the release function. Rejects with AbortedError when signal aborts first. */
  acquire(exclusive: boolean, signal?: AbortSignal): Promise<() => void> {
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

  /** Run fn while holding the gate. */
  async run<T>(exclusive: boolean, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire(exclusive, signal);
    try {
      return await fn();
    } finally {
      release();
    }
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
