// `npm run bench` entry point: Lunar vs tgt over iSCSI on loopback (bench/iscsi.ts).
//
//   npm run bench -- [--seconds 3] [--runs 3] [--targets lunar,tgt] [--tgt-params match|default]
//                    [--size 1GiB] [--only randread-4k-qd1,...] [--cross-check] [--profile DIR]
//                    [--json FILE] [--markdown FILE]

import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { runIscsiBench, WORKLOADS } from './iscsi.js';

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
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run bench -- [--seconds N] [--runs N] [--targets lunar,tgt] [--tgt-params match|default]\n' +
        '                        [--size 1GiB] [--only KEY,...] [--cross-check] [--profile DIR] [--json FILE] [--markdown FILE]\n' +
        `workload keys: ${WORKLOADS.map((w) => w.key).join(', ')}\n`,
    );
    return 0;
  }
  const seconds = Number(values.seconds);
  const runs = Number(values.runs);
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
    size: values.size,
    sizeBytes: sizeBytes(values.size),
    crossCheck: values['cross-check'],
    ...(values.profile ? { profileDir: resolve(values.profile) } : {}),
    ...(values.only ? { only: values.only.split(',') } : {}),
    ...(values.json ? { jsonOut: values.json } : {}),
    ...(values.markdown ? { markdownOut: values.markdown } : {}),
    log: (line) => process.stdout.write(line + '\n'),
  });
}

// Ctrl-C: exit through process.exit so the helpers' exit hooks stop tgtd.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
