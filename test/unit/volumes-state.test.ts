// Atomic state files and the transactional state store (src/volumes/state-file.ts: snapshot + journal)
// over a real directory. Failed writes are real too: `chattr +i` makes the journal (the append fails)
// or the data directory (the first snapshot's temporary file cannot be made) immutable, which stops
// even root.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { execFile } from 'node:child_process';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeFileAtomic } from '../../src/util/atomic-file.js';
import { journalName, openStateStore, STATE_FILE } from '../../src/volumes/state-file.js';
import { stateOnDisk } from '../support/state-on-disk.js';
import { snapshotRecord, volumeRecord, withTempDir } from '../support/state-records.js';
import { StateError, type SnapshotRecord, type StateStore, type VolumeRecord } from '../../src/volumes/state.js';

const run = promisify(execFile);

const withDir = (fn: (d: string) => Promise<void>): Promise<void> =>
  withTempDir('lunar-unit-', fn, async (d) => {
    await run('chattr', ['-R', '-i', d]).catch(() => undefined);
  });

/** Make path immutable (true) or not: writes, renames and new entries in it fail with EPERM. */
async function immutable(path: string, on: boolean): Promise<void> {
  await run('chattr', [on ? '+i' : '-i', path]);
}

const snap = (n: number, name = `s${n}`): SnapshotRecord => snapshotRecord(n, 'vol-00000000000000aa', name);
const vol = (n: number): VolumeRecord => volumeRecord(n);

const onDisk = stateOnDisk;

test('writeFileAtomic replaces content, leaves no temporary file, mode 0600', async () => {
  await withDir(async (d) => {
    const p = join(d, 'f.json');
    await writeFileAtomic(p, 'one');
    await writeFileAtomic(p, 'two');
    assert.equal(await readFile(p, 'utf8'), 'two');
    assert.deepEqual(await readdir(d), ['f.json']);
    assert.equal((await stat(p)).mode & 0o777, 0o600);
  });
});

test('writeFileAtomic: concurrent writers never produce a mixed file', async () => {
  await withDir(async (d) => {
    const p = join(d, 'f');
    const a = 'a'.repeat(1 << 20);
    const b = 'b'.repeat(1 << 20);
    await Promise.all([writeFileAtomic(p, a), writeFileAtomic(p, b), writeFileAtomic(p, a)]);
    const c = await readFile(p, 'utf8');
    assert.ok(c === a || c === b);
    assert.deepEqual(await readdir(d), ['f']);
  });
});

test('StateStore: creates a state file with a server identity, reloads it, concurrent updates all land', async () => {
  await withDir(async (d) => {
    const s1 = await openStateStore(d);
    assert.equal(s1.created, true);
    assert.deepEqual(await readdir(d), [], 'nothing is written before the first change');
    const id = s1.server.id;
    assert.match(id, /^[0-9a-f-]{36}$/);
    await Promise.all(
      [1, 2, 3].map((n) =>
        s1.update((tx) => {
          tx.addSnapshot(snap(n, 'n'.repeat(n)));
        }),
      ),
    );
    const s2 = await openStateStore(d);
    assert.equal(s2.created, false);
    assert.equal(s2.server.id, id);
    assert.equal(s2.snapshot(snap(1).id)?.name, 'n');
    assert.deepEqual(
      s2.snapshots().map((x) => x.name),
      ['n', 'nn', 'nnn'],
    );
    assert.equal(s2.snapshotByName('nn')?.id, snap(2).id);
    const file = JSON.parse(await readFile(join(d, STATE_FILE), 'utf8')) as { format: string; version: number };
    assert.equal(file.format, 'lunar-state');
    assert.equal(file.version, 2);
    assert.equal((await stat(join(d, STATE_FILE))).mode & 0o777, 0o600, 'the state file holds CHAP secrets');
    assert.equal((await stat(join(d, journalName(0)))).mode & 0o777, 0o600, 'so does the journal');
    assert.deepEqual((await readdir(d)).sort(), [journalName(0), STATE_FILE]);
  });
});

test('StateStore: initialise writes a new state once; a loaded one is left alone', async () => {
  await withDir(async (d) => {
    const s = await openStateStore(d);
    await s.initialise();
    const first = await readFile(join(d, STATE_FILE), 'utf8');
    assert.match(first, /"lunar-state"/);
    await s.initialise();
    const again = await openStateStore(d);
    assert.equal(again.created, false);
    assert.equal(again.server.id, s.server.id);
    await again.initialise();
    assert.equal(await readFile(join(d, STATE_FILE), 'utf8'), first);
  });
});

