// Persistent reservations (SPC-4 §5.13, §6.15, §6.16) and SPC-2 RESERVE/RELEASE, driven with real
// CDBs and parameter lists through the ReservationManager contract.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createReservationManager } from '../../src/scsi/pr.js';
import type { ITNexus, LogicalUnitHooks, PersistentReservationSnapshot, ReservationManager, ScsiResponse } from '../../src/scsi/types.js';
import { ScsiStatus } from '../../src/scsi/types.js';
import { buildNexus } from '../../src/iscsi/session.js';
import { prinCdb, proutCdb, proutParams } from '../support/scsi.js';

// ----- fixtures -------------------------------------------------------------------------------

const TARGET = 'iqn.2026-01.io.lunar:vol-1';

function nexus(initiator: string, isid: string, tpgt = 1): ITNexus {
  return buildNexus(initiator, isid, TARGET, tpgt);
}

const A = nexus('iqn.2026-01.test:a', '400001370000');
const B = nexus('iqn.2026-01.test:b', '400001370000');
const C = nexus('iqn.2026-01.test:c', '23d000000001');
const A2 = nexus('iqn.2026-01.test:a', '400001370000', 2); // same initiator port, second target port

interface Recorded {
  uas: Array<{ nexus: string; asc: number; ascq: number }>;
  aborted: string[][];
  snapshots: PersistentReservationSnapshot[];
}

function setup(known: ITNexus[] = [A, B, C, A2], initial?: PersistentReservationSnapshot): { pr: ReservationManager; rec: Recorded } {
  const rec: Recorded = { uas: [], aborted: [], snapshots: [] };
  const hooks: LogicalUnitHooks = {
    queueUnitAttention: (k, ua) => rec.uas.push({ nexus: k, asc: ua.asc, ascq: ua.ascq }),
    nexusKeys: () => known.map((n) => n.key),
    abortTasksOf: (keys) => rec.aborted.push([...keys]),
  };
  const pr = createReservationManager(hooks, initial, (s) => {
    rec.snapshots.push(s);
    return Promise.resolve();
  });
  return { pr, rec };
}

const SA = { REGISTER: 0, RESERVE: 1, RELEASE: 2, CLEAR: 3, PREEMPT: 4, PREEMPT_AND_ABORT: 5, REGISTER_IGNORE: 6, REGISTER_AND_MOVE: 7 };
const T = { WE: 1, EA: 3, WERO: 5, EARO: 6, WEAR: 7, EAAR: 8 };

