// Lunar vs tgt on loopback, with the same initiator (bench/iscsi-load.c over libiscsi), the same
// backing store kind (a sparse file in the same directory, same size, filled before reading) and,
// by default, tgt configured with the login parameters Lunar negotiated.
//
// Figures: 4 KiB random read and write IOPS at QD1 and QD32, 1 MiB sequential read and write MB/s
// at QD8. Each is run `runs` times for `seconds`, alternating the two targets run by run so that
// both see the same background noise; the median and the spread (max-min over median) are shown.
// Every run also records how busy the whole machine was (/proc/stat), and the two-session row gets a
// Lunar-only ceiling: two separate `lunar serve` processes, one session each (driven by one
// iscsi-load process as the row is, and by one iscsi-load per Lunar process).

import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { cpus, hostname, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  cacheDir,
  ensureLoadTool,
  fillLu,
  probeLogin,
  runLoad,
  runLoadParallel,
  verifyLu,
  type LoadResult,
  type LoadSpec,
} from './load.js';
import { crossCheck, type CrossCheck } from './crosscheck.js';
import { newestProfile, readProfileSummary } from './profile.js';
import { startLunar, type LunarTarget } from './lunar.js';
import { mib, readMemory, sampleMaxRss } from './memory.js';
import { startTgt, type TgtTarget } from './tgt.js';
import {
  busyPercentBetween,
  cpuBusyPercent,
  cpuJiffies,
  exec,
  fmtNum,
  loadAverage,
  markdownTable,
  summarize,
  type Summary,
} from './util.js';

/** Loopback ports of the iSCSI bench (13360-13379; other tests and benches use other ranges). */
export const LUNAR_PORT = 13360;
export const TGT_PORT = 13361;
export const TGT_CONTROL_PORT = 13370;
/** The second `lunar serve` of the two-session ceiling. */
export const LUNAR_CEILING_PORT = 13362;

/** The one-session and two-session rows that the per-session table compares. */
const ONE_SESSION_KEY = 'randread-4k-qd32';
const TWO_SESSIONS_KEY = 'randread-4k-qd32-2s';

export interface Workload extends LoadSpec {
  readonly key: string;
  readonly label: string;
  readonly unit: 'IOPS' | 'MB/s';
  /** Goal for Lunar/tgt of the median (issue 11), when the row has one. */
  readonly goal?: number;
}

export const WORKLOADS: readonly Workload[] = [
  { key: 'randread-4k-qd1', label: '4 KiB random read, QD1', op: 'read', pattern: 'rand', bytes: 4096, qd: 1, unit: 'IOPS', goal: 1.0 },
  { key: 'randread-4k-qd32', label: '4 KiB random read, QD32', op: 'read', pattern: 'rand', bytes: 4096, qd: 32, unit: 'IOPS', goal: 1.2 },
  { key: 'randwrite-4k-qd1', label: '4 KiB random write, QD1', op: 'write', pattern: 'rand', bytes: 4096, qd: 1, unit: 'IOPS', goal: 1.0 },
  {
    key: 'randwrite-4k-qd32',
    label: '4 KiB random write, QD32',
    op: 'write',
    pattern: 'rand',
    bytes: 4096,
    qd: 32,
    unit: 'IOPS',
    goal: 1.2,
  },
  {
    key: 'seqread-1m-qd8',
    label: '1 MiB sequential read, QD8',
    op: 'read',
    pattern: 'seq',
    bytes: 1 << 20,
    qd: 8,
    unit: 'MB/s',
    goal: 1.5,
  },
  {
    key: 'seqwrite-1m-qd8',
    label: '1 MiB sequential write, QD8',
    op: 'write',
    pattern: 'seq',
    bytes: 1 << 20,
    qd: 8,
    unit: 'MB/s',
    goal: 1.5,
  },
  // The two paths of a multipath map: two sessions (two I_T nexuses) to one LU, QD32 each.
  {
    key: 'randread-4k-qd32-2s',
    label: '4 KiB random read, QD32, 2 sessions to one LU',
    op: 'read',
    pattern: 'rand',
    bytes: 4096,
    qd: 32,
    sessions: 2,
    unit: 'IOPS',
    goal: 1.2,
  },
];

/** Goals that are not a Lunar/tgt ratio of a throughput row (issue 11). */
export const GOALS = {
  /** Lunar p99 at QD32 at most this many times tgt's. */
  p99VsTgt: 1.5,
  /** Lunar CPU time per command at most this many times tgt's. */
  cpuPerCommandVsTgt: 1.0,
  /** Two sessions to one LU: at least this many times one session's IOPS (both cores used). */
  twoSessionsVsOne: 1.5,
  /** Lunar's RSS during the scale run, MiB. */
  scaleRssMiB: 300,
} as const;

/** The scale rows: many sessions over many LUs, 4 KiB random reads. */
export interface ScaleOptions {
  readonly luns: number;
  readonly sessionsPerLu: number;
  /** Commands in flight per session. */
  readonly qd: number;
  /** Size of each LU (filled before the run). */
  readonly luBytes: number;
  /** iscsi-load processes sharing the sessions (the initiator side can then use every core). */
  readonly loadProcesses: number;
}

export const DEFAULT_SCALE: ScaleOptions = { luns: 64, sessionsPerLu: 4, qd: 4, luBytes: 16 << 20, loadProcesses: 2 };

