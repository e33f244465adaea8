// Driver for bench/iscsi-load.c: builds it once into a cache directory and runs it.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { exec, execOk, repoRoot } from './util.js';

export type LoadOp = 'read' | 'write';
export type LoadPattern = 'rand' | 'seq';

export interface LoadSpec {
  readonly op: LoadOp;
  readonly pattern: LoadPattern;
  readonly bytes: number;
  /** Commands in flight per session. */
  readonly qd: number;
  /** Sessions (I_T nexuses, distinct ISIDs) per URL; default 1. */
  readonly sessions?: number;
}

export interface LoadResult {
  readonly ios: number;
  readonly seconds: number;
  readonly iops: number;
  readonly MBps: number;
  readonly latUs: { readonly mean: number; readonly p50: number; readonly p99: number; readonly p999: number; readonly max: number };
  readonly blocks: number;
  readonly blockSize: number;
  /** Sessions that ran, and the smallest and largest IOPS one of them reached. */
  readonly sessions: number;
  readonly sessionIops: { readonly min: number; readonly max: number };
}

/** Where compiled helpers live (git-ignored). */
export function cacheDir(): string {
  return process.env['LUNAR_BENCH_CACHE'] ?? join(repoRoot, '.cache', 'bench');
}

/**
 * Compiles bench/iscsi-load.c with gcc -O2 against libiscsi (package libiscsi-dev) unless a binary
 * built from the same source is already cached. Returns the binary's path.
 */
export async function ensureLoadTool(): Promise<string> {
  const src = join(repoRoot, 'bench', 'iscsi-load.c');
  const hash = createHash('sha256').update(readFileSync(src)).digest('hex').slice(0, 12);
  const dir = cacheDir();
  const bin = join(dir, `iscsi-load-${hash}`);
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  if (!existsSync('/usr/include/iscsi/iscsi.h')) {
    throw new Error('libiscsi headers missing: apt-get install libiscsi-dev (listed in .ci/packages.txt)');
  }
  const tmp = `${bin}.tmp${process.pid}`;
  await execOk('gcc', ['-O2', '-Wall', '-Wextra', '-o', tmp, src, '-liscsi'], { timeoutMs: 60_000 });
  renameSync(tmp, bin);
  for (const f of readdirSync(dir)) {
    if (f.startsWith('iscsi-load-') && join(dir, f) !== bin) rmSync(join(dir, f), { force: true }); // older builds
  }
  return bin;
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function num(o: Record<string, unknown>, k: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`iscsi-load output: field ${k} missing`);
  return v;
}

/** Parses the JSON line iscsi-load prints. */
export function parseLoadOutput(stdout: string): LoadResult {
  const line = stdout.trim().split('\n').pop() ?? '';
  const o: unknown = JSON.parse(line);
  if (!isRecord(o) || !isRecord(o['lat_us'])) throw new Error(`iscsi-load output not understood: ${line}`);
  const lat = o['lat_us'];
  const per = isRecord(o['session_iops']) ? o['session_iops'] : { min: num(o, 'iops'), max: num(o, 'iops') };
  return {
    ios: num(o, 'ios'),
    seconds: num(o, 'seconds'),
    iops: num(o, 'iops'),
    MBps: num(o, 'MBps'),
    latUs: { mean: num(lat, 'mean'), p50: num(lat, 'p50'), p99: num(lat, 'p99'), p999: num(lat, 'p999'), max: num(lat, 'max') },
    blocks: num(o, 'blocks'),
    blockSize: num(o, 'block_size'),
    sessions: typeof o['sessions'] === 'number' ? o['sessions'] : 1,
    sessionIops: { min: num(per, 'min'), max: num(per, 'max') },
  };
}

