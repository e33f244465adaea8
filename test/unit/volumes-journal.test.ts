// The state journal: its framing (src/volumes/journal-codec.ts, property tests) and the store over it
// (src/volumes/state-file.ts): torn tails cut, damage refused with file and offset, compaction under
// load, interrupted compactions, and the migration of a version 1 state.json (test/fixtures/state-v1.json).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { copyFile, mkdtemp, readdir, readFile, rm, stat, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import {
  decodeJournal,
  encodeFrame,
  encodeJournal,
  FRAME_HEADER_BYTES,
  HEADER_BYTES,
  JournalDamage,
  journalHeader,
} from '../../src/volumes/journal-codec.js';
import { journalName, openStateStore, STATE_FILE } from '../../src/volumes/state-file.js';
import { formatRecord, parseState } from '../../src/volumes/state-json.js';
import { StateError, type SnapshotRecord, type VolumeRecord } from '../../src/volumes/state.js';
import { snapshotRecord, volumeRecord, withTempDir } from '../support/state-records.js';

const FIXTURE = resolve(dirname(fileURLToPath(import.meta.url)), '../../../test/fixtures/state-v1.json');
const FILE = '/data/state.journal.7';

const withDir = (fn: (d: string) => Promise<void>): Promise<void> => withTempDir('lunar-journal-', fn);
const vol = (n: number): VolumeRecord => volumeRecord(n, { 'csi.storage.k8s.io/pvc/name': `claim-${n}` });
const snap = (n: number): SnapshotRecord => snapshotRecord(n, vol(n).id);

/** A store in d holding volumes 1..n, closed again. */
async function storeWithVolumes(d: string, n: number): Promise<void> {
  const s = await openStateStore(d);
  for (let i = 1; i <= n; i++) {
    await s.update((tx) => {
      tx.addVolume(vol(i));
    });
  }
  await s.close();
}

const payloads = fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 12 });

/** Offsets of each frame in an encoded journal. */
function frameOffsets(ps: readonly Uint8Array[]): number[] {
  const out: number[] = [];
  let at = HEADER_BYTES;
  for (const p of ps) {
    out.push(at);
    at += FRAME_HEADER_BYTES + p.length;
  }
  return out;
}

// ---- codec --------------------------------------------------------------------------------------

test('property: any sequence of records round-trips', () => {
  fc.assert(
    fc.property(payloads, (ps) => {
      const d = decodeJournal(encodeJournal(ps), FILE);
      assert.equal(d.torn, null);
      assert.deepEqual(
        d.records.map((r) => new Uint8Array(r.payload)),
        ps.map((p) => new Uint8Array(p)),
      );
      assert.deepEqual(
        d.records.map((r) => r.offset),
        frameOffsets(ps),
      );
      assert.equal(d.end, encodeJournal(ps).length);
    }),
    { numRuns: 300 },
  );
});

test('property: any truncation decodes as a prefix of the records, the rest marked torn', () => {
  fc.assert(
    fc.property(payloads, fc.nat(), (ps, cut) => {
      const whole = encodeJournal(ps);
      const k = cut % (whole.length + 1);
      const d = decodeJournal(whole.subarray(0, k), FILE);
      const offsets = [...frameOffsets(ps), whole.length];
      // Exactly the records whose frames end at or before k.
      const n = ps.filter((_, i) => (offsets[i + 1] as number) <= k).length;
      assert.deepEqual(
        d.records.map((r) => new Uint8Array(r.payload)),
        ps.slice(0, n).map((p) => new Uint8Array(p)),
      );
      const boundary = k === whole.length || (k >= HEADER_BYTES && offsets.includes(k));
      assert.equal(d.torn === null, boundary, `cut at ${k}: torn ${d.torn}`);
      assert.equal(d.end, k < HEADER_BYTES ? 0 : (offsets[n] as number));
    }),
    { numRuns: 500 },
  );
});

