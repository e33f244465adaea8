// What an operator sees (issue 9, "Failures an operator can see"), against real `lunar serve` processes
// and the real CLI: the CLI's bounded wait for a server that is starting, abnormal volumes in
// `volume list` / `status` and `volume rescan`, and writes that fail for want of space (a small tmpfs as
// the data directory, written past its end by QEMU's iSCSI driver): logged rate-limited, counted in
// /metrics, reported in the volume's condition (CSI and `volume show`) until space is back.
// Run inside `isolated` (private network and mount namespaces): the ENOSPC test mounts a tmpfs.

import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadCsiPackage } from '../../src/csi/proto.js';
import type * as T from '../../src/csi/types.js';
import type { Volume } from '../../src/volumes/types.js';
import { rpc } from '../support/csi.js';
import { parsePrometheusText, sampleValue } from '../support/prom-text.js';
import { POOL_PRELOAD } from '../../src/util/threadpool.js';
import { LUNAR_CLI, startLunarProcess, type CliResult } from '../support/lunar.js';

const MiB = 1024 * 1024;

/** `lunar ARGS` as a child process; resolves with its exit code and output (killed after timeoutMs). */
function cli(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<CliResult & { ms: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [LUNAR_CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
    c.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
    c.on('error', reject);
    c.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** `lunar serve` started without waiting for it (the tests below are about what happens meanwhile). */
function serve(dataDir: string, portal: string): { child: ChildProcess; output: () => string } {
  const child = spawn(
    process.execPath,
    [`--import=${POOL_PRELOAD}`, LUNAR_CLI, 'serve', '--data-dir', dataDir, '--portal', portal, '--csi-endpoint', 'none'],
    { env: { ...process.env, LUNAR_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString('utf8')));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString('utf8')));
  return { child, output: () => out };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs a tool (killed after timeoutMs); never rejects on a non-zero exit. */
function run(cmd: string, args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 * MiB }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

/** The server's JSON log lines. */
function logLines(output: string): Record<string, unknown>[] {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

// ---- the CLI waits for a server that is starting ------------------------------------------------------

test('CLI readiness: no server and --wait 1 → exit 7 after about a second, saying so', { timeout: 30_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lunar-op-'));
  try {
    const r = await cli(['volume', 'list', '--wait', '1'], { LUNAR_DATA_DIR: dir });
    assert.equal(r.code, 7, r.stderr);
    assert.ok(r.ms >= 1000 && r.ms < 6000, `exited after ${r.ms} ms`);
    assert.match(r.stderr, /no Lunar server at .*admin\.sock \(ENOENT\) after waiting 1\.\d s — start one with `lunar serve/);
    const now = await cli(['status', '--wait', '0'], { LUNAR_DATA_DIR: dir });
    assert.equal(now.code, 7, now.stderr);
    const help = await cli(['--help']);
    assert.match(help.stdout, /7 server not reachable or not ready within --wait/);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('CLI readiness: `lunar volume create` started before and right after `lunar serve` succeeds', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lunar-op-'));
  let server: ReturnType<typeof serve> | null = null;
  try {
    // Before: the admin socket does not exist yet when the command starts.
    const early = cli(['volume', 'create', 'early', '--size', '4MiB', '--wait', '60', '--json'], { LUNAR_DATA_DIR: dir });
    await sleep(500);
    server = serve(dir, '127.0.0.1:13390');
    const e = await early;
    assert.equal(e.code, 0, `${e.stderr}\n${server.output().slice(-2000)}`);
    assert.equal((JSON.parse(e.stdout) as { name: string }).name, 'early');
    await stopChild(server.child);
    // Right after: started in the same tick as the server, as `lunar serve & lunar volume create` does.
    server = serve(dir, '127.0.0.1:13390');
    const right = await cli(['volume', 'create', 'right-after', '--size', '4MiB', '--wait', '60'], { LUNAR_DATA_DIR: dir });
    assert.equal(right.code, 0, `${right.stderr}\n${server.output().slice(-2000)}`);
    const list = await cli(['volume', 'list', '--json'], { LUNAR_DATA_DIR: dir });
    assert.deepEqual((JSON.parse(list.stdout) as { name: string }[]).map((v) => v.name).sort(), ['early', 'right-after']);
  } finally {
    if (server) await stopChild(server.child);
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

// ---- abnormal volumes: list, status, rescan ------------------------------------------------------------

test(
  'an abnormal volume (file missing) shows in `volume list` and `status`; `volume rescan` serves it again once the file is back',
  {
    timeout: 120_000,
  },
  async () => {
    const lunar = await startLunarProcess({ portals: ['127.0.0.1:13391'], args: ['--csi-endpoint', 'none'] });
    const aside = join(lunar.dataDir, 'aside.img');
    try {
      const good = (JSON.parse((await lunar.cli(['volume', 'create', 'good', '--size', '4MiB', '--json'])).stdout) as Volume).id;
      const lost = JSON.parse((await lunar.cli(['volume', 'create', 'lost', '--size', '4MiB', '--json'])).stdout) as Volume;
      const file = join(lunar.dataDir, 'volumes', `${lost.id}.img`);
      await lunar.stop();
      await fsp.rename(file, aside);
      await lunar.restart();

      const table = await lunar.cli(['volume', 'list']);
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^NAME\s+ID\s+SIZE\s+TYPE\s+AUTH\s+TARGET\s+WWID\s+CONDITION/);
      assert.match(table.stdout, new RegExp(`^lost\\s+${lost.id}\\s.*\\sABNORMAL$`, 'm'));
      assert.match(table.stdout, new RegExp(`^good\\s+${good}\\s.*\\shealthy$`, 'm'));
      assert.match(table.stdout, new RegExp(`^ABNORMAL lost \\(${lost.id}\\): backing file .*${lost.id}\\.img is missing`, 'm'));
      const json = JSON.parse((await lunar.cli(['volume', 'list', '--json'])).stdout) as (Volume & {
        condition: { abnormal: boolean; message: string };
      })[];
      assert.deepEqual(json.map((v) => [v.name, v.condition.abnormal]).sort(), [
        ['good', false],
        ['lost', true],
      ]);
      const status = await lunar.cli(['status']);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, /volumes: {2}2 \(1 ABNORMAL: see `lunar volume list`\)/);
      assert.equal((JSON.parse((await lunar.cli(['status', '--json'])).stdout) as { abnormalVolumes: number }).abnormalVolumes, 1);

      // Still missing: rescan says so and exits 1.
      const still = await lunar.cli(['volume', 'rescan', 'lost']);
      assert.equal(still.code, 1, still.stderr);
      assert.match(still.stdout, /volume lost \(vol-[0-9a-f]+\): ABNORMAL — backing file .* is missing/);
      const probe = await run('iscsi-readcapacity16', ['-i', 'iqn.2026-11.test:op', `iscsi://127.0.0.1:13391/${lost.iqn}/0`], 30_000);
      assert.notEqual(probe.code, 0, 'an abnormal volume is not served');

      // The file is back: rescan serves it, without a restart.
      const pid = lunar.pid;
      await fsp.rename(aside, file);
      const back = await lunar.cli(['volume', 'rescan', 'lost']);
      assert.equal(back.code, 0, back.stderr);
      assert.match(back.stdout, /volume lost \(vol-[0-9a-f]+\): back: served again/);
      assert.equal(lunar.pid, pid);
      const cap = await run('iscsi-readcapacity16', ['-i', 'iqn.2026-11.test:op', `iscsi://127.0.0.1:13391/${lost.iqn}/0`], 30_000);
      assert.equal(cap.code, 0, cap.stderr);
      assert.match(cap.stdout, new RegExp(`Total size:\\s*${4 * MiB}`));
      const all = await lunar.cli(['volume', 'rescan', '--json']);
      assert.equal(all.code, 0, all.stderr);
      assert.deepEqual((JSON.parse(all.stdout) as { name: string; abnormal: boolean }[]).map((r) => [r.name, r.abnormal]).sort(), [
        ['good', false],
        ['lost', false],
      ]);
      assert.doesNotMatch((await lunar.cli(['status'])).stdout, /ABNORMAL/);
      assert.doesNotMatch((await lunar.cli(['volume', 'list'])).stdout, /ABNORMAL/);

      // While served: the file is moved away (abnormal), then a copy is put back (another inode): still
      // abnormal, since the LU serves the old file; rescan serves the file at the path.
      const goodFile = join(lunar.dataDir, 'volumes', `${good}.img`);
      await fsp.rename(goodFile, aside);
      assert.match((await lunar.cli(['volume', 'show', 'good'])).stdout, /condition: ABNORMAL — backing file .* is missing/);
      await fsp.copyFile(aside, goodFile);
      assert.match((await lunar.cli(['volume', 'show', 'good'])).stdout, /condition: ABNORMAL — .* was replaced while served/);
      const swapped = await lunar.cli(['volume', 'rescan', 'good']);
      assert.equal(swapped.code, 0, swapped.stderr);
      assert.match(swapped.stdout, /volume good \(vol-[0-9a-f]+\): back: served again/);
      assert.match((await lunar.cli(['volume', 'show', 'good'])).stdout, /condition: healthy/);
      const goodIqn = (JSON.parse((await lunar.cli(['volume', 'show', 'good', '--json'])).stdout) as Volume).iqn;
      const cap2 = await run('iscsi-readcapacity16', ['-i', 'iqn.2026-11.test:op', `iscsi://127.0.0.1:13391/${goodIqn}/0`], 30_000);
      assert.equal(cap2.code, 0, cap2.stderr);
    } finally {
      await lunar.remove();
    }
  },
);

// ---- writes that fail for want of space -----------------------------------------------------------------

test(
  'ENOSPC: writes past a full data directory are logged once (rate-limited), counted, and shown in the condition until space is back',
  {
    timeout: 240_000,
  },
  async (t) => {
    const work = mkdtempSync(join(tmpdir(), 'lunar-op-'));
    const dataDir = join(work, 'data');
    await fsp.mkdir(dataDir);
    const mounted = await run('mount', ['-t', 'tmpfs', '-o', 'size=40m,mode=0700', 'tmpfs', dataDir]);
    assert.equal(mounted.code, 0, `mount tmpfs (run inside \`isolated\`): ${mounted.stderr}`);
    let lunar: Awaited<ReturnType<typeof startLunarProcess>> | null = null;
    let controller: grpc.Client | null = null;
    try {
      lunar = await startLunarProcess({ dataDir, portals: ['127.0.0.1:13392'], args: ['--metrics-address', '127.0.0.1:13393'] });
      const v = JSON.parse((await lunar.cli(['volume', 'create', 'full', '--size', '64MiB', '--json'])).stdout) as Volume;
      // 8 MiB of filler, removed below to give space back.
      const filler = join(dataDir, 'filler');
      await fsp.writeFile(filler, Buffer.alloc(8 * MiB, 1));
      const initiator = 'iqn.2026-11.test:enospc';
      const opts = `driver=iscsi,transport=tcp,portal=127.0.0.1:13392,target=${v.iqn},lun=0,initiator-name=${initiator}`;
      // 48 writes of 1 MiB into a filesystem with about 32 MiB left: the last ones fail.
      const writes = Array.from({ length: 48 }, (_, i) => ['-c', `write -P 0xab ${i}M 1M`]).flat();
      const w = await run('qemu-io', ['--image-opts', opts, ...writes]);
      const failed = (w.stdout + w.stderr).split('\n').filter((l) => /write failed/.test(l)).length;
      assert.ok(failed >= 5, `expected failed writes, qemu-io said:\n${w.stdout}\n${w.stderr}`);
      assert.match(w.stdout + w.stderr, /No space left on device/);

      // The log: one line for the first failure, no line per failure.
      for (let i = 0; i < 50 && !logLines(lunar.output()).some((l) => l.event === 'no-space'); i++) await sleep(100);
      const noSpace = logLines(lunar.output()).filter((l) => l.event === 'no-space');
      assert.equal(noSpace.length, 1, `${failed} failed writes gave ${noSpace.length} log lines`);
      assert.equal(noSpace[0]?.volumeId, v.id);
      assert.match(String(noSpace[0]?.msg), /failed with ENOSPC/);

      // The metric.
      const metrics = parsePrometheusText(await (await fetch('http://127.0.0.1:13393/metrics')).text());
      const counted = sampleValue(metrics, 'lunar_lu_space_allocation_failures_total', { volume: v.id });
      assert.ok(counted !== undefined && counted >= failed, `counter ${counted}, qemu-io saw ${failed} failures`);
      t.diagnostic(
        `qemu-io: ${failed} of 48 writes failed; lunar_lu_space_allocation_failures_total ${counted}; no-space log lines ${noSpace.length}`,
      );

      // The condition: CSI ControllerGetVolume and ListVolumes, `lunar volume show`, `volume list`, `status`.
      const pkg = loadCsiPackage();
      controller = new pkg.Controller(`unix://${join(dataDir, 'csi.sock')}`, grpc.credentials.createInsecure());
      const got = await rpc<T.ControllerGetVolumeResponse>(controller, 'ControllerGetVolume', { volume_id: v.id });
      assert.equal(got.status?.volume_condition?.abnormal, true);
      assert.match(got.status?.volume_condition?.message ?? '', /writes fail with ENOSPC: no space left in .* write.* failed since/);
      const listed = await rpc<T.ListVolumesResponse>(controller, 'ListVolumes', {});
      assert.equal(listed.entries.find((e) => e.volume?.volume_id === v.id)?.status?.volume_condition?.abnormal, true);
      const show = await lunar.cli(['volume', 'show', 'full']);
      assert.match(show.stdout, /condition: ABNORMAL — writes fail with ENOSPC/);
      assert.match((await lunar.cli(['status'])).stdout, /1 ABNORMAL/);

      // Space back: the condition clears, one line says so, and writes work again.
      await fsp.rm(filler);
      const healthy = await rpc<T.ControllerGetVolumeResponse>(controller, 'ControllerGetVolume', { volume_id: v.id });
      assert.equal(healthy.status?.volume_condition?.abnormal, false, healthy.status?.volume_condition?.message);
      assert.match((await lunar.cli(['volume', 'show', 'full'])).stdout, /condition: healthy/);
      const backLines = logLines(lunar.output()).filter((l) => l.event === 'space-back');
      assert.equal(backLines.length, 1);
      assert.match(String(backLines[0]?.msg), /space is back/);
      const again = await run('qemu-io', [
        '--image-opts',
        opts,
        '-c',
        'write -P 0xcd 40M 1M',
        '-c',
        'read -P 0xab 0 8M',
        '-c',
        'read -P 0xcd 40M 1M',
      ]);
      assert.equal(again.code, 0, again.stdout + again.stderr);
      assert.doesNotMatch(again.stdout + again.stderr, /failed|Pattern verification failed/);
      assert.equal(logLines(lunar.output()).filter((l) => l.event === 'no-space').length, 1, 'no new line while writes succeed');
    } finally {
      controller?.close();
      await lunar?.stop();
      await run('umount', ['-l', dataDir]);
      await fsp.rm(work, { recursive: true, force: true });
    }
  },
);
