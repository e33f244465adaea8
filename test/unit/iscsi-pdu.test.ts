import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { crc32cOf, digestBytes, readDigest } from '../../src/iscsi/digest.js';
import { IscsiProtocolError } from '../../src/iscsi/errors.js';
import { BHS_LENGTH, decodeLun, decodePdu, encodeLun, encodePdu, pad4, readBhsPrefix, type Pdu } from '../../src/iscsi/pdu.js';

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u8 = fc.integer({ min: 0, max: 0xff });
/** Any 64-bit LUN field, half of the time in the form every addressed LUN has (bytes 2-7 zero: the decoder's cached path). */
const lun = fc.oneof(
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  fc.integer({ min: 0, max: 0xffff }).map((k) => BigInt(k) << 48n),
);
const dsl = fc.integer({ min: 0, max: 0xffffff });
const isid = fc.uint8Array({ minLength: 6, maxLength: 6 }).map((a) => Buffer.from(a).toString('hex'));

/** The sequence numbers of an initiator PDU (CmdSN, ExpStatSN) and of a target PDU (StatSN, ExpCmdSN, MaxCmdSN): RFC 7143 §4.2.2. */
const initiatorSN = { cmdSN: u32, expStatSN: u32 };
const targetSN = { statSN: u32, expCmdSN: u32, maxCmdSN: u32 };
/** The fields Text Request and Text Response share (RFC 7143 §11.10, §11.11). */
const textFields = {
  dataSegmentLength: dsl,
  final: fc.boolean(),
  continue: fc.boolean(),
  lun,
  initiatorTaskTag: u32,
  targetTransferTag: u32,
};
/** The fields Login Request and Login Response share before their versions (RFC 7143 §11.12, §11.13). */
const loginStages = {
  dataSegmentLength: dsl,
  transit: fc.boolean(),
  continue: fc.boolean(),
  csg: fc.integer({ min: 0, max: 3 }),
  nsg: fc.integer({ min: 0, max: 3 }),
  versionMax: u8,
};

