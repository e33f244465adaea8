// kill -9 of `lunar serve` while QEMU's libiscsi driver writes, then restart on the same data directory:
// everything written before a SYNCHRONIZE CACHE (qemu-io "flush" with cache=writeback) and every write
// acknowledged afterwards reads back intact, and the restarted server serves the same volumes with the
// same identities (IQN, NAA/WWID, serial).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startLunarProcess, type LunarProcess } from '../support/lunar.js';
import type { Volume } from '../../src/volumes/types.js';

const exec = promisify(execFile);
const PORTAL = '127.0.0.1:13323';
const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = 64 * KiB;
const SYNCED_REGION = 16 * MiB;
const VOLUME = 64 * MiB;
let lunar: LunarProcess;

before(async () => {
  lunar = await startLunarProcess({ portals: [PORTAL] });
});
after(async () => {
  await lunar?.remove();
});

/** Pattern byte of the block at offset in pass `pass` (never 0, so unwritten blocks never match). */
function pattern(offset: number, pass: number): number {
  return ((offset / BLOCK + pass * 7) % 250) + 1;
}

async function qemuIo(url: string, cmds: string[], extra: string[] = []): Promise<string> {
  const { stdout } = await exec('qemu-io', ['-f', 'raw', '-t', 'writeback', ...extra, ...cmds.flatMap((c) => ['-c', c]), url], {
    maxBuffer: 64 * MiB,
    timeout: 300_000,
  });
  return stdout;
}

async function inquiry83(url: string): Promise<Buffer> {
  const { stdout } = await exec('iscsi-inq', ['-e', '1', '-c', '131', url], { encoding: 'buffer' });
  return stdout;
}

test('acknowledged writes survive kill -9; the restarted server has the same volumes and WWIDs', async () => {
  const created = await lunar.cli(['volume', 'create', 'durable', '--size', '64MiB', '--json']);
  assert.equal(created.code, 0, created.stderr);
  const other = await lunar.cli(['volume', 'create', 'bystander', '--size', '8MiB', '--chap', 'auto', '--json']);
  assert.equal(other.code, 0, other.stderr);
  const v = JSON.parse(created.stdout) as Volume;
  const url = `iscsi://${PORTAL}/${v.iqn}/0`;
  const before83 = await inquiry83(url);
  // iscsi-inq prints the binary NAA designator as a C string: compare up to its first zero byte.
  const naa = Buffer.from(v.naa, 'hex');
  const zero = naa.indexOf(0);
  assert.ok(before83.includes(zero < 0 ? naa : naa.subarray(0, zero)), 'VPD 0x83 carries the volume NAA');
  const listBefore = JSON.parse((await lunar.cli(['volume', 'list', '--json'])).stdout) as Volume[];

  // Phase 1: write the first 16 MiB and SYNCHRONIZE CACHE.
  const phase1: string[] = [];
  for (let off = 0; off < SYNCED_REGION; off += BLOCK) phase1.push(`write -P ${pattern(off, 0)} ${off} ${BLOCK}`);
  phase1.push('flush');
  const out1 = await qemuIo(url, phase1);
  assert.equal((out1.match(/^wrote 65536\/65536 bytes/gm) ?? []).length, SYNCED_REGION / BLOCK);
  // File I/O has run, so libuv's pool exists: `lunar` sized it (UV_THREADPOOL_SIZE=32) before first use.
  const threads = (await readdir(`/proc/${lunar.pid}/task`)).length;
  assert.ok(threads >= 32, `lunar serve runs ${threads} threads; expected a thread pool of 32`);

  // Phase 2: keep writing the rest; kill -9 the server once 64 writes are acknowledged.
  const phase2: string[] = [];
  for (let off = SYNCED_REGION; off < VOLUME; off += BLOCK) phase2.push(`write -P ${pattern(off, 1)} ${off} ${BLOCK}`);
  const writer = spawn('stdbuf', ['-oL', 'qemu-io', '-f', 'raw', '-t', 'writeback', ...phase2.flatMap((c) => ['-c', c]), url], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const acked: number[] = [];
  let buf = '';
  // Assigned in the 'data' callback below; the cast keeps TypeScript from narrowing it to null.
  let killed = null as Promise<void> | null;
  const writerDone = new Promise<void>((resolve) => writer.on('close', () => resolve()));
  writer.stdout.on('data', (b: Buffer) => {
    buf += b.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const m = /^wrote 65536\/65536 bytes at offset (\d+)/.exec(line);
      if (m) acked.push(Number(m[1]));
      if (acked.length >= 64 && !killed) killed = lunar.kill9();
    }
  });
  try {
    const t0 = Date.now();
    while (!killed && writer.exitCode === null && Date.now() - t0 < 120_000) await new Promise((r) => setTimeout(r, 20));
    assert.ok(killed, `the writer finished or stalled before 64 writes were acknowledged (${acked.length})`);
    await killed;
    // libiscsi keeps trying to reconnect; the writer has nothing more to tell us.
    await new Promise((r) => setTimeout(r, 300));
    writer.kill('SIGKILL');
    await writerDone;
  } finally {
    if (writer.exitCode === null && writer.signalCode === null) writer.kill('SIGKILL');
  }
  const ackedAtKill = acked.length;
  assert.ok(ackedAtKill >= 64 && ackedAtKill < phase2.length, `killed mid-stream (${ackedAtKill} of ${phase2.length} acknowledged)`);

  await lunar.restart();

  // Same volumes, same identities.
  const listAfter = JSON.parse((await lunar.cli(['volume', 'list', '--json'])).stdout) as Volume[];
  assert.deepEqual(listAfter, listBefore);
  const after83 = await inquiry83(url);
  assert.ok(after83.equals(before83), 'VPD 0x83 is identical after the restart');

  // Every synced block and every acknowledged block reads back with its pattern.
  const reads = [
    ...Array.from({ length: SYNCED_REGION / BLOCK }, (_, i) => `read -P ${pattern(i * BLOCK, 0)} ${i * BLOCK} ${BLOCK}`),
    ...acked.slice(0, ackedAtKill).map((off) => `read -P ${pattern(off, 1)} ${off} ${BLOCK}`),
  ];
  const out = await qemuIo(url, reads, ['-r']);
  assert.ok(
    !/Pattern verification failed/.test(out),
    `data lost or corrupted:\n${out
      .split('\n')
      .filter((l) => /failed/.test(l))
      .slice(0, 10)
      .join('\n')}`,
  );
  assert.equal((out.match(/^read 65536\/65536 bytes/gm) ?? []).length, reads.length);
});

