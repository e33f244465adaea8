// VolumeManager over a real data directory, real sparse files and the real SCSI device. The iSCSI
// server is real but not listening (no sessions): the iSCSI side is covered by the e2e tests.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readdir, rm, stat, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IscsiServer } from '../../src/iscsi/server.js';
import { buildNexus } from '../../src/iscsi/session.js';
import { addNexus, execute, prinCdb, proutCdb, proutParams } from '../support/scsi.js';
import { VolumeManager } from '../../src/volumes/manager.js';
import { VolumeTargetRegistry } from '../../src/target/registry.js';
import { SIZE_ALIGNMENT, VolumeError } from '../../src/volumes/types.js';
import { openFileStore } from '../../src/storage/file-store.js';
import { liveJournal, stateOnDisk } from '../support/state-on-disk.js';

const MiB = 1024 * 1024;
const portals = [{ host: '127.0.0.1', port: 13339, tpgt: 1 }];

async function withManager(fn: (m: VolumeManager, dir: string, reg: VolumeTargetRegistry) => Promise<void>, dir?: string): Promise<void> {
  const d = dir ?? (await mkdtemp(join(tmpdir(), 'lunar-vm-')));
  const reg = new VolumeTargetRegistry(portals);
  const m = await VolumeManager.open({ dataDir: d, portals, registry: reg, sessions: new IscsiServer({ registry: reg }) });
  try {
    await fn(m, d, reg);
  } finally {
    await m.close();
    if (!dir) await rm(d, { recursive: true, force: true });
  }
}

function openManager(d: string): Promise<VolumeManager> {
  const registry = new VolumeTargetRegistry(portals);
  return VolumeManager.open({ dataDir: d, portals, registry, sessions: new IscsiServer({ registry }) });
}

function code(c: string): (e: unknown) => boolean {
  return (e: unknown) => e instanceof VolumeError && e.code === c;
}

test('create: sparse file, aligned size, identity, target registered; idempotent by name', async () => {
  await withManager(async (m, d, reg) => {
    const v = await m.create({ name: 'a', sizeBytes: 10 * MiB + 1 });
    assert.equal(v.sizeBytes, 11 * MiB);
    assert.equal(v.sizeBytes % SIZE_ALIGNMENT, 0);
    assert.match(v.id, /^vol-[0-9a-f]{16}$/);
    assert.equal(v.iqn, `iqn.2026-11.io.lunar:${v.id}`);
    assert.equal(v.lun, 0);
    assert.match(v.naa, /^6[0-9a-f]{31}$/);
    assert.equal(v.thin, true);
    assert.deepEqual(v.portals, portals);
    const st = await stat(join(d, 'volumes', `${v.id}.img`));
    assert.equal(st.size, 11 * MiB);
    assert.ok(st.blocks * 512 < MiB, 'thin volume file is sparse');
    const t = reg.findTarget(v.iqn);
    assert.ok(t);
    assert.deepEqual(t.device.luns(), [0]);
    assert.deepEqual(t.access, { allow: null });
    assert.equal(t.chap, null);
    // Same spec: same volume. Different spec: already-exists.
    assert.equal((await m.create({ name: 'a', sizeBytes: 11 * MiB })).id, v.id);
    await assert.rejects(m.create({ name: 'a', sizeBytes: 12 * MiB }), code('already-exists'));
    await assert.rejects(m.create({ name: 'a', sizeBytes: 11 * MiB, thin: false }), code('already-exists'));
    await assert.rejects(m.create({ name: 'a', sizeBytes: 11 * MiB, allow: ['10.0.0.0/8'] }), code('already-exists'));
    assert.equal(m.list().length, 1);
    assert.equal(m.getByName('a')?.id, v.id);
  });
});

