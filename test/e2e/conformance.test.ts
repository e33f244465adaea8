// Conformance against a peer's test suite: libiscsi's iscsi-test-cu (Debian libiscsi-bin), every suite
// of the ALL family in its own process, against tgt (the reference, Debian `tgt`) and against Lunar,
// one 1 GiB sparse thin-provisioned LU each. Writes docs/conformance.md and fails when
//   - a test that tgt passes does not pass on Lunar, or
//   - a test listed in test/conformance/baseline.json (Lunar's passes when it was recorded) regressed.
//
// Knobs (environment):
//   LUNAR_CONFORMANCE_SUITES=Read10,ProutReserve  run only these suites (no docs written)
//   LUNAR_CONFORMANCE_UPDATE_BASELINE=1            record Lunar's current passes as the baseline
//   LUNAR_CONFORMANCE_SUITE_TIMEOUT=120            seconds per suite process
//
// Ports (engineer P's range): tgt 13300 (management channel 13300), Lunar 13301 + 13302.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTgt, type TgtProcess } from '../support/tgt.js';
import { startLunarProcess, type LunarProcess } from '../support/lunar.js';
import { parseList, runSuite, count, textTable, markdownReport, type SuiteRun } from '../conformance/cu.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const BASELINE = resolve(ROOT, 'test/conformance/baseline.json');
const DOC = resolve(ROOT, 'docs/conformance.md');

const TGT_PORT = 13300;
const LUNAR_PORTS = [13301, 13302];
const INITIATOR_1 = 'iqn.2026-01.io.lunar.test:conformance-1';
const INITIATOR_2 = 'iqn.2026-01.io.lunar.test:conformance-2';
const SUITE_TIMEOUT_MS = Number(process.env.LUNAR_CONFORMANCE_SUITE_TIMEOUT ?? 120) * 1000;
/** Whole-target budget: a target that hangs in every suite must not take the CI run with it. */
const TARGET_BUDGET_MS = 15 * 60 * 1000;

interface Baseline {
  readonly comment: string;
  readonly lunarPasses: string[];
}

function listSuites(): Map<string, string[]> {
  const all = parseList(execFileSync('iscsi-test-cu', ['--list'], { encoding: 'utf8' }));
  const only = process.env.LUNAR_CONFORMANCE_SUITES;
  if (!only) return all;
  const wanted = new Set(only.split(',').map((s) => (s.startsWith('ALL.') ? s : `ALL.${s.trim()}`)));
  return new Map([...all].filter(([s]) => wanted.has(s)));
}

async function runAll(
  title: string,
  suites: Map<string, string[]>,
  url: string,
  multipathUrl: string,
): Promise<Map<string, SuiteRun>> {
  const runs = new Map<string, SuiteRun>();
  const deadline = Date.now() + TARGET_BUDGET_MS;
  for (const [suite, tests] of suites) {
    if (Date.now() > deadline) {
      runs.set(suite, {
        suite,
        seconds: 0,
        problem: 'not run: time budget of the target exhausted',
        results: tests.map((name) => ({ name, outcome: 'fail', message: 'not run: time budget exhausted' })),
      });
      continue;
    }
    const r = await runSuite({
      suite,
      tests,
      url,
      multipathUrl,
      initiatorName: INITIATOR_1,
      initiatorName2: INITIATOR_2,
      timeoutMs: SUITE_TIMEOUT_MS,
    });
    runs.set(suite, r);
    const c = count(r.results);
    process.stdout.write(`${title} ${suite}: ${c.pass}/${c.fail}/${c.skip} in ${r.seconds.toFixed(1)} s${r.problem ? ` (${r.problem})` : ''}\n`);
  }
  return runs;
}

function versions(): string {
  const q = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
    } catch {
      return 'unknown';
    }
  };
  const pkg = JSON.parse(readFileSync(resolve(ROOT, 'package.json'), 'utf8')) as { version: string };
  return [
    `- libiscsi-bin ${q('dpkg-query', ['-W', '-f=${Version}', 'libiscsi-bin'])} (iscsi-test-cu), tgt ${q('dpkg-query', ['-W', '-f=${Version}', 'tgt'])}, Lunar ${pkg.version}, Node ${process.version}`,
  ].join('\n');
}

