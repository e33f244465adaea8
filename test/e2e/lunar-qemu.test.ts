// QEMU's iSCSI block driver (libiscsi) against `lunar serve`: a random 256 MiB image is written onto a
// Lunar LU with `qemu-img convert`, read back and compared byte for byte — without authentication, with
// CHAP (URL user%password form and --image-opts with a secret object), and through an initiator ACL.
// Mutual CHAP is checked with libiscsi's iscsi-inq (QEMU only does one-way CHAP).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomFillSync } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLunarProcess, type LunarProcess } from '../support/lunar.js';
import type { Volume } from '../../src/volumes/types.js';

const exec = promisify(execFile);
const PORTAL = '127.0.0.1:13322';
const MiB = 1024 * 1024;
const SIZE = 256 * MiB;
let lunar: LunarProcess;
let work: string;
let source: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'lunar-qemu-'));
  source = join(work, 'source.raw');
  const fh = await open(source, 'w');
  const chunk = Buffer.allocUnsafe(4 * MiB);
  for (let off = 0; off < SIZE; off += chunk.length) {
    randomFillSync(chunk);
    await fh.write(chunk, 0, chunk.length, off);
  }
  await fh.close();
  lunar = await startLunarProcess({ portals: [PORTAL] });
});

after(async () => {
  await lunar?.remove();
  if (work) await rm(work, { recursive: true, force: true });
});

