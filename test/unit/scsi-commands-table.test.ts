// The opcode table drives dispatch and REPORT SUPPORTED OPERATION CODES: every CDB USAGE DATA array must be
// exactly as long as the CDB its group code defines (SPC-4 §4.2.5.1), or RSOC lies and decoding misreads.
import assert from 'node:assert/strict';
import test from 'node:test';
import { COMMANDS } from '../../src/scsi/commands.js';

const CDB_LENGTH_BY_GROUP: Record<number, number> = { 0: 6, 1: 10, 2: 10, 4: 16, 5: 12 };

test('every CDB usage array has the length of its group code', () => {
  for (const c of COMMANDS) {
    const expected = CDB_LENGTH_BY_GROUP[c.opcode >> 5];
    assert.ok(expected !== undefined, `${c.name}: opcode 0x${c.opcode.toString(16)} has a variable-length group`);
    assert.equal(c.cdbUsage.length, expected, `${c.name}: usage data is ${c.cdbUsage.length} bytes, CDB is ${expected}`);
    assert.equal(c.cdbUsage[0], c.opcode, `${c.name}: usage byte 0 must be the opcode`);
  }
});

test('no opcode/service action pair is listed twice', () => {
  const seen = new Set<string>();
  for (const c of COMMANDS) {
    const k = `${c.opcode}/${c.serviceAction ?? '-'}`;
    assert.ok(!seen.has(k), `${c.name} duplicates ${k}`);
    seen.add(k);
  }
});
