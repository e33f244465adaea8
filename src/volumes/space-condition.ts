// Writes that fail for want of space, per volume: what the operator sees of them. A thin volume on a full
// data directory answers its initiator DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT (27/07); the
// LU tells this module each time (the SpaceObserver of src/scsi/types.ts, handed to the LU by the volume
// manager). Per volume:
// - the log: the first failure at once (warn), then at most one summary a minute
//   ("N writes failed with ENOSPC on vol-… in the last minute"), and one line when space is back;
// - the condition (CSI volume_condition, `lunar volume show` and `volume list`): abnormal from the first
//   failure until space is back.
// "Space is back" is decided by free space, not by a write that succeeds: on a thin volume a write to
// blocks already allocated succeeds on a full filesystem, so a success says nothing about the next
// write that needs a new block. The condition clears once the data directory's filesystem has at least
// SPACE_BACK_BYTES available again (statfs), checked whenever the condition is read and once per interval
// while a volume is in this state. A new failure after that starts it again.

import type { Logger } from 'pino';

/** Free bytes in the data directory from which space counts as back. */
export const SPACE_BACK_BYTES = 1024 * 1024;
/** At most one summary line per volume per interval (ms). */
export const SPACE_REPORT_INTERVAL_MS = 60_000;

interface NoSpace {
  /** Epoch ms of the first failure of this episode. */
  readonly since: number;
  /** Failures in this episode. */
  total: number;
  /** Failures since the last line logged. */
  unlogged: number;
  timer: NodeJS.Timeout | null;
}

export interface SpaceConditionsOptions {
  readonly log: Logger;
  /** The data directory, for messages. */
  readonly dataDir: string;
  /** Bytes available in the data directory's filesystem now. */
  readonly availableBytes: () => Promise<number>;
  /** Summary interval (tests shorten it); default SPACE_REPORT_INTERVAL_MS. */
  readonly intervalMs?: number;
}

export class SpaceConditions {
  readonly #volumes = new Map<string, NoSpace>();
  readonly #intervalMs: number;

  constructor(private readonly opts: SpaceConditionsOptions) {
    this.#intervalMs = opts.intervalMs ?? SPACE_REPORT_INTERVAL_MS;
  }

  /** A command of volumeId's LU failed for want of space. Cheap: the data path calls it per failure. */
  failed(volumeId: string): void {
    const s = this.#volumes.get(volumeId);
    if (s) {
      s.total += 1;
      s.unlogged += 1;
      if (!s.timer) this.#arm(volumeId, s);
      return;
    }
    const fresh: NoSpace = { since: Date.now(), total: 1, unlogged: 0, timer: null };
    this.#volumes.set(volumeId, fresh);
    this.opts.log.warn(
      { volumeId, event: 'no-space', dataDir: this.opts.dataDir },
      `a write to ${volumeId} failed with ENOSPC: no space left in ${this.opts.dataDir} (the initiator got DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT); free space there`,
    );
    this.#arm(volumeId, fresh);
  }

  /** The summary (and the free-space check) once per interval while failures keep coming or space is short. */
  #arm(volumeId: string, s: NoSpace): void {
    s.timer = setTimeout(() => {
      s.timer = null;
      void this.#tick(volumeId, s);
    }, this.#intervalMs);
    s.timer.unref();
  }

  async #tick(volumeId: string, s: NoSpace): Promise<void> {
    if (this.#volumes.get(volumeId) !== s) return;
    if (s.unlogged > 0) {
      this.opts.log.warn(
        { volumeId, event: 'no-space', count: s.unlogged, total: s.total },
        `${s.unlogged} write${s.unlogged === 1 ? '' : 's'} failed with ENOSPC on ${volumeId} in the last ${describeInterval(this.#intervalMs)}`,
      );
      s.unlogged = 0;
    }
    if (!(await this.#spaceBack(volumeId, s)) && !s.timer && this.#volumes.get(volumeId) === s) this.#arm(volumeId, s);
  }

  /** Clears the episode when free space is back; true when it was cleared. */
  async #spaceBack(volumeId: string, s: NoSpace): Promise<boolean> {
    let free: number;
    try {
      free = await this.opts.availableBytes();
    } catch {
      return false;
    }
    if (free < SPACE_BACK_BYTES || this.#volumes.get(volumeId) !== s) return false;
    this.#volumes.delete(volumeId);
    if (s.timer) clearTimeout(s.timer);
    this.opts.log.info(
      { volumeId, event: 'space-back', availableBytes: free, failedWrites: s.total, since: new Date(s.since).toISOString() },
      `space is back in ${this.opts.dataDir} for ${volumeId} (${free} bytes free); ${s.total} write${s.total === 1 ? '' : 's'} had failed with ENOSPC`,
    );
    return true;
  }

  /** The volume's no-space condition, or null when its writes have not failed for want of space (or space is back). */
  async condition(volumeId: string): Promise<{ readonly abnormal: true; readonly message: string } | null> {
    const s = this.#volumes.get(volumeId);
    if (!s) return null;
    if (await this.#spaceBack(volumeId, s)) return null;
    return {
      abnormal: true,
      message:
        `writes fail with ENOSPC: no space left in ${this.opts.dataDir} (${s.total} write${s.total === 1 ? '' : 's'} failed since ` +
        `${new Date(s.since).toISOString()}); free at least ${SPACE_BACK_BYTES} bytes there and this clears`,
    };
  }

  /** The volume is gone. */
  forget(volumeId: string): void {
    const s = this.#volumes.get(volumeId);
    if (s?.timer) clearTimeout(s.timer);
    this.#volumes.delete(volumeId);
  }

  close(): void {
    for (const id of [...this.#volumes.keys()]) this.forget(id);
  }
}

function describeInterval(ms: number): string {
  return ms === 60_000 ? 'minute' : `${ms / 1000} s`;
}
