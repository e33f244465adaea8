// Log lines a peer can cause, bounded. A peer that sends malformed PDUs, gets commands rejected or
// logins refused gets a few warn lines a minute (per remote address), then one summary a minute
// ("N malformed PDUs from A in the last minute"); the log as a whole gets at most linesPerInterval such
// lines plus summaryLinesPerInterval summaries plus one line for the rest. Peers tracked at once are
// capped (least recently heard from goes first; its counts join the "other peers" line), so the limiter
// is bounded too. EventSummary does the same for events that are never logged one by one (connections
// refused at accept, login timeouts): one line a minute with the count and a few addresses.
//
// Windows are fixed intervals on the injected clock; tick() (a timer of the server's) and every new
// event close a window that is over, flush() closes the current one (shutdown).

import type { Logger } from 'pino';

export type PeerEvent = 'malformed-pdu' | 'reject' | 'login-refused' | 'protocol-error' | 'unanswered-ping';

const EVENT_NOUN: Record<PeerEvent, readonly [string, string]> = {
  'malformed-pdu': ['malformed PDU', 'malformed PDUs'],
  reject: ['rejected command', 'rejected commands'],
  'login-refused': ['refused login', 'refused logins'],
  'protocol-error': ['protocol error', 'protocol errors'],
  'unanswered-ping': ['unanswered NOP-In', 'unanswered NOP-Ins'],
};
const EVENTS = Object.keys(EVENT_NOUN) as PeerEvent[];

export const PEER_LOG_INTERVAL_MS = 60_000;

export interface PeerLogOptions {
  readonly logger: Logger;
  readonly now?: () => number;
  readonly intervalMs?: number;
  /** Lines logged one by one per peer per interval. */
  readonly linesPerPeer?: number;
  /** Lines logged one by one per interval, all peers together. */
  readonly linesPerInterval?: number;
  /** Per-peer summary lines per interval; the rest are folded into one line. */
  readonly summaryLinesPerInterval?: number;
  /** Peers tracked at once. */
  readonly maxPeers?: number;
}

interface PeerWindow {
  lines: number;
  suppressed: number;
  readonly counts: Record<PeerEvent, number>;
}

const zeroCounts = (): Record<PeerEvent, number> => Object.fromEntries(EVENTS.map((e) => [e, 0])) as Record<PeerEvent, number>;

/** "minute" for 60 s, else "N s" (tests shorten the interval). */
export function describeInterval(ms: number): string {
  return ms === 60_000 ? 'minute' : `${ms / 1000} s`;
}

function countsText(counts: Record<PeerEvent, number>): string {
  return EVENTS.filter((e) => counts[e] > 0)
    .map((e) => `${counts[e]} ${EVENT_NOUN[e][counts[e] === 1 ? 0 : 1]}`)
    .join(', ');
}

export class PeerLog {
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #intervalMs: number;
  readonly #linesPerPeer: number;
  readonly #linesPerInterval: number;
  readonly #summaryLines: number;
  readonly #maxPeers: number;
  /** Insertion order = least recently heard from first. */
  readonly #peers = new Map<string, PeerWindow>();
  #windowStart: number;
  #windowLines = 0;
  /** Counts of peers evicted from #peers during this window. */
  #others = zeroCounts();
  #otherPeers = 0;
  /** Lines not written one by one, since start (lunar_iscsi_log_lines_suppressed_total). */
  suppressed = 0;

  constructor(opts: PeerLogOptions) {
    this.#log = opts.logger;
    this.#now = opts.now ?? Date.now;
    this.#intervalMs = opts.intervalMs ?? PEER_LOG_INTERVAL_MS;
    this.#linesPerPeer = opts.linesPerPeer ?? 5;
    this.#linesPerInterval = opts.linesPerInterval ?? 100;
    this.#summaryLines = opts.summaryLinesPerInterval ?? 20;
    this.#maxPeers = opts.maxPeers ?? 256;
    this.#windowStart = this.#now();
  }

  /** Peers tracked in this window (at most maxPeers). */
  get trackedPeers(): number {
    return this.#peers.size;
  }