const READ10 = Buffer.from([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
const WRITE10 = Buffer.from([0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
const TUR = Buffer.from([0, 0, 0, 0, 0, 0]);
const INQUIRY = Buffer.from([0x12, 0, 0, 0, 96, 0]);
const MODE_SENSE6 = Buffer.from([0x1a, 0, 0x3f, 0, 192, 0]);
const SYNC_CACHE10 = Buffer.from([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const READ_CAPACITY16 = Buffer.from([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]);
const RESERVE6 = Buffer.from([0x16, 0, 0, 0, 0, 0]);
const RELEASE6 = Buffer.from([0x17, 0, 0, 0, 0, 0]);
const RESERVE10 = Buffer.from([0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const RELEASE10 = Buffer.from([0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

function register(
  pr: ReservationManager,
  n: ITNexus,
  key: bigint,
  flags: { allTgPt?: boolean; aptpl?: boolean } = {},
): Promise<ScsiResponse> {
  return pr.persistentReserveOut(n, proutCdb(SA.REGISTER_IGNORE), proutParams(0n, key, flags));
}
function reserve(pr: ReservationManager, n: ITNexus, key: bigint, type: number): Promise<ScsiResponse> {
  return pr.persistentReserveOut(n, proutCdb(SA.RESERVE, type), proutParams(key, 0n));
}

function assertGood(r: ScsiResponse, what = ''): void {
  assert.equal(r.status, ScsiStatus.GOOD, `${what}: expected GOOD, got status ${r.status} sense ${r.sense?.toString('hex')}`);
}
function assertConflict(r: ScsiResponse): void {
  assert.equal(r.status, ScsiStatus.RESERVATION_CONFLICT);
  assert.equal(r.sense, null);
}
function assertIllegal(r: ScsiResponse, asc: number, ascq: number): void {
  assert.equal(r.status, ScsiStatus.CHECK_CONDITION);
  assert.ok(r.sense);
  assert.equal(r.sense[0], 0x70);
  assert.equal(r.sense[2]! & 0x0f, 0x05, 'ILLEGAL REQUEST');
  assert.equal(r.sense[7], 10);
  assert.equal(r.sense[12], asc);
  assert.equal(r.sense[13], ascq);
}

function readKeys(pr: ReservationManager, n: ITNexus): { generation: number; keys: bigint[] } {
  const r = pr.persistentReserveIn(n, prinCdb(0));
  assertGood(r, 'READ KEYS');
  const d = r.data!;
  const len = d.readUInt32BE(4);
  const keys: bigint[] = [];
  for (let o = 8; o < 8 + len; o += 8) keys.push(d.readBigUInt64BE(o));
  return { generation: d.readUInt32BE(0), keys };
}

function readReservation(
  pr: ReservationManager,
  n: ITNexus,
): { generation: number; key: bigint; type: number; scope: number } | { generation: number; none: true } {
  const r = pr.persistentReserveIn(n, prinCdb(1));
  assertGood(r, 'READ RESERVATION');
  const d = r.data!;
  const len = d.readUInt32BE(4);
  if (len === 0) {
    assert.equal(d.length, 8);
    return { generation: d.readUInt32BE(0), none: true };
  }
  assert.equal(len, 16);
  assert.equal(d.length, 24);
  return { generation: d.readUInt32BE(0), key: d.readBigUInt64BE(8), scope: d[21]! >> 4, type: d[21]! & 0x0f };
}

const K1 = 0x1111111111111111n;
const K2 = 0x2222222222222222n;
const K3 = 0x3333333333333333n;

// ----- REGISTER -------------------------------------------------------------------------------

describe('PR OUT REGISTER / REGISTER AND IGNORE EXISTING KEY (SPC-4 §5.13.7)', () => {
  test('register, re-key, unregister; generation counts each change', async () => {
    const { pr, rec } = setup();
    assert.deepEqual(readKeys(pr, A), { generation: 0, keys: [] });
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER), proutParams(0n, K1)));
    assert.deepEqual(readKeys(pr, B), { generation: 1, keys: [K1] });
    // Wrong reservation key from a registered nexus: RESERVATION CONFLICT, nothing changes.
    assertConflict(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER), proutParams(K2, K3)));
    assert.deepEqual(readKeys(pr, A), { generation: 1, keys: [K1] });
    // Re-key with the right key.
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER), proutParams(K1, K2)));
    assert.deepEqual(readKeys(pr, A), { generation: 2, keys: [K2] });
    // Unregister (SARK 0).
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER), proutParams(K2, 0n)));
    assert.deepEqual(readKeys(pr, A), { generation: 3, keys: [] });
    assert.equal(rec.snapshots.length, 3);
    assert.equal(rec.uas.length, 0);
  });

  test('unregistered nexus: REGISTER with a non-zero reservation key conflicts; SARK 0 is a no-op', async () => {
    const { pr, rec } = setup();
    assertConflict(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER), proutParams(K1, K2)));
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER), proutParams(0n, 0n)));
    assert.deepEqual(readKeys(pr, A), { generation: 0, keys: [] });
    assert.equal(rec.snapshots.length, 0);
  });

  test('REGISTER AND IGNORE EXISTING KEY replaces whatever key is registered', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER_IGNORE), proutParams(0xdeadn, K2)));
    assert.deepEqual(readKeys(pr, A).keys, [K2]);
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER_IGNORE), proutParams(0n, 0n)));
    assert.deepEqual(readKeys(pr, A).keys, []);
  });

  test('the same initiator on another target port is a different I_T nexus', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, A2, K2));
    assert.deepEqual(readKeys(pr, A).keys, [K1, K2]);
  });

  test('ALL_TG_PT registers the initiator port on every target port', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1, { allTgPt: true }));
    // A2 (same initiator port, target port 2) is registered: it may reserve with K1.
    assertGood(await reserve(pr, A2, K1, T.WE));
    const rr = readReservation(pr, B);
    assert.ok(!('none' in rr));
    assert.equal(rr.key, K1);
    assert.equal(rr.type, T.WE);
    // Unregistering through A removes the registration for every target port and releases the reservation.
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER), proutParams(K1, 0n)));
    assert.ok('none' in readReservation(pr, B));
    assert.deepEqual(readKeys(pr, B).keys, []);
  });

  test('ALL_TG_PT cannot be mixed with registrations the port holds through other target ports', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A2, K2));
    const r = await register(pr, A, K1, { allTgPt: true });
    assertIllegal(r, 0x26, 0x00);
    assert.equal(r.sense!.readUInt16BE(16), 20);
    assert.equal(r.sense![15]! & 0x0f, 0x08 | 2, 'bit pointer: ALL_TG_PT');
    assertGood(await register(pr, A, K1), 'a plain registration of the other I_T nexus is fine');
    assert.deepEqual(readKeys(pr, B).keys, [K2, K1]);
  });

  test('SPEC_I_PT is refused with INVALID FIELD IN PARAMETER LIST (SIP_C=0)', async () => {
    const { pr } = setup();
    const p = Buffer.concat([proutParams(0n, K1, { specIPt: true }), Buffer.alloc(4)]);
    const r = await pr.persistentReserveOut(A, proutCdb(SA.REGISTER, 0, p.length), p);
    assertIllegal(r, 0x26, 0x00);
    assert.equal(r.sense![15]! & 0x80, 0x80, 'SKSV');
    assert.equal(r.sense![15]! & 0x40, 0, 'C/D=0: parameter list');
    assert.equal(r.sense!.readUInt16BE(16), 20);
  });

  test('parameter list length other than 24 is a PARAMETER LIST LENGTH ERROR', async () => {
    const { pr } = setup();
    assertIllegal(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER, 0, 20), Buffer.alloc(20)), 0x1a, 0x00);
    assertIllegal(
      await pr.persistentReserveOut(A, proutCdb(SA.REGISTER, 0, 28), Buffer.concat([proutParams(0n, K1), Buffer.alloc(4)])),
      0x1a,
      0x00,
    );
    assertIllegal(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER, 0, 24), null), 0x1a, 0x00);
    assert.deepEqual(readKeys(pr, A).keys, []);
  });

  test('unknown service action is INVALID FIELD IN CDB', async () => {
    const { pr } = setup();
    const r = await pr.persistentReserveOut(A, proutCdb(0x08), proutParams(0n, 0n));
    assertIllegal(r, 0x24, 0x00);
    assert.equal(r.sense![15]! & 0x40, 0x40, 'C/D=1: CDB');
    assert.equal(r.sense!.readUInt16BE(16), 1);
  });

  test('APTPL follows the last registration and shows in REPORT CAPABILITIES', async () => {
    const { pr, rec } = setup();
    assertGood(await register(pr, A, K1, { aptpl: true }));
    assert.equal(rec.snapshots.at(-1)!.aptpl, true);
    const caps = pr.persistentReserveIn(A, prinCdb(2)).data!;
    assert.equal(caps[3]! & 0x01, 1, 'PTPL_A');
    assertGood(await register(pr, B, K2, { aptpl: false }));
    assert.equal(rec.snapshots.at(-1)!.aptpl, false);
    assert.equal(pr.persistentReserveIn(A, prinCdb(2)).data![3]! & 0x01, 0);
  });
});

// ----- RESERVE / RELEASE ---------------------------------------------------------------------