test('StateStore: a damaged or foreign state file stops startup with a clear error and is not overwritten', async () => {
  await withDir(async (d) => {
    await writeFile(join(d, STATE_FILE), '{"format": "lunar-state", "version": 1, "server": {');
    await assert.rejects(openStateStore(d), (e: unknown) => e instanceof StateError && /not valid JSON/.test(e.message));
    assert.match(await readFile(join(d, STATE_FILE), 'utf8'), /"server": \{$/);
    await writeFile(join(d, STATE_FILE), '{"hello": 1}');
    await assert.rejects(openStateStore(d), /not a Lunar state file/);
    await writeFile(join(d, STATE_FILE), '{"format": "lunar-state", "version": 9}');
    await assert.rejects(openStateStore(d), /state version 9/);
    await writeFile(
      join(d, STATE_FILE),
      JSON.stringify({ format: 'lunar-state', version: 1, server: { id: 'x', createdAt: '' }, volumes: { a: { id: 'b' } }, snapshots: {} }),
    );
    await assert.rejects(
      openStateStore(d),
      (e: unknown) =>
        e instanceof StateError &&
        e.message === `${join(d, STATE_FILE)}: volumes["a"].id: expected a volume id (vol-<16 hex digits>), got "b"`,
    );
    const v = vol(1);
    const noReservations = Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'reservations'));
    await writeFile(
      join(d, STATE_FILE),
      JSON.stringify({
        format: 'lunar-state',
        version: 1,
        server: { id: 'x', createdAt: '' },
        volumes: { [v.id]: noReservations },
        snapshots: {},
      }),
    );
    await assert.rejects(
      openStateStore(d),
      (e: unknown) =>
        e instanceof StateError && e.message.endsWith(`state.json: volumes["${v.id}"].reservations: missing (expected an object)`),
    );
  });
});

test('StateStore: leftovers of an interrupted atomic write are removed at open', async () => {
  await withDir(async (d) => {
    await (await openStateStore(d)).initialise();
    await writeFile(join(d, `.tmp-${STATE_FILE}.abcdef`), 'partial');
    await openStateStore(d);
    assert.deepEqual((await readdir(d)).sort(), [journalName(0), STATE_FILE]);
  });
});

test('StateStore: a change resolves only once it is on disk, and is visible only then', async () => {
  await withDir(async (d) => {
    const s = await openStateStore(d);
    const done: Array<Promise<void>> = [];
    for (let n = 1; n <= 20; n++) {
      done.push(
        s
          .update((tx) => {
            tx.addSnapshot(snap(n));
          })
          .then(async () => {
            assert.ok(s.snapshot(snap(n).id), `change ${n} visible once resolved`);
            assert.ok((await onDisk(d)).snapshots[snap(n).id], `change ${n} on disk once resolved`);
          }),
      );
      assert.equal(s.snapshot(snap(n).id), undefined, `change ${n} not visible before it is durable`);
    }
    await Promise.all(done);
    assert.equal(s.snapshots().length, 20);
  });
});

test('StateStore: concurrent transactions run one after another in call order, each over the ones before', async () => {
  await withDir(async (d) => {
    const s = await openStateStore(d);
    const seen: number[] = [];
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        s.update((tx) => {
          // Each transaction reads the count the earlier ones left and adds one more.
          const count = tx.snapshots().length;
          seen.push(i);
          tx.addSnapshot(snap(count + 1, `after-${count}`));
          return count;
        }),
      ),
    );
    assert.deepEqual(
      results,
      Array.from({ length: 40 }, (_, i) => i),
      'transaction i saw the i before it',
    );
    assert.deepEqual(
      seen,
      [...seen].sort((a, b) => a - b),
      'in call order',
    );
    assert.equal(Object.keys((await onDisk(d)).snapshots).length, 40);
    const reopened = await openStateStore(d);
    assert.deepEqual(
      reopened.snapshots().map((x) => x.name),
      Array.from({ length: 40 }, (_, i) => `after-${i}`),
    );
  });
});