/** The goal cell of a row that has no goal of its own (every row shows one). */
const NO_GOAL = '—';
/** The tgt cell of a Lunar-only row (the ceiling). */
const NOT_MEASURED = '—';

/** Login keys copied from Lunar's answers to tgt's target settings in "match" mode. */
const MATCHED_KEYS = ['InitialR2T', 'ImmediateData', 'FirstBurstLength', 'MaxBurstLength', 'MaxOutstandingR2T', 'MaxRecvDataSegmentLength'];

export interface BenchOptions {
  readonly seconds: number;
  readonly runs: number;
  readonly targets: readonly ('lunar' | 'tgt')[];
  /** match: tgt gets Lunar's negotiated values (falls back to tgt defaults without Lunar); default: tgt's own. */
  readonly tgtParams: 'match' | 'default';
  readonly size: string;
  readonly sizeBytes: number;
  readonly only?: readonly string[];
  /** Also run iscsi-perf and qemu-img bench once per target. */
  readonly crossCheck?: boolean;
  /** Profile Lunar (node --cpu-prof) into this directory and print its hottest functions. */
  readonly profileDir?: string;
  /** The scale rows (256 sessions over 64 LUs by default); undefined: skipped. */
  readonly scale?: ScaleOptions;
  readonly jsonOut?: string;
  readonly markdownOut?: string;
  readonly log: (line: string) => void;
}

type TargetName = 'Lunar' | 'tgt';

interface Subject {
  readonly name: TargetName;
  readonly pid: number;
  readonly url: string;
  readonly login: Map<string, string>;
  failed?: string;
}

interface RunRecord {
  readonly result: LoadResult;
  /** Target process CPU use during the run, percent of one core. */
  readonly cpuPct: number;
  /** Target process CPU time per completed command, microseconds (less sensitive to noise than IOPS). */
  readonly cpuUsPerIo: number;
  /** Largest VmRSS of the target process during the run, KiB. */
  readonly maxRssKiB: number;
  /** All CPUs busy during the run, percent (100 % = every core; initiator and target share them). */
  readonly machineBusyPct: number;
}

interface Cell {
  runs: RunRecord[];
  error?: string;
}

function value(w: Workload, r: LoadResult): number {
  return w.unit === 'IOPS' ? r.iops : r.MBps;
}