describe('PR OUT RESERVE / RELEASE (SPC-4 §5.13.9, §5.13.11.2.2)', () => {
  test('reserve requires a registration with the same key', async () => {
    const { pr } = setup();
    assertConflict(await reserve(pr, A, K1, T.WE));
    assertGood(await register(pr, A, K1));
    assertConflict(await reserve(pr, A, K2, T.WE));
    assertGood(await reserve(pr, A, K1, T.WE));
    const rr = readReservation(pr, A);
    assert.ok(!('none' in rr));
    assert.deepEqual(rr, { generation: 1, key: K1, type: T.WE, scope: 0 });
  });

  test('RESERVE does not change the generation; a repeat of the same type is GOOD, another type conflicts', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await reserve(pr, A, K1, T.EA));
    assert.equal(readKeys(pr, A).generation, 1);
    assertGood(await reserve(pr, A, K1, T.EA));
    assertConflict(await reserve(pr, A, K1, T.WE));
    assertGood(await register(pr, B, K2));
    assertConflict(await reserve(pr, B, K2, T.EA));
  });

  test('invalid type and scope are INVALID FIELD IN CDB', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    for (const t of [0, 2, 4, 9, 15]) assertIllegal(await reserve(pr, A, K1, t), 0x24, 0x00);
    assertIllegal(await pr.persistentReserveOut(A, proutCdb(SA.RESERVE, T.WE, 24, 1), proutParams(K1, 0n)), 0x24, 0x00);
    assert.ok('none' in readReservation(pr, A));
  });

  test('release by the holder; wrong type is INVALID RELEASE OF PERSISTENT RESERVATION', async () => {
    const { pr, rec } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, B, K2));
    assertGood(await reserve(pr, A, K1, T.WE));
    assertIllegal(await pr.persistentReserveOut(A, proutCdb(SA.RELEASE, T.EA), proutParams(K1, 0n)), 0x26, 0x04);
    // Non-holder registrant: GOOD, nothing released.
    assertGood(await pr.persistentReserveOut(B, proutCdb(SA.RELEASE, T.WE), proutParams(K2, 0n)));
    assert.ok(!('none' in readReservation(pr, A)));
    // Unregistered nexus: conflict.
    assertConflict(await pr.persistentReserveOut(C, proutCdb(SA.RELEASE, T.WE), proutParams(0n, 0n)));
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.RELEASE, T.WE), proutParams(K1, 0n)));
    assert.ok('none' in readReservation(pr, A));
    // WE is neither registrants-only nor all-registrants: no RESERVATIONS RELEASED.
    assert.deepEqual(rec.uas, []);
    assert.equal(readKeys(pr, A).generation, 2, 'RELEASE does not bump the generation');
  });

  for (const [name, type] of [
    ['WE-RO', T.WERO],
    ['EA-RO', T.EARO],
    ['WE-AR', T.WEAR],
    ['EA-AR', T.EAAR],
  ] as const) {
    test(`release of ${name} queues RESERVATIONS RELEASED to the other registrants only`, async () => {
      const { pr, rec } = setup();
      assertGood(await register(pr, A, K1));
      assertGood(await register(pr, B, K2));
      assertGood(await reserve(pr, A, K1, type));
      assertGood(await pr.persistentReserveOut(A, proutCdb(SA.RELEASE, type), proutParams(K1, 0n)));
      assert.deepEqual(rec.uas, [{ nexus: B.key, asc: 0x2a, ascq: 0x04 }]);
    });
  }

  test('all-registrants: every registrant is a holder and READ RESERVATION reports key 0', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, B, K2));
    assertGood(await reserve(pr, A, K1, T.WEAR));
    const rr = readReservation(pr, C);
    assert.ok(!('none' in rr));
    assert.equal(rr.key, 0n);
    assert.equal(rr.type, T.WEAR);
    // B is a holder too: it may release.
    assertGood(await pr.persistentReserveOut(B, proutCdb(SA.RELEASE, T.WEAR), proutParams(K2, 0n)));
    assert.ok('none' in readReservation(pr, C));
  });
});

// ----- ownership on unregister (libiscsi ProutReserve.Ownership*) ------------------------------

describe('unregistering the holder (SPC-4 §5.13.11.2.3)', () => {
  for (const [name, type, ua] of [
    ['EA', T.EA, false],
    ['WE', T.WE, false],
    ['EA-RO', T.EARO, true],
    ['WE-RO', T.WERO, true],
  ] as const) {
    test(`${name}: reservation released; RESERVATIONS RELEASED ${ua ? 'to the remaining registrants' : 'to nobody'}`, async () => {
      const { pr, rec } = setup();
      assertGood(await register(pr, A, K1));
      assertGood(await register(pr, B, K2));
      assertGood(await reserve(pr, A, K1, type));
      assertGood(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER), proutParams(K1, 0n)));
      assert.ok('none' in readReservation(pr, A));
      // Never to the I_T nexus that unregistered (that is what tgt gets wrong).
      assert.ok(!rec.uas.some((u) => u.nexus === A.key));
      assert.deepEqual(rec.uas, ua ? [{ nexus: B.key, asc: 0x2a, ascq: 0x04 }] : []);
    });
  }
  for (const [name, type] of [
    ['EA-AR', T.EAAR],
    ['WE-AR', T.WEAR],
  ] as const) {
    test(`${name}: reservation stays while a registrant remains, goes with the last one`, async () => {
      const { pr, rec } = setup();
      assertGood(await register(pr, A, K1));
      assertGood(await register(pr, B, K2));
      assertGood(await reserve(pr, A, K1, type));
      assertGood(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER), proutParams(K1, 0n)));
      const rr = readReservation(pr, A);
      assert.ok(!('none' in rr));
      assert.equal(rr.type, type);
      assertGood(await pr.persistentReserveOut(B, proutCdb(SA.RELEASE, type), proutParams(K2, 0n)));
      assertGood(await pr.persistentReserveOut(B, proutCdb(SA.REGISTER), proutParams(K2, 0n)));
      assert.ok('none' in readReservation(pr, A));
      assert.deepEqual(rec.uas, []);
    });
  }
});

// ----- CLEAR ----------------------------------------------------------------------------------

describe('PR OUT CLEAR (SPC-4 §5.13.11.2.6)', () => {
  test('removes everything, RESERVATIONS PREEMPTED to the others, generation + 1', async () => {
    const { pr, rec } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, B, K2));
    assertGood(await register(pr, C, K3));
    assertGood(await reserve(pr, B, K2, T.EARO));
    assertConflict(await pr.persistentReserveOut(A, proutCdb(SA.CLEAR), proutParams(K2, 0n)));
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.CLEAR), proutParams(K1, 0n)));
    assert.deepEqual(readKeys(pr, A), { generation: 4, keys: [] });
    assert.ok('none' in readReservation(pr, A));
    assert.deepEqual(
      rec.uas.map((u) => [u.nexus, u.asc, u.ascq]),
      [
        [B.key, 0x2a, 0x03],
        [C.key, 0x2a, 0x03],
      ],
    );
  });
  test('from an unregistered nexus conflicts', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    assertConflict(await pr.persistentReserveOut(C, proutCdb(SA.CLEAR), proutParams(0n, 0n)));
    assert.deepEqual(readKeys(pr, A).keys, [K1]);
  });
});