function failure(what: string, r: { code: number; signal: string | null; stderr: string }): Error {
  const why = r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
  return new Error(`${what} failed (${why}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
}

/**
 * One timed run: `spec` for `seconds` against `url` (or every URL of a list, each with spec.sessions
 * sessions). Pass `{ ios: N }` instead of seconds for a fixed number of commands.
 */
export async function runLoad(
  tool: string,
  url: string | readonly string[],
  spec: LoadSpec,
  duration: number | { readonly ios: number },
): Promise<LoadResult> {
  const urls = typeof url === 'string' ? url : url.join(',');
  const limit = typeof duration === 'number' ? String(duration) : `ios=${duration.ios}`;
  const args = [urls, spec.op, spec.pattern, String(spec.bytes), String(spec.qd), limit, String(spec.sessions ?? 1)];
  const seconds = typeof duration === 'number' ? duration : 600;
  // Logging in takes a moment per session: 256 sessions need more than the run itself.
  const r = await exec(tool, args, { timeoutMs: (seconds + 60 + (spec.sessions ?? 1) * urls.split(',').length * 0.2) * 1000 });
  if (r.code !== 0) throw failure(`iscsi-load ${args.slice(1).join(' ')}`, r);
  return parseLoadOutput(r.stdout);
}

/**
 * Several iscsi-load processes at once (so that the initiator side can use every core), merged: IOPS
 * and MB/s add up, latency percentiles are the largest of the parts (an upper bound), per-session
 * IOPS the extremes over all parts.
 */
export async function runLoadParallel(
  tool: string,
  urlGroups: readonly (readonly string[])[],
  spec: LoadSpec,
  seconds: number,
): Promise<LoadResult> {
  const parts = await Promise.all(urlGroups.filter((g) => g.length > 0).map((g) => runLoad(tool, g, spec, seconds)));
  if (parts.length === 0) throw new Error('runLoadParallel: no URL');
  const sum = (f: (r: LoadResult) => number): number => parts.reduce((a, r) => a + f(r), 0);
  const max = (f: (r: LoadResult) => number): number => Math.max(...parts.map(f));
  const ios = sum((r) => r.ios);
  return {
    ios,
    seconds: max((r) => r.seconds),
    iops: sum((r) => r.iops),
    MBps: sum((r) => r.MBps),
    latUs: {
      mean: ios > 0 ? sum((r) => r.latUs.mean * r.ios) / ios : 0,
      p50: max((r) => r.latUs.p50),
      p99: max((r) => r.latUs.p99),
      p999: max((r) => r.latUs.p999),
      max: max((r) => r.latUs.max),
    },
    blocks: parts[0]!.blocks,
    blockSize: parts[0]!.blockSize,
    sessions: sum((r) => r.sessions),
    sessionIops: { min: Math.min(...parts.map((r) => r.sessionIops.min)), max: max((r) => r.sessionIops.max) },
  };
}

/** Writes every block of the LU once (1 MiB commands, QD 8, a pattern of the offset) so that later reads hit real data. */
export async function fillLu(tool: string, url: string): Promise<LoadResult> {
  const r = await exec(tool, [url, 'fill', String(1 << 20), '8'], { timeoutMs: 300_000 });
  if (r.code !== 0) throw failure('iscsi-load fill', r);
  return parseLoadOutput(r.stdout);
}

/**
 * Logs in once with LIBISCSI_DEBUG=10 and returns the operational keys the target answered in its
 * Login Responses (libiscsi logs them as "TargetLoginReply: Key=Value").
 */
export async function probeLogin(tool: string, url: string): Promise<Map<string, string>> {
  const r = await exec(tool, [url, 'probe'], { env: { ...process.env, LIBISCSI_DEBUG: '10' }, timeoutMs: 30_000 });
  if (r.code !== 0) throw failure('iscsi-load probe', r);
  const keys = new Map<string, string>();
  for (const m of r.stderr.matchAll(/TargetLoginReply: ([A-Za-z0-9]+)=(\S+)/g)) keys.set(m[1]!, m[2]!);
  return keys;
}

/**
 * Reads `count` random 4 KiB blocks and compares them with the pattern `fillLu` wrote: a target that
 * answers fast with wrong data must not get a figure.
 */
export async function verifyLu(tool: string, url: string, count: number): Promise<{ checked: number; mismatches: number }> {
  const r = await exec(tool, [url, 'verify', String(count)], { timeoutMs: 120_000 });
  if (r.code !== 0 && r.code !== 3) throw failure('iscsi-load verify', r);
  const o: unknown = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
  if (!isRecord(o)) throw new Error(`iscsi-load verify output not understood: ${r.stdout}`);
  return { checked: num(o, 'checked'), mismatches: num(o, 'mismatches') };
}
