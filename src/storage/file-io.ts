// Positioned file reads and writes for the backing stores: io_uring when the kernel allows it (native
// addon, one ring per thread), else libuv's thread pool (fs.read / fs.write).
//
// Why io_uring: through the pool every 4 KiB command costs a hand-off to a pool thread and a wake-up
// back, two context switches on top of the pread (measured: 2.4 voluntary context switches per 4 KiB
// read at QD32, 4.6 at QD1). The ring takes every read and write queued during one event-loop turn in
// one io_uring_enter, completes page-cache hits inside that call and reports completions through an
// eventfd in the same loop (native/lunar_native.c).
//
// Fallback: when io_uring cannot be set up (old kernel, kernel.io_uring_disabled, a container's seccomp
// profile — Docker's default forbids it — or the addon built without liburing), or when
// LUNAR_NO_IO_URING=1, or when every ring slot is busy, the pool path is used. Both give the same
// results; only the cost differs.
import { constants as osConstants } from 'node:os';
import { read as fsRead, write as fsWrite } from 'node:fs';
import { loadNative, type LunarNative, type UringHandle } from './native.js';

/**
 * inline: preadv2/pwritev2(RWF_NOWAIT) in the calling thread first, small writes with a plain pwritev2
 * in it, what could not be done that way on io_uring (else the pool); the default. io_uring: the ring (else the pool). threadpool: the pool.
 */
export type FileIoEngine = 'inline' | 'io_uring' | 'threadpool';

/** Requests one ring holds at once (submission queue entries); more wait on the pool path. */
const RING_SLOTS = 256;

const ERRNO_NAMES = new Map<number, string>(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

function errnoError(errno: number, syscall: string): NodeJS.ErrnoException {
  const code = ERRNO_NAMES.get(errno) ?? 'EUNKNOWN';
  return Object.assign(new Error(`${code}: ${syscall} failed (errno ${errno})`), { code, errno: -errno, syscall });
}

function poolRead(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fsRead(fd, buf, off, len, pos, (err, n) => {
      if (err) reject(err);
      else resolve(n);
    });
  });
}

function poolWrite(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fsWrite(fd, buf, off, len, pos, (err, n) => {
      if (err) reject(err);
      else resolve(n);
    });
  });
}

type Settle = (res: number) => void;

/** One io_uring of this thread: slots, their settle functions, and the buffers kept alive meanwhile. */
class Ring {
  readonly #native: LunarNative;
  readonly #handle: UringHandle;
  /** Filled by the addon before each completion callback: pairs (slot, result or -errno). */
  readonly #results: Int32Array;
  readonly #free: number[] = [];
  readonly #settle: (Settle | undefined)[] = new Array<Settle | undefined>(RING_SLOTS).fill(undefined);
  /** The kernel reads into / writes from these until the completion: keep them reachable. */
  readonly #buffers: (Buffer | undefined)[] = new Array<Buffer | undefined>(RING_SLOTS).fill(undefined);

  private constructor(native: LunarNative, handle: UringHandle, results: Int32Array) {
    this.#native = native;
    this.#handle = handle;
    this.#results = results;
    for (let i = RING_SLOTS - 1; i >= 0; i--) this.#free.push(i);
  }

  static open(native: LunarNative): Ring | null {
    let ring: Ring | null = null;
    const results = new Int32Array(RING_SLOTS * 2);
    const handle = native.uringOpen(RING_SLOTS, results, (n) => ring?.completed(n));
    if (handle === null) return null;
    ring = new Ring(native, handle, results);
    return ring;
  }

  completed(n: number): void {
    const r = this.#results;
    for (let i = 0; i < n; i++) {
      const slot = r[i * 2]!;
      const res = r[i * 2 + 1]!;
      const settle = this.#settle[slot];
      this.#settle[slot] = undefined;
      this.#buffers[slot] = undefined;
      this.#free.push(slot);
      settle?.(res);
    }
  }

