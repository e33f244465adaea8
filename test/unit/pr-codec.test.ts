// Pure encoders/decoders of reservations: iSCSI TransportIDs (SPC-4 §7.6.4.6, src/scsi/pr.ts) and the
// Table 55 access classes that the opcode table (src/scsi/commands.ts) gives each command.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { reservationClass } from '../../src/scsi/commands.js';
import { decodeIscsiTransportId, encodeIscsiTransportId } from '../../src/scsi/pr.js';

/** The refusal message of a TransportID the decoder must reject. */
function refusal(b: Buffer): string {
  const r = decodeIscsiTransportId(b);
  assert.equal(typeof r, 'string', `expected a refusal, got ${JSON.stringify(r)}`);
  return r as string;
}

const iqn = fc.stringMatching(/^[a-z0-9.:-]{1,200}$/).map((s) => `iqn.2026-01.test:${s}`);
const isid = fc.stringMatching(/^[0-9a-f]{12}$/);

test('TransportID format 01b round-trips any initiator port name', () => {
  fc.assert(
    fc.property(iqn, isid, (name, id) => {
      const b = encodeIscsiTransportId(`${name},i,0x${id}`);
      assert.equal(b[0], 0x45, 'format 01b, protocol iSCSI');
      assert.equal(b.length % 4, 0);
      assert.ok(b.length >= 24);
      assert.equal(b.readUInt16BE(2), b.length - 4);
      const d = decodeIscsiTransportId(b);
      assert.deepEqual(d, { name, isid: id, length: b.length });
    }),
  );
});

test('TransportID decoder never throws on arbitrary bytes', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const r = decodeIscsiTransportId(Buffer.from(bytes));
      assert.ok(typeof r === 'string' || (r.length <= bytes.length && r.name.length > 0));
    }),
  );
});

test('TransportID decoder: format 00b, and the refusals', () => {
  const name = Buffer.from('iqn.2026-01.test:x\0\0');
  const b = Buffer.concat([Buffer.from([0x05, 0, 0, name.length]), name]);
  assert.deepEqual(decodeIscsiTransportId(b), { name: 'iqn.2026-01.test:x', isid: null, length: b.length });
  assert.match(refusal(Buffer.from([0x06, 0, 0, 4, 0x41, 0, 0, 0])), /protocol/);
  assert.match(refusal(Buffer.from([0x85, 0, 0, 4, 0x41, 0, 0, 0])), /format/);
  assert.match(refusal(Buffer.from([0x05, 0, 0, 5, 0x41, 0, 0, 0, 0])), /multiple of 4/);
  assert.match(refusal(Buffer.from([0x05, 0, 0, 8, 0x41, 0, 0, 0])), /longer/);
  const noIsid = Buffer.concat([Buffer.from([0x45, 0, 0, name.length]), name]);
  assert.match(refusal(noIsid), /ISID/);
});

test('access classes of Table 55 / SBC-3 Table 13', () => {
  const c = (...bytes: number[]) => reservationClass(Buffer.from([...bytes, ...Array<number>(16 - bytes.length).fill(0)]));
  assert.equal(c(0x12), 'allowed'); // INQUIRY
  assert.equal(c(0x00), 'allowed'); // TEST UNIT READY
  assert.equal(c(0xa0), 'allowed'); // REPORT LUNS
  assert.equal(c(0x25), 'allowed'); // READ CAPACITY (10)
  assert.equal(c(0x9e, 0x10), 'allowed'); // READ CAPACITY (16)
  assert.equal(c(0x9e, 0x12), 'read'); // GET LBA STATUS
  assert.equal(c(0xa3, 0x0a), 'allowed'); // REPORT TARGET PORT GROUPS
  assert.equal(c(0xa3, 0x0c), 'allowed'); // REPORT SUPPORTED OPERATION CODES
  for (const op of [0x08, 0x28, 0xa8, 0x88, 0x2f, 0xaf, 0x8f, 0x34, 0x90, 0x1a, 0x5a]) assert.equal(c(op), 'read', op.toString(16));
  for (const op of [0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e, 0x41, 0x93, 0x42, 0x89, 0x8b, 0x04, 0x35, 0x91, 0x15, 0x55, 0x83, 0xa4, 0x48])
    assert.equal(c(op), 'write', op.toString(16));
  for (const op of [0x5e, 0x5f, 0x16, 0x17, 0x56, 0x57]) assert.equal(c(op), 'own');
  assert.equal(c(0x1b, 0, 0, 0, 0x01), 'allowed'); // START STOP UNIT START=1
  assert.equal(c(0x1b, 0, 0, 0, 0x00), 'write'); // stop
  assert.equal(c(0x1e, 0, 0, 0, 0x00), 'allowed'); // PREVENT ALLOW: allow
  assert.equal(c(0x1e, 0, 0, 0, 0x01), 'write'); // prevent
});

test('TransportID names longer than 223 bytes are refused', () => {
  const long = 'iqn.2026-01.test:' + 'x'.repeat(223);
  assert.match(refusal(encodeIscsiTransportId(`${long},i,0x000000000001`)), /223/);
  const name = Buffer.from(long + '\0\0\0\0');
  const padded = Buffer.concat([name, Buffer.alloc((4 - (name.length % 4)) % 4)]);
  const b = Buffer.concat([Buffer.from([0x05, 0, padded.length >> 8, padded.length & 0xff]), padded]);
  assert.match(refusal(b), /223/);
});
