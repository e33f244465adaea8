// CSI controller benchmark: CreateVolume latency (p50/p99) and volumes/s up to N volumes, ListVolumes
// time at N volumes (whole list and pages of 100), DeleteVolume latency. Lunar runs in-process
// (startLunar + startControllerServer on a unix socket in a temporary data directory, iSCSI on 127.0.0.1:13344);
// the client is grpc-js over that socket, as the external-provisioner sidecar would be.
//
//   node dist/bench/csi-create.js [--volumes 1000] [--concurrency 1,8] [--json FILE]

import { mkdtempSync, promises as fsp, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { startLunar } from '../src/server.js';
import { startControllerServer } from '../src/csi/controller-server.js';
import { loadCsiPackage } from '../src/csi/proto.js';
import { DEFAULT_PLUGIN_NAME } from '../src/csi/identity.js';
import { LUNAR_VERSION } from '../src/util/version.js';
import type { CreateVolumeResponse, ListVolumesResponse } from '../src/csi/types.js';
import { rpc } from '../test/support/csi.js';

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

const ms = (ns: bigint): number => Number(ns) / 1e6;
const fmt = (n: number): string => n.toFixed(2);

interface Phase {
  phase: string;
  concurrency: number;
  count: number;
  seconds: number;
  perSecond: number;
  p50ms: number;
  p99ms: number;
  maxms: number;
}

async function timedBurst(count: number, concurrency: number, op: (i: number) => Promise<unknown>, phase: string): Promise<Phase> {
  const lat: number[] = [];
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
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

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      volumes: { type: 'string', default: '1000' },
      concurrency: { type: 'string', default: '1,8' },
      json: { type: 'string' },
    },
  });
  const total = Number(values.volumes);
  const levels = values.concurrency.split(',').map(Number);
  const dataDir = mkdtempSync(join(tmpdir(), 'lunar-bench-csi-'));
  const lunar = await startLunar({ dataDir, portals: [{ host: '127.0.0.1', port: 13344, tpgt: 1 }], logger: pino({ level: 'warn' }) });
  const socket = join(dataDir, 'csi.sock');
  const csi = await startControllerServer({
    endpoint: `unix://${socket}`,
    volumes: lunar.volumes,
    pluginName: DEFAULT_PLUGIN_NAME,
    version: LUNAR_VERSION,
    ready: lunar.ready,
    logger: pino({ level: 'warn' }),
  });
  const client = new (loadCsiPackage().Controller)(`unix://${socket}`, grpc.credentials.createInsecure());
  const results: Phase[] = [];
  const report = (p: Phase): void => {
    results.push(p);
    process.stdout.write(
      `${p.phase.padEnd(28)} c=${String(p.concurrency).padStart(2)} n=${String(p.count).padStart(5)}  ${fmt(p.perSecond).padStart(8)}/s  ` +
        `p50 ${fmt(p.p50ms).padStart(7)} ms  p99 ${fmt(p.p99ms).padStart(7)} ms  max ${fmt(p.maxms).padStart(7)} ms\n`,
    );
  };
  try {
    process.stdout.write(`# Lunar ${LUNAR_VERSION}, Node ${process.version}, data dir on ${dataDir}\n`);
    const ids: string[] = [];
    // Split the N volumes over the concurrency levels; each level creates its share.
    const share = Math.floor(total / levels.length);
    let made = 0;
    for (const [li, c] of levels.entries()) {
      const count = li === levels.length - 1 ? total - made : share;
      const base = made;
      report(
        await timedBurst(
          count,
          c,
          async (i) => {
            const r = await rpc<CreateVolumeResponse>(client, 'CreateVolume', {
              name: `bench-${base + i}`,
              capacity_range: { required_bytes: String(64 * 1024 * 1024) },
              volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
              parameters: { 'csi.storage.k8s.io/pvc/name': `claim-${base + i}` },
            });
            ids.push(r.volume.volume_id);
          },
          `CreateVolume (to ${base + count})`,
        ),
      );
      made += count;
    }
    report(
      await timedBurst(
        5,
        1,
        async () => {
          const r = await rpc<ListVolumesResponse>(client, 'ListVolumes', {});
          if (r.entries.length !== total) throw new Error(`ListVolumes returned ${r.entries.length}, expected ${total}`);
        },
        `ListVolumes all (${total})`,
      ),
    );
    report(
      await timedBurst(
        5,
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
        `ListVolumes pages of 100`,
      ),
    );
    report(await timedBurst(ids.length, 8, (i) => rpc(client, 'DeleteVolume', { volume_id: ids[i] }), 'DeleteVolume'));
  } finally {
    client.close();
    await csi.close();
    await lunar.close();
    await fsp.rm(dataDir, { recursive: true, force: true });
  }
  if (values.json) writeFileSync(values.json, JSON.stringify({ volumes: total, results }, null, 2));
}

await main();