  /** Queue a read or write; null when no slot is free or the ring refused (the caller uses the pool). */
  submit(write: boolean, fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> | null {
    const slot = this.#free.pop();
    if (slot === undefined) return null;
    const rc = write
      ? this.#native.uringWritev(this.#handle, slot, fd, buf, off, len, pos)
      : this.#native.uringReadv(this.#handle, slot, fd, buf, off, len, pos);
    if (rc !== 0) {
      this.#free.push(slot);
      return null;
    }
    this.#buffers[slot] = buf;
    return new Promise<number>((resolve, reject) => {
      this.#settle[slot] = (res) => {
        if (res < 0) reject(errnoError(-res, write ? 'write' : 'read'));
        else resolve(res);
      };
    });
  }
}

/** -errno answers of RWF_NOWAIT that mean "not this way" (the data is not cached, or the file system or kernel cannot): try the ring. */
const NOWAIT_DECLINED: ReadonlySet<number> = new Set([osConstants.errno.EAGAIN, osConstants.errno.EOPNOTSUPP, osConstants.errno.ENOSYS]);

/**
 * A page-cache hit served in this thread without waiting (RWF_NOWAIT): the byte count (> 0, possibly
 * short), 0 at end of file, or null when it was declined and the caller must queue the request.
 *
 * Why: at QD1 a 4 KiB READ through io_uring costs an io_uring_enter, an eventfd wake-up and a second
 * event-loop callback; served inline it is one preadv2 inside the socket's read callback (measured in
 * docs/benchmarks.md). A miss costs one extra syscall that returns EAGAIN at once.
 */
function tryNoWait(write: boolean, fd: number, buf: Buffer, off: number, len: number, pos: number): number | null {
  if (!noWait[write ? 1 : 0]) return null;
  const native = loadNative();
  const n = write ? native.pwriteNoWait(fd, buf, off, len, pos) : native.preadNoWait(fd, buf, off, len, pos);
  if (n >= 0) {
    // A read of 0 bytes at a position within the file can also mean "nothing cached here"; only a
    // non-zero count is trusted, and end of file is left to the queued path.
    return n > 0 || len === 0 ? n : null;
  }
  if (NOWAIT_DECLINED.has(-n)) {
    if (-n !== osConstants.errno.EAGAIN) noWait[write ? 1 : 0] = false; // never supported here: stop trying
    return null;
  }
  throw errnoError(-n, write ? 'pwritev2' : 'preadv2');
}

/**
 * What preadFile() / pwriteFile() do first, in this thread: a page-cache hit (RWF_NOWAIT), or for a
 * write a small plain pwritev2. The byte count, or null when the request must be queued; throws on failure.
 */
function tryInline(write: boolean, fd: number, buf: Buffer, off: number, len: number, pos: number): number | null {
  return tryNoWait(write, fd, buf, off, len, pos) ?? (write ? tryInlineWrite(fd, buf, off, len, pos) : null);
}

/**
 * That inline attempt alone, for a caller that completes at once or not at all: true when all len
 * bytes were read or written. false when declined, short, at end of file or failed: the caller then
 * uses preadFile() / pwriteFile(), which report any error.
 */
export function fileIoNow(write: boolean, fd: number, buf: Buffer, off: number, len: number, pos: number): boolean {
  try {
    return len > 0 && tryInline(write, fd, buf, off, len, pos) === len;
  } catch {
    return false;
  }
}

/**
 * Writes up to this size are done with a plain pwrite in the calling thread (pwriteInline), not queued.
 *
 * Why: ext4 refuses RWF_NOWAIT for buffered writes, so on the ring every write is punted to an io-wq
 * worker: a thread wake-up, the copy into the page cache there, and an eventfd wake-up of the loop
 * with a second event-loop callback to complete it. For a small write that copy is a few µs; the
 * hand-offs cost more (measured per 4 KiB WRITE at QD1, docs/benchmarks.md). Large writes stay on the
 * ring, where the copy runs on the other core while this thread serves the sockets.
 */
