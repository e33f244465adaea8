// Smoke test of every benchmark in bench/, each once with a tiny workload (--smoke), so that none can rot
// unnoticed: `npm run bench` (bench/run.ts: both targets, the scale rows, --profile, --cross-check with
// iscsi-perf and qemu-img) and the CSI controller bench (bench/csi-create.ts, on lunar serve's csi.sock). It checks that
// the bench runs and prints its tables; it asserts nothing about speed (benchmarks print figures,
// tests never time anything).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { WORKLOADS } from '../../bench/iscsi.js';

/** dist/bench/run.js, beside this compiled file's tree (dist/test/e2e). */
const RUN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bench/run.js');
const CSI_CREATE = resolve(dirname(fileURLToPath(import.meta.url)), '../../bench/csi-create.js');

function run(args: string[], timeoutMs: number, script = RUN): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(process.execPath, [script, ...args], { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      res({ code, stdout, stderr });
    });
  });
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

describe('npm run bench --smoke', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lunar-bench-smoke-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('runs every figure against Lunar and tgt and prints every table', async () => {
    const json = join(dir, 'bench.json');
    const prof = join(dir, 'prof');
    const r = await run(['--smoke', '--json', json, '--profile', prof, '--cross-check'], 300_000);
    const out = r.stdout + r.stderr;
    assert.equal(r.code, 0, `bench exited ${r.code}:\n${out.slice(-6000)}`);
    // The tables, each with a row per workload and both targets' columns.
    for (const heading of [
      '| workload ',
      '| workload (latency, us) ',
      '| target CPU time per command (us) ',
      '| 4 KiB random read, QD32 per session ',
      '| scale: 2 LUs × 2 sessions',
      '| login key (target answer) ',
      '| cross-check (1 run) ',
    ]) {
      assert.ok(out.includes(heading), `no table "${heading}" in the output:\n${out.slice(-6000)}`);
    }
    for (const w of WORKLOADS) {
      const rows = out.split('\n').filter((l) => l.split('|')[1]?.trim() === w.label);
      assert.equal(rows.length, 3, `workload "${w.label}": expected a row in each of the 3 per-workload tables`);
      for (const row of rows) assert.ok(!/FAILED|n\/a/.test(row), `row with a missing figure: ${row}`);
    }
    for (const col of ['Lunar p99.9', 'tgt p99.9', 'Lunar/tgt', 'goal', 'Lunar machine busy %', 'tgt machine busy %']) {
      assert.ok(out.includes(col), `no column ${col}`);
    }
    // The per-session table with the two-session ceiling (a second Lunar process; Lunar only).
    for (const label of [
      'two sessions / one session',
      'two sessions, two separate Lunar processes (IOPS)',
      'ceiling: separate processes / one session',
      'two sessions, two separate Lunar processes, one iscsi-load each (IOPS)',
      'ceiling, one iscsi-load each / one session',
      'machine busy % (one session)',
      'machine busy % (two separate Lunar processes)',
      'machine busy % (two separate Lunar processes, one iscsi-load each)',
    ]) {
      const rows = out.split('\n').filter((l) => l.split('|')[1]?.trim() === label);
      assert.equal(rows.length, 1, `per-session table: expected one row "${label}"`);
      assert.match(rows[0]!.split('|')[2]!, /^ *[\d.][\d .]* *$/, `row "${label}": no Lunar figure: ${rows[0]}`);
    }
    assert.match(out, /noise before start: load average [\d.]+ [\d.]+ [\d.]+/);
    assert.match(out, /Lunar CPU profile .*lunar-\d+\.cpuprofile/, 'the --profile summary is printed');
    assert.ok(!out.includes('no CPU profile found'), 'a CPU profile was written');
    assert.ok(!/cross-check .* failed/.test(out), 'the cross-check ran against both targets');

    const o: unknown = JSON.parse(readFileSync(json, 'utf8'));
    assert.ok(isRecord(o) && isRecord(o['results']));
    const results = o['results'];
    for (const w of WORKLOADS) {
      const cell = results[w.key];
      assert.ok(isRecord(cell), `no result for ${w.key}`);
      for (const target of ['Lunar', 'tgt']) {
        const t = cell[target];
        assert.ok(isRecord(t) && Array.isArray(t['runs']) && t['runs'].length === 1, `${w.key} ${target}: one run expected`);
        const run: unknown = t['runs'][0];
        assert.ok(isRecord(run) && typeof run['machineBusyPct'] === 'number', `${w.key} ${target}: machineBusyPct per run`);
      }
    }
    for (const key of ['randread-4k-qd32-2s-two-processes', 'randread-4k-qd32-2s-two-processes-two-loaders']) {
      const ceiling = results[key];
      assert.ok(isRecord(ceiling) && isRecord(ceiling['Lunar']), `the two-process ceiling ${key} in the JSON`);
      const ceilingRuns = ceiling['Lunar']['runs'];
      assert.ok(Array.isArray(ceilingRuns) && ceilingRuns.length === 1, `${key}: one run expected`);
    }
    const scale = results['scale'];
    assert.ok(isRecord(scale) && isRecord(scale['Lunar']) && isRecord(scale['tgt']), 'scale rows for both targets');
    assert.deepEqual(o['errors'], []);
  });

  it('runs the CSI controller bench on the csi.sock of lunar serve and prints every figure', async () => {
    const json = join(dir, 'csi.json');
    const r = await run(['--smoke', '--json', json], 120_000, CSI_CREATE);
    const out = r.stdout + r.stderr;
    assert.equal(r.code, 0, `csi-create exited ${r.code}:\n${out.slice(-6000)}`);
    for (const phase of [
      'CreateVolume fill',
      'CreateVolume serial',
      'CreateVolume 8 in flight',
      'ListVolumes one call',
      'ListVolumes all, pages of 100',
      'DeleteVolume',
    ]) {
      assert.match(out, new RegExp(`^${phase}.* p50 +[\\d.]+ ms +p99 +[\\d.]+ ms`, 'm'), `no figures for "${phase}":\n${out}`);
    }
    assert.match(out, /load average at start [\d.]+ [\d.]+ [\d.]+/);
    assert.match(out, /startup \(spawn → ready\) with 24 volumes \d+ ms; RSS idle after restart [\d.]+ MiB/);
    assert.match(out, /^\| 24 \| [\d.]+ [\d.]+ [\d.]+ \| [\d.]+ \/ [\d.]+ \|/m, 'the summary row');
    const o: unknown = JSON.parse(readFileSync(json, 'utf8'));
    assert.ok(isRecord(o) && Array.isArray(o['results']) && o['results'].length === 1);
    const res: unknown = o['results'][0];
    assert.ok(isRecord(res) && res['volumes'] === 24 && Array.isArray(res['phases']) && res['phases'].length === 6);
  });
});
