// Lunar under benchmark: `lunar serve` started through test/support/lunar.ts (the same helper the e2e
// tests use) and one volume created with the CLI, exactly as an operator would.

import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { WANTED_POOL_SIZE } from '../src/util/threadpool.js';

type LunarSupport = typeof import('../test/support/lunar.js');

export interface LunarTarget {
  readonly pid: number;
  readonly url: string;
  readonly dataDir: string;
  /** The volume's backing file when it could be located, else undefined. */
  readonly backingFile: string | undefined;
  readonly volumeId: string;
  /** UV_THREADPOOL_SIZE the server was started with. */
  readonly threadPoolSize: string;
  /** One more volume (thin, through the admin socket as the CLI does); returns its iscsi:// URL. */
  createVolume(name: string, sizeBytes: number): Promise<string>;
  stop(): Promise<void>;
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/**
 * Loaded at run time so that `--targets tgt` still works when Lunar's own modules fail to load.
 */
async function loadHelper(): Promise<LunarSupport['startLunarProcess']> {
  const mod: LunarSupport = await import('../test/support/lunar.js');
  return mod.startLunarProcess;
}

/** Finds the target IQN, LUN and id in `lunar volume create --json` output (a Volume). */
export function parseVolumeJson(stdout: string): { iqn: string; lun: number; id: string } {
  const start = stdout.indexOf('{');
  const o: unknown = JSON.parse(start >= 0 ? stdout.slice(start) : stdout);
  const vol = isRecord(o) && isRecord(o['volume']) ? o['volume'] : o;
  if (!isRecord(vol) || typeof vol['iqn'] !== 'string') {
    throw new Error(`lunar volume create --json: no iqn in ${stdout.trim().slice(0, 500)}`);
  }
  const lun = typeof vol['lun'] === 'number' ? vol['lun'] : 0;
  const id = typeof vol['id'] === 'string' ? vol['id'] : '';
  return { iqn: vol['iqn'], lun, id };
}

export async function startLunar(opts: {
  dataDir: string;
  portal: string;
  size: string;
  /** Write a V8 CPU profile of the server into this directory on exit (bench/cpu-prof-preload.ts). */
  cpuProfileDir?: string;
}): Promise<LunarTarget> {
  const start = await loadHelper();
  // The helper runs `node dist/src/cli.js serve`, where cli.js's shebang (which sizes libuv's pool
  // before the loader starts it) does not apply: give the server the pool the `lunar` command gives it.
  const poolSize = process.env['UV_THREADPOOL_SIZE'] ?? String(WANTED_POOL_SIZE);
  const env: Record<string, string> = { UV_THREADPOOL_SIZE: poolSize };
  if (opts.cpuProfileDir) {
    mkdirSync(opts.cpuProfileDir, { recursive: true });
    const preload = new URL('./cpu-prof-preload.js', import.meta.url).href;
    env['NODE_OPTIONS'] = `${process.env['NODE_OPTIONS'] ?? ''} --import=${preload}`.trim();
    env['LUNAR_BENCH_CPU_PROF_DIR'] = opts.cpuProfileDir;
  }
  const proc = await start({ dataDir: opts.dataDir, portals: [opts.portal], env });
  try {
    const r = await proc.cli(['volume', 'create', 'bench', '--size', opts.size, '--json']);
    if (r.code !== 0) throw new Error(`lunar volume create failed (${r.code}): ${(r.stderr || r.stdout).trim()}`);
    const vol = parseVolumeJson(r.stdout);
    const file = join(proc.dataDir, 'volumes', `${vol.id}.img`);
    return {
      pid: proc.pid,
      url: `iscsi://${opts.portal}/${vol.iqn}/${vol.lun}`,
      dataDir: proc.dataDir,
      backingFile: vol.id !== '' && existsSync(file) ? file : undefined,
      volumeId: vol.id,
      threadPoolSize: poolSize,
      createVolume: async (name, sizeBytes) => {
        const v = parseVolumeJson(JSON.stringify(await proc.call('volume.create', { name, sizeBytes })));
        return `iscsi://${opts.portal}/${v.iqn}/${v.lun}`;
      },
      stop: () => proc.stop().catch(() => proc.kill9()),
    };
  } catch (e) {
    await proc.stop().catch(() => proc.kill9());
    throw e;
  }
}