const pduArb: fc.Arbitrary<Pdu> = fc.oneof(
  fc.record({
    opcode: fc.constant(0x00 as const),
    immediate: fc.boolean(),
    dataSegmentLength: dsl,
    lun,
    initiatorTaskTag: u32,
    targetTransferTag: u32,
    ...initiatorSN,
  }),
  fc.record({
    opcode: fc.constant(0x01 as const),
    immediate: fc.boolean(),
    dataSegmentLength: dsl,
    final: fc.boolean(),
    read: fc.boolean(),
    write: fc.boolean(),
    attr: fc.integer({ min: 0, max: 7 }),
    lun,
    initiatorTaskTag: u32,
    expectedDataTransferLength: u32,
    ...initiatorSN,
    cdb: fc.uint8Array({ minLength: 16, maxLength: 260 }).map((a) => Buffer.from(a)),
    bidiReadLength: fc.option(u32, { nil: null }),
  }),
  fc.record({
    opcode: fc.constant(0x02 as const),
    immediate: fc.boolean(),
    dataSegmentLength: dsl,
    function: fc.integer({ min: 0, max: 127 }),
    lun,
    initiatorTaskTag: u32,
    referencedTaskTag: u32,
    ...initiatorSN,
    refCmdSN: u32,
    expDataSN: u32,
  }),
  fc.record({
    opcode: fc.constant(0x03 as const),
    ...loginStages,
    versionMin: u8,
    isid,
    tsih: u16,
    initiatorTaskTag: u32,
    cid: u16,
    ...initiatorSN,
  }),
  fc.record({
    opcode: fc.constant(0x04 as const),
    immediate: fc.boolean(),
    ...textFields,
    ...initiatorSN,
  }),
  fc.record({
    opcode: fc.constant(0x05 as const),
    dataSegmentLength: dsl,
    final: fc.boolean(),
    lun,
    initiatorTaskTag: u32,
    targetTransferTag: u32,
    expStatSN: u32,
    dataSN: u32,
    bufferOffset: u32,
  }),
  fc.record({
    opcode: fc.constant(0x06 as const),
    immediate: fc.boolean(),
    dataSegmentLength: dsl,
    reasonCode: fc.integer({ min: 0, max: 127 }),
    initiatorTaskTag: u32,
    cid: u16,
    ...initiatorSN,
  }),
  fc.record({
    opcode: fc.constant(0x10 as const),
    dataSegmentLength: dsl,
    type: fc.integer({ min: 0, max: 15 }),
    lun,
    initiatorTaskTag: u32,
    targetTransferTag: u32,
    expStatSN: u32,
    begRun: u32,
    runLength: u32,
  }),
  fc.record({
    opcode: fc.constant(0x20 as const),
    dataSegmentLength: dsl,
    lun,
    initiatorTaskTag: u32,
    targetTransferTag: u32,
    ...targetSN,
  }),
  fc.record({
    opcode: fc.constant(0x21 as const),
    dataSegmentLength: dsl,
    bidiOverflow: fc.boolean(),
    bidiUnderflow: fc.boolean(),
    overflow: fc.boolean(),
    underflow: fc.boolean(),
    response: u8,
    status: u8,
    initiatorTaskTag: u32,
    snackTag: u32,
    ...targetSN,
    expDataSN: u32,
    bidiReadResidualCount: u32,
    residualCount: u32,
  }),
  fc.record({
    opcode: fc.constant(0x22 as const),
    dataSegmentLength: dsl,
    response: u8,
    initiatorTaskTag: u32,
    ...targetSN,
  }),
  fc.record({
    opcode: fc.constant(0x23 as const),
    ...loginStages,
    versionActive: u8,
    isid,
    tsih: u16,
    initiatorTaskTag: u32,
    ...targetSN,
    statusClass: u8,
    statusDetail: u8,
  }),
  fc.record({
    opcode: fc.constant(0x24 as const),
    ...textFields,
    ...targetSN,
  }),
  fc.record({
    opcode: fc.constant(0x25 as const),
    dataSegmentLength: dsl,
    final: fc.boolean(),
    acknowledge: fc.boolean(),
    overflow: fc.boolean(),
    underflow: fc.boolean(),
    statusPresent: fc.boolean(),
    status: u8,
    lun,
    initiatorTaskTag: u32,
    targetTransferTag: u32,
    ...targetSN,
    dataSN: u32,
    bufferOffset: u32,
    residualCount: u32,
  }),
  fc.record({
    opcode: fc.constant(0x26 as const),
    dataSegmentLength: dsl,
    response: u8,
    initiatorTaskTag: u32,
    ...targetSN,
    time2Wait: u16,
    time2Retain: u16,
  }),
  fc.record({
    opcode: fc.constant(0x31 as const),
    dataSegmentLength: dsl,
    lun,
    initiatorTaskTag: u32,
    targetTransferTag: u32,
    ...targetSN,
    r2tSN: u32,
    bufferOffset: u32,
    desiredDataTransferLength: u32,
  }),
  fc.record({
    opcode: fc.constant(0x32 as const),
    dataSegmentLength: dsl,
    lun,
    ...targetSN,
    asyncEvent: u8,
    asyncVCode: u8,
    parameter1: u16,
    parameter2: u16,
    parameter3: u16,
  }),
  fc.record({
    opcode: fc.constant(0x3f as const),
    dataSegmentLength: dsl,
    reason: u8,
    ...targetSN,
    dataSN: u32,
  }),
);

