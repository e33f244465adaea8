// A per-key async mutex. Volume operations take the volume's key with tryRun so that a second call on a
// volume while one is in flight fails fast as "busy" (what CSI expects: the CO retries), while internal
// bookkeeping can queue with run().

export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  /** true while some holder or waiter exists for key. */
  isLocked(key: string): boolean {
    return this.tails.has(key);
  }

  /** Run fn with key held; waits for earlier holders. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Run fn with key held, or return undefined without running it when key is already held. */
  async tryRun<T>(key: string, fn: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> {
    if (this.tails.has(key)) return { ran: false };
    const value = await this.run(key, fn);
    return { ran: true, value };
  }
}