test('property: a flipped byte anywhere is detected, with the offset of the frame that holds it', () => {
  fc.assert(
    fc.property(
      payloads.filter((ps) => ps.length > 0),
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      (ps, pick, mask) => {
        const buf = encodeJournal(ps);
        const pos = pick % buf.length;
        buf[pos] = (buf[pos] as number) ^ mask;
        const frame = [0, ...frameOffsets(ps)].filter((o) => o <= pos).pop() as number;
        assert.throws(
          () => decodeJournal(buf, FILE),
          (e: unknown) =>
            e instanceof JournalDamage &&
            e.file === FILE &&
            (e.offset === frame || (frame === 0 && e.offset === 8)) &&
            e.message.startsWith(`${FILE}: damaged at byte ${e.offset}: `),
        );
      },
    ),
    { numRuns: 500 },
  );
});

test('codec: zeros after a frame boundary are a torn tail; a zero length with data after it is damage', () => {
  const ps = [Buffer.from('{"a":1}'), Buffer.from('{"b":2}')];
  const whole = encodeJournal(ps);
  const d = decodeJournal(Buffer.concat([whole, Buffer.alloc(100)]), FILE);
  assert.equal(d.records.length, 2);
  assert.equal(d.end, whole.length);
  assert.match(d.torn ?? '', /100 zero bytes/);
  const bad = Buffer.concat([whole, Buffer.alloc(12), encodeFrame(Buffer.from('{}'))]);
  assert.throws(
    () => decodeJournal(bad, FILE),
    (e: unknown) => e instanceof JournalDamage && e.offset === whole.length,
  );
  assert.throws(() => decodeJournal(Buffer.from('not a journal at all'), FILE), /no "LUNARJNL" header/);
  assert.equal(decodeJournal(journalHeader().subarray(0, 5), FILE).records.length, 0);
});

// ---- the store ----------------------------------------------------------------------------------

test('store: a torn tail is cut at load; acknowledged records stay and later ones append after them', async () => {
  await withDir(async (d) => {
    await storeWithVolumes(d, 3);
    const journal = join(d, journalName(0));
    const good = (await stat(journal)).size;
    // Half of a next frame, as a kill -9 in the middle of its write leaves it.
    const frame = encodeFrame(Buffer.from(formatRecord({ seq: 4, changes: [{ kind: 'volume', id: vol(4).id, record: vol(4) }] })));
    await appendFile(journal, frame.subarray(0, Math.floor(frame.length / 2)));
    const again = await openStateStore(d);
    assert.deepEqual(
      again.volumes().map((v) => v.id),
      [1, 2, 3].map((n) => vol(n).id),
    );
    assert.equal((await stat(journal)).size, good, 'the torn tail was cut');
    await again.update((tx) => {
      tx.addVolume(vol(5));
    });
    await again.close();
    const third = await openStateStore(d);
    assert.deepEqual(
      third.volumes().map((v) => v.id),
      [1, 2, 3, 5].map((n) => vol(n).id),
    );
    await third.close();
  });
});

