// Developer helper: run iscsi-test-cu suites (one process each) against any iSCSI URL and print the
// per-test verdicts with failure messages.
//
//   node dist/test/conformance/run.js [--suites Read10,ProutReserve] iscsi://127.0.0.1:3260/IQN/LUN [MULTIPATH-URL]
//
// The full comparison with tgt (and docs/conformance.md) is test/e2e/conformance.test.ts.

import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { parseList, runSuite, count } from './cu.js';

// `node --test dist/test/` (Node 20) also loads every .js under a test/ directory: do nothing there.
if (process.env.NODE_TEST_CONTEXT !== undefined) process.exit(0);

const { values, positionals } = parseArgs({
  options: { suites: { type: 'string' }, timeout: { type: 'string', default: '120' } },
  allowPositionals: true,
});
const url = positionals[0];
if (!url) {
  process.stderr.write('usage: run.js [--suites A,B] [--timeout SECONDS] ISCSI-URL [MULTIPATH-URL]\n');
  process.exit(2);
}
let suites = parseList(execFileSync('iscsi-test-cu', ['--list'], { encoding: 'utf8' }));
if (values.suites) {
  const want = new Set(values.suites.split(',').map((s) => (s.startsWith('ALL.') ? s : `ALL.${s}`)));
  suites = new Map([...suites].filter(([s]) => want.has(s)));
}
let fails = 0;
for (const [suite, tests] of suites) {
  const r = await runSuite({
    suite,
    tests,
    url,
    multipathUrl: positionals[1] ?? url,
    initiatorName: 'iqn.2026-01.io.lunar.test:conformance-1',
    initiatorName2: 'iqn.2026-01.io.lunar.test:conformance-2',
    timeoutMs: Number(values.timeout) * 1000,
  });
  const c = count(r.results);
  fails += c.fail;
  process.stdout.write(`${suite}: ${c.pass}/${c.fail}/${c.skip} (${r.seconds.toFixed(1)} s)${r.problem ? ' ' + r.problem : ''}\n`);
  for (const t of r.results) if (t.outcome !== 'pass') process.stdout.write(`  ${t.outcome.toUpperCase()} ${t.name}: ${t.message}\n`);
}
process.exit(fails > 0 ? 1 : 0);
