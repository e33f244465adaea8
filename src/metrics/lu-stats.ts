// Per-LU I/O counters, written on the data path. record() is called once per SCSI command: it adds to
// numbers and to one slot of a preallocated bucket array, so it allocates nothing; the Prometheus view
// of these counters is built only when /metrics is scraped (registry.ts).

/** Upper bounds (seconds) of the command latency histogram: 100 µs to 10 s. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

const BOUNDS = Float64Array.from(LATENCY_BUCKETS);

/** What a command did to the LU's data. */
export const enum LuOp {
  Read = 0,
  Write = 1,
  Other = 2,
}

export class LuStats {
  /** Commands by LuOp. */
  readonly commands = new Float64Array(3);
  readBytes = 0;
  writeBytes = 0;
  /** Commands that ended with a status other than GOOD. */
  errors = 0;
  /** Non-cumulative counts per bucket; the last slot is +Inf. */
  readonly buckets = new Float64Array(BOUNDS.length + 1);
  latencySum = 0;

  record(op: LuOp, bytes: number, seconds: number, ok: boolean): void {
    this.commands[op]! += 1;
    if (op === LuOp.Read) this.readBytes += bytes;
    else if (op === LuOp.Write) this.writeBytes += bytes;
    if (!ok) this.errors += 1;
    let i = 0;
    while (i < BOUNDS.length && seconds > BOUNDS[i]!) i++;
    this.buckets[i]! += 1;
    this.latencySum += seconds;
  }

  get count(): number {
    return this.commands[0]! + this.commands[1]! + this.commands[2]!;
  }
}