test('iscsi-test-cu: Lunar passes everything tgt passes, and never regresses', { timeout: 45 * 60 * 1000 }, async () => {
  const suites = listSuites();
  assert.ok(suites.size > 0, 'iscsi-test-cu --list gave no ALL.* suites');
  const partial = process.env.LUNAR_CONFORMANCE_SUITES !== undefined;
  const started = new Date();

  // --- tgt, the reference ---
  let tgt: TgtProcess | null = null;
  let tgtRuns: Map<string, SuiteRun>;
  const tgtStart = Date.now();
  try {
    tgt = await startTgt({ port: TGT_PORT, thin: true });
    tgtRuns = await runAll('tgt', suites, tgt.url(), tgt.url());
  } finally {
    await tgt?.stop();
  }
  const tgtSeconds = (Date.now() - tgtStart) / 1000;

  // --- Lunar ---
  let lunar: LunarProcess | null = null;
  let lunarRuns: Map<string, SuiteRun>;
  let lunarNote = '';
  const lunarStart = Date.now();
  try {
    lunar = await startLunarProcess({
      portals: LUNAR_PORTS.map((p) => `127.0.0.1:${p}`),
      env: { LUNAR_LOG_LEVEL: process.env.LUNAR_LOG_LEVEL ?? 'warn' },
    });
    const created = await lunar.cli(['volume', 'create', 'conf', '--size', '1GiB', '--json']);
    assert.equal(created.code, 0, `lunar volume create failed: ${created.stderr}${created.stdout}`);
    const vol = JSON.parse(created.stdout) as { iqn: string; lun: number; portals: Array<{ host: string; port: number; tpgt: number }> };
    const p1 = vol.portals[0];
    assert.ok(p1, `volume has no portal: ${created.stdout}`);
    const p2 = vol.portals[1] ?? p1;
    const url = `iscsi://${p1.host}:${p1.port}/${vol.iqn}/${vol.lun}`;
    const mpUrl = `iscsi://${p2.host}:${p2.port}/${vol.iqn}/${vol.lun}`;
    lunarNote = `Target ${vol.iqn} LUN ${vol.lun}; MultipathIO uses the second portal (${p2.host}:${p2.port}, TPGT ${p2.tpgt}) as its second path.`;
    lunarRuns = await runAll('lunar', suites, url, mpUrl);
  } catch (e) {
    if (lunar) process.stdout.write(`lunar output tail:\n${lunar.output().slice(-4000)}\n`);
    throw e;
  } finally {
    await lunar?.remove();
  }
  const lunarSeconds = (Date.now() - lunarStart) / 1000;

  const names = [...suites.keys()];
  process.stdout.write(
    `\n${textTable(names, [
      { title: 'tgt', runs: tgtRuns },
      { title: 'Lunar', runs: lunarRuns },
    ])}\n\n`,
  );

  // --- comparisons ---
  const outcome = (runs: Map<string, SuiteRun>): Map<string, { outcome: string; message: string }> =>
    new Map([...runs.values()].flatMap((r) => r.results.map((t) => [t.name, t] as const)));
  const tgtBy = outcome(tgtRuns);
  const lunarBy = outcome(lunarRuns);
  const worseThanTgt = [...tgtBy]
    .filter(([name, t]) => t.outcome === 'pass' && lunarBy.get(name)?.outcome !== 'pass')
    .map(([name]) => `${name}: tgt passes, Lunar ${lunarBy.get(name)?.outcome ?? 'missing'} — ${lunarBy.get(name)?.message ?? ''}`);

  const baseline: Baseline = existsSync(BASELINE)
    ? (JSON.parse(readFileSync(BASELINE, 'utf8')) as Baseline)
    : { comment: '', lunarPasses: [] };
  const suiteSet = new Set(names);
  const regressions = baseline.lunarPasses
    .filter((name) => suiteSet.has(name.split('.').slice(0, 2).join('.')))
    .filter((name) => lunarBy.get(name)?.outcome !== 'pass')
    .map((name) => `${name}: in the baseline, now ${lunarBy.get(name)?.outcome ?? 'missing'} — ${lunarBy.get(name)?.message ?? ''}`);
  const lunarPasses = [...lunarBy].filter(([, t]) => t.outcome === 'pass').map(([n]) => n);
  const newPasses = lunarPasses.filter((n) => !baseline.lunarPasses.includes(n));

  if (!partial) {
    const t = count([...tgtRuns.values()].flatMap((r) => r.results));
    const l = count([...lunarRuns.values()].flatMap((r) => r.results));
    const header = [
      '# Conformance: libiscsi iscsi-test-cu, Lunar next to tgt',
      '',
      `Generated by \`test/e2e/conformance.test.ts\` on ${started.toISOString()} — do not edit by hand.`,
      '',
      versions(),
      `- Each of the ${names.length} suites of the ALL family runs in its own process:`,
      `  \`iscsi-test-cu -d -S -i ${INITIATOR_1} -I ${INITIATOR_2} -t ALL.<Suite> iscsi://HOST:PORT/IQN/LUN\``,
      '  (MultipathIO gets a second URL). Both targets serve one 1 GiB sparse file LU, thin-provisioned',
      '  (tgt: rdwr backing store, `thin_provisioning=1`).',
      `- tgt: ${t.pass} passed, ${t.fail} failed, ${t.skip} skipped in ${tgtSeconds.toFixed(0)} s. ` +
        `Lunar: ${l.pass} passed, ${l.fail} failed, ${l.skip} skipped in ${lunarSeconds.toFixed(0)} s.`,
      `- Tests tgt passes that Lunar does not: ${worseThanTgt.length}. Regressions against test/conformance/baseline.json: ${regressions.length}.`,
    ].join('\n');
    const md = markdownReport({
      suites: names,
      header,
      regressions: [...worseThanTgt, ...regressions],
      columns: [
        { title: 'Lunar', runs: lunarRuns, note: lunarNote },
        {
          title: 'tgt',
          runs: tgtRuns,
          note: `tgt 1.0.85 (Debian) with \`tgtd -f -C ${TGT_PORT} --iscsi portal=127.0.0.1:${TGT_PORT}\`, LUN 1, the same URL twice for MultipathIO.`,
        },
      ],
    });
    writeFileSync(DOC, md);
    if (process.env.LUNAR_CONFORMANCE_UPDATE_BASELINE === '1') {
      const b: Baseline = {
        comment:
          'Tests Lunar passed when this file was recorded (LUNAR_CONFORMANCE_UPDATE_BASELINE=1 npm test). test/e2e/conformance.test.ts fails if one of them stops passing.',
        lunarPasses: lunarPasses.sort(),
      };
      writeFileSync(BASELINE, JSON.stringify(b, null, 2) + '\n');
    }
  }
  if (newPasses.length > 0 && process.env.LUNAR_CONFORMANCE_UPDATE_BASELINE !== '1') {
    process.stdout.write(`${newPasses.length} Lunar passes are not in the baseline yet (LUNAR_CONFORMANCE_UPDATE_BASELINE=1 records them)\n`);
  }

  // The reference run must itself be sound, or "everything tgt passes" would be vacuous: tgt 1.0.85
  // passes 173 of the 230 tests on this kind of LU (docs/conformance.md, shared facts B.2).
  if (!partial) {
    const t = count([...tgtRuns.values()].flatMap((r) => r.results));
    assert.ok(t.pass >= 160, `the tgt reference run looks broken: only ${t.pass} tests passed`);
  }

  const problems = [...worseThanTgt, ...regressions];
  assert.deepEqual(problems, [], `Lunar conformance problems:\n${problems.join('\n')}`);
});
