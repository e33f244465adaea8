// Preloaded into `lunar serve` by `npm run bench -- --profile DIR` (NODE_OPTIONS=--import=<this file>,
// since `--cpu-prof` is not allowed in NODE_OPTIONS): samples the main thread with V8's profiler from
// start until the server is told to stop, and writes DIR/lunar-<pid>.cpuprofile.
//
// DIR is created when missing (a missing directory made the write fail silently in the exit handler).
// The profile is written when SIGTERM arrives, before the server's own shutdown runs: shutting down
// flushes every LU (fdatasync of everything the benchmark wrote), which on a busy disk can outlast the
// caller's patience, and a server killed with SIGKILL then would write no profile at all ("no CPU
// profile found"). 'exit' remains as a fallback for a server that ends by itself. Main-thread
// inspector sessions answer synchronously, so the profile is on disk when the handler returns.

import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join, resolve } from 'node:path';

const dirEnv = process.env['LUNAR_BENCH_CPU_PROF_DIR'];
if (dirEnv) {
  const dir = resolve(dirEnv);
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 500 });
  session.post('Profiler.start');
  let written = false;
  const write = (): void => {
    if (written) return;
    written = true;
    session.post('Profiler.stop', (err, res) => {
      if (err) process.stderr.write(`cpu-prof-preload: ${err.message}\n`);
      else {
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, `lunar-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
      }
    });
  };
  const onTerm = (): void => {
    write();
    // Only the server's own handler may keep the process alive: without one, SIGTERM still ends it.
    if (process.listenerCount('SIGTERM') === 1) process.exit(143);
  };
  process.prependListener('SIGTERM', onTerm);
  process.once('exit', write);
}