// ----- PREEMPT / PREEMPT AND ABORT ------------------------------------------------------------

describe('PR OUT PREEMPT / PREEMPT AND ABORT (SPC-4 §5.13.11.2.4-5)', () => {
  test('without a reservation: removes the registrations with that key (libiscsi ProutPreempt.RemoveRegistration)', async () => {
    const { pr, rec } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, B, K2));
    assertGood(await register(pr, C, K2));
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.PREEMPT, T.WE), proutParams(K1, K2)));
    assert.deepEqual(readKeys(pr, A), { generation: 4, keys: [K1] });
    assert.deepEqual(
      rec.uas.map((u) => [u.nexus, u.ascq]),
      [
        [B.key, 0x05],
        [C.key, 0x05],
      ],
    );
    // A key nobody holds: conflict; SARK 0 without a reservation: INVALID FIELD IN PARAMETER LIST.
    assertConflict(await pr.persistentReserveOut(A, proutCdb(SA.PREEMPT, T.WE), proutParams(K1, K3)));
    assertIllegal(await pr.persistentReserveOut(A, proutCdb(SA.PREEMPT, T.WE), proutParams(K1, 0n)), 0x26, 0x00);
  });

  test('preempting the holder moves the reservation; type change releases for the rest', async () => {
    const { pr, rec } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, B, K2));
    assertGood(await register(pr, C, K3));
    assertGood(await reserve(pr, B, K2, T.WE));
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.PREEMPT, T.EA), proutParams(K1, K2)));
    const rr = readReservation(pr, A);
    assert.ok(!('none' in rr));
    assert.equal(rr.key, K1);
    assert.equal(rr.type, T.EA);
    assert.deepEqual(readKeys(pr, A).keys, [K1, K3]);
    assert.deepEqual(
      rec.uas.map((u) => [u.nexus, u.ascq]),
      [
        [B.key, 0x05],
        [C.key, 0x04],
      ],
    );
    assert.deepEqual(rec.aborted, []);
  });

  test('preempting a non-holder key leaves the reservation alone', async () => {
    const { pr, rec } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, B, K2));
    assertGood(await register(pr, C, K3));
    assertGood(await reserve(pr, A, K1, T.WE));
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.PREEMPT, T.WE), proutParams(K1, K3)));
    const rr = readReservation(pr, B);
    assert.ok(!('none' in rr));
    assert.equal(rr.key, K1);
    assert.deepEqual(readKeys(pr, A).keys, [K1, K2]);
    assert.deepEqual(rec.uas, [{ nexus: C.key, asc: 0x2a, ascq: 0x05 }]);
  });

  test('all-registrants with SARK 0: everyone else is unregistered, sender holds the new reservation', async () => {
    const { pr, rec } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, B, K2));
    assertGood(await reserve(pr, B, K2, T.EAAR));
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.PREEMPT, T.WE), proutParams(K1, 0n)));
    const rr = readReservation(pr, A);
    assert.ok(!('none' in rr));
    assert.equal(rr.type, T.WE);
    assert.equal(rr.key, K1);
    assert.deepEqual(readKeys(pr, A).keys, [K1]);
    assert.deepEqual(rec.uas, [{ nexus: B.key, asc: 0x2a, ascq: 0x05 }]);
  });

  test('PREEMPT AND ABORT aborts the tasks of the preempted I_T nexuses', async () => {
    const { pr, rec } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, B, K2));
    assertGood(await reserve(pr, B, K2, T.EA));
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.PREEMPT_AND_ABORT, T.EA), proutParams(K1, K2)));
    assert.deepEqual(rec.aborted, [[B.key]]);
    assert.deepEqual(rec.uas, [{ nexus: B.key, asc: 0x2a, ascq: 0x05 }]);
  });

  test('an ALL_TG_PT registration is preempted on every target port', async () => {
    const { pr, rec } = setup();
    assertGood(await register(pr, A, K1, { allTgPt: true }));
    assertGood(await register(pr, B, K2));
    assertGood(await pr.persistentReserveOut(B, proutCdb(SA.PREEMPT_AND_ABORT, T.WE), proutParams(K2, K1)));
    assert.deepEqual(rec.aborted, [[A.key, A2.key]]);
    assert.deepEqual(
      rec.uas.map((u) => u.nexus),
      [A.key, A2.key],
    );
  });

  test('preempt from an unregistered nexus or with the wrong key conflicts', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    assertConflict(await pr.persistentReserveOut(C, proutCdb(SA.PREEMPT, T.WE), proutParams(0n, K1)));
    assertConflict(await pr.persistentReserveOut(A, proutCdb(SA.PREEMPT, T.WE), proutParams(K2, K1)));
  });
});

// ----- REGISTER AND MOVE ----------------------------------------------------------------------

function iscsiTransportId(text: string, format: 0 | 1): Buffer {
  const name = Buffer.from(text);
  const len = Math.max(20, (name.length + 1 + 3) & ~3);
  const b = Buffer.alloc(4 + len);
  b[0] = (format << 6) | 0x05;
  b.writeUInt16BE(len, 2);
  name.copy(b, 4);
  return b;
}

function moveParams(rk: bigint, sark: bigint, rtpi: number, tid: Buffer, unreg = false): Buffer {
  const p = Buffer.alloc(24 + tid.length);
  p.writeBigUInt64BE(rk, 0);
  p.writeBigUInt64BE(sark, 8);
  p[17] = unreg ? 0x02 : 0;
  p.writeUInt16BE(rtpi, 18);
  p.writeUInt32BE(tid.length, 20);
  tid.copy(p, 24);
  return p;
}

