// Sparse-file backing store: positioned reads/writes on one file descriptor, fdatasync for durability,
// fallocate(PUNCH_HOLE) for deallocation and SEEK_DATA/SEEK_HOLE for the allocation map.
import { constants as fsc } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { fileIoNow, preadFile, pwriteFile, type FileIoEngine } from './file-io.js';
import type { AllocationExtent, ZeroingBackingStore } from './types.js';
import { loadNative, type LunarNative } from './native.js';

// The data path reads and writes the FileHandle's descriptor through file-io.ts (io_uring, else the
// libuv pool with fs.read/fs.write callbacks) rather than FileHandle.read/write: measured here, the
// promise API costs ~3 µs more CPU per 4 KiB call (its result object and handle bookkeeping).

export interface OpenFileStoreOptions {
  /** Create the file (it must not exist) with this size; sparse unless preallocate. */
  create?: { size: number; preallocate?: boolean };
  /** Open read-only (O_RDONLY); writes then fail with EBADF. */
  readOnly?: boolean;
  /** Force the file I/O engine (tests); default io_uring when available, else the thread pool. */
  engine?: FileIoEngine;
}

function isErrno(e: unknown, ...codes: string[]): boolean {
  return typeof e === 'object' && e !== null && 'code' in e && codes.includes(String(e.code));
}

function checkRange(what: string, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new RangeError(`${what}: bad range offset=${offset} length=${length}`);
  }
}

/**
 * Buffered writes larger than this reach the kernel in pieces of at most this size, aligned to it in
 * the file. Why: the page cache gives a buffered write a folio as large as the write (ext4 with large
 * folios, Linux 6.16+), and every later small write into that folio walks all of its blocks
 * (ext4_block_write_begin / block_commit_write). Measured on this kernel (6.18, ext4, a 1 GiB file
 * filled once, then 20 000 random 4 KiB pwrites): filled with 1 MiB writes 16 µs of CPU per 4 KiB
 * write, with 256 KiB writes 5.6 µs, with 64 KiB writes 3.8 µs. A volume written by a bulk copy and
 * then used by a database or a VM is exactly that pattern. 256 KiB keeps a 1 MiB command at four
 * submissions (see docs/benchmarks.md for both rows).
 */
const WRITE_PIECE = 256 * 1024;

/** Chunk used when a file system cannot punch holes and zeroes must be written instead. */
const ZERO_CHUNK = 1 << 20;

class FileStore implements ZeroingBackingStore {
  #size: number;
  #closed = false;
  /** fdatasync in progress, and the one queued behind it (group commit: concurrent FUA writes share one). */
  #syncing: Promise<void> | null = null;
  #nextSync: Promise<void> | null = null;
  /** Native (fallocate / SEEK_DATA) calls in flight on this fd. */
  readonly #nativeOps = new Set<Promise<void>>();

  constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    size: number,
    private readonly native: LunarNative,
    private readonly engine: FileIoEngine | undefined,
  ) {
    this.#size = size;
  }

  size(): number {
    return this.#size;
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    checkRange('read', offset, buf.length);
    this.#rwInFlight++;
    try {
      let done = 0;
      while (done < buf.length) {
        const bytesRead = await preadFile(this.fh.fd, buf, done, buf.length - done, offset + done, this.engine);
        if (bytesRead === 0) {
          // Beyond the end of the file (e.g. a concurrent shrink): reads as zeroes.
          buf.fill(0, done);
          return;
        }
        done += bytesRead;
      }
    } finally {
      this.#rwDone();
    }
  }

  readNow(buf: Buffer, offset: number): boolean {
    return this.#now(false, buf, offset);
  }

  writeNow(buf: Buffer, offset: number): boolean {
    return this.#now(true, buf, offset);
  }

  /**
   * Only where read() / write() would try inline first (the default engine: a store forced onto the
   * ring or the pool keeps every request there), on an open descriptor and a valid offset.
   */
  #now(write: boolean, buf: Buffer, offset: number): boolean {
    if (this.#closed || (this.engine !== undefined && this.engine !== 'inline')) return false;
    if (!Number.isSafeInteger(offset) || offset < 0) return false;
    return fileIoNow(write, this.fh.fd, buf, 0, buf.length, offset);
  }

  async write(buf: Buffer, offset: number, fua: boolean): Promise<void> {
    checkRange('write', offset, buf.length);
    this.#rwInFlight++;
    try {
      if (buf.length <= WRITE_PIECE) {
        await this.#writeAll(buf, 0, buf.length, offset);
      } else {
        // Pieces end on WRITE_PIECE boundaries of the file; all in flight at once. allSettled: every
        // piece has finished before the first failure is thrown (the fd must outlive them, see close()).
        const pieces: Promise<void>[] = [];
        for (let start = 0; start < buf.length;) {
          const end = Math.min(buf.length, (Math.floor((offset + start) / WRITE_PIECE) + 1) * WRITE_PIECE - offset);
          pieces.push(this.#writeAll(buf, start, end - start, offset + start));
          start = end;
        }
        for (const r of await Promise.allSettled(pieces)) if (r.status === 'rejected') throw r.reason;
      }
    } finally {
      this.#rwDone();
    }
    if (fua) await this.#datasync();
  }

  /** buf[from, from+len) at pos, short writes continued. */
  async #writeAll(buf: Buffer, from: number, len: number, pos: number): Promise<void> {
    let done = 0;
    while (done < len) {
      const bytesWritten = await pwriteFile(this.fh.fd, buf, from + done, len - done, pos + done, this.engine);
      if (bytesWritten === 0) throw Object.assign(new Error(`${this.path}: write made no progress`), { code: 'EIO' });
      done += bytesWritten;
    }
  }

  /** Reads and writes in flight on the raw fd: close() waits for them, so the fd is never closed (and reused) under one. */
  #rwInFlight = 0;
  #rwIdle: (() => void) | null = null;

  #rwDone(): void {
    if (--this.#rwInFlight === 0 && this.#rwIdle) this.#rwIdle();
  }

  flush(): Promise<void> {
    return this.#datasync();
  }

  /**
   * fdatasync(2) with group commit: a caller arriving while one runs cannot rely on it (its write may
   * have completed after that sync started), so it waits for the next one, which every caller arriving
   * meanwhile shares. N concurrent FUA writes cost at most two fdatasyncs, not N.
   */
  #datasync(): Promise<void> {
    if (!this.#syncing) {
      const p = this.fh.datasync().finally(() => {
        if (this.#syncing === p) this.#syncing = null;
      });
      this.#syncing = p;
      return p;
    }
    if (!this.#nextSync) {
      this.#nextSync = this.#syncing
        .catch(() => undefined)
        .then(() => {
          this.#nextSync = null;
          return this.#datasync();
        });
    }
    return this.#nextSync;
  }

  async deallocate(offset: number, length: number): Promise<void> {
    checkRange('deallocate', offset, length);
    if (length === 0) return;
    const n = this.native;
    try {
      await this.#onFd((fd) => n.fallocate(fd, n.FALLOC_FL_PUNCH_HOLE | n.FALLOC_FL_KEEP_SIZE, offset, length));
    } catch (e) {
      if (!isErrno(e, 'EOPNOTSUPP', 'ENOSYS')) throw e;
      // File system without hole punching: keep the contract (reads as zeroes) by writing zeroes.
      await this.#writeZeroBuffers(offset, length);
    }
  }

  async writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    checkRange('writeZeroes', offset, length);
    if (length > 0) {
      const n = this.native;
      try {
        await this.#onFd((fd) => n.fallocate(fd, n.FALLOC_FL_ZERO_RANGE | n.FALLOC_FL_KEEP_SIZE, offset, length));
      } catch (e) {
        if (!isErrno(e, 'EOPNOTSUPP', 'ENOSYS')) throw e;
        await this.#writeZeroBuffers(offset, length);
      }
    }
    if (fua) await this.#datasync();
  }

  async #writeZeroBuffers(offset: number, length: number): Promise<void> {
    const zero = Buffer.alloc(Math.min(ZERO_CHUNK, length));
    for (let pos = offset; pos < offset + length; pos += zero.length) {
      const len = Math.min(zero.length, offset + length - pos);
      await this.write(len === zero.length ? zero : zero.subarray(0, len), pos, false);
    }
  }

  async allocationMap(offset: number, length: number): Promise<AllocationExtent[]> {
    checkRange('allocationMap', offset, length);
    if (length === 0) return [];
    let flat: number[];
    try {
      flat = await this.#onFd((fd) => this.native.allocationMap(fd, offset, length));
    } catch (e) {
      if (!isErrno(e, 'EINVAL', 'EOPNOTSUPP')) throw e;
      // No SEEK_DATA support: everything is reported as mapped (always correct, never "zero" by mistake).
      return [{ offset, length, mapped: true }];
    }
    const out: AllocationExtent[] = [];
    for (let i = 0; i + 2 < flat.length; i += 3) {
      out.push({ offset: flat[i]!, length: flat[i + 1]!, mapped: flat[i + 2] === 1 });
    }
    return out;
  }

  async resize(newSize: number): Promise<void> {
    checkRange('resize', newSize, 0);
    await this.fh.truncate(newSize);
    this.#size = newSize;
  }

  /**
   * Run a native call on the raw fd. FileHandle tracks its own operations but not ours: close() waits
   * for these so that an fd number is never closed (and reused by another file) under a running fallocate.
   */
  async #onFd<T>(op: (fd: number) => Promise<T>): Promise<T> {
    if (this.#closed) throw Object.assign(new Error(`${this.path}: store is closed`), { code: 'EBADF' });
    const p = op(this.fh.fd);
    const settled = p.then(
      () => undefined,
      () => undefined,
    );
    this.#nativeOps.add(settled);
    try {
      return await p;
    } finally {
      this.#nativeOps.delete(settled);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#nativeOps]);
    if (this.#rwInFlight > 0) await new Promise<void>((resolve) => (this.#rwIdle = resolve));
    await this.fh.close();
  }
}

/** Open (or create) a sparse file as a BackingStore. */
export async function openFileStore(path: string, opts: OpenFileStoreOptions = {}): Promise<ZeroingBackingStore> {
  const native = loadNative();
  if (opts.create) {
    const { size, preallocate } = opts.create;
    checkRange('create', size, 0);
    const fh = await open(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    try {
      await fh.truncate(size);
      if (preallocate && size > 0) await native.fallocate(fh.fd, 0, 0, size);
    } catch (e) {
      await fh.close();
      throw e;
    }
    return new FileStore(path, fh, size, native, opts.engine);
  }
  const fh = await open(path, opts.readOnly ? fsc.O_RDONLY : fsc.O_RDWR);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new Error(`${path}: not a regular file`);
    return new FileStore(path, fh, st.size, native, opts.engine);
  } catch (e) {
    await fh.close();
    throw e;
  }
}
