// Per-LU I/O counters, written on the data path: the SCSI contract's CommandObserver (src/scsi/types.ts),
// which each logical unit calls once per command it answers. record() adds to numbers and to one slot of
// preallocated arrays, so it allocates nothing; the Prometheus view of these counters is built only when
// /metrics is scraped (registry.ts).

import { IoKind, IO_KIND_NAMES, type CommandObserver } from '../scsi/types.js';

/** Upper bounds (seconds) of the command latency histogram: 100 µs to 10 s. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

const BOUNDS = Float64Array.from(LATENCY_BUCKETS);

export class LuStats implements CommandObserver {
  /** Commands by IoKind (read, write, flush, unmap, other). */
  readonly commands = new Float64Array(IO_KIND_NAMES.length);
  /** Commands by IoKind that ended with a status other than GOOD / CONDITION MET (or were aborted). */
  readonly errors = new Float64Array(IO_KIND_NAMES.length);
  readBytes = 0;
  writeBytes = 0;
  /** Non-cumulative counts per bucket; the last slot is +Inf. */
  readonly buckets = new Float64Array(BOUNDS.length + 1);
  latencySum = 0;
  /** Commands that failed for want of space (DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT, ENOSPC). */
  spaceAllocationFailures = 0;

  record(kind: IoKind, bytes: number, seconds: number, ok: boolean): void {
    this.commands[kind]! += 1;
    if (kind === IoKind.Read) this.readBytes += bytes;
    else if (kind === IoKind.Write) this.writeBytes += bytes;
    if (!ok) this.errors[kind]! += 1;
    let i = 0;
    while (i < BOUNDS.length && seconds > BOUNDS[i]!) i++;
    this.buckets[i]! += 1;
    this.latencySum += seconds;
  }

  get count(): number {
    let n = 0;
    for (const c of this.commands) n += c;
    return n;
  }
}