describe('PR OUT REGISTER AND MOVE (SPC-4 §5.13.8)', () => {
  test('moves the reservation to an I_T nexus named by a format 01b TransportID, UNREG drops the source', async () => {
    const { pr, rec } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await reserve(pr, A, K1, T.WERO));
    const p = moveParams(K1, K2, 1, iscsiTransportId(B.initiatorPortName, 1), true);
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER_AND_MOVE, T.WERO, p.length), p));
    const rr = readReservation(pr, C);
    assert.ok(!('none' in rr));
    assert.equal(rr.key, K2);
    assert.equal(rr.type, T.WERO);
    assert.deepEqual(readKeys(pr, C).keys, [K2]);
    assert.equal(rec.snapshots.at(-1)!.reservation!.holder, B.key);
    // B now holds it: B writes, A (unregistered) may not.
    assert.equal(pr.conflicts(B, WRITE10), false);
    assert.equal(pr.conflicts(A, WRITE10), true);
  });

  test('format 00b TransportID resolves to the one known I_T nexus of that initiator', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await reserve(pr, A, K1, T.EA));
    const p = moveParams(K1, K3, 1, iscsiTransportId(C.initiatorName, 0));
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER_AND_MOVE, T.EA, p.length), p));
    assert.equal(pr.conflicts(C, READ10), false);
    assert.equal(pr.conflicts(A, READ10), true);
    assert.deepEqual(readKeys(pr, A).keys, [K1, K3]);
  });

  test('moving between two target ports of one ALL_TG_PT registration keeps that registration', async () => {
    const { pr, rec } = setup();
    assertGood(await register(pr, A, K1, { allTgPt: true }));
    assertGood(await reserve(pr, A, K1, T.EA));
    const p = moveParams(K1, K2, 2, iscsiTransportId(A2.initiatorPortName, 1), true);
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER_AND_MOVE, T.EA, p.length), p));
    assert.equal(rec.snapshots.at(-1)!.reservation!.holder, A2.key);
    assert.deepEqual(readKeys(pr, B).keys, [K2]);
    assert.equal(pr.conflicts(A2, WRITE10), false);
    assert.equal(pr.conflicts(A, WRITE10), true, 'EA: A on port 1 is registered but no longer the holder');
  });

  test('refusals: not holder, all-registrants, SARK 0, move to itself, bad TransportID', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, B, K2));
    const toC = moveParams(K2, K3, 1, iscsiTransportId(C.initiatorPortName, 1));
    // No reservation.
    assertConflict(await pr.persistentReserveOut(B, proutCdb(SA.REGISTER_AND_MOVE, 0, toC.length), toC));
    assertGood(await reserve(pr, A, K1, T.WE));
    // B is not the holder.
    assertConflict(await pr.persistentReserveOut(B, proutCdb(SA.REGISTER_AND_MOVE, 0, toC.length), toC));
    const zero = moveParams(K1, 0n, 1, iscsiTransportId(C.initiatorPortName, 1));
    assertIllegal(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER_AND_MOVE, 0, zero.length), zero), 0x26, 0x00);
    const self = moveParams(K1, K3, 1, iscsiTransportId(A.initiatorPortName, 1));
    assertIllegal(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER_AND_MOVE, 0, self.length), self), 0x26, 0x00);
    const badTid = iscsiTransportId(C.initiatorPortName, 1);
    badTid[0] = 0x01; // FC protocol id
    const bad = moveParams(K1, K3, 1, badTid);
    assertIllegal(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER_AND_MOVE, 0, bad.length), bad), 0x26, 0x00);
    const short = moveParams(K1, K3, 1, iscsiTransportId(C.initiatorPortName, 1));
    assertIllegal(await pr.persistentReserveOut(A, proutCdb(SA.REGISTER_AND_MOVE, 0, 30), short.subarray(0, 30)), 0x1a, 0x00);
    const rr = readReservation(pr, A);
    assert.ok(!('none' in rr));
    assert.equal(rr.key, K1);
    // All-registrants reservations cannot be moved.
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.RELEASE, T.WE), proutParams(K1, 0n)));
    assertGood(await reserve(pr, A, K1, T.WEAR));
    assertConflict(
      await pr.persistentReserveOut(
        A,
        proutCdb(SA.REGISTER_AND_MOVE, 0, toC.length),
        moveParams(K1, K3, 1, iscsiTransportId(C.initiatorPortName, 1)),
      ),
    );
  });
});

// ----- PERSISTENT RESERVE IN ------------------------------------------------------------------

describe('PERSISTENT RESERVE IN (SPC-4 §6.15)', () => {
  test('service actions 0-3 succeed, 4-31 are INVALID FIELD IN CDB (libiscsi PrinServiceactionRange)', () => {
    const { pr } = setup();
    for (let sa = 0; sa < 4; sa++) assertGood(pr.persistentReserveIn(A, prinCdb(sa)), `SA ${sa}`);
    for (let sa = 4; sa < 0x20; sa++) assertIllegal(pr.persistentReserveIn(A, prinCdb(sa)), 0x24, 0x00);
  });

  test('allocation length truncates (libiscsi PrinReadKeys.Truncate)', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, B, K2));
    const r = pr.persistentReserveIn(A, prinCdb(0, 12));
    assertGood(r);
    assert.equal(r.data!.length, 12);
    assert.equal(r.data!.readUInt32BE(4), 16, 'ADDITIONAL LENGTH still reports every key');
    assert.equal(pr.persistentReserveIn(A, prinCdb(0, 0)).data!.length, 0);
  });

  test('REPORT CAPABILITIES', () => {
    const { pr } = setup();
    const d = pr.persistentReserveIn(A, prinCdb(2)).data!;
    assert.equal(d.length, 8);
    assert.equal(d.readUInt16BE(0), 8);
    assert.equal(d[2]! & 0x10, 0x10, 'CRH');
    assert.equal(d[2]! & 0x08, 0, 'SIP_C=0');
    assert.equal(d[2]! & 0x04, 0x04, 'ATP_C');
    assert.equal(d[2]! & 0x01, 0x01, 'PTPL_C');
    assert.equal(d[3]! & 0x80, 0x80, 'TMV');
    assert.equal(d.readUInt16BE(4), 0xea01, 'type mask: WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX EX_AC_AR');
  });

  test('READ FULL STATUS describes every registration with an iSCSI TransportID', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, B, K2, { allTgPt: true }));
    assertGood(await reserve(pr, A, K1, T.WERO));
    const d = pr.persistentReserveIn(C, prinCdb(3)).data!;
    assert.equal(d.readUInt32BE(0), 2, 'generation');
    assert.equal(d.readUInt32BE(4), d.length - 8);
    const seen: Array<{ key: bigint; allTgPt: boolean; holder: boolean; type: number; rtpi: number; tid: string; format: number }> = [];
    let o = 8;
    while (o < d.length) {
      const addl = d.readUInt32BE(o + 20);
      const tid = d.subarray(o + 24, o + 24 + addl);
      assert.equal(tid[0]! & 0x0f, 5, 'iSCSI protocol identifier');
      assert.equal(tid.readUInt16BE(2) % 4, 0);
      assert.equal(tid.readUInt16BE(2) + 4, addl);
      const text = tid.subarray(4).toString('utf8').replace(/\0+$/, '');
      seen.push({
        key: d.readBigUInt64BE(o),
        allTgPt: (d[o + 12]! & 2) !== 0,
        holder: (d[o + 12]! & 1) !== 0,
        type: d[o + 13]! & 0x0f,
        rtpi: d.readUInt16BE(o + 18),
        tid: text,
        format: tid[0]! >> 6,
      });
      o += 24 + addl;
    }
    assert.equal(o, d.length);
    assert.deepEqual(seen, [
      { key: K1, allTgPt: false, holder: true, type: T.WERO, rtpi: 1, tid: A.initiatorPortName, format: 1 },
      { key: K2, allTgPt: true, holder: false, type: 0, rtpi: 0, tid: B.initiatorPortName, format: 1 },
    ]);
  });
});

