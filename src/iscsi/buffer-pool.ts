// Reusable buffers of the data path: write commands' Data-Out (one per command,
// ExpectedDataTransferLength bytes), read commands' Data-In (the buffer a command set reads into) and
// the slabs that connections gather their outgoing PDUs in (connection.ts send()).
//
// Why: a fresh Buffer.allocUnsafe(1 MiB) per 1 MiB command is an allocation outside V8's heap that V8
// accounts as external memory, and external memory growth starts full (mark-compact) collections. At
// QD8 that drove garbage collection to 17 % of the main thread's samples for writes (issue 11 profile);
// for 1 MiB reads V8's helper threads spent 700 µs of CPU per command marking the heap (more than the
// main thread's own user time, see docs/benchmarks.md). Buffers come back only after nothing can touch
// them any more: Data-Out after the SCSI device has finished with the command, Data-In after the
// socket has taken its bytes, slabs after the socket's write of them completed.

export class BufferPool {
  readonly #free = new Map<number, Buffer[]>();
  /**
   * Buffers handed out by take() and not given back yet, by identity: give() of the buffer itself (the
   * common case) never reads `.buffer`, a call into V8's C++ builtins (with the WeakMap below, ~2.6 %
   * of a 4 KiB READ's instructions at QD1, callgrind). Weak: a buffer its borrower dropped (a failed
   * read) is collected, not kept here.
   */
  readonly #lent = new WeakSet<Buffer>();
  /** Every buffer this pool ever allocated, by its memory: give() of a view finds its buffer here. Set once per allocation. */
  readonly #byMemory = new WeakMap<ArrayBufferLike, Buffer>();
  #freeBytes = 0;

  /**
   * @param maxFreeBytes most bytes kept for reuse; more are left to the garbage collector.
   * @param minPooled smaller requests come from Node's allocator as before (pool slices below 4 KiB).
   */
  constructor(
    private readonly maxFreeBytes: number,
    private readonly minPooled = 64 * 1024,
  ) {}

  /** A buffer of exactly n bytes, contents undefined. */
  take(n: number): Buffer {
    if (n < this.minPooled) return Buffer.allocUnsafe(n);
    let b = this.#free.get(n)?.pop();
    if (b) {
      this.#freeBytes -= n;
    } else {
      b = Buffer.allocUnsafeSlow(n);
      this.#byMemory.set(b.buffer, b);
    }
    this.#lent.add(b);
    return b;
  }

  /**
   * Return a buffer from take(), or any view of one; anything else is ignored. The caller (and whoever
   * it lent the buffer to) must hold no reference to it afterwards.
   */
  give(view: Buffer): void {
    let b: Buffer | undefined = view;
    if (!this.#lent.delete(view)) {
      b = this.#byMemory.get(view.buffer);
      if (b === undefined || !this.#lent.delete(b)) return;
    }
    const n = b.length;
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

/**
 * One pool per thread for every session's write buffers: 32 MiB covers QD32 of 1 MiB writes. From
 * 4 KiB, as for reads: a 4 KiB Buffer.allocUnsafe is an allocation of its own per command.
 */
export const writeBuffers = new BufferPool(32 * 1024 * 1024, 4096);

/**
 * One pool per thread for read commands' Data-In buffers (ScsiCommand.dataIn), from 4 KiB: a 4 KiB
 * Buffer.allocUnsafe is not a slice of Node's shared pool but an allocation of its own.
 */
export const readBuffers = new BufferPool(32 * 1024 * 1024, 4096);

/** Size of one slab of outgoing PDUs (connection.ts): a turn's 4 KiB Data-In at QD16 fits in one. */
export const SLAB_SIZE = 64 * 1024;

/**
 * One pool per thread for the slabs connections gather their outgoing PDUs in, taken when a turn has
 * something to send and given back when the socket's write completed, so that the slabs resident are
 * those in flight, not one per connection. Most recently returned first: a slab's pages stay warm.
 */
export const outputSlabs = new BufferPool(16 * 1024 * 1024, SLAB_SIZE);