test('create: thick volumes are allocated; bad specs are invalid-argument', async () => {
  await withManager(async (m, d) => {
    const v = await m.create({ name: 'thick', sizeBytes: 4 * MiB, thin: false });
    const st = await stat(join(d, 'volumes', `${v.id}.img`));
    assert.ok(st.blocks * 512 >= 4 * MiB, 'thick volume is preallocated');
    await m.resize(v.id, 8 * MiB);
    assert.ok((await stat(join(d, 'volumes', `${v.id}.img`))).blocks * 512 >= 8 * MiB, 'a grown thick volume stays preallocated');
    const c = await m.create({ name: 'thick-clone', sizeBytes: 16 * MiB, thin: false, source: { kind: 'volume', id: v.id } });
    assert.ok((await stat(join(d, 'volumes', `${c.id}.img`))).blocks * 512 >= 16 * MiB, 'a thick clone is preallocated');
    await m.delete(c.id);
    await assert.rejects(m.create({ name: '', sizeBytes: MiB }), code('invalid-argument'));
    await assert.rejects(m.create({ name: 'x', sizeBytes: 0 }), code('invalid-argument'));
    await assert.rejects(m.create({ name: 'x', sizeBytes: 1.5 }), code('invalid-argument'));
    await assert.rejects(m.create({ name: 'x', sizeBytes: 2 ** 52 }), code('out-of-range'));
    await assert.rejects(m.create({ name: 'x', sizeBytes: MiB, allow: ['nonsense'] }), code('invalid-argument'));
    await assert.rejects(m.create({ name: 'x', sizeBytes: MiB, portals: ['10.9.9.9:3260'] }), code('invalid-argument'));
    await assert.rejects(
      m.create({ name: 'x', sizeBytes: MiB, chap: { mode: 'chap', credentials: { user: 'u', secret: 'short' } } }),
      /at least 12/,
    );
    await assert.rejects(
      m.create({
        name: 'x',
        sizeBytes: MiB,
        chap: { mode: 'mutual', credentials: { user: 'u', secret: 'same-secret-123', mutualUser: 't', mutualSecret: 'same-secret-123' } },
      }),
      /must differ/,
    );
    await assert.rejects(
      m.create({ name: 'x', sizeBytes: MiB, source: { kind: 'snapshot', id: 'snap-0000000000000000' } }),
      code('not-found'),
    );
    assert.equal(m.list().length, 1);
    assert.deepEqual(await readdir(join(d, 'volumes')), [`${v.id}.img`]);
  });
});

test('CHAP: generated when not given, kept as given, reported to the transport', async () => {
  await withManager(async (m, _d, reg) => {
    const a = await m.create({ name: 'c1', sizeBytes: MiB, chap: { mode: 'chap' } });
    assert.ok(a.chap && a.chap.user.length > 0 && a.chap.secret.length === 16 && a.chap.mutualUser === undefined);
    const b = await m.create({ name: 'c2', sizeBytes: MiB, chap: { mode: 'mutual' } });
    assert.ok(b.chap?.mutualUser && b.chap.mutualSecret && b.chap.mutualSecret !== b.chap.secret);
    const c = await m.create({
      name: 'c3',
      sizeBytes: MiB,
      chap: { mode: 'chap', credentials: { user: 'alice', secret: 'alice-secret-1' } },
    });
    assert.deepEqual(c.chap, { user: 'alice', secret: 'alice-secret-1' });
    assert.deepEqual(reg.findTarget(c.iqn)?.chap, { user: 'alice', secret: 'alice-secret-1' });
    // Idempotent create without credentials matches the generated ones.
    assert.equal((await m.create({ name: 'c1', sizeBytes: MiB, chap: { mode: 'chap' } })).chap?.secret, a.chap.secret);
    await assert.rejects(m.create({ name: 'c1', sizeBytes: MiB }), code('already-exists'));
  });
});

