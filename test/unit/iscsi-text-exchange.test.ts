import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RejectReason } from '../../src/iscsi/errors.js';
import { RESERVED_TAG, type TextRequest } from '../../src/iscsi/pdu.js';
import { TextExchange, type TextStep } from '../../src/iscsi/text-exchange.js';
import { encodeText, MAX_TEXT_LENGTH, parseText, type TextPair } from '../../src/iscsi/text.js';

function request(itt: number, opts: { ttt?: number; continue?: boolean } = {}): TextRequest {
  return {
    opcode: 0x04,
    dataSegmentLength: 0,
    totalAhsLength: 0,
    immediate: false,
    final: !(opts.continue ?? false),
    continue: opts.continue ?? false,
    lun: 0n,
    initiatorTaskTag: itt,
    targetTransferTag: opts.ttt ?? RESERVED_TAG,
    cmdSN: 1,
    expStatSN: 1,
  } as TextRequest;
}

function exchange(): { x: TextExchange; ttts: number[] } {
  const ttts: number[] = [];
  let next = 100;
  return {
    ttts,
    x: new TextExchange(() => {
      ttts.push(next);
      return next++;
    }),
  };
}

function respondOf(step: TextStep): Extract<TextStep, { kind: 'respond' }> {
  assert.equal(step.kind, 'respond');
  return step;
}

const echo = (pairs: TextPair[]): TextPair[] => pairs;

describe('text exchange continuation (RFC 7143 §11.10, §6.2)', () => {
  it('answers a one-PDU request in one final response with the reserved TTT', () => {
    const { x, ttts } = exchange();
    const r = respondOf(x.step(request(1), encodeText([{ key: 'SendTargets', value: 'All' }]), echo, () => 8192));
    assert.deepEqual([r.final, r.continue, r.ttt], [true, false, RESERVED_TAG]);
    assert.deepEqual(parseText(r.payload), [{ key: 'SendTargets', value: 'All' }]);
    assert.deepEqual(ttts, []);
  });

  it('gathers a request sent with the C bit under the TTT it gave, then answers the whole text', () => {
    const { x } = exchange();
    const whole = encodeText([{ key: 'MaxRecvDataSegmentLength', value: '65536' }]);
    const first = respondOf(x.step(request(7, { continue: true }), whole.subarray(0, 10), echo, () => 8192));
    assert.deepEqual([first.final, first.continue, first.payload.length], [false, false, 0]);
    assert.notEqual(first.ttt, RESERVED_TAG);
    let seen: TextPair[] = [];
    const last = respondOf(
      x.step(
        request(7, { ttt: first.ttt }),
        whole.subarray(10),
        (p) => {
          seen = p;
          return p;
        },
        () => 8192,
      ),
    );
    assert.deepEqual(seen, [{ key: 'MaxRecvDataSegmentLength', value: '65536' }]);
    assert.equal(last.final, true);
  });

  it('splits a long response into chunks of maxSegment bytes fetched with its TTT, read after answer ran', () => {
    const { x } = exchange();
    const many = Array.from({ length: 40 }, (_, i) => ({
      key: 'TargetName',
      value: `iqn.2026-11.io.lunar:vol-${String(i).padStart(16, '0')}`,
    }));
    let max = 8192;
    const answer = (): TextPair[] => {
      max = 512; // a MaxRecvDataSegmentLength negotiated in this very request applies to its response
      return many;
    };
    const parts: Buffer[] = [];
    let r = respondOf(x.step(request(3), encodeText([{ key: 'SendTargets', value: 'All' }]), answer, () => max));
    parts.push(r.payload);
    assert.deepEqual([r.final, r.continue], [false, true]);
    const ttt = r.ttt;
    while (!r.final) {
      assert.ok(r.payload.length <= 512);
      assert.equal(r.ttt, ttt);
      r = respondOf(x.step(request(3, { ttt }), Buffer.alloc(0), echo, () => max));
      parts.push(r.payload);
    }
    assert.equal(r.ttt, RESERVED_TAG);
    assert.ok(parts.length > 1);
    assert.deepEqual(parseText(Buffer.concat(parts)), many);
    // The exchange is over: its TTT is no longer valid.
    assert.deepEqual(
      x.step(request(3, { ttt }), Buffer.alloc(0), echo, () => max),
      { kind: 'reject', reason: RejectReason.INVALID_PDU_FIELD },
    );
  });

  it('rejects a TTT it never gave, or one given to another ITT', () => {
    const { x } = exchange();
    assert.deepEqual(
      x.step(request(1, { ttt: 55 }), Buffer.alloc(0), echo, () => 8192),
      {
        kind: 'reject',
        reason: RejectReason.INVALID_PDU_FIELD,
      },
    );
    const first = respondOf(x.step(request(1, { continue: true }), Buffer.from('SendTargets=A'), echo, () => 8192));
    assert.deepEqual(
      x.step(request(2, { ttt: first.ttt }), Buffer.from('ll\0'), echo, () => 8192),
      {
        kind: 'reject',
        reason: RejectReason.INVALID_PDU_FIELD,
      },
    );
  });

  it('a new exchange (another ITT, reserved TTT) replaces an unfinished one', () => {
    const { x } = exchange();
    respondOf(x.step(request(1, { continue: true }), Buffer.from('Garbage-half'), echo, () => 8192));
    let seen: TextPair[] = [];
    respondOf(
      x.step(
        request(2),
        encodeText([{ key: 'SendTargets', value: 'All' }]),
        (p) => {
          seen = p;
          return p;
        },
        () => 8192,
      ),
    );
    assert.deepEqual(seen, [{ key: 'SendTargets', value: 'All' }]);
  });

  it('refuses what answer refuses and a request text longer than the bound, with PROTOCOL ERROR', () => {
    const { x } = exchange();
    assert.deepEqual(
      x.step(
        request(1),
        encodeText([{ key: 'Unknown', value: '1' }]),
        () => null,
        () => 8192,
      ),
      {
        kind: 'reject',
        reason: RejectReason.PROTOCOL_ERROR,
      },
    );
    const big = Buffer.alloc(MAX_TEXT_LENGTH / 2, 0x41);
    const t1 = respondOf(x.step(request(4, { continue: true }), big, echo, () => 8192)).ttt;
    const t = respondOf(x.step(request(4, { continue: true, ttt: t1 }), big, echo, () => 8192)).ttt;
    assert.deepEqual(
      x.step(request(4, { ttt: t }), big, echo, () => 8192),
      { kind: 'reject', reason: RejectReason.PROTOCOL_ERROR },
    );
  });
});