test('store: damage other than a torn tail stops the load, naming the file and the byte offset', async () => {
  await withDir(async (d) => {
    await storeWithVolumes(d, 3);
    const journal = join(d, journalName(0));
    const bytes = await readFile(journal);
    const offsets = decodeJournal(bytes, journal).records.map((r) => r.offset);
    // A flipped byte inside the second record's payload.
    const damaged = Buffer.from(bytes);
    const at = (offsets[1] as number) + FRAME_HEADER_BYTES + 10;
    damaged[at] = (damaged[at] as number) ^ 0x20;
    await writeFile(journal, damaged);
    await assert.rejects(
      openStateStore(d),
      (e: unknown) =>
        e instanceof StateError && e.message.startsWith(`${journal}: damaged at byte ${offsets[1]}: record checksum mismatch`),
    );
    assert.deepEqual(await readFile(journal), damaged, 'a damaged journal is left as it is');

    // A record whose frame checks but whose content is wrong is named by field.
    const wrong = { ...vol(9), sizeBytes: -1 };
    await writeFile(
      journal,
      encodeJournal([Buffer.from(formatRecord({ seq: 1, changes: [{ kind: 'volume', id: wrong.id, record: wrong } as never] }))]),
    );
    await assert.rejects(
      openStateStore(d),
      (e: unknown) =>
        e instanceof StateError &&
        e.message === `${journal} at byte ${HEADER_BYTES}: changes[0].record.sizeBytes: expected a positive integer, got -1`,
    );
    // Two records of one name after the replay (each record fine on its own).
    await writeFile(
      journal,
      encodeJournal([
        Buffer.from(formatRecord({ seq: 1, changes: [{ kind: 'volume', id: vol(8).id, record: { ...vol(8), name: vol(1).name } }] })),
      ]),
    );
    await assert.rejects(
      openStateStore(d),
      (e: unknown) =>
        e instanceof StateError &&
        e.message.endsWith(`volumes[${JSON.stringify(vol(8).id)}].name: "v1" is also the name of volumes[${JSON.stringify(vol(1).id)}]`),
    );
    // A gap in the seqs (a record missing) is refused too.
    await writeFile(journal, encodeJournal([Buffer.from(formatRecord({ seq: 2, changes: [] }))]));
    await assert.rejects(openStateStore(d), /record seq 2 where 1 was expected/);
    // A snapshot without its journal.
    await rm(journal);
    await assert.rejects(openStateStore(d), /has no journal .*state\.journal\.0/);
  });
});

test('store: compaction under load folds the journal into a new snapshot; every change is kept', async () => {
  await withDir(async (d) => {
    const s = await openStateStore(d, { compactMinBytes: 4096 });
    const seen = new Set<number>();
    // 600 transactions in waves of 30 concurrent ones (group commits), each adding a volume and a
    // snapshot, some removing an earlier volume.
    for (let wave = 0; wave < 20; wave++) {
      await Promise.all(
        Array.from({ length: 30 }, async (_, i) => {
          const n = wave * 30 + i + 1;
          await s.update((tx) => {
            tx.addVolume(vol(n));
            tx.addSnapshot(snap(n));
            if (n % 7 === 0) tx.removeVolume(vol(n - 3).id);
          });
          seen.add(n);
          // Visible once resolved, whatever compaction is doing.
          assert.ok(s.snapshot(snap(n).id));
        }),
      );
      // A compaction started after the wave's last commit has ended once a later transaction is through.
      await s.update(() => undefined);
      const names = await readdir(d);
      assert.equal(names.filter((x) => x.startsWith('state.journal.')).length, 1, `one journal after wave ${wave}: ${names.join(' ')}`);
    }
    assert.equal(seen.size, 600);
    const snapshot = parseState(await readFile(join(d, STATE_FILE), 'utf8'), STATE_FILE);
    assert.ok(snapshot.seq > 0, 'compacted at least once');
    assert.ok(
      (await stat(join(d, journalName(snapshot.seq)))).size - HEADER_BYTES <=
        Math.max(4096, (await stat(join(d, STATE_FILE))).size) + 64 * 1024,
    );
    const expected = s.volumes().map((v) => v.id);
    assert.equal(expected.length, 600 - Math.floor(600 / 7));
    await s.close();
    const again = await openStateStore(d, { compactMinBytes: 4096 });
    assert.deepEqual(
      again.volumes().map((v) => v.id),
      expected,
    );
    assert.equal(again.snapshots().length, 600);
    await again.close();
  });
});

test('store: leftovers of an interrupted compaction are cleared; a non-empty foreign journal is refused', async () => {
  await withDir(async (d) => {
    const s = await openStateStore(d);
    await s.update((tx) => {
      tx.addVolume(vol(1));
    });
    await s.close();
    // Made before a snapshot's rename that never happened (newer, empty) and a journal already folded
    // in (older): both go.
    await writeFile(join(d, journalName(5)), journalHeader());
    const s2 = await openStateStore(d);
    assert.deepEqual((await readdir(d)).sort(), [journalName(0), STATE_FILE]);
    assert.equal(s2.volumes().length, 1);
    await s2.close();
    await writeFile(join(d, journalName(5)), encodeJournal([Buffer.from(formatRecord({ seq: 6, changes: [] }))]));
    await assert.rejects(openStateStore(d), /state\.journal\.5 does not belong to .*not empty/);
  });
});