// ----- Table 55 access -------------------------------------------------------------------------

describe('command access under persistent reservations (SPC-4 §5.13.1 Table 55)', () => {
  // Expectations from libiscsi's ProutReserve.Access* and the table: [registered read, registered write,
  // unregistered read, unregistered write] for a non-holder.
  const cases: Array<[string, number, [boolean, boolean, boolean, boolean]]> = [
    ['EA', T.EA, [false, false, false, false]],
    ['WE', T.WE, [true, false, true, false]],
    ['EA-RO', T.EARO, [true, true, false, false]],
    ['WE-RO', T.WERO, [true, true, true, false]],
    ['EA-AR', T.EAAR, [true, true, false, false]],
    ['WE-AR', T.WEAR, [true, true, true, false]],
  ];
  for (const [name, type, [rr, rw, ur, uw]] of cases) {
    test(name, async () => {
      const { pr } = setup();
      assertGood(await register(pr, A, K1));
      assertGood(await register(pr, B, K2));
      assertGood(await reserve(pr, A, K1, type));
      assert.equal(pr.conflicts(A, READ10), false);
      assert.equal(pr.conflicts(A, WRITE10), false);
      assert.equal(pr.conflicts(B, READ10), !rr, 'registered read');
      assert.equal(pr.conflicts(B, WRITE10), !rw, 'registered write');
      assert.equal(pr.conflicts(C, READ10), !ur, 'unregistered read');
      assert.equal(pr.conflicts(C, WRITE10), !uw, 'unregistered write');
      // Always allowed.
      for (const cdb of [INQUIRY, TUR, READ_CAPACITY16, prinCdb(0), proutCdb(0)]) assert.equal(pr.conflicts(C, cdb), false);
      // MODE SENSE reads: like READ. SYNCHRONIZE CACHE: like WRITE.
      assert.equal(pr.conflicts(C, MODE_SENSE6), !ur);
      assert.equal(pr.conflicts(C, SYNC_CACHE10), !uw);
    });
  }

  test('no reservation: nothing conflicts even with registrations', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    assert.equal(pr.conflicts(C, WRITE10), false);
  });
});

// ----- SPC-2 RESERVE / RELEASE ------------------------------------------------------------------

describe('RESERVE(6)/(10) and RELEASE(6)/(10) (SPC-2 §7.21, §7.17; SPC-4 §5.13.3)', () => {
  test('libiscsi Reserve6.2Initiators sequence', async () => {
    const { pr } = setup();
    assertGood(await pr.reserve(A, RESERVE6));
    assertGood(await pr.reserve(A, RESERVE6), 're-reserve by the holder');
    assert.equal(pr.conflicts(B, RESERVE6), true);
    assertConflict(await pr.reserve(B, RESERVE6));
    assert.equal(pr.conflicts(B, RELEASE6), false);
    assertGood(await pr.release(B, RELEASE6), 'release by a non-holder is a no-op');
    assert.equal(pr.conflicts(A, MODE_SENSE6), false);
    assert.equal(pr.conflicts(B, MODE_SENSE6), true, 'MODE SENSE from the other initiator conflicts (tgt lets it through)');
    assert.equal(pr.conflicts(B, TUR), true);
    assert.equal(pr.conflicts(B, READ10), true);
    assert.equal(pr.conflicts(B, prinCdb(0)), true, 'PERSISTENT RESERVE IN conflicts under an SPC-2 reservation');
    assertConflict(await pr.persistentReserveOut(B, proutCdb(SA.REGISTER_IGNORE), proutParams(0n, K1)));
    assert.equal(pr.conflicts(B, INQUIRY), false);
    assertGood(await pr.release(A, RELEASE6));
    assertGood(await pr.reserve(B, RESERVE6));
    assertGood(await pr.release(B, RELEASE6));
    assert.equal(pr.conflicts(A, WRITE10), false);
  });

  test('the 10-byte forms behave the same; 3RDPTY and LONGID are refused', async () => {
    const { pr } = setup();
    assertGood(await pr.reserve(A, RESERVE10));
    assertConflict(await pr.reserve(B, RESERVE10));
    const third = Buffer.from(RESERVE10);
    third[1] = 0x10;
    assertIllegal(await pr.reserve(B, third), 0x24, 0x00);
    const ext = Buffer.from(RESERVE6);
    ext[1] = 0x01;
    assertIllegal(await pr.reserve(A, ext), 0x24, 0x00);
    assertGood(await pr.release(A, RELEASE10));
    assertGood(await pr.reserve(B, RESERVE10));
  });

  test('logical unit reset and I_T nexus loss release it; persistent reservations stay', async () => {
    const { pr } = setup();
    assertGood(await pr.reserve(A, RESERVE6));
    pr.reset();
    assertGood(await pr.reserve(B, RESERVE6));
    pr.nexusRemoved(A);
    assertConflict(await pr.reserve(A, RESERVE6));
    pr.nexusRemoved(B);
    assertGood(await pr.reserve(A, RESERVE6));
    assertGood(await pr.release(A, RELEASE6));
    assertGood(await register(pr, A, K1));
    assertGood(await reserve(pr, A, K1, T.EA));
    pr.reset();
    pr.nexusRemoved(A);
    assert.equal(pr.conflicts(B, READ10), true, 'persistent reservation survives reset and nexus loss');
  });

  test('with registrations present RESERVE conflicts and RELEASE follows the SPC-4 §5.13.3 exceptions', async () => {
    const { pr } = setup();
    assertGood(await register(pr, A, K1));
    assertGood(await register(pr, B, K2));
    assertConflict(await pr.reserve(A, RESERVE6));
    assertConflict(await pr.release(C, RELEASE6));
    assertGood(await reserve(pr, A, K1, T.WE));
    assertGood(await pr.release(A, RELEASE6), 'holder: GOOD, reservation kept');
    assertGood(await pr.reserve(A, RESERVE6), 'holder: GOOD, no SPC-2 reservation established');
    assert.equal(pr.conflicts(A, WRITE10), false);
    assert.equal(pr.conflicts(B, READ10), false, 'WE: registered non-holder may still read (no SPC-2 reservation was made)');
    assertConflict(await pr.release(B, RELEASE6));
    assertConflict(await pr.reserve(B, RESERVE6));
    assert.ok(!('none' in readReservation(pr, A)));
    assertGood(await pr.persistentReserveOut(A, proutCdb(SA.RELEASE, T.WE), proutParams(K1, 0n)));
    assertGood(await reserve(pr, A, K1, T.WERO));
    assertGood(await pr.release(B, RELEASE6), 'registrant under a registrants-only reservation: GOOD');
    assertGood(await pr.reserve(B, RESERVE10), 'registrant under a registrants-only reservation: GOOD, nothing reserved');
    assert.equal(pr.conflicts(C, READ10), false, 'WE-RO: unregistered may read; no SPC-2 reservation exists');
    assertConflict(await pr.release(C, RELEASE6));
    assertConflict(await pr.reserve(C, RESERVE6));
  });
});

