// `npm run bench` entry point: Lunar vs tgt over iSCSI on loopback (bench/iscsi.ts).
//
//   npm run bench -- [--seconds 3] [--runs 3] [--targets lunar,tgt] [--tgt-params match|default]
//                    [--size 1GiB] [--only randread-4k-qd1,...] [--cross-check] [--profile DIR]
//                    [--scale LUNSxSESSIONS | --no-scale] [--smoke] [--json FILE] [--markdown FILE]
//
// --smoke: every figure once with a tiny workload (0.3 s, 16 MiB LU, 2 LUs x 2 sessions), for the test
// that keeps this bench from rotting (test/e2e/bench-smoke.test.ts); its figures mean nothing.

import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_SCALE, runIscsiBench, WORKLOADS, type ScaleOptions } from './iscsi.js';
import { runBench } from './util.js';

function sizeBytes(s: string): number {
  const m = /^(\d+)(|B|KiB|MiB|GiB)$/.exec(s);
  if (!m) throw new Error(`--size ${s}: expected a number with B, KiB, MiB or GiB`);
  const mult = { '': 1, B: 1, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30 }[m[2] as '' | 'B' | 'KiB' | 'MiB' | 'GiB'];
  return Number(m[1]) * mult;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '3' },
      runs: { type: 'string', default: '3' },
      targets: { type: 'string', default: 'lunar,tgt' },
      'tgt-params': { type: 'string', default: 'match' },
      size: { type: 'string', default: '1GiB' },
      only: { type: 'string' },
      'cross-check': { type: 'boolean', default: false },
      profile: { type: 'string' },
      json: { type: 'string' },
      markdown: { type: 'string' },
      scale: { type: 'string' },
      'no-scale': { type: 'boolean', default: false },
      smoke: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run bench -- [--seconds N] [--runs N] [--targets lunar,tgt] [--tgt-params match|default]\n' +
        '                        [--size 1GiB] [--only KEY,...] [--cross-check] [--profile DIR] [--json FILE] [--markdown FILE]\n' +
        '                        [--scale LUNSxSESSIONS (default 64x4) | --no-scale] [--smoke]\n' +
        `workload keys: ${WORKLOADS.map((w) => w.key).join(', ')}\n`,
    );
    return 0;
  }
  const smoke = values.smoke;
  const seconds = smoke ? 0.3 : Number(values.seconds);
  const runs = smoke ? 1 : Number(values.runs);
  let scale: ScaleOptions | undefined = smoke ? { luns: 2, sessionsPerLu: 2, qd: 2, luBytes: 4 << 20, loadProcesses: 2 } : DEFAULT_SCALE;
  if (values.scale !== undefined) {
    const m = /^(\d+)x(\d+)$/.exec(values.scale);
    if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw new Error(`--scale ${values.scale}: expected LUNSxSESSIONS, e.g. 64x4`);
    scale = { ...scale, luns: Number(m[1]), sessionsPerLu: Number(m[2]) };
  }
  // --only picks figures: the scale rows then run only when asked for with --scale.
  if (values['no-scale'] || (values.only !== undefined && values.scale === undefined)) scale = undefined;
  if (!(seconds > 0) || !Number.isInteger(runs) || runs < 1) throw new Error('--seconds > 0 and --runs >= 1 required');
  const targets = values.targets.split(',').map((t) => t.trim());
  for (const t of targets) if (t !== 'lunar' && t !== 'tgt') throw new Error(`--targets: unknown target ${t}`);
  const tgtParams = values['tgt-params'];
  if (tgtParams !== 'match' && tgtParams !== 'default') throw new Error('--tgt-params must be match or default');
  return runIscsiBench({
    seconds,
    runs,
    targets: targets as ('lunar' | 'tgt')[],
    tgtParams,
    size: smoke ? '16MiB' : values.size,
    sizeBytes: sizeBytes(smoke ? '16MiB' : values.size),
    ...(scale ? { scale } : {}),
    crossCheck: values['cross-check'],
    ...(values.profile ? { profileDir: resolve(values.profile) } : {}),
    ...(values.only ? { only: values.only.split(',') } : {}),
    ...(values.json ? { jsonOut: values.json } : {}),
    ...(values.markdown ? { markdownOut: values.markdown } : {}),
    log: (line) => process.stdout.write(line + '\n'),
  });
}

runBench('bench', main);
