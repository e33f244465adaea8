// Reusable buffers for write commands' Data-Out (one per command, ExpectedDataTransferLength bytes).
//
// Why: a fresh Buffer.allocUnsafe(1 MiB) per 1 MiB WRITE is an allocation outside V8's heap that V8
// accounts as external memory; at QD8 that drove garbage collection to 17 % of the main thread's
// samples (issue 11 profile). Buffers come back only after the SCSI device has finished with them
// (the command completed), never while a Data-Out PDU may still be copied into them.

/** Smaller buffers come from Node's allocator as before (pool slices below 4 KiB, cheap above). */
const MIN_POOLED = 64 * 1024;

export class BufferPool {
  readonly #free = new Map<number, Buffer[]>();
  #freeBytes = 0;

  /** @param maxFreeBytes most bytes kept for reuse; more are left to the garbage collector. */
  constructor(private readonly maxFreeBytes: number) {}

  /** A buffer of exactly n bytes, contents undefined. */
  take(n: number): Buffer {
    if (n >= MIN_POOLED) {
      const list = this.#free.get(n);
      const b = list?.pop();
      if (b) {
        this.#freeBytes -= n;
        return b;
      }
    }
    return Buffer.allocUnsafe(n);
  }

  /** Return a buffer from take(); the caller must hold no reference to it afterwards. */
  give(b: Buffer): void {
    const n = b.length;
    // Only whole buffers of their own (not views into a shared pool slab) are reused.
    if (n < MIN_POOLED || b.byteOffset !== 0 || b.buffer.byteLength !== n) return;
    if (this.#freeBytes + n > this.maxFreeBytes) return;
    let list = this.#free.get(n);
    if (!list) this.#free.set(n, (list = []));
    list.push(b);
    this.#freeBytes += n;
  }

  /** Bytes held for reuse. */
  get freeBytes(): number {
    return this.#freeBytes;
  }
}

/** One pool per thread for every session's write buffers: 32 MiB covers QD32 of 1 MiB writes. */
export const writeBuffers = new BufferPool(32 * 1024 * 1024);