test('publish/unpublish: masking reaches the registry', async () => {
  await withManager(async (m, _d, reg) => {
    const v = await m.create({ name: 'm', sizeBytes: MiB, masked: true, allow: ['10.1.0.0/16'] });
    assert.deepEqual(reg.findTarget(v.iqn)?.access, { allow: ['10.1.0.0/16'] });
    await m.publish(v.id, 'node1', 'iqn.1993-08.org.debian:01:node1');
    await m.publish(v.id, 'node1', 'iqn.1993-08.org.debian:01:node1'); // idempotent
    await m.publish(v.id, 'node2', 'iqn.1993-08.org.debian:01:node2');
    assert.deepEqual(reg.findTarget(v.iqn)?.access, {
      allow: ['10.1.0.0/16', 'iqn.1993-08.org.debian:01:node1', 'iqn.1993-08.org.debian:01:node2'],
    });
    assert.deepEqual(m.get(v.id)?.publications, { node1: 'iqn.1993-08.org.debian:01:node1', node2: 'iqn.1993-08.org.debian:01:node2' });
    await m.unpublish(v.id, 'node1');
    await m.unpublish(v.id, 'node1'); // idempotent
    assert.deepEqual(reg.findTarget(v.iqn)?.access, { allow: ['10.1.0.0/16', 'iqn.1993-08.org.debian:01:node2'] });
    await assert.rejects(m.publish(v.id, 'n', 'not an iqn'), code('invalid-argument'));
    await assert.rejects(m.publish('vol-0000000000000000', 'n', 'iqn.1993-08.org.debian:01:x'), code('not-found'));
  });
});

test('resize grows file and record, refuses shrinking; a concurrent call is busy', async () => {
  await withManager(async (m, d) => {
    const v = await m.create({ name: 'r', sizeBytes: 8 * MiB });
    const [r1, r2] = await Promise.allSettled([m.resize(v.id, 16 * MiB), m.resize(v.id, 32 * MiB)]);
    assert.equal(r1.status, 'fulfilled');
    assert.equal(r2.status, 'rejected');
    assert.ok(code('busy')(r2.reason));
    assert.equal(m.get(v.id)?.sizeBytes, 16 * MiB);
    assert.equal((await stat(join(d, 'volumes', `${v.id}.img`))).size, 16 * MiB);
    await assert.rejects(m.resize(v.id, 8 * MiB), code('out-of-range'));
    assert.equal((await m.resize(v.id, 16 * MiB)).sizeBytes, 16 * MiB);
    await assert.rejects(m.resize('vol-0000000000000000', 8 * MiB), code('not-found'));
  });
});

test('snapshot and clones copy content and keep holes', async () => {
  await withManager(async (m, d) => {
    const v = await m.create({ name: 'src', sizeBytes: 64 * MiB });
    const path = join(d, 'volumes', `${v.id}.img`);
    // Write two patterned extents through a second store on the same file (the LU's store sees them).
    const s = await openFileStore(path);
    await s.write(Buffer.alloc(MiB, 0xab), 4 * MiB, true);
    await s.write(Buffer.alloc(MiB, 0xcd), 40 * MiB, true);
    await s.close();
    const snap = await m.createSnapshot(v.id, 'snap1');
    assert.equal(snap.sourceVolumeId, v.id);
    assert.equal(snap.readyToUse, true);
    assert.equal((await m.createSnapshot(v.id, 'snap1')).id, snap.id);
    await assert.rejects(m.createSnapshot('vol-0000000000000000', 'snap1'), code('already-exists'));
    const fromSnap = await m.create({ name: 'restored', sizeBytes: 128 * MiB, source: { kind: 'snapshot', id: snap.id } });
    const fromVol = await m.create({ name: 'cloned', sizeBytes: 64 * MiB, source: { kind: 'volume', id: v.id } });
    await assert.rejects(m.create({ name: 'small', sizeBytes: 32 * MiB, source: { kind: 'volume', id: v.id } }), code('out-of-range'));
    const src = await readFile(path);
    for (const c of [fromSnap, fromVol]) {
      const p = join(d, 'volumes', `${c.id}.img`);
      const st = await stat(p);
      assert.equal(st.size, c.sizeBytes);
      assert.ok(st.blocks * 512 <= 4 * MiB, `clone ${c.name} stays sparse (${st.blocks * 512} bytes allocated)`);
      const data = await readFile(p);
      assert.ok(data.subarray(0, 64 * MiB).equals(src), `clone ${c.name} has the source content`);
      assert.ok(data.subarray(64 * MiB).every((b) => b === 0));
    }
    assert.deepEqual(m.get(fromSnap.id)?.source, { kind: 'snapshot', id: snap.id });
    assert.equal(await m.deleteSnapshot(snap.id), true);
    assert.equal(await m.deleteSnapshot(snap.id), false);
    assert.deepEqual(await readdir(join(d, 'snapshots')), []);
  });
});

