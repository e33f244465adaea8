// Loader for the lunar_native N-API addon (native/lunar_native.c, built by node-gyp into build/Release).
// Node's fs has no fallocate(2), no lseek SEEK_DATA/SEEK_HOLE and no io_uring; the addon provides those.
// Loading it also fixes glibc's mmap threshold for the process (see mmapThreshold).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** An io_uring of the calling thread (native/lunar_native.c); opaque. */
export type UringHandle = object & { readonly __uring: unique symbol };

export interface LunarNative {
  /** fallocate(2) on the libuv pool. */
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
  /** fcntl(fd, F_DUPFD_CLOEXEC): a second descriptor of the same open file (or socket). Throws with .code. */
  duplicateFd(fd: number): number;
  /**
   * sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL) of the buffers in order (at most IOV_MAX of them), in the calling
   * thread: the bytes the kernel took (possibly short), or -errno (-EAGAIN: the send buffer is full).
   */
  sendNoWait(fd: number, buffers: readonly Buffer[]): number;
  /**
   * preadv2/pwritev2(RWF_NOWAIT) of buf[offset, offset+length) at position, in the calling thread: the
   * bytes done (possibly short), or -errno (-EAGAIN: not without waiting for the device).
   */
  preadNoWait(fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  pwriteNoWait(fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  /**
   * A plain pwritev2 (it may wait) in the calling thread: the bytes written (possibly short), or -errno;
   * plus INLINE_WRITE_WAITED (2^32) when the thread slept during the write (a voluntary context switch).
   */
  pwriteInline(fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  /** SEEK_DATA/SEEK_HOLE walk of [offset, offset+length): flat [offset, length, mapped(0|1), ...]. */
  allocationMap(fd: number, offset: number, length: number): Promise<number[]>;
  /**
   * io_uring with `entries` slots; completions are written to `results` as (slot, result) pairs before
   * onComplete(count) runs. null when io_uring is unavailable (the caller keeps the thread pool).
   */
  uringOpen(entries: number, results: Int32Array, onComplete: (count: number) => void): UringHandle | null;
  /** Queue readv/writev of buf[offset, offset+length) at position in slot; 0, or -errno when not queued. */
  uringReadv(ring: UringHandle, slot: number, fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  uringWritev(ring: UringHandle, slot: number, fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  uringClose(ring: UringHandle): void;
  /**
   * The bytes glibc's mmap threshold was fixed at when the addon was first loaded in this process
   * (131072), or 0 when it was left alone: not glibc, or MALLOC_MMAP_THRESHOLD_ / a
   * glibc.malloc.mmap_threshold tunable in the environment (the operator's value stands).
   */
  mmapThreshold(): number;
  readonly FALLOC_FL_KEEP_SIZE: number;
  readonly FALLOC_FL_PUNCH_HOLE: number;
  readonly FALLOC_FL_ZERO_RANGE: number;
}

const ADDON = join('build', 'Release', 'lunar_native.node');

/** Walk up from this module (src/storage or dist/src/storage) to the directory holding build/Release. */
function findAddon(): string {
  const override = process.env.LUNAR_NATIVE_ADDON;
  if (override) return override;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, ADDON);
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error(
    `lunar native addon not found (${ADDON}); build it with: ` +
      'node "$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js" rebuild --nodedir=/usr',
  );
}

let cached: LunarNative | undefined;

export function loadNative(): LunarNative {
  if (!cached) {
    const require = createRequire(import.meta.url);
    cached = require(findAddon()) as LunarNative;
  }
  return cached;
}
