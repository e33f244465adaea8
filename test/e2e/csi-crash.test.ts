// Crash consistency of the CSI controller: a Lunar process (startLunar + startControllerServer, run from this
// same file in child mode) is killed with SIGKILL in the middle of a burst of CreateVolume/DeleteVolume
// over its unix socket, then restarted on the same data directory. Every acknowledged create must still
// exist with the same id, every acknowledged delete must stay gone, the volume files must be exactly
// the listed volumes with their sizes, retried creates must be idempotent, and a restored volume must
// be a working LU.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { startLunar } from '../../src/server.js';
import { startControllerServer } from '../../src/csi/controller-server.js';
import { loadCsiPackage } from '../../src/csi/proto.js';
import { DEFAULT_PLUGIN_NAME } from '../../src/csi/identity.js';
import { LUNAR_VERSION } from '../../src/util/version.js';
import type * as T from '../../src/csi/types.js';
import { rpc } from '../support/csi.js';

const PORT = 13343;
const MiB = 1024 * 1024;
const CHILD_ENV = 'LUNAR_CSI_CRASH_CHILD_DATA_DIR';

async function child(dataDir: string): Promise<void> {
  const lunar = await startLunar({
    dataDir,
    portals: [{ host: '127.0.0.1', port: PORT, tpgt: 1 }],
    csiEndpoint: 'none',
    logger: pino({ level: 'warn' }),
  });
  const csi = await startControllerServer({
    endpoint: `unix://${join(dataDir, 'csi.sock')}`,
    volumes: lunar.volumes,
    pluginName: DEFAULT_PLUGIN_NAME,
    version: LUNAR_VERSION,
    ready: () => lunar.ready(),
    logger: pino({ level: 'warn' }),
  });
  process.on('SIGTERM', () => {
    void csi
      .close()
      .then(() => lunar.close())
      .finally(() => process.exit(0));
  });
  process.stdout.write('READY\n');
}

function spawnChild(dataDir: string): Promise<ChildProcess> {
  const c = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
    env: { ...process.env, [CHILD_ENV]: dataDir },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('Lunar child not ready in 30 s')), 30_000);
    let out = '';
    c.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('READY')) {
        clearTimeout(timer);
        resolve(c);
      }
    });
    c.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`Lunar child exited early (${code ?? sig})`));
    });
  });
}

function exited(c: ChildProcess): Promise<void> {
  return c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', () => r()));
}

/** Deterministic request per name, so that a retry after the crash is the same request. */
function createRequest(n: number): object {
  return {
    name: `crash-${n}`,
    capacity_range: { required_bytes: String(((n % 4) + 1) * MiB) },
    volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
    parameters: { thin: n % 5 === 0 ? 'false' : 'true' },
  };
}