/** utime+stime of a process in clock ticks (proc(5) /proc/<pid>/stat fields 14 and 15). */
function cpuTicks(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

const CLK_TCK = ((): number => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function measure(tool: string, s: Subject, w: Workload, seconds: number): Promise<RunRecord> {
  return measureWith([s.pid], () => runLoad(tool, s.url, w, seconds));
}

/**
 * Runs a load and records meanwhile the target processes' CPU time (summed), the largest RSS of any
 * of them, and how busy the whole machine was: on this 2-vCPU VM the initiator shares the cores, so
 * a target can only use what the initiator leaves (one session already kept it 97–98 % busy).
 */
async function measureWith(pids: readonly number[], load: () => Promise<LoadResult>): Promise<RunRecord> {
  const ticks = (): number => pids.reduce((a, p) => a + cpuTicks(p), 0);
  const t0 = ticks();
  const machine0 = cpuJiffies();
  const wall0 = process.hrtime.bigint();
  const rss = pids.map((p) => sampleMaxRss(p, 100));
  const maxRss = (): number => Math.max(...rss.map((r) => r.stop()));
  try {
    const result = await load();
    const wall = Number(process.hrtime.bigint() - wall0) / 1e9;
    const cpuSec = (ticks() - t0) / CLK_TCK;
    return {
      result,
      cpuPct: (cpuSec / wall) * 100,
      cpuUsPerIo: (cpuSec / Math.max(1, result.ios)) * 1e6,
      maxRssKiB: maxRss(),
      machineBusyPct: busyPercentBetween(machine0, cpuJiffies()),
    };
  } finally {
    maxRss();
  }
}

/** The progress line of one run. */
function fmtRun(w: Workload, rec: RunRecord): string {
  return (
    `${fmtNum(value(w, rec.result))} ${w.unit}, p50 ${rec.result.latUs.p50} us, p99 ${rec.result.latUs.p99} us, ` +
    `target CPU ${fmtNum(rec.cpuPct)}%, machine busy ${fmtNum(rec.machineBusyPct)}%`
  );
}

/** One run as written to the JSON results. */
function runJson(w: Workload, r: RunRecord): Record<string, unknown> {
  return {
    value: value(w, r.result),
    ...r.result,
    cpuPct: r.cpuPct,
    cpuUsPerIo: r.cpuUsPerIo,
    maxRssKiB: r.maxRssKiB,
    machineBusyPct: r.machineBusyPct,
  };
}

/**
 * The ceiling of the two-session row: a second `lunar serve` (own data directory, own port, its own LU
 * of the same size, filled and checked the same way) beside the first, one session to each. The two
 * processes share nothing, so this is the upper bound of any threading design inside one process on
 * this machine: measured by hand, two separate processes reached only 0.8–1.3× one session, because
 * one session already kept both vCPUs 97–98 % busy (initiator and target share them).
 */
interface Ceiling {
  readonly second: LunarTarget;
  readonly pids: readonly number[];
  readonly urls: readonly string[];
}

async function startCeiling(
  tool: string,
  first: LunarTarget,
  dataDir: string,
  size: string,
  log: (line: string) => void,
): Promise<Ceiling> {
  const second = await startLunar({ dataDir, portal: `127.0.0.1:${LUNAR_CEILING_PORT}`, size });
  try {
    const f = await fillLu(tool, second.url);
    const v = await verifyLu(tool, second.url, 4000);
    if (v.mismatches > 0) throw new Error(`read back ${v.mismatches} of ${v.checked} random 4 KiB blocks wrong after the fill`);
    log(
      `Lunar (ceiling, second process): pid ${second.pid}, ${second.url}, filled ${fmtNum((f.blocks * f.blockSize) / 2 ** 20)} MiB ` +
        `in ${f.seconds.toFixed(1)} s, read back ${v.checked} random 4 KiB blocks, all match`,
    );
    return { second, pids: [first.pid, second.pid], urls: [first.url, second.url] };
  } catch (e) {
    await second.stop();
    throw e;
  }
}

/** One way of driving the ceiling's two sessions (one to each Lunar process, QD32 each). */
interface CeilingShape {
  /** Suffix of the two-session row's key in the JSON results. */
  readonly key: string;
  /** Names the rows of the per-session table. */
  readonly label: string;
  readonly ratioLabel: string;
  /** The goal-column cell of the ratio row: what the ratio tells. */
  readonly reading: string;
  readonly load: (tool: string, c: Ceiling, w: Workload, seconds: number) => Promise<LoadResult>;
}

const CEILING_SHAPES: readonly CeilingShape[] = [
  // As the two-session row is driven: one iscsi-load process holding both sessions.
  {
    key: 'two-processes',
    label: 'two separate Lunar processes',
    ratioLabel: 'ceiling: separate processes / one session',
    reading: 'same loader as two sessions',
    load: (tool, c, w, seconds) => runLoad(tool, c.urls, { ...w, sessions: 1 }, seconds),
  },
  // One iscsi-load process per Lunar process: with one loader for both, the machine stayed 79–83 %
  // busy (0.65× one session: three processes handing work to each other on two vCPUs); with one
  // each it was 98–100 % busy (0.97×), so this shape is the bound the CPUs set.
  {
    key: 'two-processes-two-loaders',
    label: 'two separate Lunar processes, one iscsi-load each',
    ratioLabel: 'ceiling, one iscsi-load each / one session',
    reading: 'the most one process can reach here',
    load: (tool, c, w, seconds) =>
      runLoadParallel(
        tool,
        c.urls.map((u) => [u]),
        { ...w, sessions: 1 },
        seconds,
      ),
  },
];

/** One run of each ceiling shape, in alternating order run by run (as the targets alternate). */
async function runCeiling(
  tool: string,
  c: Ceiling,
  cells: ReadonlyMap<string, Cell>,
  w: Workload,
  seconds: number,
  run: number,
  log: (line: string) => void,
): Promise<void> {
  const shapes = run % 2 === 0 ? CEILING_SHAPES : [...CEILING_SHAPES].reverse();
  for (const sh of shapes) {
    const cell = cells.get(sh.key)!;
    if (cell.error) continue;
    if (!c.pids.every(alive)) {
      cell.error = 'a Lunar process exited';
      continue;
    }
    try {
      const rec = await measureWith(c.pids, () => sh.load(tool, c, w, seconds));
      cell.runs.push(rec);
      log(`  ${w.key} Lunar, ${sh.label}, run ${run + 1}: ${fmtRun(w, rec)}`);
    } catch (e) {
      cell.error = e instanceof Error ? e.message : String(e);
      log(`  ${w.key} Lunar, ${sh.label}, run ${run + 1}: FAILED ${cell.error}`);
    }
  }
}

/** "median (min-max)" */
function fmtSummary(s: Summary): string {
  return s.runs.length > 1 ? `${fmtNum(s.median)} (${fmtNum(s.min)}–${fmtNum(s.max)})` : fmtNum(s.median);
}

function ratioText(a: number | undefined, b: number | undefined): string {
  return a !== undefined && b !== undefined && Number.isFinite(a / b) && b > 0 ? (a / b).toFixed(2) : 'n/a';
}

/** Median of `f` over a cell's runs; undefined without runs. */
function cellMedian(c: Cell, f: (r: RunRecord) => number): number | undefined {
  return c.runs.length ? summarize(c.runs.map(f)).median : undefined;
}

/**
 * The per-session table: one session, two sessions to one LU and their ratio (the goal); with the
 * ceiling, the same two sessions on two separate Lunar processes (both shapes), and how busy the machine was, so
 * that the goal can be read against what this machine allows at all.
 */
function pathRows(
  subjects: readonly Subject[],
  cellOf: (w: Workload, s: Subject) => Cell,
  one: Workload | undefined,
  two: Workload,
  ceiling: ReadonlyMap<string, Cell> | undefined,
): string[][] {
  const iops = (r: RunRecord): number => r.result.iops;
  const busy = (r: RunRecord): number => r.machineBusyPct;
  const at = (w: Workload | undefined, s: Subject, f: (r: RunRecord) => number): number | undefined =>
    w ? cellMedian(cellOf(w, s), f) : undefined;
  const fmt = (x: number | undefined): string => fmtNum(x ?? Number.NaN);
  const rows = [
    ['one session (IOPS)', ...subjects.map((s) => fmt(at(one, s, iops))), NO_GOAL],
    ['two sessions to one LU (IOPS)', ...subjects.map((s) => fmt(at(two, s, iops))), NO_GOAL],
    [
      'two sessions / one session',
      ...subjects.map((s) => ratioText(at(two, s, iops), at(one, s, iops))),
      `Lunar ≥ ${GOALS.twoSessionsVsOne.toFixed(1)}`,
    ],
    ['target CPU% (two sessions)', ...subjects.map((s) => fmt(at(two, s, (r) => r.cpuPct))), '(200 % = both cores)'],
  ];
  const busyOne = ['machine busy % (one session)', ...subjects.map((s) => fmt(at(one, s, busy))), '(100 % = every core busy)'];
  if (!ceiling) return [...rows, busyOne];
  const per = CEILING_SHAPES.map((sh) => ({ sh, c: ceiling.get(sh.key) ?? { runs: [] } }));
  const lunarOnly = (c: Cell, f: (s: Subject) => string): string[] =>
    subjects.map((s) => (s.name !== 'Lunar' ? NOT_MEASURED : c.runs.length === 0 && c.error !== undefined ? 'FAILED' : f(s)));
  return [
    ...rows,
    ...per.flatMap(({ sh, c }) => [
      [`two sessions, ${sh.label} (IOPS)`, ...lunarOnly(c, () => fmt(cellMedian(c, iops))), NO_GOAL],
      [sh.ratioLabel, ...lunarOnly(c, (s) => ratioText(cellMedian(c, iops), at(one, s, iops))), sh.reading],
    ]),
    busyOne,
    ...per.map(({ sh, c }) => [
      `machine busy % (${sh.label})`,
      ...lunarOnly(c, () => fmt(cellMedian(c, busy))),
      '(100 % = every core busy)',
    ]),
    ...per.map(({ sh, c }) => [
      `target CPU% (${sh.label})`,
      ...lunarOnly(c, () => fmt(cellMedian(c, (r) => r.cpuPct))),
      '(200 % = both cores)',
    ]),
  ];
}

export async function runIscsiBench(opts: BenchOptions): Promise<number> {
  const log = opts.log;
  const t0 = Date.now();
  const workloads = opts.only ? WORKLOADS.filter((w) => opts.only!.includes(w.key)) : WORKLOADS;
  if (workloads.length === 0) throw new Error(`no workload matches ${opts.only?.join(',')}`);

  const busyBefore = await cpuBusyPercent(1000);
  const loadBefore = loadAverage();
  log(`host: ${hostname()}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), kernel ${release()}, node ${process.version}`);
  log(`noise before start: load average ${loadBefore.join(' ')}; CPU busy over 1 s: ${fmtNum(busyBefore)}% of all cores`);

  const tool = await ensureLoadTool();
  const dataDir = mkdtempSync(join(tmpdir(), 'lunar-bench-'));
  const dirs = [dataDir];
  // The LUs are filled (2-3 x size on disk): remove them even when the run is interrupted.
  const removeDataDir = (): void => dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
  process.once('exit', removeDataDir);
  const memory: Record<string, string> = {};
  let lunar: LunarTarget | undefined;
  let tgt: TgtTarget | undefined;
  let ceiling: Ceiling | undefined;
  const ceilingCells = new Map<string, Cell>(CEILING_SHAPES.map((sh) => [sh.key, { runs: [] }]));
  const subjects: Subject[] = [];
  const notes: string[] = [];
  try {
    // --- Lunar
    if (opts.targets.includes('lunar')) {
      try {
        lunar = await startLunar({
          dataDir,
          portal: `127.0.0.1:${LUNAR_PORT}`,
          size: opts.size,
          ...(opts.profileDir ? { cpuProfileDir: opts.profileDir } : {}),
        });
        memory['idle after volume create'] = mib(readMemory(lunar.pid).rssKiB);
        subjects.push({ name: 'Lunar', pid: lunar.pid, url: lunar.url, login: await probeLogin(tool, lunar.url) });
        log(
          `Lunar: pid ${lunar.pid}, ${lunar.url}, UV_THREADPOOL_SIZE=${lunar.threadPoolSize}, backing file ${lunar.backingFile ?? '(not found)'}`,
        );
        notes.push(
          `Lunar started as \`node dist/src/cli.js serve\` with UV_THREADPOOL_SIZE=${lunar.threadPoolSize}, LUNAR_LOG_LEVEL=${process.env['LUNAR_LOG_LEVEL'] ?? 'info'}`,
        );
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        log(`Lunar unavailable: ${msg}`);
        notes.push(`Lunar could not be started: ${msg.split('\n')[0]}`);
      }
    }
    // --- tgt, backing file beside Lunar's
    if (opts.targets.includes('tgt')) {
      const dir = lunar?.backingFile ? dirname(lunar.backingFile) : dataDir;
      const file = join(dir, 'tgt-bench.img');
      const size = lunar?.backingFile ? statSync(lunar.backingFile).size : opts.sizeBytes;
      writeFileSync(file, '');
      execFileSync('truncate', ['-s', String(size), file]);
      const params = new Map<string, string>();
      const lunarLogin = subjects.find((s) => s.name === 'Lunar')?.login;
      if (opts.tgtParams === 'match' && lunarLogin) {
        for (const k of MATCHED_KEYS) {
          const v = lunarLogin.get(k);
          if (v !== undefined && !/^(Irrelevant|NotUnderstood|Reject)$/.test(v)) params.set(k, v);
        }
        // Data-In segment size: let tgt send what the initiator declared it can receive (libiscsi: 262144).
        params.set('MaxXmitDataSegmentLength', '262144');
      } else if (opts.tgtParams === 'match') {
        notes.push('tgt ran with its default login parameters (no Lunar negotiation to match)');
      }
      tgt = await startTgt({
        port: TGT_PORT,
        controlPort: TGT_CONTROL_PORT,
        backingFile: file,
        iqn: 'iqn.2026-11.io.lunar.bench:tgt',
        thin: true,
        params,
      });
      subjects.push({ name: 'tgt', pid: tgt.pid, url: tgt.url, login: await probeLogin(tool, tgt.url) });
      log(
        `tgt: ${tgt.version}, pid ${tgt.pid}, ${tgt.url}, backing file ${file} (${size} bytes, sparse, rdwr, thin_provisioning=1)` +
          (params.size ? `, params ${[...params].map(([k, v]) => `${k}=${v}`).join(' ')}` : ', default params'),
      );
    }
    if (subjects.length === 0) throw new Error('no target to measure');

    // --- negotiated login parameters, side by side
    const keys = [...new Set(subjects.flatMap((s) => [...s.login.keys()]))].filter((k) => k !== 'TargetPortalGroupTag');
    const loginTable = markdownTable(
      ['login key (target answer)', ...subjects.map((s) => s.name)],
      keys.map((k) => [k, ...subjects.map((s) => s.login.get(k) ?? '(not sent)')]),
    );
    log('negotiated login parameters (libiscsi LIBISCSI_DEBUG=10, initiator defaults):\n' + loginTable);
    if (subjects.length === 2) {
      // TargetAlias is informational (RFC 7143 §13.6) and does not change the data path.
      const diff = keys.filter((k) => k !== 'TargetAlias' && subjects[0]!.login.get(k) !== subjects[1]!.login.get(k));
      if (diff.length) notes.push(`login keys that differ: ${diff.join(', ')}`);
    }

    // --- fill so reads hit data, and check that reads return it
    for (const s of subjects) {
      try {
        const f = await fillLu(tool, s.url);
        log(
          `${s.name}: filled ${fmtNum((f.blocks * f.blockSize) / 2 ** 20)} MiB in ${f.seconds.toFixed(1)} s ` +
            `(${fmtNum(f.MBps)} MB/s, first write of every block)`,
        );
        const v = await verifyLu(tool, s.url, 4000);
        if (v.mismatches > 0) throw new Error(`read back ${v.mismatches} of ${v.checked} random 4 KiB blocks wrong after the fill`);
        log(`${s.name}: read back ${v.checked} random 4 KiB blocks, all match the fill pattern`);
      } catch (e) {
        s.failed = e instanceof Error ? e.message : String(e);
        log(`${s.name}: fill/verify failed: ${s.failed}`);
      }
    }
    if (lunar) memory['after fill'] = mib(readMemory(lunar.pid).rssKiB);

    // --- the two-session ceiling: a second Lunar process, only when the two-session row runs
    const lunarSubject = subjects.find((s) => s.name === 'Lunar');
    if (lunar && lunarSubject && !lunarSubject.failed && workloads.some((w) => w.key === TWO_SESSIONS_KEY)) {
      const dir = mkdtempSync(join(tmpdir(), 'lunar-bench-ceiling-'));
      dirs.push(dir);
      try {
        ceiling = await startCeiling(tool, lunar, dir, opts.size, log);
      } catch (e) {
        const msg = `second Lunar process: ${e instanceof Error ? e.message : String(e)}`;
        for (const c of ceilingCells.values()) c.error = msg;
        log(`Lunar (ceiling) unavailable: ${msg}`);
      }
    }

    // --- measurements, targets alternating run by run
    const cells = new Map<string, Cell>();
    const cell = (w: Workload, s: Subject): Cell => {
      const k = `${w.key}/${s.name}`;
      let c = cells.get(k);
      if (!c) cells.set(k, (c = { runs: [] }));
      return c;
    };
    for (const w of workloads) {
      for (let r = 0; r < opts.runs; r++) {
        const order = r % 2 === 0 ? subjects : [...subjects].reverse();
        for (const s of order) {
          const c = cell(w, s);
          if (s.failed || c.error) continue;
          if (!alive(s.pid)) {
            s.failed = 'process exited';
            continue;
          }
          try {
            const rec = await measure(tool, s, w, opts.seconds);
            c.runs.push(rec);
            log(`  ${w.key} ${s.name} run ${r + 1}: ${fmtRun(w, rec)}`);
          } catch (e) {
            c.error = e instanceof Error ? e.message : String(e);
            log(`  ${w.key} ${s.name} run ${r + 1}: FAILED ${c.error}`);
          }
          // Right after Lunar's own two-session run, so that both see the same background load.
          if (ceiling && s.name === 'Lunar' && w.key === TWO_SESSIONS_KEY) {
            await runCeiling(tool, ceiling, ceilingCells, w, opts.seconds, r, log);
          }
        }
      }
    }
    if (lunar && alive(lunar.pid)) {
      const m = readMemory(lunar.pid);
      const qd32 = workloads.filter((w) => w.qd === 32).flatMap((w) => cell(w, subjects[0]!).runs.map((r) => r.maxRssKiB));
      if (qd32.length) memory['max during QD32 runs'] = mib(Math.max(...qd32));
      memory['at end (VmRSS)'] = mib(m.rssKiB);
      memory['peak (VmHWM)'] = mib(m.hwmKiB);
    }

    // --- scale: many sessions over many LUs
    const scaleRuns = new Map<TargetName, RunRecord | string>();
    if (opts.scale) {
      const sc = opts.scale;
      for (const s of subjects) {
        if (s.failed || !alive(s.pid)) continue;
        try {
          const urls: string[] = [];
          for (let i = 0; i < sc.luns; i++) {
            if (s.name === 'Lunar') urls.push(await lunar!.createVolume(`scale-${i}`, sc.luBytes));
            else {
              const file = join(lunar?.backingFile ? dirname(lunar.backingFile) : dataDir, `tgt-scale-${i}.img`);
              writeFileSync(file, '');
              execFileSync('truncate', ['-s', String(sc.luBytes), file]);
              urls.push(await tgt!.addTarget(i + 2, `iqn.2026-11.io.lunar.bench:tgt-scale-${i}`, file));
            }
          }
          for (let i = 0; i < urls.length; i += 8) await Promise.all(urls.slice(i, i + 8).map((u) => fillLu(tool, u)));
          const groups = Array.from({ length: sc.loadProcesses }, (_, g) => urls.filter((_u, i) => i % sc.loadProcesses === g));
          const spec: LoadSpec = { op: 'read', pattern: 'rand', bytes: 4096, qd: sc.qd, sessions: sc.sessionsPerLu };
          const rec = await measureWith([s.pid], () => runLoadParallel(tool, groups, spec, opts.seconds));
          scaleRuns.set(s.name, rec);
          log(
            `  scale ${s.name}: ${rec.result.sessions} sessions, ${fmtNum(rec.result.iops)} IOPS, per session ` +
              `${fmtNum(rec.result.sessionIops.min)}–${fmtNum(rec.result.sessionIops.max)}, max RSS ${mib(rec.maxRssKiB)}`,
          );
        } catch (e) {
          const msg = e instanceof Error ? e.message : String(e);
          scaleRuns.set(s.name, msg);
          log(`  scale ${s.name}: FAILED ${msg}`);
        }
      }
    }

    // --- optional cross-check with other initiators
    const checks = new Map<TargetName, CrossCheck[]>();
    if (opts.crossCheck) {
      for (const s of subjects) {
        if (s.failed || !alive(s.pid)) continue;
        try {
          checks.set(s.name, await crossCheck(s.url, opts.seconds, lunar?.backingFile ? statSync(lunar.backingFile).size : opts.sizeBytes));
          log(
            `  cross-check ${s.name}: ${checks
              .get(s.name)!
              .map((c) => `${c.tool} ${fmtNum(c.value)} ${c.unit}`)
              .join(', ')}`,
          );
        } catch (e) {
          notes.push(`cross-check ${s.name} failed: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
    }

    // --- report
    const loadAfter = loadAverage();
    const names = subjects.map((s) => s.name);
    const ratioOk = names.length === 2 && names[0] === 'Lunar';
    const header = [
      'workload',
      'unit',
      ...names.flatMap((n) => [`${n} median (min–max)`]),
      ...(ratioOk ? ['Lunar/tgt', 'goal'] : []),
      ...names.map((n) => `${n} CPU%`),
      ...names.map((n) => `${n} machine busy %`),
    ];
    const rows: string[][] = [];
    const latRows: string[][] = [];
    const cpuRows: string[][] = [];
    const json: Record<string, unknown> = {};
    const medianOf = (w: Workload, s: Subject, f: (r: RunRecord) => number): number | undefined => cellMedian(cell(w, s), f);
    for (const w of workloads) {
      const sums = subjects.map((s) => {
        const c = cell(w, s);
        return c.runs.length ? { s: summarize(c.runs.map((r) => value(w, r.result))), c } : { s: undefined, c };
      });
      const row = [w.label, w.unit, ...sums.map(({ s, c }) => (s ? fmtSummary(s) : c.error ? 'FAILED' : 'n/a'))];
      if (ratioOk) row.push(ratioText(sums[0]!.s?.median, sums[1]!.s?.median), w.goal !== undefined ? `≥ ${w.goal.toFixed(1)}` : NO_GOAL);
      row.push(...sums.map(({ c }) => (c.runs.length ? fmtNum(summarize(c.runs.map((r) => r.cpuPct)).median) : 'n/a')));
      row.push(...sums.map(({ c }) => (c.runs.length ? fmtNum(summarize(c.runs.map((r) => r.machineBusyPct)).median) : 'n/a')));
      rows.push(row);
      const lat = subjects.map((s) => ({
        p50: medianOf(w, s, (r) => r.result.latUs.p50),
        p99: medianOf(w, s, (r) => r.result.latUs.p99),
        p999: medianOf(w, s, (r) => r.result.latUs.p999),
      }));
      latRows.push([
        w.label,
        ...lat.flatMap((l) => [l.p50, l.p99, l.p999].map((x) => (x === undefined ? 'n/a' : fmtNum(x)))),
        ...(ratioOk ? [ratioText(lat[0]!.p99, lat[1]!.p99), w.qd === 32 ? `≤ ${GOALS.p99VsTgt.toFixed(1)}` : NO_GOAL] : []),
      ]);
      const cpuMed = subjects.map((s) => medianOf(w, s, (r) => r.cpuUsPerIo));
      cpuRows.push([
        w.label,
        ...cpuMed.map((x) => (x === undefined ? 'n/a' : fmtNum(x))),
        ...(ratioOk ? [ratioText(cpuMed[0], cpuMed[1]), `≤ ${GOALS.cpuPerCommandVsTgt.toFixed(1)}`] : []),
      ]);
      json[w.key] = Object.fromEntries(
        subjects.map((s, i) => [
          s.name,
          {
            unit: w.unit,
            runs: cell(w, s).runs.map((r) => runJson(w, r)),
            summary: sums[i]!.s ?? null,
            error: cell(w, s).error ?? null,
          },
        ]),
      );
    }
    const ceilingRan = ceiling !== undefined || [...ceilingCells.values()].some((c) => c.error !== undefined);
    if (ceilingRan) {
      const w2 = WORKLOADS.find((w) => w.key === TWO_SESSIONS_KEY)!;
      for (const sh of CEILING_SHAPES) {
        const c = ceilingCells.get(sh.key)!;
        json[`${TWO_SESSIONS_KEY}-${sh.key}`] = {
          Lunar: {
            unit: w2.unit,
            runs: c.runs.map((r) => runJson(w2, r)),
            summary: c.runs.length ? summarize(c.runs.map((r) => value(w2, r.result))) : null,
            error: c.error ?? null,
          },
        };
      }
    }
    const table = markdownTable(header, rows);
    const cpuTable = markdownTable(['target CPU time per command (us)', ...names, ...(ratioOk ? ['Lunar/tgt', 'goal'] : [])], cpuRows);
    const latTable = markdownTable(
      [
        'workload (latency, us)',
        ...names.flatMap((n) => [`${n} p50`, `${n} p99`, `${n} p99.9`]),
        ...(ratioOk ? ['p99 Lunar/tgt', 'goal'] : []),
      ],
      latRows,
    );
    // Two sessions to one LU against one session, per target: does the second path add throughput?
    const one = workloads.find((w) => w.key === ONE_SESSION_KEY);
    const two = workloads.find((w) => w.key === TWO_SESSIONS_KEY);
    const pathTable = two
      ? markdownTable(
          ['4 KiB random read, QD32 per session', ...names, 'goal'],
          pathRows(subjects, cell, one, two, ceilingRan ? ceilingCells : undefined),
        )
      : '';
    let scaleTable = '';
    if (opts.scale && scaleRuns.size > 0) {
      const sc = opts.scale;
      const rec = (n: TargetName): RunRecord | undefined => {
        const r = scaleRuns.get(n);
        return typeof r === 'object' ? r : undefined;
      };
      const cellOf = (n: TargetName, f: (r: RunRecord) => string): string => {
        const r = scaleRuns.get(n);
        return r === undefined ? 'n/a' : typeof r === 'string' ? 'FAILED' : f(r);
      };
      const lr = rec('Lunar');
      const tr = rec('tgt');
      scaleTable = markdownTable(
        [
          `scale: ${sc.luns} LUs × ${sc.sessionsPerLu} sessions, QD${sc.qd} each, 4 KiB random read`,
          ...names,
          ...(ratioOk ? ['Lunar/tgt'] : []),
          'goal',
        ],
        [
          [
            'sessions',
            ...names.map((n) => cellOf(n, (r) => String(r.result.sessions))),
            ...(ratioOk ? [''] : []),
            `${sc.luns * sc.sessionsPerLu}`,
          ],
          [
            'aggregate IOPS',
            ...names.map((n) => cellOf(n, (r) => fmtNum(r.result.iops))),
            ...(ratioOk ? [ratioText(lr?.result.iops, tr?.result.iops)] : []),
            NO_GOAL,
          ],
          [
            'IOPS per session, min / max',
            ...names.map((n) => cellOf(n, (r) => `${fmtNum(r.result.sessionIops.min)} / ${fmtNum(r.result.sessionIops.max)}`)),
            ...(ratioOk ? [''] : []),
            'no session starved',
          ],
          [
            'p99 / p99.9 latency (us)',
            ...names.map((n) => cellOf(n, (r) => `${fmtNum(r.result.latUs.p99)} / ${fmtNum(r.result.latUs.p999)}`)),
            ...(ratioOk ? [ratioText(lr?.result.latUs.p99, tr?.result.latUs.p99)] : []),
            NO_GOAL,
          ],
          [
            'target CPU time per command (us)',
            ...names.map((n) => cellOf(n, (r) => fmtNum(r.cpuUsPerIo))),
            ...(ratioOk ? [ratioText(lr?.cpuUsPerIo, tr?.cpuUsPerIo)] : []),
            `≤ ${GOALS.cpuPerCommandVsTgt.toFixed(1)}`,
          ],
          [
            'target RSS, max during the run (MiB)',
            ...names.map((n) => cellOf(n, (r) => fmtNum(r.maxRssKiB / 1024))),
            ...(ratioOk ? [''] : []),
            `Lunar < ${GOALS.scaleRssMiB}`,
          ],
        ],
      );
      json['scale'] = { options: sc, ...Object.fromEntries(scaleRuns) };
    }
    const checkRows = (checks.get(subjects[0]!.name) ?? []).map((c, i) => {
      const vals = subjects.map((s) => checks.get(s.name)?.[i]?.value);
      const ratio = ratioOk && vals[0] !== undefined && vals[1] !== undefined ? [(vals[0] / vals[1]).toFixed(2)] : ratioOk ? ['n/a'] : [];
      return [`${c.tool}: ${c.workload}`, c.unit, ...vals.map((v) => (v === undefined ? 'n/a' : fmtNum(v))), ...ratio];
    });
    const checkTable = checkRows.length
      ? markdownTable(['cross-check (1 run)', 'unit', ...names, ...(ratioOk ? ['Lunar/tgt'] : [])], checkRows)
      : '';
    const errors = subjects
      .flatMap((s) => (s.failed ? [`${s.name} failed: ${s.failed}`] : []))
      .concat(
        workloads.flatMap((w) =>
          subjects.flatMap((s) => {
            const e = cell(w, s).error;
            return e ? [`${w.key} ${s.name}: ${e}`] : [];
          }),
        ),
      )
      .concat([...scaleRuns].flatMap(([n, r]) => (typeof r === 'string' ? [`scale ${n}: ${r}`] : [])))
      .concat(
        CEILING_SHAPES.flatMap((sh) => {
          const e = ceilingCells.get(sh.key)!.error;
          return e !== undefined ? [`${TWO_SESSIONS_KEY} Lunar, ${sh.label}: ${e}`] : [];
        }),
      );
    const elapsed = (Date.now() - t0) / 1000;
    const noise =
      `load average at start ${loadBefore.join(' ')}, at end ${loadAfter.join(' ')}; ` +
      `CPU busy before start ${fmtNum(busyBefore)}% of ${cpus().length} cores`;
    // Other work on the CPUs at start (busy in the second before, or a high 1-minute load): say so.
    if (loadBefore[0] > 2 || busyBefore > 20) {
      notes.unshift(
        `TAKEN UNDER LOAD (load average ${loadBefore[0]} at start, ${fmtNum(busyBefore)}% CPU busy before start): ` +
          'throughput and latency figures are not final; CPU time per command is the steadier comparison',
      );
    }
    const memLines = Object.entries(memory).map(([k, v]) => `- Lunar RSS ${k}: ${v}`);
    const md = [
      `Measured ${new Date().toISOString()} on ${cpus().length} CPUs, load average at start ${loadBefore.join(' ')} ` +
        `(${fmtNum(busyBefore)}% CPU busy in the second before), ${opts.runs} runs x ${opts.seconds} s per figure, ` +
        `${opts.size} LU, initiator bench/iscsi-load.c (libiscsi ${await libiscsiVersion()}), total ${elapsed.toFixed(0)} s.`,
      '',
      table,
      '',
      latTable,
      '',
      cpuTable,
      '',
      ...(pathTable ? [pathTable, ''] : []),
      ...(scaleTable ? [scaleTable, ''] : []),
      ...(checkTable ? [checkTable, ''] : []),
      'Negotiated login parameters:',
      '',
      loginTable,
      '',
      `Noise: ${noise}.`,
      ...(memLines.length ? ['', ...memLines] : []),
      ...(notes.length ? ['', ...notes.map((n) => `- ${n}`)] : []),
      ...(errors.length ? ['', 'Errors:', ...errors.map((e) => `- ${e}`)] : []),
    ].join('\n');
    log('\n' + md + '\n');
    const jsonPath = opts.jsonOut ?? join(cacheDir(), `iscsi-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    mkdirSync(dirname(jsonPath), { recursive: true });
    writeFileSync(
      jsonPath,
      JSON.stringify(
        {
          date: new Date().toISOString(),
          options: { seconds: opts.seconds, runs: opts.runs, size: opts.size, tgtParams: opts.tgtParams },
          login: Object.fromEntries(subjects.map((s) => [s.name, Object.fromEntries(s.login)])),
          results: json,
          crossCheck: Object.fromEntries(checks),
          memory,
          noise,
          notes,
          errors,
        },
        null,
        2,
      ),
    );
    log(`results: ${jsonPath}`);
    if (opts.markdownOut) {
      writeFileSync(opts.markdownOut, md + '\n');
      log(`markdown: ${opts.markdownOut}`);
    }
    return errors.length ? 1 : 0;
  } finally {
    await tgt?.stop().catch((e: unknown) => log(`tgt stop: ${String(e)}`));
    await ceiling?.second.stop().catch((e: unknown) => log(`lunar (ceiling) stop: ${String(e)}`));
    await lunar?.stop().catch((e: unknown) => log(`lunar stop: ${String(e)}`));
    if (lunar && opts.profileDir) {
      const file = newestProfile(opts.profileDir);
      if (file) {
        const top = readProfileSummary(file, 25);
        log(
          `\nLunar CPU profile ${file} (whole run, self time):\n` +
            markdownTable(
              ['function', 'where', 'self %'],
              top.map((e) => [e.fn, e.where, e.selfPct.toFixed(1)]),
            ),
        );
      } else {
        log(`no CPU profile found in ${opts.profileDir} (did lunar serve exit cleanly?)`);
      }
    }
    process.removeListener('exit', removeDataDir);
    removeDataDir();
  }
}

async function libiscsiVersion(): Promise<string> {
  const r = await exec('dpkg-query', ['-W', '-f=${Version}', 'libiscsi7']);
  return r.code === 0 ? r.stdout.trim() : 'unknown';
}
