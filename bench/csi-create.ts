// CSI controller benchmark at scale: `lunar serve` (as an operator runs it, through test/support/lunar.ts)
// with the CSI Controller it serves itself on <data-dir>/csi.sock, driven by a grpc-js client over that
// socket as the external-provisioner sidecar would. For each volume count N:
//
//   fill       CreateVolume up to N − (serial + in-flight samples), 8 in flight (figures printed too)
//   serial     CreateVolume one at a time, the next `--serial` volumes (p50/p99 at about N volumes)
//   8 in flight  CreateVolume with 8 requests outstanding, the last `--parallel` volumes up to N
//   ListVolumes  one call returning all N, and the whole list in pages of 100
//   RSS        of the server after the creates, and idle after a restart (VmRSS)
//   startup    spawn of `lunar serve` on the N-volume data directory until the admin socket says ready
//   DeleteVolume  a sample, 8 in flight
//
//   node dist/bench/csi-create.js [--volumes 1000,10000] [--serial 200] [--parallel 400] [--json FILE]
//   node dist/bench/csi-create.js --smoke     (tiny workload for test/e2e/bench-smoke.test.ts; figures mean nothing)
//
// The server logs at warn (LUNAR_LOG_LEVEL=warn), so that the figures are the control plane's and not
// the cost of shipping 10,000 info lines through the helper's pipe.

import { mkdtempSync, promises as fsp, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { loadCsiPackage } from '../src/csi/proto.js';
import { LUNAR_VERSION } from '../src/util/version.js';
import type { CreateVolumeResponse, ListVolumesResponse } from '../src/csi/types.js';
import { rpc } from '../test/support/csi.js';
import { startLunarProcess } from '../test/support/lunar.js';
import { mib, readMemory } from './memory.js';
import { loadAverage, runBench } from './util.js';

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

const ms = (ns: bigint): number => Number(ns) / 1e6;
const fmt = (n: number): string => n.toFixed(2);

export interface Phase {
  readonly phase: string;
  readonly concurrency: number;
  readonly count: number;
  readonly seconds: number;
  readonly perSecond: number;
  readonly p50ms: number;
  readonly p99ms: number;
  readonly maxms: number;
}

export interface ScaleResult {
  readonly volumes: number;
  readonly loadAverageAtStart: readonly [number, number, number];
  readonly phases: readonly Phase[];
  readonly rssAfterCreatesMiB: number;
  readonly peakRssMiB: number;
  readonly startupMs: number;
  readonly rssIdleAfterRestartMiB: number;
  readonly stateBytes: number;
}

async function timedBurst(count: number, concurrency: number, op: (i: number) => Promise<unknown>, phase: string): Promise<Phase> {
  const lat: number[] = [];
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, Math.max(count, 1)) }, async () => {
      for (;;) {
        const i = next++;
        if (i >= count) return;
        const s = process.hrtime.bigint();
        await op(i);
        lat.push(ms(process.hrtime.bigint() - s));
      }
    }),
  );
  const seconds = ms(process.hrtime.bigint() - t0) / 1000;
  lat.sort((a, b) => a - b);
  return {
    phase,
    concurrency,
    count,
    seconds,
    perSecond: count / seconds,
    p50ms: percentile(lat, 50),
    p99ms: percentile(lat, 99),
    maxms: lat[lat.length - 1] ?? NaN,
  };
}

function createRequest(n: number): object {
  return {
    name: `bench-${n}`,
    capacity_range: { required_bytes: String(64 * 1024 * 1024) },
    volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
    parameters: { 'csi.storage.k8s.io/pvc/name': `claim-${n}`, 'csi.storage.k8s.io/pvc/namespace': 'bench' },
  };
}

/** Bytes of state.json plus its journal. */
async function stateBytes(dataDir: string): Promise<number> {
  let total = 0;
  for (const n of await fsp.readdir(dataDir)) {
    if (n === 'state.json' || n.startsWith('state.journal.')) total += (await fsp.stat(join(dataDir, n))).size;
  }
  return total;
}