test('kill -9 during clone creation leaves either a complete volume or nothing, and no unrecorded file among the volumes', async (t) => {
  const big = JSON.parse((await lunar.cli(['volume', 'create', 'big', '--size', '64MiB', '--json'])).stdout) as Volume;
  // Fill it with data so that clones take a while to copy (holes would be skipped).
  const fill = Array.from({ length: 64 }, (_, i) => `write -P ${(i % 250) + 1} ${i * MiB} ${MiB}`);
  await qemuIo(`iscsi://${PORTAL}/${big.iqn}/0`, [...fill, 'flush']);
  const bigFile = await readFile(join(lunar.dataDir, 'volumes', `${big.id}.img`));
  let sawComplete = 0;
  let sawNothing = 0;
  for (const delayMs of [5, 40, 120, 400]) {
    const name = `clone-${delayMs}`;
    const cli = lunar.cli(['volume', 'create', name, '--size', '64MiB', '--from-volume', 'big']);
    await new Promise((r) => setTimeout(r, delayMs));
    await lunar.kill9();
    await cli;
    await lunar.restart();
    const vols = JSON.parse((await lunar.cli(['volume', 'list', '--json'])).stdout) as Volume[];
    const files = (await readdir(join(lunar.dataDir, 'volumes'))).sort();
    assert.deepEqual(
      files,
      vols.map((v) => `${v.id}.img`).sort(),
      `after a kill at ${delayMs} ms the volume files match the volumes exactly`,
    );
    // A kill after the rename but before the record leaves a complete copy, kept aside in orphans/.
    const orphans = await readdir(join(lunar.dataDir, 'orphans')).catch(() => []);
    for (const o of orphans) {
      assert.ok((await readFile(join(lunar.dataDir, 'orphans', o))).equals(bigFile), `orphan ${o} is a complete copy`);
    }
    const clone = vols.find((v) => v.name === name);
    if (clone) {
      sawComplete++;
      const data = await readFile(join(lunar.dataDir, 'volumes', `${clone.id}.img`));
      assert.ok(data.equals(bigFile), `clone ${name} is complete`);
    } else sawNothing++;
  }
  t.diagnostic(`kills during clone creation: ${sawNothing} left nothing, ${sawComplete} left a complete clone`);
  assert.equal(sawComplete + sawNothing, 4);
});