test('store: a version 1 state.json (the layout before the journal) is migrated at load', async () => {
  await withDir(async (d) => {
    await copyFile(FIXTURE, join(d, STATE_FILE));
    const s = await openStateStore(d);
    assert.equal(s.created, false);
    assert.equal(s.server.id, '3b0e7f7c-5a57-4a4e-9d8e-2f3c1a9b0c11');
    assert.deepEqual(
      s.volumes().map((v) => v.name),
      ['pvc-1111', 'pvc-2222'],
    );
    const v1 = s.volume('vol-00000000000000a1');
    assert.equal(v1?.chap?.secret, 's3cret-a1-0123456789');
    assert.equal(v1.reservations['0']?.reservation?.type, 5);
    assert.deepEqual(s.volume('vol-00000000000000a2')?.source, { kind: 'snapshot', id: 'snap-00000000000000b1' });
    assert.equal(s.snapshotByName('snap-of-1111')?.sourceVolumeId, 'vol-00000000000000a1');
    const migrated = parseState(await readFile(join(d, STATE_FILE), 'utf8'), STATE_FILE);
    assert.equal(migrated.version, 2);
    assert.equal(migrated.seq, 0);
    assert.deepEqual(
      migrated.data,
      JSON.parse(await readFile(FIXTURE, 'utf8'), (k, v: unknown) => (k === 'format' || k === 'version' ? undefined : v)),
    );
    assert.deepEqual((await readdir(d)).sort(), [journalName(0), STATE_FILE]);
    await s.update((tx) => {
      tx.setPublication('vol-00000000000000a2', 'node-2', 'iqn.2026-10.test:node-2');
    });
    await s.close();
    const again = await openStateStore(d);
    assert.deepEqual(again.volume('vol-00000000000000a2')?.publications, { 'node-2': 'iqn.2026-10.test:node-2' });
    assert.equal(again.volumes().length, 2);
    await again.close();
  });
});

test('store: a compaction that cannot make its files leaves the old journal live; changes still commit, compaction comes later', async () => {
  const d = await mkdtemp(join(tmpdir(), 'lunar-journal-'));
  const run = promisify(execFile);
  try {
    const s = await openStateStore(d, { compactMinBytes: 2048 });
    await s.update((tx) => {
      tx.addVolume(vol(1));
    });
    // An immutable directory: no new journal, no temporary snapshot; appends to the journal still work.
    await run('chattr', ['+i', d]);
    for (let n = 2; n <= 40; n++) {
      await s.update((tx) => {
        tx.addVolume(vol(n));
      });
    }
    // The compaction attempted after the last commit has failed once a later transaction is through.
    await s.update(() => undefined);
    await run('chattr', ['-i', d]);
    assert.deepEqual((await readdir(d)).sort(), [journalName(0), STATE_FILE], 'no compaction happened, nothing left behind');
    // Retried once the journal has grown by another eighth of the threshold.
    let n = 41;
    for (; n <= 60 && (await readdir(d)).includes(journalName(0)); n++) {
      await s.update((tx) => {
        tx.addVolume(vol(n));
      });
      await s.update(() => undefined);
    }
    const names = (await readdir(d)).sort();
    assert.equal(names.length, 2);
    assert.notEqual(names[0], journalName(0), `compacted once the directory took writes again: ${names.join(' ')}`);
    await s.close();
    const again = await openStateStore(d);
    assert.equal(again.volumes().length, n - 1);
    await again.close();
  } finally {
    await promisify(execFile)('chattr', ['-R', '-i', d]).catch(() => undefined);
    await rm(d, { recursive: true, force: true });
  }
});