if (process.env[CHILD_ENV]) {
  await child(process.env[CHILD_ENV]);
} else {
  test('kill -9 during a CreateVolume/DeleteVolume burst: after restart, state and files agree', { timeout: 120_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'lunar-csi-crash-'));
    const socket = `unix://${join(dataDir, 'csi.sock')}`;
    const pkg = loadCsiPackage();
    let proc: ChildProcess | undefined;
    let client: grpc.Client | undefined;
    try {
      proc = await spawnChild(dataDir);
      let c: grpc.Client = new pkg.Controller(socket, grpc.credentials.createInsecure());
      client = c;
      const acked = new Map<string, string>(); // name -> id
      const deleted = new Set<string>(); // acknowledged deletes
      const attemptedDeletes = new Set<string>();
      const attempted = new Set<number>();
      let next = 0;
      for (; next < 8; next++) {
        attempted.add(next);
        const v = await rpc<T.CreateVolumeResponse>(c, 'CreateVolume', createRequest(next));
        acked.set(`crash-${next}`, v.volume.volume_id);
      }

      let stop = false;
      let ops = 0;
      const worker = async (w: number): Promise<void> => {
        while (!stop) {
          try {
            const live = [...acked.values()].filter((id) => !deleted.has(id) && !attemptedDeletes.has(id));
            if ((ops + w) % 3 === 2 && live.length > 0) {
              const id = live[(ops * 7 + w) % live.length] as string;
              attemptedDeletes.add(id);
              await rpc(c, 'DeleteVolume', { volume_id: id });
              deleted.add(id);
            } else {
              const n = next++;
              attempted.add(n);
              const v = await rpc<T.CreateVolumeResponse>(c, 'CreateVolume', createRequest(n));
              acked.set(`crash-${n}`, v.volume.volume_id);
            }
            ops++;
          } catch {
            return; // the server died
          }
        }
      };
      const workers = [0, 1, 2, 3].map(worker);
      // let the burst run, then kill the server in the middle of it
      const t0 = Date.now();
      while (ops < 25 && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 5));
      proc.kill('SIGKILL');
      await exited(proc);
      stop = true;
      await Promise.all(workers);
      c.close();
      assert.ok(ops >= 25, `only ${ops} operations before the kill`);

      proc = await spawnChild(dataDir);
      c = new pkg.Controller(socket, grpc.credentials.createInsecure());
      client = c;
      const list = await rpc<T.ListVolumesResponse>(c, 'ListVolumes', {});
      const listedIds = new Set(list.entries.map((e) => e.volume.volume_id));
      for (const [name, id] of acked) {
        if (deleted.has(id)) assert.ok(!listedIds.has(id), `acknowledged delete of ${name} (${id}) undone by the crash`);
        else if (!attemptedDeletes.has(id)) assert.ok(listedIds.has(id), `acknowledged create of ${name} (${id}) lost in the crash`);
      }
      // files on disk are exactly the listed volumes, with their sizes
      const files = (await fsp.readdir(join(dataDir, 'volumes'))).sort();
      assert.deepEqual(files, [...listedIds].map((id) => `${id}.img`).sort(), 'volume files and state disagree');
      for (const e of list.entries) {
        const st = await fsp.stat(join(dataDir, 'volumes', `${e.volume.volume_id}.img`));
        assert.equal(st.size, Number(e.volume.capacity_bytes), `size of ${e.volume.volume_id}`);
        assert.equal(e.status?.volume_condition?.abnormal, false, `${e.volume.volume_id}: ${e.status?.volume_condition?.message}`);
      }
      // retries are idempotent: every attempted create succeeds and names stay unique
      for (const n of attempted) {
        const v = await rpc<T.CreateVolumeResponse>(c, 'CreateVolume', createRequest(n));
        const id = acked.get(`crash-${n}`);
        if (id !== undefined && !deleted.has(id) && !attemptedDeletes.has(id))
          assert.equal(v.volume.volume_id, id, `crash-${n} changed id`);
      }
      for (const id of attemptedDeletes) await rpc(c, 'DeleteVolume', { volume_id: id });
      const after = await rpc<T.ListVolumesResponse>(c, 'ListVolumes', {});
      assert.equal(after.entries.length, new Set(after.entries.map((e) => e.volume.volume_id)).size);
      const afterNames = after.entries.map((e) => lunarName(e.volume.volume_id, dataDir));
      assert.equal(new Set(await Promise.all(afterNames)).size, after.entries.length, 'two volumes share a name');
      // a volume that survived is a working LU
      const survivor = after.entries[0]?.volume as T.CsiVolume;
      const ctx = (
        await rpc<T.ControllerPublishVolumeResponse>(c, 'ControllerPublishVolume', {
          volume_id: survivor.volume_id,
          node_id: 'n1#iqn.2026-11.dev.lunar.test:crash',
          volume_capability: { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
        })
      ).publish_context;
      const cap = await new Promise<string>((resolve) =>
        execFile(
          'iscsi-readcapacity16',
          ['-i', 'iqn.2026-11.dev.lunar.test:crash', `iscsi://${ctx.portals}/${ctx.targetIqn}/0`],
          { timeout: 20_000 },
          (_e, so) => resolve(so),
        ),
      );
      assert.equal(Number(/Total size:(\d+)/.exec(cap)?.[1]), Number(survivor.capacity_bytes), cap);
    } finally {
      client?.close();
      if (proc) {
        proc.kill('SIGTERM');
        await exited(proc);
      }
      await fsp.rm(dataDir, { recursive: true, force: true });
    }
  });
}

/** The volume's name from state.json (the CSI API does not return names). */
async function lunarName(id: string, dataDir: string): Promise<string> {
  const state = JSON.parse(await fsp.readFile(join(dataDir, 'state.json'), 'utf8')) as { volumes: Record<string, { name: string }> };
  return state.volumes[id]?.name ?? `?${id}`;
}
