// Optional BackingStore capability: allocate-and-zero a range without moving zero bytes
// (fallocate FALLOC_FL_ZERO_RANGE). WRITE SAME with a zero block and UNMAP=0 uses it: the blocks end up
// mapped (not deallocated, as SBC-3 §5.44 requires) and read as zeroes, at no I/O cost.
// Not every store has it, so it is not part of BackingStore (src/storage/types.ts): callers ask
// canWriteZeroes() and fall back to writing zero buffers.
import type { BackingStore } from './types.js';

export interface ZeroingBackingStore extends BackingStore {
  /** [offset, offset+length) reads as zeroes and is allocated. Durable before resolving when fua. */
  writeZeroes(offset: number, length: number, fua: boolean): Promise<void>;
}

export function canWriteZeroes(s: BackingStore): s is ZeroingBackingStore {
  return typeof (s as Partial<ZeroingBackingStore>).writeZeroes === 'function';
}
