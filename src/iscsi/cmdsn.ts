// Command numbering (RFC 7143 §4.2.2.1): serial number arithmetic (RFC 1982) and the CmdSN window.

export function serialLt(a: number, b: number): boolean {
  return a !== b && (b - a) >>> 0 < 0x80000000;
}
export function serialLe(a: number, b: number): boolean {
  return a === b || serialLt(a, b);
}

/**
 * The command window (§4.2.2.1): ExpCmdSN advances as commands arrive in order; MaxCmdSN lets
 * `depth` commands be outstanding and never moves backwards. Out-of-order commands wait here.
 */
export class CmdWindow<T> {
  expCmdSN: number;
  private maxAdvertised: number;
  private readonly waiting = new Map<number, T>();

  constructor(
    first: number,
    private readonly depth: number,
  ) {
    this.expCmdSN = first >>> 0;
    this.maxAdvertised = (first + depth - 1) >>> 0;
  }

  /** MaxCmdSN to send now, given `outstanding` commands not yet completed. */
  maxCmdSN(outstanding: number): number {
    const candidate = (this.expCmdSN + Math.max(0, this.depth - outstanding) - 1) >>> 0;
    if (serialLt(this.maxAdvertised, candidate)) this.maxAdvertised = candidate;
    return this.maxAdvertised;
  }

  inWindow(cmdSN: number): boolean {
    return serialLe(this.expCmdSN, cmdSN) && serialLe(cmdSN, this.maxAdvertised);
  }

  /**
   * Offer a non-immediate command. Returns the commands now deliverable in CmdSN order (possibly
   * none when it arrived early), or null when it is outside the window or a duplicate (§4.2.2.1: ignore).
   */
  offer(cmdSN: number, item: T): T[] | null {
    if (!this.inWindow(cmdSN) || this.waiting.has(cmdSN)) return null;
    if (cmdSN !== this.expCmdSN) {
      this.waiting.set(cmdSN, item);
      return [];
    }
    const out = [item];
    this.expCmdSN = (this.expCmdSN + 1) >>> 0;
    for (let next = this.waiting.get(this.expCmdSN); next !== undefined; next = this.waiting.get(this.expCmdSN)) {
      this.waiting.delete(this.expCmdSN);
      out.push(next);
      this.expCmdSN = (this.expCmdSN + 1) >>> 0;
    }
    return out;
  }

  get queued(): number {
    return this.waiting.size;
  }

  clear(): void {
    this.waiting.clear();
  }
}