  /** A warn line caused by peer: written, or counted for the peer's summary. */
  warn(peer: string, event: PeerEvent, fields: Record<string, unknown>, msg: string, log: Logger = this.#log): void {
    this.tick();
    let w = this.#peers.get(peer);
    if (w) {
      this.#peers.delete(peer);
    } else {
      if (this.#peers.size >= this.#maxPeers) this.#evictOldest();
      w = { lines: 0, suppressed: 0, counts: zeroCounts() };
    }
    this.#peers.set(peer, w);
    w.counts[event] += 1;
    if (w.lines < this.#linesPerPeer && this.#windowLines < this.#linesPerInterval) {
      w.lines += 1;
      this.#windowLines += 1;
      log.warn({ remote: peer, event, ...fields }, msg);
    } else {
      w.suppressed += 1;
      this.suppressed += 1;
    }
  }

  #evictOldest(): void {
    const [peer, w] = this.#peers.entries().next().value as [string, PeerWindow];
    this.#peers.delete(peer);
    if (w.suppressed > 0) this.#foldIntoOthers(w);
  }

  /** A peer's counts go to the "from N other peers" line. */
  #foldIntoOthers(w: PeerWindow): void {
    for (const e of EVENTS) this.#others[e] += w.counts[e];
    this.#otherPeers += 1;
  }

  /** Close the window when it is over. */
  tick(): void {
    if (this.#now() - this.#windowStart >= this.#intervalMs) this.flush();
  }

  /** Write the summaries of the current window and start a new one. */
  flush(): void {
    const span = describeInterval(this.#intervalMs);
    let summaries = 0;
    for (const [peer, w] of this.#peers) {
      if (w.suppressed === 0) continue;
      if (summaries < this.#summaryLines) {
        summaries += 1;
        this.#log.warn(
          { remote: peer, event: 'peer-summary', ...w.counts, notLogged: w.suppressed },
          `${countsText(w.counts)} from ${peer} in the last ${span}`,
        );
      } else {
        this.#foldIntoOthers(w);
      }
    }
    if (this.#otherPeers > 0) {
      this.#log.warn(
        { event: 'peer-summary', peers: this.#otherPeers, ...this.#others },
        `${countsText(this.#others)} from ${this.#otherPeers} other peer${this.#otherPeers === 1 ? '' : 's'} in the last ${span}`,
      );
    }
    this.#peers.clear();
    this.#others = zeroCounts();
    this.#otherPeers = 0;
    this.#windowLines = 0;
    this.#windowStart = this.#now();
  }
}

export interface EventSummaryOptions {
  readonly logger: Logger;
  readonly now?: () => number;
  readonly intervalMs?: number;
  /** Addresses named in a line. */
  readonly sampleAddresses?: number;
  /** Distinct addresses counted per window (beyond: "at least"). */
  readonly maxDistinct?: number;
  /** The line for count events from these addresses, by reason. */
  readonly line: (s: { count: number; byReason: ReadonlyMap<string, number>; addresses: string; span: string }) => {
    fields: Record<string, unknown>;
    msg: string;
  };
}

/** Events counted and summarised once per interval, never logged one by one. */
export class EventSummary {
  readonly #opts: EventSummaryOptions;
  readonly #now: () => number;
  readonly #intervalMs: number;
  #windowStart: number;
  #count = 0;
  readonly #byReason = new Map<string, number>();
  readonly #distinct = new Set<string>();
  /** Events since start. */
  total = 0;

  constructor(opts: EventSummaryOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#intervalMs = opts.intervalMs ?? PEER_LOG_INTERVAL_MS;
    this.#windowStart = this.#now();
  }

  record(address: string, reason = ''): void {
    this.tick();
    this.total += 1;
    this.#count += 1;
    this.#byReason.set(reason, (this.#byReason.get(reason) ?? 0) + 1);
    if (this.#distinct.size < (this.#opts.maxDistinct ?? 1024)) this.#distinct.add(address);
  }

  tick(): void {
    if (this.#now() - this.#windowStart >= this.#intervalMs) this.flush();
  }

  flush(): void {
    if (this.#count > 0) {
      const sample = [...this.#distinct].slice(0, this.#opts.sampleAddresses ?? 5);
      const max = this.#opts.maxDistinct ?? 1024;
      const n = this.#distinct.size;
      const more = n > sample.length ? ` and ${n >= max ? 'at least ' : ''}${n - sample.length} more` : '';
      const { fields, msg } = this.#opts.line({
        count: this.#count,
        byReason: this.#byReason,
        addresses: `${sample.join(', ')}${more}`,
        span: describeInterval(this.#intervalMs),
      });
      this.#opts.logger.warn({ ...fields, count: this.#count, addresses: sample, distinctAddresses: n }, msg);
    }
    this.#count = 0;
    this.#byReason.clear();
    this.#distinct.clear();
    this.#windowStart = this.#now();
  }
}
