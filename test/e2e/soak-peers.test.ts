// Soak (bounded, loopback only): hostile peers against `lunar serve` while a real initiator works.
// A child process (test/support/peer-attackers.ts) holds 2,000 idle connections over 10 source
// addresses, 200 slowloris logins (a Login PDU header, one byte a second) over 4 more, and a fuzzing
// peer (random framed headers in a Normal session to a target of its own, and connections of random
// bytes before login); every connection closed is opened again. Meanwhile qemu-img (libiscsi) writes a
// volume and reads it back, checksummed, round after round. The caps are set so that the per-address
// cap refuses most idle connections and the rest fits under the global cap with room for the initiator.
//
// Printed: the initiator's quiet and under-attack throughput, Lunar's largest RSS and fd count, the log
// size, the counters. Asserted, bounds only: under attack ≥ 0.5 × quiet; RSS ≤ quiet RSS + 128 KiB per
// connection the global cap admits; fds ≤ quiet fds + the global cap + 64; log bytes ≤ what the peer log
// allows per minute (peer-log.ts) plus the initiators' login lines; every read equals what was written.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { Volume } from '../../src/volumes/types.js';
import type { AttackConfig, AttackCounters } from '../support/peer-attackers.js';
import { readyMetricsUrl, startLunarProcess, type LunarProcess } from '../support/lunar.js';
import { parsePrometheusText, sampleValue } from '../support/prom-text.js';

const exec = promisify(execFile);
const HOST = '127.0.0.1';
const PORT = 13391;
const MiB = 1024 * 1024;
const SIZE = 128 * MiB;
const GLOBAL_CAP = 800;
const PER_ADDRESS_CAP = 50;
const ATTACK_MS = 45_000; // longer than the 15 s login timeout: slowloris connections time out and come back
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const ATTACKERS = join(dirname(fileURLToPath(import.meta.url)), '../support/peer-attackers.js');
const range = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, k) => `${prefix}${k + 1}`);

