// Smoke test of `npm run bench` (bench/run.ts): every figure once with a tiny workload (--smoke), both
// targets, the scale rows and --profile, so that the benchmark cannot rot unnoticed. It checks that
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

function run(args: string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(process.execPath, [RUN, ...args], { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
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
    const r = await run(['--smoke', '--json', json, '--profile', prof], 240_000);
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
    ]) {
      assert.ok(out.includes(heading), `no table "${heading}" in the output:\n${out.slice(-6000)}`);
    }
    for (const w of WORKLOADS) {
      const rows = out.split('\n').filter((l) => l.split('|')[1]?.trim() === w.label);
      assert.equal(rows.length, 3, `workload "${w.label}": expected a row in each of the 3 per-workload tables`);
      for (const row of rows) assert.ok(!/FAILED|n\/a/.test(row), `row with a missing figure: ${row}`);
    }
    for (const col of ['Lunar p99.9', 'tgt p99.9', 'Lunar/tgt', 'goal']) assert.ok(out.includes(col), `no column ${col}`);
    assert.match(out, /noise before start: load average [\d.]+ [\d.]+ [\d.]+/);
    assert.match(out, /Lunar CPU profile .*lunar-\d+\.cpuprofile/, 'the --profile summary is printed');
    assert.ok(!out.includes('no CPU profile found'), 'a CPU profile was written');

    const o: unknown = JSON.parse(readFileSync(json, 'utf8'));
    assert.ok(isRecord(o) && isRecord(o['results']));
    const results = o['results'];
    for (const w of WORKLOADS) {
      const cell = results[w.key];
      assert.ok(isRecord(cell), `no result for ${w.key}`);
      for (const target of ['Lunar', 'tgt']) {
        const t = cell[target];
        assert.ok(isRecord(t) && Array.isArray(t['runs']) && t['runs'].length === 1, `${w.key} ${target}: one run expected`);
      }
    }
    const scale = results['scale'];
    assert.ok(isRecord(scale) && isRecord(scale['Lunar']) && isRecord(scale['tgt']), 'scale rows for both targets');
    assert.deepEqual(o['errors'], []);
  });
});
