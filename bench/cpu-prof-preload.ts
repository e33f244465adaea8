// Preloaded into `lunar serve` by `npm run bench -- --profile DIR` (NODE_OPTIONS=--import=<this file>,
// since `--cpu-prof` is not allowed in NODE_OPTIONS): samples the main thread with V8's profiler from
// start to exit and writes DIR/lunar-<pid>.cpuprofile. Main-thread inspector sessions answer
// synchronously, so stopping inside the 'exit' handler works.

import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

const dir = process.env['LUNAR_BENCH_CPU_PROF_DIR'];
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 500 });
  session.post('Profiler.start');
  process.once('exit', () => {
    session.post('Profiler.stop', (err, res) => {
      if (!err) writeFileSync(join(dir, `lunar-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
