// The one status and sense encoder (src/scsi/sense.ts): fixed-format sense data (SPC-4 §4.5.3) with and
// without the sense-key specific field pointer (SPC-4 §4.5.2.4.2), CHECK CONDITION responses, and the
// additional sense codes the transport uses for Data-Out errors (SPC-4 Annex D, RFC 7143 §11.4.7.2).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Asc, SenseKey, checkCondition, decodeSense, encodeFixedSense, miscompare } from '../../src/scsi/sense.js';
import { ScsiStatus } from '../../src/scsi/types.js';

test('fixed sense with and without a field pointer', () => {
  const s = encodeFixedSense(0x05, { asc: 0x24, ascq: 0x00 }, { field: { cdb: true, byte: 2, bit: 3 } });
  assert.equal(s.length, 18);
  assert.equal(s[0], 0x70);
  assert.equal(s[2], 0x05);
  assert.equal(s[7], 10);
  assert.equal(s[12], 0x24);
  assert.equal(s[15], 0x80 | 0x40 | 0x08 | 3);
  assert.equal(s.readUInt16BE(16), 2);
  const p = encodeFixedSense(0x05, { asc: 0x26, ascq: 0x00 }, { field: { cdb: false, byte: 20 } });
  assert.equal(p[15], 0x80);
  assert.equal(p.readUInt16BE(16), 20);
  assert.equal(encodeFixedSense(0x06, { asc: 0x2a, ascq: 0x04 })[15], 0);
});

test('the INFORMATION field sets VALID and round-trips through decodeSense', () => {
  const r = miscompare(4097).toResponse();
  assert.equal(r.status, ScsiStatus.CHECK_CONDITION);
  assert.equal(r.sense![0], 0xf0, 'VALID | response code 70h');
  assert.deepEqual(decodeSense(r.sense!), { key: SenseKey.MISCOMPARE, asc: 0x1d, ascq: 0x00, information: 4097 });
});

test('checkCondition: CHECK CONDITION, no data, fixed-format sense with the given key and ASC/ASCQ', () => {
  const r = checkCondition(SenseKey.ABORTED_COMMAND, Asc.DATA_OFFSET_ERROR);
  assert.equal(r.status, ScsiStatus.CHECK_CONDITION);
  assert.equal(r.data, null);
  assert.deepEqual(decodeSense(r.sense!), { key: 0x0b, asc: 0x4b, ascq: 0x05 });
});

test('the iSCSI data phase codes are those of SPC-4 Annex D and RFC 7143 §11.4.7.2', () => {
  assert.deepEqual(Asc.DATA_PHASE_ERROR, { asc: 0x4b, ascq: 0x00 });
  assert.deepEqual(Asc.INVALID_TARGET_PORT_TRANSFER_TAG_RECEIVED, { asc: 0x4b, ascq: 0x01 });
  assert.deepEqual(Asc.TOO_MUCH_WRITE_DATA, { asc: 0x4b, ascq: 0x02 });
  assert.deepEqual(Asc.DATA_OFFSET_ERROR, { asc: 0x4b, ascq: 0x05 });
  assert.deepEqual(Asc.WRITE_ERROR_UNEXPECTED_UNSOLICITED_DATA, { asc: 0x0c, ascq: 0x0c });
  assert.deepEqual(Asc.WRITE_ERROR_NOT_ENOUGH_UNSOLICITED_DATA, { asc: 0x0c, ascq: 0x0d });
});
