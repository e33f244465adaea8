#!/usr/bin/env -S node --import=data:text/javascript,process.env.UV_THREADPOOL_SIZE||=32
// Entry point of the `lunar` command (package.json "bin").
//
// File I/O concurrency must cover the iSCSI queue depth, but libuv's thread pool has 4 threads unless
// UV_THREADPOOL_SIZE is set before the pool's first use — and for an ES module entry that first use is the
// module loader reading this very file, before any of our code runs. So the variable is set by the
// shebang's --import preload (a data: URL, which needs no file read), keeping a value the user already set.
// Run as `node dist/src/cli.js ...` the shebang is ignored: set UV_THREADPOOL_SIZE (or pass the same
// --import) yourself; `lunar serve` warns when the pool was left at its default.

import { POOL_SIZE_AT_START } from './util/threadpool.js';

const { main } = await import('./cli/main.js');
process.exitCode = await main(process.argv.slice(2), undefined, POOL_SIZE_AT_START);
