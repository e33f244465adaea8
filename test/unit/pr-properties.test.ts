// Property tests: random sequences of PERSISTENT RESERVE OUT / RESERVE / RELEASE / resets from a few
// I_T nexuses keep the reservation state consistent (SPC-4 §5.13) and never throw; with a PR-change hook
// that fails now and then, every refused change leaves the state as it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createReservationManager } from '../../src/scsi/pr.js';
import { Asc, SenseKey, decodeSense } from '../../src/scsi/sense.js';
import type { ITNexus, PersistentReservationSnapshot } from '../../src/scsi/types.js';
import { ScsiStatus } from '../../src/scsi/types.js';
import { buildNexus } from '../../src/iscsi/session.js';
import { proutCdb } from '../support/scsi.js';

const TARGET = 'iqn.2026-01.io.lunar:vol-p';
function nexus(initiator: string, isid: string, tpgt: number): ITNexus {
  return buildNexus(initiator, isid, TARGET, tpgt);
}
const NEXUSES = [
  nexus('iqn.2026-01.t:a', '000000000001', 1),
  nexus('iqn.2026-01.t:a', '000000000001', 2),
  nexus('iqn.2026-01.t:b', '000000000002', 1),
  nexus('iqn.2026-01.t:c', '000000000003', 2),
];
/** The key each nexus registers (two nexuses share key 1, as two paths of one host would). */
const OWN_KEY = (i: number): bigint => BigInt((i % 3) + 1);

const op = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      kind: fc.constant('prout' as const),
      who: fc.nat(NEXUSES.length - 1),
      // Weighted towards the service actions that build state, with invalid values now and then.
      sa: fc.constantFrom(6, 6, 6, 0, 0, 1, 1, 1, 1, 2, 3, 4, 4, 5, 7, 7, 8, 31),
      type: fc.constantFrom(1, 3, 5, 6, 7, 8, 1, 3, 5, 6, 7, 8, 0, 2, 9, 15),
      // Keys: mostly the nexus's own key (so commands get past the key checks), sometimes another's or 0.
      rk: fc.constantFrom('own', 'own', 'own', 'zero', 'other', 'max'),
      sark: fc.constantFrom('own', 'own', 'zero', 'other', 'other', 'max'),
      other: fc.nat(NEXUSES.length - 1),
      allTgPt: fc.boolean(),
      aptpl: fc.boolean(),
      moveTo: fc.nat(NEXUSES.length - 1),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constantFrom('reserve6' as const, 'release6' as const, 'nexusRemoved' as const),
      who: fc.nat(NEXUSES.length - 1),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reset' as const) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('garbage' as const),
      who: fc.nat(NEXUSES.length - 1),
      cdb: fc.uint8Array({ minLength: 0, maxLength: 16 }),
      data: fc.option(fc.uint8Array({ maxLength: 64 })),
    }),
  },
);

function consistent(s: PersistentReservationSnapshot): void {
  const ids = new Set(s.registrations.map((r) => `${r.initiatorPortName}|${r.targetPortName}`));
  assert.equal(ids.size, s.registrations.length, 'one registration per I_T nexus');
  for (const r of s.registrations) assert.notEqual(r.key, '0000000000000000', 'key 0 is never registered');
  if (s.reservation) {
    assert.ok([1, 3, 5, 6, 7, 8].includes(s.reservation.type));
    assert.ok(s.registrations.length > 0, 'a reservation needs a registrant');
    if (s.reservation.holder !== '*') {
      const [port] = s.reservation.holder.split('|');
      const holderReg = s.registrations.find(
        (r) =>
          `${r.initiatorPortName}|${r.targetPortName}` === s.reservation!.holder ||
          (r.targetPortName === '*' && r.initiatorPortName === port),
      );
      assert.ok(holderReg, 'the holder is registered');
      assert.equal(holderReg.key, s.reservation.key, 'READ RESERVATION reports the holder key');
    } else {
      assert.ok(s.reservation.type === 7 || s.reservation.type === 8);
    }
  }
}

type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

/**
 * Run one command sequence. `refuse(i)`: the PR-change hook rejects the save of the i-th change; such a
 * PERSISTENT RESERVE OUT must end with CHECK CONDITION / HARDWARE ERROR / INTERNAL TARGET FAILURE and
 * leave the state, and the unit attentions queued, exactly as they were.
 */