async function create(args: string[]): Promise<Volume> {
  const r = await lunar.cli(['volume', 'create', ...args, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Volume;
}

async function qemuImg(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec('qemu-img', args, { maxBuffer: 16 * MiB, timeout: 300_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

async function roundTrip(writeArgs: string[], readArgs: string[], tag: string): Promise<void> {
  const w = await qemuImg(['convert', '-n', '-f', 'raw', '-O', 'raw', '-t', 'none', source, ...writeArgs]);
  assert.equal(w.code, 0, `write ${tag}: ${w.stderr}\n${lunar.output().slice(-2000)}`);
  const back = join(work, `${tag}.raw`);
  const r = await qemuImg(['convert', '-O', 'raw', ...readArgs, back]);
  assert.equal(r.code, 0, `read ${tag}: ${r.stderr}`);
  const c = await qemuImg(['compare', '-f', 'raw', '-F', 'raw', source, back]);
  assert.equal(c.code, 0, `compare ${tag}: ${c.stdout}${c.stderr}`);
  await rm(back, { force: true });
}

test('qemu-img writes 256 MiB of random data and reads it back identical', async () => {
  const v = await create(['plain', '--size', '256MiB']);
  const url = `iscsi://${PORTAL}/${v.iqn}/0`;
  const info = await qemuImg(['info', '--output=json', url]);
  assert.equal(info.code, 0, info.stderr);
  assert.equal((JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'], SIZE);
  await roundTrip([url], ['-f', 'raw', url], 'plain');
});

test('CHAP: the URL form and --image-opts with a secret object work; a wrong secret is refused', async () => {
  const v = await create(['chap', '--size', '256MiB', '--chap', 'alice:alice-secret-123']);
  const url = `iscsi://alice%alice-secret-123@${PORTAL}/${v.iqn}/0`;
  await roundTrip([url], ['-f', 'raw', url], 'chap');
  const opts = `driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=${PORTAL},file.target=${v.iqn},file.lun=0,file.user=alice,file.password-secret=sec0`;
  const good = await qemuImg(['info', '--object', 'secret,id=sec0,data=alice-secret-123', '--image-opts', opts]);
  assert.equal(good.code, 0, good.stderr);
  const bad = await qemuImg(['info', '--object', 'secret,id=sec0,data=wrong-secret-123', '--image-opts', opts]);
  assert.notEqual(bad.code, 0, 'a wrong CHAP secret must be refused');
  const none = await qemuImg(['info', `iscsi://${PORTAL}/${v.iqn}/0`]);
  assert.notEqual(none.code, 0, 'logging in without CHAP must be refused');
});

test('ACL: listed initiators and addresses get in, others are refused', async () => {
  const v = await create(['acl', '--size', '16MiB', '--allow', 'iqn.2026-11.test:allowed']);
  const opts = (initiator: string): string =>
    `driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=${PORTAL},file.target=${v.iqn},file.lun=0,file.initiator-name=${initiator}`;
  const ok = await qemuImg(['info', '--image-opts', opts('iqn.2026-11.test:allowed')]);
  assert.equal(ok.code, 0, ok.stderr);
  const no = await qemuImg(['info', '--image-opts', opts('iqn.2026-11.test:intruder')]);
  assert.notEqual(no.code, 0, 'an unlisted initiator must be refused');
  // Address entries: loopback is in 127.0.0.0/8, not in 10.0.0.0/8.
  const byAddr = await create(['acl-addr', '--size', '16MiB', '--allow', '127.0.0.0/8']);
  assert.equal((await qemuImg(['info', `iscsi://${PORTAL}/${byAddr.iqn}/0`])).code, 0, 'an allowed address gets in');
  const elsewhere = await create(['acl-elsewhere', '--size', '16MiB', '--allow', '10.0.0.0/8']);
  assert.notEqual((await qemuImg(['info', `iscsi://${PORTAL}/${elsewhere.iqn}/0`])).code, 0, 'another address is refused');
});

test('mutual CHAP with libiscsi: the right target secret passes, a wrong one fails', async () => {
  const v = await create(['mutual', '--size', '16MiB', '--chap', 'bob:bob-secret-1234', '--mutual-chap', 'lunar-tgt:target-secret-99']);
  const url = `iscsi://bob%bob-secret-1234@${PORTAL}/${v.iqn}/0`;
  const inq = async (targetPassword: string): Promise<number> => {
    try {
      await exec('iscsi-inq', [url], {
        env: { ...process.env, LIBISCSI_CHAP_TARGET_USERNAME: 'lunar-tgt', LIBISCSI_CHAP_TARGET_PASSWORD: targetPassword },
        timeout: 60_000,
      });
      return 0;
    } catch (err) {
      return (err as { code?: number }).code ?? -1;
    }
  };
  assert.equal(await inq('target-secret-99'), 0);
  assert.notEqual(await inq('not-the-target-secret'), 0, 'libiscsi must reject a target that cannot prove the mutual secret');
});

test('snapshots and clones carry the data: restore a snapshot, clone a live volume, read back over iSCSI', async () => {
  const plain = JSON.parse((await lunar.cli(['volume', 'show', 'plain', '--json'])).stdout) as Volume;
  const snap = await lunar.cli(['snapshot', 'create', 'plain', 'plain-snap', '--json']);
  assert.equal(snap.code, 0, snap.stderr);
  // Overwrite the source afterwards: the snapshot must keep the old content.
  await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 0 1M', `iscsi://${PORTAL}/${plain.iqn}/0`]);
  const restored = await create(['restored', '--size', '300MiB', '--from-snapshot', 'plain-snap']);
  assert.equal(restored.sizeBytes, 300 * MiB);
  assert.deepEqual(restored.source, { kind: 'snapshot', id: (JSON.parse(snap.stdout) as { id: string }).id });
  const back = join(work, 'restored.raw');
  const r = await qemuImg(['convert', '-f', 'raw', '-O', 'raw', `iscsi://${PORTAL}/${restored.iqn}/0`, back]);
  assert.equal(r.code, 0, r.stderr);
  // The first 256 MiB equal the source image, the 44 MiB grown on top read as zeroes (compare -s is strict
  // about size, so compare the common part and check the rest separately).
  const c = await qemuImg(['compare', '-f', 'raw', '-F', 'raw', source, back]);
  assert.equal(c.code, 0, `restored content differs: ${c.stdout}${c.stderr}`);
  await rm(back, { force: true });
  // A clone of the live (now changed) volume has the changed content.
  const clone = await create(['clone', '--size', '256MiB', '--from-volume', 'plain']);
  const { stdout } = await exec('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x55 0 1M', `iscsi://${PORTAL}/${clone.iqn}/0`]);
  assert.doesNotMatch(stdout, /Pattern verification failed/);
  const small = await lunar.cli(['volume', 'create', 'too-small', '--size', '128MiB', '--from-snapshot', 'plain-snap']);
  assert.equal(small.code, 2);
  assert.match(small.stderr, /smaller than source snapshot/);
  const del = await lunar.cli(['snapshot', 'delete', 'plain-snap']);
  assert.equal(del.code, 0, del.stderr);
});

test('discovery CHAP: SendTargets needs the discovery secret', async () => {
  const disc = await startLunarProcess({ portals: ['127.0.0.1:13327'], args: ['--discovery-chap', 'disco:discovery-secret-1'] });
  try {
    const r = await disc.cli(['volume', 'create', 'visible', '--size', '8MiB', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const v = JSON.parse(r.stdout) as Volume;
    const ls = async (url: string): Promise<{ ok: boolean; out: string }> => {
      try {
        const { stdout } = await exec('iscsi-ls', [url], { timeout: 60_000 });
        return { ok: true, out: stdout };
      } catch (err) {
        return { ok: false, out: String((err as { stderr?: string }).stderr ?? err) };
      }
    };
    const good = await ls('iscsi://disco%discovery-secret-1@127.0.0.1:13327');
    assert.ok(good.ok && good.out.includes(v.iqn), `discovery with CHAP lists the target: ${good.out}`);
    assert.equal((await ls('iscsi://127.0.0.1:13327')).ok, false, 'discovery without CHAP is refused');
    assert.equal((await ls('iscsi://disco%wrong-secret-123@127.0.0.1:13327')).ok, false, 'discovery with a wrong secret is refused');
  } finally {
    await disc.remove();
  }
});