function procFigures(pid: number): { rssBytes: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
  return { rssBytes: kb * 1024, fds: readdirSync(`/proc/${pid}/fd`).length };
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

describe('soak: hostile peers while an initiator writes and reads', { timeout: 240_000 }, () => {
  let work: string;
  let lunar: LunarProcess;
  let metricsUrl: string;
  let data: Volume;
  let fuzz: Volume;
  const sources: { path: string; sum: string }[] = [];
  let attackers: ChildProcess | null = null;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'lunar-soak-'));
    for (const k of [0, 1]) {
      const path = join(work, `source-${k}.raw`);
      const b = randomFillSync(Buffer.allocUnsafe(SIZE));
      const fh = await open(path, 'w');
      await fh.write(b, 0, SIZE, 0);
      await fh.close();
      sources.push({ path, sum: sha(b) });
    }
    lunar = await startLunarProcess({
      portals: [`${HOST}:${PORT}`],
      keepOutputBytes: 16 * MiB,
      args: [
        '--metrics-address',
        '127.0.0.1:0',
        '--csi-endpoint',
        'none',
        '--max-pending-connections',
        String(GLOBAL_CAP),
        '--max-pending-per-address',
        String(PER_ADDRESS_CAP),
      ],
    });
    metricsUrl = await readyMetricsUrl(lunar);
    for (const [name, size] of [
      ['soak', '128MiB'],
      ['fuzz', '8MiB'],
    ] as const) {
      const r = await lunar.cli(['volume', 'create', name, '--size', size, '--json']);
      assert.equal(r.code, 0, r.stderr);
      if (name === 'soak') data = JSON.parse(r.stdout) as Volume;
      else fuzz = JSON.parse(r.stdout) as Volume;
    }
  });

  after(async () => {
    attackers?.kill('SIGKILL');
    await lunar?.remove();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** One round: write source k to the volume, read it back, compare checksums; MB/s of both transfers. */
  let round = 0;
  async function writeRead(): Promise<number> {
    const src = sources[round++ % 2]!;
    const url = `iscsi://${HOST}:${PORT}/${data.iqn}/0`;
    const back = join(work, 'back.raw');
    const t0 = process.hrtime.bigint();
    await exec('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', '-t', 'none', src.path, url], { timeout: 120_000 });
    await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', url, back], { timeout: 120_000 });
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    await verify(src, `round ${round}`, back);
    return (2 * SIZE) / MiB / seconds;
  }

  /** The volume holds src: read it (already read into `back`, or now) and compare checksums. */
  async function verify(src: { sum: string }, what: string, back?: string): Promise<void> {
    let path = back;
    if (!path) {
      path = join(work, 'check.raw');
      await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `iscsi://${HOST}:${PORT}/${data.iqn}/0`, path], { timeout: 120_000 });
    }
    const got = sha(await readFile(path));
    await rm(path, { force: true });
    assert.equal(got, src.sum, `${what}: the data read back differs from what was written`);
  }

  async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const r = await fetch(metricsUrl);
    return sampleValue(parsePrometheusText(await r.text()), name, labels) ?? NaN;
  }

  it('keeps throughput, memory, descriptors and the log bounded, and the data intact', async () => {
    const t0 = Date.now();
    await writeRead(); // warm-up: first login, page cache
    const quietRounds: number[] = [];
    for (let k = 0; k < 5; k++) quietRounds.push(await writeRead());
    const quiet = median(quietRounds);
    const quietProc = procFigures(lunar.pid);
    const quietLog = lunar.outputBytes();
    const quietText = lunar.output().length;

    const cfg: AttackConfig = {
      host: HOST,
      port: PORT,
      idle: { count: 2000, addresses: range('127.0.1.', 10) },
      slowloris: { count: 200, addresses: range('127.0.2.', 4) },
      fuzz: { address: '127.0.3.1', target: fuzz.iqn, initiatorName: 'iqn.2026-01.io.lunar.test:fuzzer', pdusPerSecond: 300 },
      reconnectMs: 2000,
    };
    const child = spawn(process.execPath, [ATTACKERS, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'inherit'] });
    attackers = child;
    let last: AttackCounters | null = null;
    let partial = '';
    child.stdout.on('data', (b: Buffer) => {
      partial += b.toString('utf8');
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) if (l.startsWith('{')) last = JSON.parse(l) as AttackCounters;
    });
    // Ramp-up: every attacker's first connection made.
    for (let k = 0; k < 100 && (last === null || (last as AttackCounters).idleOpen + (last as AttackCounters).idleClosed < 2000); k++)
      await sleep(100);

    let peak = { ...quietProc };
    let peakPending = 0;
    const sampler = setInterval(() => {
      const p = procFigures(lunar.pid);
      peak = { rssBytes: Math.max(peak.rssBytes, p.rssBytes), fds: Math.max(peak.fds, p.fds) };
      void metric('lunar_iscsi_pending_connections')
        .then((n) => (peakPending = Math.max(peakPending, n)))
        .catch(() => undefined);
    }, 500);
    const attackStart = Date.now();
    const attackRounds: number[] = [];
    try {
      while (Date.now() - attackStart < ATTACK_MS) attackRounds.push(await writeRead());
    } finally {
      clearInterval(sampler);
    }
    const underAttack = median(attackRounds);
    const counters = last as AttackCounters | null;
    const refusedGlobal = await metric('lunar_iscsi_connections_refused_total', { reason: 'pending_global' });
    const refusedPerAddress = await metric('lunar_iscsi_connections_refused_total', { reason: 'pending_per_address' });
    const loginTimeouts = await metric('lunar_iscsi_login_timeouts_total');
    const suppressed = await metric('lunar_iscsi_log_lines_suppressed_total');
    child.kill('SIGTERM');
    await new Promise<void>((r) => child.once('exit', () => r()));
    attackers = null;
    const attackSeconds = (Date.now() - attackStart) / 1000;
    await sleep(500);
    // After the attack the volume still holds what the last round wrote.
    await verify(sources[(round - 1) % 2]!, 'after the attack');
    const logDuringAttack = lunar.outputBytes() - quietLog;
    // Warn lines of the iSCSI transport during the attack (the log is kept whole: keepOutputBytes).
    const warnLines = lunar
      .output()
      .slice(quietText)
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level?: number; component?: string })
      .filter((l) => l.level === 40 && l.component === 'iscsi').length;

    const figures = {
      quietMBps: quietRounds.map((x) => Math.round(x)),
      underAttackMBps: attackRounds.map((x) => Math.round(x)),
      ratio: Number((underAttack / quiet).toFixed(2)),
      quietRssMiB: Math.round(quietProc.rssBytes / MiB),
      peakRssMiB: Math.round(peak.rssBytes / MiB),
      quietFds: quietProc.fds,
      peakFds: peak.fds,
      peakPending,
      logBytesDuringAttack: logDuringAttack,
      iscsiWarnLines: warnLines,
      attackSeconds: Math.round(attackSeconds),
      refusedGlobal,
      refusedPerAddress,
      loginTimeouts,
      suppressedLogLines: suppressed,
      attackers: counters,
      wallSeconds: Math.round((Date.now() - t0) / 1000),
    };
    console.log(`soak figures: ${JSON.stringify(figures)}`);

    assert.ok(counters && counters.idleOpen > 0 && counters.fuzzPdus > 1000, 'the attackers ran');
    assert.ok(refusedPerAddress > 0, 'the per-address cap refused idle connections');
    assert.ok(loginTimeouts >= cfg.slowloris.count, 'slowloris connections were closed at the login timeout');
    assert.ok(peakPending <= GLOBAL_CAP);
    assert.ok(underAttack >= 0.5 * quiet, `under attack ${underAttack.toFixed(1)} MB/s < half of quiet ${quiet.toFixed(1)} MB/s`);
    // A connection that has not logged in holds its socket and its parser state, no write slab
    // (allocated on its first answer): a few KiB, and the garbage of the connections refused at accept
    // until V8 collects it. 128 KiB per connection the global cap admits bounds both.
    assert.ok(peak.rssBytes <= quietProc.rssBytes + GLOBAL_CAP * 128 * 1024, `peak RSS ${peak.rssBytes}`);
    // One descriptor per admitted connection; refused ones are closed at accept. 64 for sessions and
    // sockets in their last moments.
    assert.ok(peak.fds <= quietProc.fds + GLOBAL_CAP + 64, `peak fds ${peak.fds}`);
    // Peer log: per minute at most 100 lines one by one + 20 summaries + 1, plus the two summaries
    // (refusals, login timeouts); each line under 1 KiB. Plus the info lines of each login and session
    // end of the initiator and the fuzzer (two rounds of qemu-img per round, the fuzzer's sessions).
    const minutes = Math.ceil(attackSeconds / 60) + 1;
    assert.ok(warnLines <= minutes * (100 + 20 + 1 + 2), `${warnLines} warn lines`);
    const logins = 2 * (attackRounds.length + 1) + (counters?.fuzzSessions ?? 0);
    const logBound = minutes * (100 + 20 + 1 + 2) * 1024 + logins * 2 * 1024;
    assert.ok(logDuringAttack <= logBound, `log grew ${logDuringAttack} bytes, bound ${logBound}`);
  });
});