describe('iSCSI PDU codec (RFC 7143 §11)', () => {
  it('round-trips every opcode through encode/decode', () => {
    fc.assert(
      fc.property(pduArb, (pdu) => {
        const bytes = encodePdu(pdu);
        assert.equal(bytes.length % 4, 0);
        assert.ok(bytes.length >= BHS_LENGTH);
        assert.deepEqual(decodePdu(bytes), { ...pdu });
      }),
      { numRuns: 3000 },
    );
  });

  it('decoding random bytes either yields a PDU or an IscsiProtocolError, never anything else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 400 }), (a) => {
        const b = Buffer.from(a);
        try {
          const p = decodePdu(b);
          assert.ok(typeof p.opcode === 'number');
        } catch (e) {
          assert.ok(e instanceof IscsiProtocolError, `unexpected ${String(e)}`);
        }
      }),
      { numRuns: 5000 },
    );
  });

  it('random headers with a valid opcode and AHS length never crash the decoder', () => {
    const opcodes = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x20, 0x21, 0x3f, 0x1c, 0x3e];
    fc.assert(
      fc.property(
        fc.constantFrom(...opcodes),
        fc.integer({ min: 0, max: 8 }),
        fc.uint8Array({ minLength: 48 + 32, maxLength: 48 + 32 }),
        (op, ahs, a) => {
          const b = Buffer.from(a);
          b[0] = op;
          b[4] = ahs;
          try {
            decodePdu(b.subarray(0, 48 + ahs * 4));
          } catch (e) {
            assert.ok(e instanceof IscsiProtocolError);
          }
        },
      ),
      { numRuns: 5000 },
    );
  });

  it('rejects unknown opcodes and truncated headers with typed errors', () => {
    const b = Buffer.alloc(48);
    b[0] = 0x1c;
    assert.throws(
      () => decodePdu(b),
      (e: unknown) => e instanceof IscsiProtocolError && e.reason === 0x05,
    );
    assert.throws(
      () => decodePdu(Buffer.alloc(47)),
      (e: unknown) => e instanceof IscsiProtocolError && e.fatal,
    );
    const cmd = Buffer.alloc(48);
    cmd[0] = 0x01;
    cmd[4] = 2; // AHS announced but missing
    assert.throws(() => decodePdu(cmd), IscsiProtocolError);
  });

  it('encodes an extended CDB AHS (§11.3.4) and a bidirectional read length AHS (§11.3.5)', () => {
    const cdb = Buffer.from(Array.from({ length: 32 }, (_, i) => i + 1));
    const b = encodePdu({
      opcode: 0x01,
      immediate: false,
      dataSegmentLength: 0,
      final: true,
      read: true,
      write: true,
      attr: 1,
      lun: 0n,
      initiatorTaskTag: 7,
      expectedDataTransferLength: 512,
      cmdSN: 1,
      expStatSN: 1,
      cdb,
      bidiReadLength: 4096,
    });
    assert.equal(b[4], 7); // 20 bytes extended CDB + 8 bytes bidi = 28 bytes = 7 words
    assert.equal(b.readUInt16BE(48), 17); // AHSLength = CDB length - 15
    assert.equal(b[50], 1);
    assert.deepEqual(b.subarray(52, 68), cdb.subarray(16));
    assert.equal(b.readUInt16BE(68), 5);
    assert.equal(b[70], 2);
    assert.equal(b.readUInt32BE(72), 4096);
    const d = decodePdu(b);
    assert.equal(d.opcode, 0x01);
    if (d.opcode === 0x01) {
      assert.deepEqual(d.cdb, cdb);
      assert.equal(d.bidiReadLength, 4096);
    }
  });

  it('reads the BHS prefix: opcode, I bit, TotalAHSLength, 24-bit DataSegmentLength', () => {
    const b = Buffer.alloc(48);
    b[0] = 0x41;
    b[4] = 3;
    b.writeUIntBE(0x123456, 5, 3);
    assert.deepEqual(readBhsPrefix(b), { opcode: 1, immediate: true, totalAhsLength: 3, dataSegmentLength: 0x123456 });
  });

  it('pads to 4 bytes (§11.1)', () => {
    assert.deepEqual([0, 1, 2, 3, 4, 5, 8191].map(pad4), [0, 3, 2, 1, 0, 3, 1]);
  });

  it('LUN field: peripheral below 256, flat above (SAM-5 §4.7)', () => {
    assert.equal(encodeLun(0), 0n);
    assert.equal(encodeLun(5), 0x0005000000000000n);
    assert.equal(encodeLun(300), 0x412c000000000000n);
    fc.assert(fc.property(fc.integer({ min: 0, max: 0x3fff }), (n) => decodeLun(encodeLun(n)) === n));
    // Interleaved fields (the decoder remembers the last one): each answer is still its own.
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.integer({ min: 0, max: 0x3fff }).map(encodeLun), lun), { maxLength: 20 }), (fields) =>
        fields.every((f) => {
          const b0 = Number(f >> 56n);
          const plain = (f & 0xffffffffffffn) === 0n;
          const want = !plain
            ? -1
            : b0 >> 6 === 0
              ? b0 === 0
                ? Number((f >> 48n) & 0xffn)
                : -1
              : b0 >> 6 === 1
                ? Number((f >> 48n) & 0x3fffn)
                : -1;
          return decodeLun(f) === want;
        }),
      ),
    );
    assert.equal(decodeLun(0x0001000000000001n), -1);
    assert.equal(decodeLun(0xc000000000000000n), -1);
  });
});

describe('CRC32C digests (RFC 7143 §13.1, RFC 3720 Appendix B.4 vectors)', () => {
  it('matches the published vectors', () => {
    assert.equal(crc32cOf([Buffer.alloc(32, 0)]), 0x8a9136aa);
    assert.equal(crc32cOf([Buffer.alloc(32, 0xff)]), 0x62a8ab43);
    assert.equal(crc32cOf([Buffer.from(Array.from({ length: 32 }, (_, i) => i))]), 0x46dd794e);
    assert.equal(crc32cOf([Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i))]), 0x113fdb5c);
    assert.equal(crc32cOf([Buffer.from('123456789')]), 0xe3069283);
  });

  it('is incremental over pieces and travels least-significant byte first', () => {
    const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff));
    assert.equal(crc32cOf([data.subarray(0, 13), data.subarray(13, 600), data.subarray(600)]), crc32cOf([data]));
    assert.deepEqual(digestBytes(0x8a9136aa), Buffer.from([0xaa, 0x36, 0x91, 0x8a]));
    assert.equal(readDigest(Buffer.from([0xaa, 0x36, 0x91, 0x8a]), 0), 0x8a9136aa);
  });
});
