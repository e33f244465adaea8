import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_TUNING, Negotiator, defaultParameters, parseNumber } from '../../src/iscsi/negotiation.js';
import type { TextPair } from '../../src/iscsi/text.js';

const kv = (s: Record<string, string>): TextPair[] => Object.entries(s).map(([key, value]) => ({ key, value }));
const asMap = (pairs: TextPair[]): Record<string, string> => Object.fromEntries(pairs.map((p) => [p.key, p.value]));

describe('operational key negotiation (RFC 7143 §6.2, §13)', () => {
  it('uses the RFC defaults when nothing is negotiated', () => {
    const p = defaultParameters();
    assert.equal(p.initialR2T, true);
    assert.equal(p.maxBurstLength, 262144);
    assert.equal(p.firstBurstLength, 65536);
    assert.equal(p.maxRecvDataSegmentLength, 8192);
    assert.equal(p.maxOutstandingR2T, 1);
  });

  it('negotiates the open-iscsi default offer to the performance tuning', () => {
    const n = new Negotiator(DEFAULT_TUNING);
    const offer = {
      HeaderDigest: 'None',
      DataDigest: 'None',
      MaxConnections: '1',
      InitialR2T: 'No',
      ImmediateData: 'Yes',
      MaxRecvDataSegmentLength: '262144',
      MaxBurstLength: '16776192',
      FirstBurstLength: '262144',
      DefaultTime2Wait: '2',
      DefaultTime2Retain: '0',
      MaxOutstandingR2T: '1',
      DataPDUInOrder: 'Yes',
      DataSequenceInOrder: 'Yes',
      ErrorRecoveryLevel: '0',
      IFMarker: 'No',
      OFMarker: 'No',
    };
    const r = n.negotiate(kv(offer));
    assert.equal(r.error, null);
    const m = asMap(r.response);
    // Every key answered with the offered value, but MaxBurstLength (min with our 1 MiB, §13.13); the
    // declarative MaxRecvDataSegmentLength (§13.12) is not answered.
    const answer: Record<string, string> = { ...offer, MaxBurstLength: '1048576' };
    delete answer.MaxRecvDataSegmentLength;
    assert.deepEqual(m, answer);
    assert.equal('MaxRecvDataSegmentLength' in m, false, 'declarative: not echoed');
    assert.equal(n.params.maxXmitDataSegmentLength, 262144);
    assert.equal(n.params.maxRecvDataSegmentLength, 262144);
    assert.equal(n.params.initialR2T, false);
    assert.deepEqual(n.declarations(), [{ key: 'MaxRecvDataSegmentLength', value: '262144' }]);
    assert.deepEqual(n.declarations(), [], 'declared once');
  });

  it('list keys: first value of the initiator list that we support (§6.2.1)', () => {
    const n = new Negotiator(DEFAULT_TUNING);
    assert.deepEqual(asMap(n.negotiate(kv({ HeaderDigest: 'CRC32C,None', DataDigest: 'None,CRC32C' })).response), {
      HeaderDigest: 'CRC32C',
      DataDigest: 'None',
    });
    assert.equal(n.params.headerDigest, true);
    assert.equal(n.params.dataDigest, false);
    const m = new Negotiator({ ...DEFAULT_TUNING, headerDigest: ['None'] });
    assert.deepEqual(asMap(m.negotiate(kv({ HeaderDigest: 'CRC32C' })).response), { HeaderDigest: 'Reject' });
    assert.deepEqual(asMap(new Negotiator(DEFAULT_TUNING).negotiate(kv({ HeaderDigest: 'CRC32C,,None' })).response), {
      HeaderDigest: 'Reject',
    });
  });

  it('numerical min/max: result is the min or max of both values; out of range → Reject', () => {
    const n = new Negotiator(DEFAULT_TUNING);
    const m = asMap(
      n.negotiate(
        kv({
          MaxBurstLength: '65536',
          FirstBurstLength: '0x10000',
          DefaultTime2Wait: '0',
          DefaultTime2Retain: '3600',
          MaxOutstandingR2T: '64',
        }),
      ).response,
    );
    assert.deepEqual(m, {
      MaxBurstLength: '65536',
      FirstBurstLength: '65536',
      DefaultTime2Wait: '2',
      DefaultTime2Retain: '0',
      MaxOutstandingR2T: '16',
    });
    const r = asMap(
      new Negotiator(DEFAULT_TUNING).negotiate(
        kv({
          MaxBurstLength: '511',
          FirstBurstLength: '16777216',
          ErrorRecoveryLevel: '3',
          MaxOutstandingR2T: 'x',
          DefaultTime2Wait: '-1',
        }),
      ).response,
    );
    assert.deepEqual(r, {
      MaxBurstLength: 'Reject',
      FirstBurstLength: 'Reject',
      ErrorRecoveryLevel: 'Reject',
      MaxOutstandingR2T: 'Reject',
      DefaultTime2Wait: 'Reject',
    });
  });

  it('FirstBurstLength never exceeds MaxBurstLength (§13.14)', () => {
    const n = new Negotiator(DEFAULT_TUNING);
    n.negotiate(kv({ MaxBurstLength: '8192', FirstBurstLength: '262144' }));
    assert.equal(n.params.firstBurstLength, 8192);
  });

  it('booleans: InitialR2T is OR, ImmediateData is AND; other values → Reject', () => {
    const a = new Negotiator({ ...DEFAULT_TUNING, initialR2T: false, immediateData: true });
    assert.deepEqual(asMap(a.negotiate(kv({ InitialR2T: 'Yes', ImmediateData: 'No' })).response), {
      InitialR2T: 'Yes',
      ImmediateData: 'No',
    });
    const b = new Negotiator({ ...DEFAULT_TUNING, initialR2T: true, immediateData: false });
    assert.deepEqual(asMap(b.negotiate(kv({ InitialR2T: 'No', ImmediateData: 'Yes' })).response), {
      InitialR2T: 'Yes',
      ImmediateData: 'No',
    });
    assert.deepEqual(asMap(new Negotiator(DEFAULT_TUNING).negotiate(kv({ InitialR2T: 'maybe' })).response), { InitialR2T: 'Reject' });
    // We only deliver data in order: DataPDUInOrder=No still results in Yes (OR).
    assert.deepEqual(asMap(new Negotiator(DEFAULT_TUNING).negotiate(kv({ DataPDUInOrder: 'No' })).response), { DataPDUInOrder: 'Yes' });
  });

  it('MaxConnections is 1 and ErrorRecoveryLevel 0 whatever is offered', () => {
    assert.deepEqual(asMap(new Negotiator(DEFAULT_TUNING).negotiate(kv({ MaxConnections: '8', ErrorRecoveryLevel: '2' })).response), {
      MaxConnections: '1',
      ErrorRecoveryLevel: '0',
    });
  });

  it('unknown and X- keys → NotUnderstood; session keys in a discovery session → Irrelevant', () => {
    assert.deepEqual(asMap(new Negotiator(DEFAULT_TUNING).negotiate(kv({ 'X-com.example.Foo': '1', Bogus: 'x' })).response), {
      'X-com.example.Foo': 'NotUnderstood',
      Bogus: 'NotUnderstood',
    });
    const d = new Negotiator(DEFAULT_TUNING, 'Discovery');
    assert.deepEqual(asMap(d.negotiate(kv({ InitialR2T: 'No', MaxBurstLength: '4096', HeaderDigest: 'None' })).response), {
      InitialR2T: 'Irrelevant',
      MaxBurstLength: 'Irrelevant',
      HeaderDigest: 'None',
    });
  });

  it('markers are answered No and their intervals Irrelevant (obsolete keys)', () => {
    assert.deepEqual(asMap(new Negotiator(DEFAULT_TUNING).negotiate(kv({ OFMarker: 'Yes', OFMarkInt: '2048~8192' })).response), {
      OFMarker: 'No',
      OFMarkInt: 'Irrelevant',
    });
  });

  it('a key renegotiated with a different value is a login error; the same value is answered again', () => {
    const n = new Negotiator(DEFAULT_TUNING);
    assert.equal(n.negotiate(kv({ MaxBurstLength: '65536' })).error, null);
    assert.equal(n.negotiate(kv({ MaxBurstLength: '65536' })).error, null);
    assert.match(n.negotiate(kv({ MaxBurstLength: '4096' })).error ?? '', /twice/);
  });

  it('MaxRecvDataSegmentLength out of range is rejected and does not change our send size', () => {
    const n = new Negotiator(DEFAULT_TUNING);
    assert.deepEqual(asMap(n.negotiate(kv({ MaxRecvDataSegmentLength: '100' })).response), { MaxRecvDataSegmentLength: 'Reject' });
    assert.equal(n.params.maxXmitDataSegmentLength, 8192);
  });

  it('full feature phase: only MaxRecvDataSegmentLength may change', () => {
    const n = new Negotiator(DEFAULT_TUNING);
    const r = n.negotiate(kv({ MaxRecvDataSegmentLength: '65536', MaxBurstLength: '4096' }), 'ffp');
    assert.deepEqual(asMap(r.response), { MaxBurstLength: 'Reject' });
    assert.equal(n.params.maxXmitDataSegmentLength, 65536);
  });

  it('parses numbers in decimal and hex only', () => {
    assert.equal(parseNumber('262144'), 262144);
    assert.equal(parseNumber('0x40000'), 262144);
    assert.equal(parseNumber('1e5'), null);
    assert.equal(parseNumber(''), null);
    assert.equal(parseNumber('99999999999999999999999'), null);
  });
});
