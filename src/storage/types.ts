// The contract between the SCSI command sets (src/scsi) and a backing store (src/storage): the only
// file of src/storage that src/scsi imports, and it imports nothing. A backing store knows bytes and
// files; it never sees a CDB.

/** One extent of a backing store's allocation map. */
export interface AllocationExtent {
  /** Byte offset. */
  readonly offset: number;
  /** Length in bytes. */
  readonly length: number;
  /** true: data is allocated (mapped); false: a hole (reads as zeroes, deallocated). */
  readonly mapped: boolean;
}

export interface BackingStore {
  /** Path of the file behind the store. */
  readonly path: string;
  /** Current size in bytes. */
  size(): number;
  /** Read exactly buf.length bytes at offset into buf (holes read as zeroes). */
  read(buf: Buffer, offset: number): Promise<void>;
  /**
   * The same read done now, in the calling thread, when it cannot block (every byte in the page
   * cache): true when buf holds them. false when it could not (not cached, not supported, any error:
   * read() then does it and reports what went wrong); buf's contents are then undefined. Optional: a
   * store without it is always read with read().
   */
  readNow?(buf: Buffer, offset: number): boolean;
  /**
   * write(buf, offset, false) done now, in the calling thread, when the store can do it without
   * waiting for the device (a small buffered write): true when every byte was written, as write()
   * without FUA would have. false when it could not (any reason, any error: write() then does the
   * write and reports what went wrong); any bytes it wrote are rewritten by that write. Optional.
   */
  writeNow?(buf: Buffer, offset: number): boolean;
  /** Write all of buf at offset. When fua is true the data is durable (fdatasync) before the promise resolves. */
  write(buf: Buffer, offset: number, fua: boolean): Promise<void>;
  /** Make every completed write durable (fdatasync). SYNCHRONIZE CACHE. */
  flush(): Promise<void>;
  /** Deallocate [offset, offset+length): afterwards it reads as zeroes (fallocate PUNCH_HOLE|KEEP_SIZE). */
  deallocate(offset: number, length: number): Promise<void>;
  /** Allocation map of [offset, offset+length) (SEEK_DATA / SEEK_HOLE), in order, covering the range. */
  allocationMap(offset: number, length: number): Promise<AllocationExtent[]>;
  /** Grow (or shrink) to newSize bytes. Growing keeps the file sparse. */
  resize(newSize: number): Promise<void>;
  /** Close the file descriptor. */
  close(): Promise<void>;
}

/**
 * A backing store that can allocate-and-zero a range without moving zero bytes (fallocate
 * FALLOC_FL_ZERO_RANGE). WRITE SAME with a zero block and UNMAP=0 uses it: the blocks end up mapped
 * (not deallocated, as SBC-3 §5.44 requires) and read as zeroes, at no I/O cost. Optional: a store that
 * lacks it gets the zeroes written.
 */
export interface ZeroingBackingStore extends BackingStore {
  /** [offset, offset+length) reads as zeroes and is allocated. Durable before resolving when fua. */
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void>;
}

/** Does this store offer writeZeroes()? */
export function canWriteZeroes(s: BackingStore): s is ZeroingBackingStore {
  return typeof (s as Partial<ZeroingBackingStore>).writeZeroes === 'function';
}