export const INLINE_WRITE_MAX = 64 * 1024;
/**
 * An inline write during which the thread slept (the kernel throttled the writer because too much of
 * the page cache is dirty, or it waited for memory or a page lock; the addon reports it) means writes
 * can block this thread: they then go to the ring for INLINE_WRITE_BACKOFF_MS, so a stall costs one
 * command's latency, not every session's on this event loop. Being preempted by other work does not
 * count (the ring would not help against that).
 */
const INLINE_WRITE_WAITED = 2 ** 32;
const INLINE_WRITE_BACKOFF_MS = 1000;
/** performance.now() until which writes are queued instead of done inline (set after an inline write slept). */
let inlineWritesResumeAt = process.env['LUNAR_NO_INLINE_WRITE'] === '1' ? Infinity : 0;

/**
 * An inline write (see INLINE_WRITE_MAX): the bytes written, or null when it is not to be done inline
 * (too large, or writes are backing off after one that slept).
 */
function tryInlineWrite(fd: number, buf: Buffer, off: number, len: number, pos: number): number | null {
  if (len > INLINE_WRITE_MAX) return null;
  if (inlineWritesResumeAt !== 0) {
    if (performance.now() < inlineWritesResumeAt) return null;
    inlineWritesResumeAt = 0;
  }
  let n = loadNative().pwriteInline(fd, buf, off, len, pos);
  if (n >= INLINE_WRITE_WAITED) {
    n -= INLINE_WRITE_WAITED;
    inlineWritesResumeAt = performance.now() + INLINE_WRITE_BACKOFF_MS;
  }
  if (n < 0) throw errnoError(-n, 'pwritev2');
  return n;
}

/** [reads, writes]: false once RWF_NOWAIT proved unsupported for them (or LUNAR_NO_NOWAIT=1). */
const noWait: [boolean, boolean] = [process.env['LUNAR_NO_NOWAIT'] !== '1', process.env['LUNAR_NO_NOWAIT'] !== '1'];

let ring: Ring | null | undefined;

function threadRing(): Ring | null {
  if (ring === undefined) {
    ring = process.env['LUNAR_NO_IO_URING'] === '1' ? null : Ring.open(loadNative());
  }
  return ring;
}

/** Which engine this thread's file I/O uses (opens the ring on first call). */
export function fileIoEngine(): FileIoEngine {
  return threadRing() ? 'io_uring' : 'threadpool';
}

/** pread(2) semantics: resolves with the bytes read (0 at end of file). `engine` forces one path (tests). */
export function preadFile(
  fd: number,
  buf: Buffer,
  off: number,
  len: number,
  pos: number,
  engine: FileIoEngine = 'inline',
): Promise<number> {
  return fileIo(false, fd, buf, off, len, pos, engine);
}

/** pwrite(2) semantics: resolves with the bytes written. `engine` forces one path (tests). */
export function pwriteFile(
  fd: number,
  buf: Buffer,
  off: number,
  len: number,
  pos: number,
  engine: FileIoEngine = 'inline',
): Promise<number> {
  return fileIo(true, fd, buf, off, len, pos, engine);
}

/** The one path of both: page-cache hit or small write inline, else this thread's io_uring, else libuv's pool. */
function fileIo(write: boolean, fd: number, buf: Buffer, off: number, len: number, pos: number, engine: FileIoEngine): Promise<number> {
  if (engine === 'inline') {
    let n: number | null;
    try {
      n = tryInline(write, fd, buf, off, len, pos);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    if (n !== null) return Promise.resolve(n);
  }
  if (engine !== 'threadpool') {
    const p = threadRing()?.submit(write, fd, buf, off, len, pos);
    if (p) return p;
  }
  return write ? poolWrite(fd, buf, off, len, pos) : poolRead(fd, buf, off, len, pos);
}
