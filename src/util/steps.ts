// Where one operation's time goes: wall milliseconds per named step (a step run more than once adds up),
// for the call's one log line at debug level. Steps run side by side are timed by the step around them.

export class StepTimes {
  private readonly ms = new Map<string, number>();

  /** Runs fn as the step name, adding its wall time (also when it fails). */
  async time<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      this.add(name, performance.now() - t0);
    }
  }

  add(name: string, ms: number): void {
    this.ms.set(name, (this.ms.get(name) ?? 0) + ms);
  }

  /** Step name -> whole milliseconds, in the order the steps first ran. */
  summary(): Record<string, number> {
    return Object.fromEntries([...this.ms].map(([k, v]) => [k, Math.round(v)]));
  }

  get empty(): boolean {
    return this.ms.size === 0;
  }
}
