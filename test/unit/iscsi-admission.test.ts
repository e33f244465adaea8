// src/iscsi/admission.ts: the pre-login caps (global and per source address) and the sessions-per-
// initiator cap, as pure bookkeeping. A property test runs random enter/leave/login sequences against a
// model and checks that the counts never exceed the caps, never go negative and return to zero.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Admission, DEFAULT_ADMISSION, type PendingTicket } from '../../src/iscsi/admission.js';

describe('admission', () => {
  it('has the documented defaults and refuses caps that are not positive whole numbers', () => {
    assert.deepEqual(new Admission().limits, {
      maxPendingConnections: 1024,
      maxPendingPerAddress: 64,
      maxSessionsPerInitiator: 1024,
      maxSessionsPerAddress: 1024,
    });
    assert.deepEqual(DEFAULT_ADMISSION, new Admission().limits);
    assert.throws(() => new Admission({ maxPendingConnections: 0 }), /maxPendingConnections must be a positive whole number/);
    assert.throws(() => new Admission({ maxPendingPerAddress: 1.5 }), /maxPendingPerAddress/);
  });

  it('refuses over the per-address cap, then over the global cap, and counts each reason', () => {
    const a = new Admission({ maxPendingConnections: 4, maxPendingPerAddress: 2 });
    const t1 = a.enter('10.0.0.1');
    const t2 = a.enter('10.0.0.1');
    assert.equal(a.enter('10.0.0.1'), 'pending_per_address');
    assert.ok(typeof t1 === 'object' && typeof t2 === 'object');
    assert.equal(typeof a.enter('10.0.0.2'), 'object');
    assert.equal(typeof a.enter('10.0.0.3'), 'object');
    assert.equal(a.enter('10.0.0.4'), 'pending_global');
    assert.equal(a.pending, 4);
    assert.deepEqual(a.refused, { pending_global: 1, pending_per_address: 1, sessions_per_initiator: 0, sessions_per_address: 0 });
    // Leaving twice (login complete, then close) counts once.
    t1.leave();
    t1.leave();
    assert.equal(a.pending, 3);
    assert.equal(a.pendingFrom('10.0.0.1'), 1);
    assert.equal(typeof a.enter('10.0.0.4'), 'object');
    t2.leave();
    assert.equal(a.pendingFrom('10.0.0.1'), 0);
  });

  it('caps sessions per initiator name; sessions a login reinstates do not count', () => {
    const a = new Admission({ maxSessionsPerInitiator: 2 });
    const name = 'iqn.2026-01.test:a';
    const at = (address: string) => ({ initiatorName: name, address });
    assert.ok(a.sessionAllowed(at('10.0.0.1')));
    a.sessionOpened(at('10.0.0.1'));
    a.sessionOpened(at('10.0.0.2'));
    assert.equal(a.sessionAllowed(at('10.0.0.3')), false, 'the name holds 2, whatever the address');
    assert.equal(a.refused.sessions_per_initiator, 1);
    assert.ok(a.sessionAllowed(at('10.0.0.1'), [at('10.0.0.1')]), 'one of the two is reinstated by this login');
    assert.ok(a.sessionAllowed({ initiatorName: 'iqn.2026-01.test:b', address: '10.0.0.1' }), 'another initiator has its own count');
    a.sessionClosed(at('10.0.0.1'));
    assert.ok(a.sessionAllowed(at('10.0.0.1')));
    a.sessionClosed(at('10.0.0.2'));
    assert.equal(a.sessionsOf(name), 0);
    assert.equal(a.sessionsFrom('10.0.0.1'), 0);
  });

  it('caps sessions per source address whatever initiator names they give', () => {
    const a = new Admission({ maxSessionsPerAddress: 3 });
    const from = (i: number, address = '10.0.0.9') => ({ initiatorName: `iqn.2026-01.test:fresh-${i}`, address });
    for (let i = 0; i < 3; i++) {
      assert.ok(a.sessionAllowed(from(i)));
      a.sessionOpened(from(i));
    }
    assert.equal(a.sessionAllowed(from(3)), false, 'a fourth name from the same address');
    assert.equal(a.refused.sessions_per_address, 1);
    assert.equal(a.refused.sessions_per_initiator, 0);
    assert.ok(a.sessionAllowed(from(3, '10.0.0.10')), 'another address has its own count');
    assert.ok(a.sessionAllowed(from(0), [from(0)]), 'a reinstatement from the address is not a new session');
    a.sessionClosed(from(1));
    assert.ok(a.sessionAllowed(from(3)));
    assert.equal(a.sessionsFrom('10.0.0.9'), 2);
  });

  it('never exceeds the caps and returns to zero (property)', () => {
    type Op = { kind: 'enter'; addr: number } | { kind: 'leave'; pick: number } | { kind: 'complete'; pick: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ kind: fc.constant('enter' as const), addr: fc.integer({ min: 0, max: 5 }) }),
      fc.record({ kind: fc.constant('leave' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('complete' as const), pick: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 5 }), fc.array(op, { maxLength: 200 }), (global, per, ops) => {
        const a = new Admission({ maxPendingConnections: global, maxPendingPerAddress: per });
        const open: PendingTicket[] = [];
        const model = new Map<string, number>();
        let refusedModel = 0;
        for (const o of ops) {
          if (o.kind === 'enter') {
            const addr = `127.0.0.${o.addr}`;
            const total = [...model.values()].reduce((x, y) => x + y, 0);
            const expectOk = total < global && (model.get(addr) ?? 0) < per;
            const t = a.enter(addr);
            assert.equal(typeof t === 'object', expectOk);
            if (typeof t === 'object') {
              open.push(t);
              model.set(addr, (model.get(addr) ?? 0) + 1);
            } else refusedModel += 1;
          } else if (open.length > 0) {
            // 'complete' is login complete then close: two leaves of the same ticket.
            const [t] = open.splice(o.pick % open.length, 1);
            t!.leave();
            if (o.kind === 'complete') t!.leave();
            model.set(t!.address, model.get(t!.address)! - 1);
          }
          assert.ok(a.pending <= global && a.pending >= 0);
          for (const [addr, n] of model) assert.equal(a.pendingFrom(addr), n);
          assert.ok(a.pendingAddresses <= global);
        }
        assert.equal(a.refused.pending_global + a.refused.pending_per_address, refusedModel);
        for (const t of open) t.leave();
        assert.equal(a.pending, 0);
        assert.equal(a.pendingAddresses, 0);
      }),
    );
  });
});