test('delete removes target, file and record; state survives reopen; orphans are reconciled', async () => {
  const d = await mkdtemp(join(tmpdir(), 'lunar-vm-'));
  try {
    let keep = '';
    let keepNaa = '';
    await withManager(async (m, _d, reg) => {
      const a = await m.create({ name: 'gone', sizeBytes: MiB });
      const b = await m.create({ name: 'kept', sizeBytes: 2 * MiB, chap: { mode: 'chap' } });
      keep = b.id;
      keepNaa = b.naa;
      assert.equal(await m.delete(a.id), true);
      assert.equal(await m.delete(a.id), false);
      assert.equal(reg.findTarget(a.iqn), undefined);
      assert.deepEqual(await readdir(join(d, 'volumes')), [`${b.id}.img`]);
    }, d);
    // Leftovers of interrupted operations (or of a restored older state.json): a temp file, a renamed
    // file never recorded, a snapshot file without a record.
    await writeFile(join(d, 'volumes', '.tmp-vol-1111111111111111.img'), 'x');
    await writeFile(join(d, 'volumes', 'vol-2222222222222222.img'), 'x');
    await writeFile(join(d, 'snapshots', 'snap-3333333333333333.img'), 'x');
    // Files Lunar did not make are left alone.
    await writeFile(join(d, 'volumes', 'README.txt'), 'mine');
    await withManager(async (m, _d, reg) => {
      assert.deepEqual(
        m.list().map((v) => v.id),
        [keep],
      );
      assert.equal(m.get(keep)?.naa, keepNaa);
      assert.ok(reg.findTarget(`iqn.2026-11.io.lunar:${keep}`));
      assert.deepEqual((await readdir(join(d, 'volumes'))).sort(), ['README.txt', `${keep}.img`].sort());
      assert.deepEqual(await readdir(join(d, 'snapshots')), []);
      // Only the temporary file is gone: the complete files without a record are kept aside.
      assert.deepEqual((await readdir(join(d, 'orphans'))).sort(), ['snap-3333333333333333.img', 'vol-2222222222222222.img']);
      assert.deepEqual(
        (await m.orphans()).map((o) => [o.file, o.id, o.idInUse, o.sizeBytes]),
        [
          ['snap-3333333333333333.img', 'snap-3333333333333333', false, 1],
          ['vol-2222222222222222.img', 'vol-2222222222222222', false, 1],
        ],
      );
      assert.deepEqual(await m.condition(keep), { abnormal: false, message: 'volume is healthy' });
    }, d);
    // A record whose file vanished: kept, abnormal, not served.
    await rm(join(d, 'volumes', `${keep}.img`));
    await withManager(async (m, _d, reg) => {
      assert.equal(m.get(keep)?.naa, keepNaa);
      const c = await m.condition(keep);
      assert.equal(c.abnormal, true);
      assert.match(c.message, /missing/);
      assert.equal(reg.findTarget(`iqn.2026-11.io.lunar:${keep}`), undefined);
      await assert.rejects(m.condition('vol-0000000000000000'), code('not-found'));
      assert.equal(await m.delete(keep), true);
    }, d);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('a missing state.json next to volume files refuses to start instead of deleting them', async () => {
  const d = await mkdtemp(join(tmpdir(), 'lunar-vm-'));
  try {
    await withManager(async (m) => {
      await m.create({ name: 'x', sizeBytes: MiB });
    }, d);
    await rm(join(d, 'state.json'));
    await assert.rejects(openManager(d), /state\.json is missing but/);
    // ... and again: the refused start must not have left a fresh (empty) state file behind.
    await assert.rejects(openManager(d), /state\.json is missing but/);
    assert.equal((await readdir(join(d, 'volumes'))).length, 1);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('capacity reports the file system', async () => {
  await withManager(async (m) => {
    const c = await m.capacity();
    assert.ok(c.totalBytes > 0 && c.availableBytes > 0 && c.availableBytes <= c.totalBytes);
  });
});

test('persistent reservations are persisted through onPrChange and restored on reopen', async () => {
  const d = await mkdtemp(join(tmpdir(), 'lunar-vm-'));
  const nexusFor = (iqn: string) => buildNexus('iqn.2026-11.test:pr', '400001370000', iqn, 1);
  const exec = (reg: VolumeTargetRegistry, iqn: string, cdb: Buffer, dataOut: Buffer | null, expected: number) =>
    execute(reg.findTarget(iqn)!.device, nexusFor(iqn), cdb, dataOut, expected);
  try {
    let id = '';
    await withManager(async (m, _d, reg) => {
      const v = await m.create({ name: 'pr', sizeBytes: MiB });
      id = v.id;
      await addNexus(reg.findTarget(v.iqn)!.device, nexusFor(v.iqn));
      // PERSISTENT RESERVE OUT / REGISTER, key 0x1122334455667788, APTPL=1 (SPC-4 §6.16).
      const out = await exec(reg, v.iqn, proutCdb(0x00), proutParams(0n, 0x1122334455667788n, { aptpl: true }), 24);
      assert.equal(out?.status, 0, `REGISTER failed: ${out?.sense?.toString('hex')}`);
      // Durable before the status was returned, not at some later save.
      const now = await stateOnDisk(d);
      assert.equal(now.volumes[id]?.reservations['0']?.registrations.length, 1);
    }, d);
    const saved = await stateOnDisk(d);
    assert.equal(saved.volumes[id]?.reservations['0']?.registrations[0]?.key, '1122334455667788');
    await withManager(async (_m, _d, reg) => {
      const iqn = `iqn.2026-11.io.lunar:${id}`;
      await addNexus(reg.findTarget(iqn)!.device, nexusFor(iqn));
      const r = await exec(reg, iqn, prinCdb(0x00, 64), null, 64);
      assert.equal(r?.status, 0);
      assert.equal(r.data?.readUInt32BE(4), 8, 'one key registered');
      assert.equal(r.data.subarray(8, 16).toString('hex'), '1122334455667788');
    }, d);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('concurrent creates of one name: one runs, the other is busy; afterwards the retry returns the volume', async () => {
  await withManager(async (m) => {
    const [a, b] = await Promise.allSettled([
      m.create({ name: 'same', sizeBytes: 8 * MiB }),
      m.create({ name: 'same', sizeBytes: 8 * MiB }),
    ]);
    assert.equal(a.status, 'fulfilled');
    assert.ok(b.status === 'rejected' && code('busy')(b.reason));
    const again = await m.create({ name: 'same', sizeBytes: 8 * MiB });
    assert.equal(again.id, a.value.id);
    assert.equal(m.list().length, 1);
  });
});

test('create idempotency with a size range: the current size must lie in it; a new volume must too', async () => {
  await withManager(async (m) => {
    const v = await m.create({ name: 'ranged', sizeBytes: 8 * MiB, sizeRange: { minBytes: 8 * MiB } });
    await m.resize(v.id, 16 * MiB);
    // A retry with the original range finds the grown volume.
    assert.equal((await m.create({ name: 'ranged', sizeBytes: 8 * MiB, sizeRange: { minBytes: 8 * MiB } })).id, v.id);
    assert.equal((await m.create({ name: 'ranged', sizeBytes: 8 * MiB, sizeRange: { minBytes: 0, maxBytes: 16 * MiB } })).id, v.id);
    await assert.rejects(
      m.create({ name: 'ranged', sizeBytes: 8 * MiB, sizeRange: { minBytes: 8 * MiB, maxBytes: 8 * MiB } }),
      (e: unknown) => code('already-exists')(e) && /size 16777216 bytes, outside the requested range \[8388608, 8388608\]/.test(String(e)),
    );
    // Without a range the size it was created with counts, not its current size.
    assert.equal((await m.create({ name: 'ranged', sizeBytes: 8 * MiB })).id, v.id);
    await assert.rejects(m.create({ name: 'ranged', sizeBytes: 16 * MiB }), /size 8 MiB vs 16 MiB/);
    // Every other field still has to match.
    await assert.rejects(m.create({ name: 'ranged', sizeBytes: 8 * MiB, sizeRange: { minBytes: 0 }, thin: false }), /thin true vs false/);
    await assert.rejects(m.create({ name: 'other', sizeBytes: 8 * MiB, sizeRange: { minBytes: 9 * MiB } }), code('out-of-range'));
    await assert.rejects(
      m.create({ name: 'other', sizeBytes: 8 * MiB, sizeRange: { minBytes: 9 * MiB, maxBytes: 1 } }),
      code('invalid-argument'),
    );
    assert.equal(m.list().length, 1);
  });
});

test('a state change that cannot be made durable is an error, and nothing changes', async () => {
  const run = promisify(execFile);
  await withManager(async (m, d, reg) => {
    const v = await m.create({ name: 'keep', sizeBytes: 4 * MiB, masked: true });
    const snap = await m.createSnapshot(v.id, 'keep-snap');
    // The journal refuses the append (immutable): every change fails to become durable.
    const stateFile = await liveJournal(d);
    const before = await readFile(stateFile);
    const files = (await readdir(join(d, 'volumes'))).sort();
    await run('chattr', ['+i', stateFile]);
    try {
      const internal = (e: unknown): boolean => code('internal')(e) && /could not record .*state\.json/.test(String(e));
      await assert.rejects(m.create({ name: 'new', sizeBytes: MiB }), internal);
      await assert.rejects(m.publish(v.id, 'n1', 'iqn.1993-08.org.debian:01:n1'), internal);
      await assert.rejects(m.resize(v.id, 8 * MiB), internal);
      // Not recorded, so not grown: the file shrinks back (e2e lunar-safety checks the capacity initiators see).
      assert.equal((await stat(join(d, 'volumes', `${v.id}.img`))).size, 4 * MiB);
      await assert.rejects(m.delete(v.id), internal);
      await assert.rejects(m.createSnapshot(v.id, 'snap-2'), internal);
      await assert.rejects(m.deleteSnapshot(snap.id), internal);
      assert.deepEqual(await readFile(stateFile), before, 'journal unchanged');
      assert.deepEqual(
        m.list().map((x) => [x.name, x.sizeBytes, x.publications]),
        [['keep', 4 * MiB, {}]],
      );
      assert.deepEqual(
        m.listSnapshots().map((x) => x.id),
        [snap.id],
      );
      assert.deepEqual((await readdir(join(d, 'volumes'))).sort(), files, 'the unrecorded volume left no file');
      assert.deepEqual(await readdir(join(d, 'snapshots')), [`${snap.id}.img`], 'the unrecorded snapshot left no file');
      assert.ok(reg.findTarget(v.iqn), 'a volume whose deletion failed is still served');
      assert.deepEqual(reg.findTarget(v.iqn)?.access, { allow: [] }, 'a failed publication admits nobody');
    } finally {
      await run('chattr', ['-i', stateFile]);
    }
    // The retry grows the file again, and everything else goes through now.
    assert.equal((await m.resize(v.id, 8 * MiB)).sizeBytes, 8 * MiB);
    await m.publish(v.id, 'n1', 'iqn.1993-08.org.debian:01:n1');
    assert.deepEqual(reg.findTarget(v.iqn)?.access, { allow: ['iqn.1993-08.org.debian:01:n1'] });
    assert.ok(await m.create({ name: 'new', sizeBytes: MiB }));
    assert.equal(await m.deleteSnapshot(snap.id), true);
  });
});