async function runSequence(ops: readonly Op[], refuse: (i: number) => boolean): Promise<void> {
  const uaTargets: string[] = [];
  const seen: { last: PersistentReservationSnapshot | null } = { last: null };
  let saves = 0;
  const pr = createReservationManager(
    { queueUnitAttention: (k) => uaTargets.push(k), nexusKeys: () => NEXUSES.map((n) => n.key), abortTasksOf: () => undefined },
    undefined,
    (s) => {
      if (refuse(saves++)) return Promise.reject(new Error('disk full'));
      seen.last = s;
      return Promise.resolve();
    },
  );
  let generation = 0;
  for (const o of ops) {
    if (o.kind === 'prout') {
      const n = NEXUSES[o.who]!;
      let p: Buffer;
      if (o.sa === 7) {
        const dest = NEXUSES[o.moveTo]!;
        const name = Buffer.from(dest.initiatorPortName + '\0');
        const tid = Buffer.alloc(4 + Math.max(20, (name.length + 3) & ~3));
        tid[0] = 0x45;
        tid.writeUInt16BE(tid.length - 4, 2);
        name.copy(tid, 4);
        p = Buffer.alloc(24 + tid.length);
        p.writeUInt16BE(dest.relativeTargetPortId, 18);
        p.writeUInt32BE(tid.length, 20);
        tid.copy(p, 24);
      } else {
        p = Buffer.alloc(24);
        p[20] = (o.allTgPt ? 4 : 0) | (o.aptpl ? 1 : 0);
      }
      const key = (k: string): bigint =>
        k === 'own' ? OWN_KEY(o.who) : k === 'other' ? OWN_KEY(o.other) : k === 'max' ? 0xffffffffffffffffn : 0n;
      p.writeBigUInt64BE(key(o.rk), 0);
      p.writeBigUInt64BE(key(o.sark), 8);
      const before = pr.snapshot();
      const uasBefore = uaTargets.length;
      const savesBefore = saves;
      const r = await pr.persistentReserveOut(n, proutCdb(o.sa, o.type, p.length), p);
      assert.ok([ScsiStatus.GOOD, ScsiStatus.CHECK_CONDITION, ScsiStatus.RESERVATION_CONFLICT].includes(r.status as 0 | 2 | 24));
      assert.equal(r.sense !== null, r.status === ScsiStatus.CHECK_CONDITION);
      if (saves > savesBefore && refuse(savesBefore)) {
        assert.equal(r.status, ScsiStatus.CHECK_CONDITION, 'a change that could not be saved is refused');
        assert.deepEqual(decodeSense(r.sense!), { key: SenseKey.HARDWARE_ERROR, ...Asc.INTERNAL_TARGET_FAILURE });
        assert.deepEqual(pr.snapshot(), before, 'a refused change leaves the state as it was');
        assert.equal(uaTargets.length, uasBefore, 'a refused change queues no unit attention');
      }
    } else if (o.kind === 'reserve6') {
      await pr.reserve(NEXUSES[o.who]!, Buffer.from([0x16, 0, 0, 0, 0, 0]));
    } else if (o.kind === 'release6') {
      await pr.release(NEXUSES[o.who]!, Buffer.from([0x17, 0, 0, 0, 0, 0]));
    } else if (o.kind === 'nexusRemoved') {
      pr.nexusRemoved(NEXUSES[o.who]!);
    } else if (o.kind === 'reset') {
      pr.reset();
    } else if ('cdb' in o) {
      const n = NEXUSES[o.who]!;
      const cdb = Buffer.from(o.cdb);
      pr.conflicts(n, cdb);
      if (cdb.length > 0) {
        cdb[0] = 0x5e;
        pr.persistentReserveIn(n, cdb);
        cdb[0] = 0x5f;
        await pr.persistentReserveOut(n, cdb, o.data ? Buffer.from(o.data) : null);
      }
    }
    const s = pr.snapshot();
    consistent(s);
    assert.ok(s.generation >= generation, 'the generation never goes back');
    generation = s.generation;
    if (seen.last) assert.deepEqual(seen.last, s, 'onChange saw the latest state');
    // The holder of a persistent reservation is never in conflict, unless another I_T nexus still
    // holds an SPC-2 reservation (then even TEST UNIT READY, allowed under every PR type, conflicts).
    if (s.reservation && s.reservation.holder !== '*') {
      const holder = NEXUSES.find((x) => x.key === s.reservation!.holder);
      if (holder && !pr.conflicts(holder, Buffer.alloc(6))) {
        assert.equal(pr.conflicts(holder, Buffer.from([0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0])), false, 'holder may write');
      }
    }
  }
  for (const k of uaTargets)
    assert.ok(
      NEXUSES.some((n) => n.key === k),
      `UA only to known nexuses: ${k}`,
    );
}

test('random command sequences keep the state consistent and never throw', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 20, maxLength: 80 }), (ops) => runSequence(ops, () => false)),
    { numRuns: 1000 },
  );
});

test('with a PR-change hook that fails now and then, every refused change leaves the state as it was', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(op, { minLength: 20, maxLength: 80 }),
      fc.array(fc.boolean(), { minLength: 1, maxLength: 16 }),
      (ops, fails) => runSequence(ops, (i) => fails[i % fails.length]!),
    ),
    { numRuns: 500 },
  );
});