// ----- persistence --------------------------------------------------------------------------------

describe('snapshot / restore', () => {
  test('onChange after every change; a restored manager behaves identically', async () => {
    const { pr, rec } = setup();
    assertGood(await register(pr, A, K1, { aptpl: true }));
    assertGood(await register(pr, B, K2, { allTgPt: true, aptpl: true }));
    assertGood(await reserve(pr, A, K1, T.EARO));
    assert.equal(rec.snapshots.length, 3);
    const snap = JSON.parse(JSON.stringify(rec.snapshots.at(-1))) as PersistentReservationSnapshot;
    assert.deepEqual(snap, pr.snapshot());
    assert.deepEqual(snap.reservation, { holder: A.key, type: T.EARO, key: K1.toString(16) });
    const restored = setup(undefined, snap).pr;
    assert.deepEqual(readKeys(restored, C), readKeys(pr, C));
    assert.deepEqual(readReservation(restored, C), readReservation(pr, C));
    assert.equal(restored.conflicts(C, READ10), true);
    assert.equal(restored.conflicts(B, WRITE10), false);
    assert.equal(restored.conflicts(A2, READ10), true, 'A on another port: a different, unregistered nexus');
    // Reads do not notify.
    const before = rec.snapshots.length;
    pr.persistentReserveIn(A, prinCdb(3));
    pr.conflicts(C, READ10);
    assert.equal(rec.snapshots.length, before);
  });

  test('the generation wraps at 2^32', async () => {
    const { pr } = setup(undefined, { generation: 0xffffffff, registrations: [], reservation: null, aptpl: false });
    assertGood(await register(pr, A, K1));
    assert.equal(readKeys(pr, A).generation, 0);
  });
});

describe('restoring a snapshot', () => {
  test('a reservation whose holder is not registered is dropped; a bad type is refused', () => {
    const snap: PersistentReservationSnapshot = {
      generation: 7,
      aptpl: true,
      registrations: [
        { initiatorPortName: B.initiatorPortName, targetPortName: B.targetPortName, relativeTargetPortId: 1, key: K2.toString(16) },
      ],
      reservation: { holder: A.key, type: T.EA, key: K1.toString(16) },
    };
    const { pr } = setup(undefined, snap);
    assert.ok('none' in readReservation(pr, C));
    assert.deepEqual(readKeys(pr, C), { generation: 7, keys: [K2] });
    assert.throws(() => setup(undefined, { ...snap, reservation: { holder: B.key, type: 2, key: K2.toString(16) } }), /type/);
    assert.throws(() => setup(undefined, { ...snap, registrations: [{ ...snap.registrations[0]!, key: 'xyz' }] }), /key/);
  });
});

describe('resource bound', () => {
  test('registrations beyond MAX_REGISTRATIONS get INSUFFICIENT REGISTRATION RESOURCES', async () => {
    const { MAX_REGISTRATIONS } = await import('../../src/scsi/pr.js');
    let changes = 0;
    const pr = createReservationManager(
      { queueUnitAttention: () => undefined, nexusKeys: () => [], abortTasksOf: () => undefined },
      undefined,
      () => {
        changes++;
        return Promise.resolve();
      },
    );
    for (let i = 0; i < MAX_REGISTRATIONS; i++) {
      assertGood(await register(pr, nexus(`iqn.2026-01.test:n${i}`, '000000000001'), BigInt(i + 1)));
    }
    const extra = nexus('iqn.2026-01.test:one-too-many', '000000000001');
    assertIllegal(await register(pr, extra, 5n), 0x55, 0x04);
    // Re-keying an existing registration still works.
    assertGood(await register(pr, nexus('iqn.2026-01.test:n0', '000000000001'), 99n));
    assert.equal(changes, MAX_REGISTRATIONS + 1);
    const d = pr.persistentReserveIn(extra, prinCdb(0, 0xffff)).data!;
    assert.equal(d.readUInt32BE(4), 8 * MAX_REGISTRATIONS);
  });
});

// ----- durability: the PR-change hook -------------------------------------------------------------

