// Node plugin benchmark: NodeStageVolume / NodeUnstageVolume durations with 2 paths (discovery, 2 logins,
// LUN scan, WWID check, multipath map, mkfs, mount — goal NodeStage ≤ 4 s including mkfs) and 10 volumes
// staged in parallel on one guest. The controller (`lunar serve`, 2 portals) runs on the host, `lunar node`
// in one QEMU guest of the guest bed (test/guest, TCG), both driven over CSI exactly as in
// test/guest/node-plugin.test.ts. Prints figures; asserts nothing about speed. Needs root and QEMU: run it
// under the heavy lock, alone.
//
//   node dist/bench/node-stage.js [--runs 3] [--parallel 10] [--size-mib 1024] [--tiny] [--json FILE]
//
// --tiny: 1 run per kind and 2 volumes in parallel (checks that the bench works; figures mean little).
// The plugin runs at debug level, so each NodeStage/NodeUnstage log line carries its step timings
// (`steps`, util/steps.ts): the bench prints their medians, to show where the seconds go.

import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { runBench } from './util.js';
import { Bed, buildGuest, buildLunarDisk } from '../test/guest/harness.js';
import {
  call,
  controllerPublish,
  controllerUnpublish,
  createVolume,
  leftovers,
  makeStagingDir,
  mapOf,
  MiB,
  NodePlugin,
  nodeStage,
  nodeUnstage,
  nothingLeft,
  sessionsTo,
  startController,
  type Controller,
  type CsiVolume,
  type Fs,
} from '../test/guest/node-bed.js';

interface Sample {
  volumeId: string;
  /** Client-side wall time of the call (CSI round trip through the forwarded socket included). */
  stageMs: number;
  unstageMs: number;
}

/** What the plugin's one log line of a call says: its duration and step timings. */
interface CallLine {
  durationMs: number;
  steps: Record<string, number>;
}

/** rpc -> volume id -> the last OK line of that call (pino JSON lines of the plugin's log). */
function callLines(log: string): Map<string, Map<string, CallLine>> {
  const out = new Map<string, Map<string, CallLine>>();
  for (const l of log.split('\n')) {
    if (!l.startsWith('{') || !l.includes('"durationMs"')) continue;
    let o: unknown;
    try {
      o = JSON.parse(l);
    } catch {
      continue;
    }
    if (typeof o !== 'object' || o === null) continue;
    const r = o as { rpc?: unknown; volumeId?: unknown; code?: unknown; durationMs?: unknown; steps?: unknown };
    if (typeof r.rpc !== 'string' || typeof r.volumeId !== 'string' || r.code !== 'OK' || typeof r.durationMs !== 'number') continue;
    const steps = typeof r.steps === 'object' && r.steps !== null ? (r.steps as Record<string, number>) : {};
    let m = out.get(r.rpc);
    if (!m) out.set(r.rpc, (m = new Map<string, CallLine>()));
    m.set(r.volumeId, { durationMs: r.durationMs, steps });
  }
  return out;
}

/** "step median" for each step of the lines, in the order of the first line, then the rest as medians. */
function stepMedians(lines: readonly CallLine[]): string {
  const names: string[] = [];
  for (const l of lines) for (const k of Object.keys(l.steps)) if (!names.includes(k)) names.push(k);
  const parts = names.map((k) => `${k} ${(stats(lines.map((l) => l.steps[k] ?? 0)).median / 1000).toFixed(2)}`);
  const d = stats(lines.map((l) => l.durationMs)).median;
  const rest = stats(lines.map((l) => l.durationMs - Object.values(l.steps).reduce((a, b) => a + b, 0))).median;
  return `plugin ${fmt(d)} = ${parts.join(' + ')} + other ${(rest / 1000).toFixed(2)}`;
}

const fmt = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
const stats = (xs: number[]): { min: number; median: number; max: number } => {
  const s = [...xs].sort((a, b) => a - b);
  return { min: s[0] ?? 0, median: s[Math.floor(s.length / 2)] ?? 0, max: s[s.length - 1] ?? 0 };
};

async function once(ctl: Controller, n: NodePlugin, fs: Fs, name: string, sizeBytes: number): Promise<Sample> {
  const vol = await createVolume(ctl, name, fs, sizeBytes);
  const pc = await controllerPublish(ctl, vol, n, fs);
  await makeStagingDir(n, vol); // the CO's part, not timed
  let t0 = Date.now();
  await nodeStage(n, vol, pc, fs, { stagingDirMade: true });
  const stageMs = Date.now() - t0;
  t0 = Date.now();
  await nodeUnstage(n, vol);
  const unstageMs = Date.now() - t0;
  await checkClean(n, vol);
  await controllerUnpublish(ctl, vol, n);
  await call(ctl.controller, 'DeleteVolume', { volume_id: vol.volume_id });
  return { volumeId: vol.volume_id, stageMs, unstageMs };
}

