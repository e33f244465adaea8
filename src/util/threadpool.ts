// libuv thread pool sizing (see src/cli.ts): the pool size is fixed at its first use, which for an ES
// module entry happens before any of our code runs, so the size must come from the environment.

/** UV_THREADPOOL_SIZE as this process found it when this module was first evaluated (undefined = 4). */
export const POOL_SIZE_AT_START: string | undefined = process.env.UV_THREADPOOL_SIZE;

/** Threads Lunar wants for file I/O (covers the default iSCSI queue depth of the volumes in use). */
export const WANTED_POOL_SIZE = 32;

/** A `node --import=` value that sets UV_THREADPOOL_SIZE before the loader touches the pool, unless set. */
export const POOL_PRELOAD = `data:text/javascript,process.env.UV_THREADPOOL_SIZE||=${WANTED_POOL_SIZE}`;

/** The libuv pool size in effect (libuv's rules: 1..1024, default 4). */
export function effectivePoolSize(atStart: string | undefined = POOL_SIZE_AT_START): number {
  const n = Number(atStart);
  if (!atStart || !Number.isInteger(n) || n < 1) return 4;
  return Math.min(n, 1024);
}
