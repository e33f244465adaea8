// Smoke test of bench/node-stage.ts, once with its tiny workload (--tiny: one stage/unstage per volume
// kind, 2 volumes in parallel), so that the node plugin's benchmark cannot rot unnoticed. It checks that
// the bench runs, prints its tables and the plugin's step timings, and that every map came up; it
// asserts nothing about speed (benchmarks print figures, tests never time anything).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';

const BENCH = resolve(dirname(fileURLToPath(import.meta.url)), '../../bench/node-stage.js');
const dir = mkdtempSync(join(tmpdir(), 'lunar-node-bench-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('bench/node-stage.js --tiny prints NodeStage/NodeUnstage per kind, their steps, and the parallel run', async () => {
  const json = join(dir, 'node-stage.json');
  const r = await new Promise<{ code: number; out: string }>((res) => {
    execFile(process.execPath, [BENCH, '--tiny', '--json', json], { timeout: 1_200_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      res({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: stdout + stderr });
    });
  });
  assert.equal(r.code, 0, `bench exited ${r.code}:\n${r.out.slice(-6000)}`);
  for (const row of ['| ext4 (incl. mkfs) |', '| xfs (incl. mkfs) |', '| block |'])
    assert.ok(r.out.includes(row), `no row ${row}:\n${r.out}`);
  assert.match(r.out, /\| ext4 \| NodeStage \| plugin [\d.]+ s = .*login [\d.]+ .*mkfs [\d.]+/);
  assert.match(r.out, /\| block \| NodeUnstage \| plugin [\d.]+ s = .*logout [\d.]+/);
  assert.match(r.out, /\| NodeStage \| [\d.]+ s \| [\d.]+ s \| [\d.]+ s \|/);
  assert.match(r.out, /multipath maps up with 2 active paths: 2 of 2; iSCSI sessions: 4 \(expected 4\)/);
  const o = JSON.parse(readFileSync(json, 'utf8')) as Record<string, { samples?: unknown[]; stage?: { steps: Record<string, number> }[] }>;
  for (const fs of ['ext4', 'xfs', 'block']) {
    assert.equal(o[fs]?.samples?.length, 1, `${fs}: one run`);
    assert.ok(o[fs]?.stage?.[0]?.steps.map !== undefined, `${fs}: the plugin's step timings were read from its log`);
  }
});