async function checkClean(n: NodePlugin, vol: CsiVolume): Promise<void> {
  const l = await leftovers(n.g, vol);
  if (JSON.stringify(l) !== JSON.stringify(nothingLeft)) throw new Error(`left after unstage of ${vol.volume_id}: ${JSON.stringify(l)}`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '3' },
      parallel: { type: 'string', default: '10' },
      'size-mib': { type: 'string', default: '1024' },
      tiny: { type: 'boolean', default: false },
      json: { type: 'string' },
    },
  });
  const runs = values.tiny ? 1 : Number(values.runs);
  const parallel = values.tiny ? 2 : Number(values.parallel);
  const sizeBytes = Number(values['size-mib']) * MiB;
  const out = (l: string): void => void process.stdout.write(l + '\n');
  out(
    `noise before start: load average ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  const bed = await Bed.create(await buildGuest());
  const result: Record<string, unknown> = { runs, parallel, sizeBytes };
  try {
    const ctl = await startController(bed);
    const disk = await buildLunarDisk(bed.runDir);
    const g = await bed.bootGuest({ index: 0, extraDisk: disk });
    out(`guest boot ${fmt(g.bootMs)}`);
    const n = new NodePlugin(g);
    bed.onClose(() => n.close());
    await n.start();

    // Sequential stage/unstage, per kind.
    const rows: string[] = [];
    const breakdown: string[] = [];
    for (const fs of ['ext4', 'xfs', 'block'] as const) {
      const samples: Sample[] = [];
      for (let i = 0; i < runs; i++) samples.push(await once(ctl, n, fs, `bench-${fs}-${i}`, sizeBytes));
      const st = stats(samples.map((s) => s.stageMs));
      const un = stats(samples.map((s) => s.unstageMs));
      const lines = callLines(await n.log());
      const of = (rpc: string): CallLine[] =>
        samples.map((x) => lines.get(rpc)?.get(x.volumeId)).filter((l): l is CallLine => l !== undefined);
      const st2 = of('NodeStageVolume');
      const un2 = of('NodeUnstageVolume');
      result[fs] = { samples, stage: st2, unstage: un2 };
      breakdown.push(`| ${fs} | NodeStage | ${stepMedians(st2)} |`, `| ${fs} | NodeUnstage | ${stepMedians(un2)} |`);
      rows.push(
        `| ${fs}${fs === 'block' ? '' : ' (incl. mkfs)'} | ${fmt(st.median)} | ${fmt(st.min)} – ${fmt(st.max)} | ${fmt(un.median)} | ${fmt(un.min)} – ${fmt(un.max)} |`,
      );
    }
    out(`\nNodeStage / NodeUnstage, 2 paths, ${sizeBytes / MiB} MiB volume, ${runs} run(s) each (goal: NodeStage ≤ 4 s incl. mkfs)`);
    out('| volume | NodeStage median | min – max | NodeUnstage median | min – max |');
    out('|---|---|---|---|---|');
    for (const r of rows) out(r);
    out('\nWhere the time goes (plugin log line: duration and step medians, seconds)');
    out('| volume | call | steps |');
    out('|---|---|---|');
    for (const r of breakdown) out(r);

    // Parallel: `parallel` ext4 volumes staged at once on the one guest, then unstaged at once.
    const vols: CsiVolume[] = [];
    const pcs: Record<string, string>[] = [];
    for (let i = 0; i < parallel; i++) {
      const v = await createVolume(ctl, `bench-par-${i}`, 'ext4', 256 * MiB);
      vols.push(v);
      pcs.push(await controllerPublish(ctl, v, n, 'ext4'));
      await makeStagingDir(n, v);
    }
    const each: number[] = [];
    let t0 = Date.now();
    await Promise.all(
      vols.map(async (v, i) => {
        const t = Date.now();
        await nodeStage(n, v, pcs[i]!, 'ext4', { timeoutMs: 600_000, stagingDirMade: true });
        each.push(Date.now() - t);
      }),
    );
    const stageWall = Date.now() - t0;
    let sessions = 0;
    let maps = 0;
    for (const v of vols) {
      sessions += await sessionsTo(g, v.volume_context.targetIqn!);
      const m = await mapOf(g, v.volume_context.wwid!.toLowerCase());
      if (m && m.paths.length === 2 && m.paths.every((p) => p.dm === 'active')) maps++;
    }
    const parLines = callLines(await n.log());
    const parStage = vols.map((v) => parLines.get('NodeStageVolume')?.get(v.volume_id)).filter((l): l is CallLine => l !== undefined);
    const s = stats(each);
    out(`\n${parallel} ext4 volumes (256 MiB) staged in parallel on one guest, 2 paths each`);
    out('| | wall (all) | per call median | per call max |');
    out('|---|---|---|---|');
    out(`| NodeStage | ${fmt(stageWall)} | ${fmt(s.median)} | ${fmt(s.max)} |`);
    const eachUn: number[] = [];
    t0 = Date.now();
    const unstaged = await Promise.allSettled(
      vols.map(async (v) => {
        const t = Date.now();
        await nodeUnstage(n, v);
        eachUn.push(Date.now() - t);
      }),
    );
    const unstageWall = Date.now() - t0;
    const unstageFailures = unstaged.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : []));
    const u = stats(eachUn);
    out(`| NodeUnstage | ${fmt(unstageWall)} | ${fmt(u.median)} | ${fmt(u.max)} |`);
    out(`multipath maps up with 2 active paths: ${maps} of ${parallel}; iSCSI sessions: ${sessions} (expected ${2 * parallel})`);
    if (parStage.length > 0) out(`NodeStage steps (medians): ${stepMedians(parStage)}`);
    if (unstageFailures.length > 0) throw new Error(`${unstageFailures.length} parallel unstage(s) failed: ${unstageFailures.join('; ')}`);
    for (const v of vols) {
      await checkClean(n, v);
      await controllerUnpublish(ctl, v, n);
      await call(ctl.controller, 'DeleteVolume', { volume_id: v.volume_id });
    }
    result.parallelRun = { stageWall, unstageWall, each, eachUn, maps, sessions, stage: parStage };
    if (sessions !== 2 * parallel || maps !== parallel)
      throw new Error(`${maps} maps, ${sessions} sessions for ${parallel} volumes staged on 2 paths`);
    out(
      `\nload average after: ${loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')}`,
    );
  } finally {
    await bed.close();
  }
  if (values.json) writeFileSync(values.json, JSON.stringify(result, null, 2));
  return 0;
}

runBench('bench', main);