async function runScale(total: number, serial: number, parallel: number, port: number, log: (line: string) => void): Promise<ScaleResult> {
  const dataDir = mkdtempSync(join(tmpdir(), 'lunar-bench-csi-'));
  const socket = `unix://${join(dataDir, 'csi.sock')}`;
  const load = loadAverage();
  log(`## ${total} volumes — load average at start ${load.map((x) => x.toFixed(2)).join(' ')}`);
  const proc = await startLunarProcess({
    dataDir,
    portals: [`127.0.0.1:${port}`],
    args: ['--csi-endpoint', socket],
    env: { LUNAR_LOG_LEVEL: 'warn' },
    readyTimeoutMs: 300_000,
  });
  const pkg = loadCsiPackage();
  let client = new pkg.Controller(socket, grpc.credentials.createInsecure());
  const phases: Phase[] = [];
  const report = (p: Phase): void => {
    phases.push(p);
    log(
      `${p.phase.padEnd(30)} c=${String(p.concurrency).padStart(2)} n=${String(p.count).padStart(5)}  ${fmt(p.perSecond).padStart(8)}/s  ` +
        `p50 ${fmt(p.p50ms).padStart(7)} ms  p99 ${fmt(p.p99ms).padStart(7)} ms  max ${fmt(p.maxms).padStart(7)} ms`,
    );
  };
  try {
    const ids: string[] = [];
    const create = async (n: number): Promise<void> => {
      const r = await rpc<CreateVolumeResponse>(client, 'CreateVolume', createRequest(n));
      ids.push(r.volume.volume_id);
    };
    const fill = total - serial - parallel;
    if (fill > 0) report(await timedBurst(fill, 8, (i) => create(i), `CreateVolume fill 0→${fill}`));
    report(await timedBurst(serial, 1, (i) => create(fill + i), `CreateVolume serial →${fill + serial}`));
    report(await timedBurst(parallel, 8, (i) => create(fill + serial + i), `CreateVolume 8 in flight →${total}`));
    report(
      await timedBurst(
        5,
        1,
        async () => {
          const r = await rpc<ListVolumesResponse>(client, 'ListVolumes', {});
          if (r.entries.length !== total) throw new Error(`ListVolumes returned ${r.entries.length}, expected ${total}`);
        },
        `ListVolumes one call (${total})`,
      ),
    );
    report(
      await timedBurst(
        3,
        1,
        async () => {
          let token = '';
          let n = 0;
          do {
            const r = await rpc<ListVolumesResponse>(client, 'ListVolumes', { max_entries: 100, starting_token: token });
            n += r.entries.length;
            token = r.next_token;
          } while (token !== '');
          if (n !== total) throw new Error(`paged ListVolumes saw ${n}`);
        },
        `ListVolumes all, pages of 100`,
      ),
    );
    const mem = readMemory(proc.pid);
    log(`RSS after creates ${mib(mem.rssKiB)}, peak ${mib(mem.hwmKiB)}; state on disk ${(await stateBytes(dataDir)) >> 10} KiB`);
    client.close();
    await proc.stop();
    const t0 = process.hrtime.bigint();
    await proc.restart();
    const startupMs = ms(process.hrtime.bigint() - t0);
    await new Promise((r) => setTimeout(r, 1000));
    const idle = readMemory(proc.pid);
    log(`startup (spawn → ready) with ${total} volumes ${startupMs.toFixed(0)} ms; RSS idle after restart ${mib(idle.rssKiB)}`);
    client = new pkg.Controller(socket, grpc.credentials.createInsecure());
    const sample = ids.slice(0, Math.min(ids.length, serial));
    report(await timedBurst(sample.length, 8, (i) => rpc(client, 'DeleteVolume', { volume_id: sample[i] }), 'DeleteVolume'));
    return {
      volumes: total,
      loadAverageAtStart: load,
      phases,
      rssAfterCreatesMiB: mem.rssKiB / 1024,
      peakRssMiB: mem.hwmKiB / 1024,
      startupMs,
      rssIdleAfterRestartMiB: idle.rssKiB / 1024,
      stateBytes: await stateBytes(dataDir),
    };
  } finally {
    client.close();
    await proc.stop().catch(() => proc.kill9());
    await fsp.rm(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      volumes: { type: 'string', default: '1000' },
      serial: { type: 'string', default: '200' },
      parallel: { type: 'string', default: '400' },
      port: { type: 'string', default: '13344' },
      smoke: { type: 'boolean', default: false },
      json: { type: 'string' },
    },
  });
  const counts = values.smoke ? [24] : values.volumes.split(',').map(Number);
  const log = (line: string): void => void process.stdout.write(line + '\n');
  log(`# Lunar ${LUNAR_VERSION}, Node ${process.version}: CSI controller at scale (lunar serve, its own csi.sock)`);
  const results: ScaleResult[] = [];
  for (const n of counts) {
    const serial = values.smoke ? 6 : Math.min(Number(values.serial), Math.floor(n / 4));
    const parallel = values.smoke ? 8 : Math.min(Number(values.parallel), Math.floor(n / 4));
    if (!Number.isInteger(n) || n < serial + parallel || serial < 1 || parallel < 1)
      throw new Error(`--volumes ${n}: too few for the samples`);
    results.push(await runScale(n, serial, parallel, Number(values.port), log));
  }
  log('');
  log(
    '| volumes | load avg at start | serial p50 / p99 ms | 8 in flight p50 / p99 ms | ListVolumes one call ms | paged (100) ms | startup ms | RSS after creates / idle MiB |',
  );
  log('|--:|--|--:|--:|--:|--:|--:|--:|');
  for (const r of results) {
    const get = (prefix: string): Phase | undefined => r.phases.find((p) => p.phase.startsWith(prefix));
    const s = get('CreateVolume serial');
    const p = get('CreateVolume 8 in flight');
    const l1 = get('ListVolumes one call');
    const lp = get('ListVolumes all, pages');
    log(
      `| ${r.volumes} | ${r.loadAverageAtStart.map((x) => x.toFixed(2)).join(' ')} | ${fmt(s?.p50ms ?? NaN)} / ${fmt(s?.p99ms ?? NaN)} | ` +
        `${fmt(p?.p50ms ?? NaN)} / ${fmt(p?.p99ms ?? NaN)} | ${fmt(l1?.p50ms ?? NaN)} | ${fmt(lp?.p50ms ?? NaN)} | ${r.startupMs.toFixed(0)} | ` +
        `${r.rssAfterCreatesMiB.toFixed(0)} / ${r.rssIdleAfterRestartMiB.toFixed(0)} |`,
    );
  }
  if (values.json) writeFileSync(values.json, JSON.stringify({ results }, null, 2));
}

runBench('csi-create bench', main);