test('StateStore: a transaction that throws fails alone and changes nothing; misuse is refused', async () => {
  await withDir(async (d) => {
    const s = await openStateStore(d);
    await s.update((tx) => {
      tx.addVolume(vol(1));
    });
    const [a, b, c] = await Promise.allSettled([
      s.update((tx) => {
        tx.addSnapshot(snap(1));
      }),
      s.update((tx) => {
        tx.addSnapshot(snap(2));
        tx.addVolume(vol(1)); // id taken: the whole transaction fails, its snapshot included
      }),
      s.update((tx) => {
        tx.addSnapshot(snap(3));
      }),
    ]);
    assert.equal(a.status, 'fulfilled');
    assert.ok(b.status === 'rejected' && b.reason instanceof StateError && /already recorded/.test(b.reason.message));
    assert.equal(c.status, 'fulfilled');
    assert.deepEqual(
      s.snapshots().map((x) => x.id),
      [snap(1).id, snap(3).id],
    );
    await assert.rejects(
      s.update((tx) => {
        tx.setVolumeSize('vol-0000000000000fff', 5);
      }),
      /not recorded/,
    );
    await assert.rejects(
      s.update((tx) => {
        tx.addVolume({ ...vol(2), name: vol(1).name });
      }),
      /already taken/,
    );
    await assert.rejects(
      s.update(async (tx) => {
        await Promise.resolve();
        tx.addSnapshot(snap(9));
      }),
      /must be synchronous/,
    );
    let kept: Parameters<Parameters<StateStore['update']>[0]>[0] | undefined;
    await s.update((tx) => {
      kept = tx;
    });
    assert.throws(() => kept?.addSnapshot(snap(10)), /used after it ended/);
    assert.equal(s.snapshot(snap(9).id), undefined);
    assert.equal(s.snapshot(snap(10).id), undefined);
    // Records handed out are frozen: changing one is not a way around transactions.
    assert.throws(() => {
      (s.volume(vol(1).id) as { sizeBytes: number }).sizeBytes = 1;
    }, TypeError);
    // typed mutations
    await s.update((tx) => {
      tx.setVolumeSize(vol(1).id, 4 * 1048576);
      tx.setPublication(vol(1).id, 'n1', 'iqn.2026-11.test:n1');
      tx.setPublication(vol(1).id, 'n2', 'iqn.2026-11.test:n2');
      tx.setReservations(vol(1).id, 0, { generation: 3, registrations: [], reservation: null, aptpl: true });
    });
    await s.update((tx) => {
      tx.setPublication(vol(1).id, 'n1', null);
      tx.removeSnapshot(snap(1).id);
    });
    const again = await openStateStore(d);
    const v = again.volume(vol(1).id);
    assert.equal(v?.sizeBytes, 4 * 1048576);
    assert.deepEqual(v.publications, { n2: 'iqn.2026-11.test:n2' });
    assert.equal(v.reservations['0']?.generation, 3);
    assert.deepEqual(
      again.snapshots().map((x) => x.id),
      [snap(3).id],
    );
    await s.update((tx) => {
      tx.removeVolume(vol(1).id);
    });
    assert.equal(s.volumeByName(vol(1).name), undefined);
    assert.deepEqual((await openStateStore(d)).volumes(), []);
  });
});

test('StateStore: a failed write rejects and leaves memory and files as they were', async () => {
  await withDir(async (d) => {
    // The first write (snapshot + journal) cannot make its files (immutable directory).
    const fresh = await openStateStore(d);
    await immutable(d, true);
    await assert.rejects(
      fresh.update((tx) => {
        tx.addSnapshot(snap(1));
      }),
      /EPERM|not permitted/,
    );
    assert.deepEqual(fresh.snapshots(), [], 'memory unchanged');
    await immutable(d, false);
    assert.deepEqual(await readdir(d), [], 'nothing left behind');

    const s = await openStateStore(d);
    await s.update((tx) => {
      tx.addSnapshot(snap(1));
      tx.addVolume(vol(1));
    });
    const journal = join(d, journalName(0));
    const before = { state: await readFile(join(d, STATE_FILE), 'utf8'), journal: await readFile(journal) };
    const memory = (): unknown => ({ v: s.volumes(), s: s.snapshots() });
    const was = memory();

    // The append to the journal fails (immutable file): the whole group commit fails.
    await immutable(journal, true);
    const failing = await Promise.allSettled([
      s.update((tx) => {
        tx.addSnapshot(snap(2));
      }),
      s.update((tx) => {
        tx.setPublication(vol(1).id, 'n', 'iqn.2026-11.test:n');
      }),
      s.update((tx) => {
        tx.removeVolume(vol(1).id);
      }),
    ]);
    for (const r of failing) assert.ok(r.status === 'rejected' && /EPERM|not permitted/.test(String(r.reason)), r.status);
    assert.deepEqual(memory(), was, 'memory unchanged');
    await immutable(journal, false);
    assert.equal(await readFile(join(d, STATE_FILE), 'utf8'), before.state, 'snapshot unchanged');
    assert.deepEqual(await readFile(journal), before.journal, 'journal unchanged');
    assert.deepEqual((await readdir(d)).sort(), [journalName(0), STATE_FILE], 'no temporary file left');

    // Once the file system accepts writes again, the same change goes through.
    await s.update((tx) => {
      tx.addSnapshot(snap(2));
    });
    assert.ok(s.snapshot(snap(2).id));
    assert.ok((await onDisk(d)).snapshots[snap(2).id]);
    assert.deepEqual(
      (await openStateStore(d)).snapshots().map((x) => x.id),
      [snap(1).id, snap(2).id],
    );
  });
});

test('StateStore: close waits for queued transactions, then refuses more', async () => {
  await withDir(async (d) => {
    const s = await openStateStore(d);
    const p = s.update((tx) => {
      tx.addSnapshot(snap(1));
    });
    await s.close();
    await p;
    assert.ok((await onDisk(d)).snapshots[snap(1).id]);
    await assert.rejects(
      s.update(() => undefined),
      /closed/,
    );
  });
});