describe('PR-change hook: a change is committed only once durable (types.ts PersistentReservationHook)', () => {
  /** A hook whose saves the test resolves or rejects one by one. */
  function controlled(): {
    pr: ReservationManager;
    rec: Recorded;
    saves: Array<{ snapshot: PersistentReservationSnapshot; resolve: () => void; reject: (e: Error) => void }>;
    settle: (ok: boolean) => Promise<void>;
  } {
    const rec: Recorded = { uas: [], aborted: [], snapshots: [] };
    const saves: Array<{ snapshot: PersistentReservationSnapshot; resolve: () => void; reject: (e: Error) => void }> = [];
    const pr = createReservationManager(
      {
        queueUnitAttention: (k, ua) => rec.uas.push({ nexus: k, asc: ua.asc, ascq: ua.ascq }),
        nexusKeys: () => [A, B, C, A2].map((n) => n.key),
        abortTasksOf: (keys) => rec.aborted.push([...keys]),
      },
      undefined,
      (snapshot) => new Promise<void>((resolve, reject) => saves.push({ snapshot, resolve, reject })),
    );
    const settle = async (ok: boolean): Promise<void> => {
      for (let i = 0; i < 20 && saves.length === 0; i++) await new Promise((r) => setImmediate(r));
      const s = saves.shift();
      assert.ok(s, 'a save was asked for');
      if (ok) s.resolve();
      else s.reject(new Error('EROFS: read-only file system'));
    };
    return { pr, rec, saves, settle };
  }

  function assertNotPersisted(r: ScsiResponse): void {
    assert.equal(r.status, ScsiStatus.CHECK_CONDITION);
    assert.ok(r.sense);
    assert.equal(r.sense[0], 0x70);
    assert.equal(r.sense[2]! & 0x0f, 0x04, 'HARDWARE ERROR');
    assert.equal(r.sense[12], 0x44, 'INTERNAL TARGET FAILURE');
    assert.equal(r.sense[13], 0x00);
  }

  test('the hook rejects: PERSISTENT RESERVE OUT gets CHECK CONDITION and READ KEYS shows the old state', async () => {
    const { pr, settle } = controlled();
    const first = register(pr, A, K1);
    await settle(true);
    assertGood(await first);
    const before = pr.snapshot();
    const refused = register(pr, B, K2);
    await settle(false);
    assertNotPersisted(await refused);
    assert.deepEqual(readKeys(pr, C), { generation: 1, keys: [K1] });
    assert.deepEqual(pr.snapshot(), before);
    // The state is as it was, so the same command succeeds once the save does.
    const retry = register(pr, B, K2);
    await settle(true);
    assertGood(await retry);
    assert.deepEqual(readKeys(pr, C), { generation: 2, keys: [K1, K2] });
  });

  test('a refused PREEMPT AND ABORT keeps the reservation, queues no unit attention and aborts nothing', async () => {
    const { pr, rec, settle } = controlled();
    for (const step of [register(pr, A, K1), register(pr, B, K2), reserve(pr, B, K2, T.EA)]) {
      await settle(true);
      assertGood(await step);
    }
    const preempt = pr.persistentReserveOut(A, proutCdb(SA.PREEMPT_AND_ABORT, T.EA), proutParams(K1, K2));
    await settle(false);
    assertNotPersisted(await preempt);
    assert.deepEqual(rec.uas, []);
    assert.deepEqual(rec.aborted, []);
    const rr = readReservation(pr, C);
    assert.ok(!('none' in rr));
    assert.equal(rr.key, K2, 'B still holds the reservation');
    assert.equal(pr.conflicts(A, WRITE10), true, 'A is still fenced off');
    assert.equal(pr.conflicts(B, WRITE10), false);
  });

  test('while the save is pending, reservation checks and PERSISTENT RESERVE IN see the old state; then the new one', async () => {
    const { pr, rec, saves, settle } = controlled();
    for (const step of [register(pr, A, K1), register(pr, B, K2), reserve(pr, B, K2, T.EA)]) {
      await settle(true);
      assertGood(await step);
    }
    let answered = false;
    const preempt = pr.persistentReserveOut(A, proutCdb(SA.PREEMPT, T.EA), proutParams(K1, K2)).then((r) => {
      answered = true;
      return r;
    });
    for (let i = 0; i < 20 && saves.length === 0; i++) await new Promise((r) => setImmediate(r));
    assert.equal(saves.length, 1, 'the new state is being saved');
    assert.equal(saves[0]!.snapshot.reservation?.key, K1.toString(16), 'the save carries the new state');
    assert.equal(answered, false, 'no status before the state is durable');
    assert.equal(pr.conflicts(A, WRITE10), true, 'old state: B holds the reservation');
    assert.equal(pr.conflicts(B, WRITE10), false);
    assert.deepEqual(readKeys(pr, C).keys, [K1, K2]);
    assert.deepEqual(rec.uas, [], 'no unit attention before the commit');
    await settle(true);
    assertGood(await preempt);
    assert.equal(pr.conflicts(A, WRITE10), false, 'new state: A holds the reservation');
    assert.equal(pr.conflicts(B, WRITE10), true);
    assert.deepEqual(readKeys(pr, C).keys, [K1]);
    assert.deepEqual(rec.uas, [{ nexus: B.key, asc: 0x2a, ascq: 0x05 }]);
  });

  test('PERSISTENT RESERVE OUT, RESERVE and RELEASE run one at a time: a refused change never undoes a later one', async () => {
    const { pr, saves, settle } = controlled();
    const refused = register(pr, A, K1);
    const next = register(pr, B, K2);
    const spc2 = pr.reserve(C, RESERVE6);
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    assert.equal(saves.length, 1, 'the second command waits for the first');
    await settle(false);
    assertNotPersisted(await refused);
    await settle(true);
    assertGood(await next);
    // Computed after the refusal, from the state without A's registration.
    assert.deepEqual(readKeys(pr, C), { generation: 1, keys: [K2] });
    // RESERVE ran after both: registrations exist, so the SPC-4 §5.13.3 rules apply to it.
    assertConflict(await spc2);
  });

  test('a PERSISTENT RESERVE OUT aborted while it waits for its turn never runs', async () => {
    const { pr, saves, settle } = controlled();
    const first = register(pr, A, K1);
    const abort = new AbortController();
    const second = pr.persistentReserveOut(B, proutCdb(SA.REGISTER_IGNORE), proutParams(0n, K2), abort.signal);
    abort.abort();
    await settle(true);
    assertGood(await first);
    assert.equal((await second).status, ScsiStatus.TASK_ABORTED);
    assert.equal(saves.length, 0);
    assert.deepEqual(readKeys(pr, C).keys, [K1]);
  });
});
