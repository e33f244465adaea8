// The opcode table drives dispatch, REPORT SUPPORTED OPERATION CODES and the reservation checks: every CDB
// USAGE DATA array must be exactly as long as the CDB its group code defines (SPC-4 §4.2.5.1), or RSOC lies
// and decoding misreads; every entry carries its reservation class.
import assert from 'node:assert/strict';
import test from 'node:test';
import { COMMANDS, allowedUnderReserve, commandFor, reservationClass } from '../../src/scsi/commands.js';

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

// SPC-4 §5.13.1 Table 55 and SBC-3 §4.17 Table 13, as access classes: what a command from an I_T nexus
// that holds no reservation gets under Write Exclusive / Exclusive Access held by another ('allowed':
// allowed/allowed, 'read': allowed/conflict, 'write': conflict/conflict; 'own': PR IN/OUT, RESERVE,
// RELEASE apply their own rules). Written out here from the tables, independently of the opcode table.
const TABLE_55: Record<string, string> = {
  'TEST UNIT READY': 'allowed',
  'REQUEST SENSE': 'allowed',
  INQUIRY: 'allowed',
  'REPORT LUNS': 'allowed',
  'READ CAPACITY(10)': 'allowed',
  'READ CAPACITY(16)': 'allowed',
  'REPORT TARGET PORT GROUPS': 'allowed',
  'REPORT SUPPORTED OPERATION CODES': 'allowed',
  'REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS': 'allowed',
  'READ(6)': 'read',
  'READ(10)': 'read',
  'READ(12)': 'read',
  'READ(16)': 'read',
  'VERIFY(10)': 'read',
  'VERIFY(12)': 'read',
  'VERIFY(16)': 'read',
  'PRE-FETCH(10)': 'read',
  'PRE-FETCH(16)': 'read',
  'MODE SENSE(6)': 'read',
  'MODE SENSE(10)': 'read',
  'READ DEFECT DATA(10)': 'read',
  'READ DEFECT DATA(12)': 'read',
  'GET LBA STATUS': 'read',
  'RECEIVE COPY RESULTS/COPY STATUS': 'read',
  'RECEIVE COPY RESULTS/OPERATING PARAMETERS': 'read',
  'WRITE(6)': 'write',
  'WRITE(10)': 'write',
  'WRITE(12)': 'write',
  'WRITE(16)': 'write',
  'WRITE AND VERIFY(10)': 'write',
  'WRITE AND VERIFY(12)': 'write',
  'WRITE AND VERIFY(16)': 'write',
  'WRITE SAME(10)': 'write',
  'WRITE SAME(16)': 'write',
  UNMAP: 'write',
  'COMPARE AND WRITE': 'write',
  'ORWRITE(16)': 'write',
  'SYNCHRONIZE CACHE(10)': 'write',
  'SYNCHRONIZE CACHE(16)': 'write',
  'MODE SELECT(6)': 'write',
  'MODE SELECT(10)': 'write',
  'EXTENDED COPY(LID1)': 'write',
  'RESERVE(6)': 'own',
  'RESERVE(10)': 'own',
  'RELEASE(6)': 'own',
  'RELEASE(10)': 'own',
};

/** A CDB of the entry's length with its opcode, service action and the given byte 4. */
function cdbOf(c: (typeof COMMANDS)[number], byte4 = 0): Buffer {
  const b = Buffer.alloc(c.cdbUsage.length);
  b[0] = c.opcode;
  if (c.serviceAction !== undefined) b[1] = c.serviceAction;
  b[4] = byte4;
  return b;
}

test('every table entry carries its reservation class, and it is the one of Table 55 / Table 13', () => {
  for (const c of COMMANDS) {
    const cls = reservationClass(cdbOf(c));
    assert.ok(['allowed', 'read', 'write', 'own'].includes(cls), `${c.name}: ${cls}`);
    const want = c.opcode === 0x5e || c.opcode === 0x5f ? 'own' : TABLE_55[c.name];
    if (c.name === 'START STOP UNIT' || c.name === 'PREVENT ALLOW MEDIUM REMOVAL') continue; // CDB-dependent, below
    assert.equal(cls, want, c.name);
  }
  const ssu = COMMANDS.find((c) => c.name === 'START STOP UNIT')!;
  assert.equal(reservationClass(cdbOf(ssu, 0x01)), 'allowed', 'START=1, POWER CONDITION=0');
  assert.equal(reservationClass(cdbOf(ssu, 0x00)), 'write', 'stop');
  assert.equal(reservationClass(cdbOf(ssu, 0x11)), 'write', 'START=1 with a power condition');
  const pamr = COMMANDS.find((c) => c.name === 'PREVENT ALLOW MEDIUM REMOVAL')!;
  assert.equal(reservationClass(cdbOf(pamr, 0x00)), 'allowed', 'PREVENT=00b');
  assert.equal(reservationClass(cdbOf(pamr, 0x01)), 'write', 'PREVENT=01b');
  // A CDB not in the table is treated as modifying (FORMAT UNIT, SANITIZE, MAINTENANCE OUT).
  for (const op of [0x04, 0x48, 0xa4]) assert.equal(reservationClass(Buffer.from([op, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])), 'write');
});

test('the SPC-2 RESERVE exceptions and the no-LU answers come from the table entries', () => {
  const underReserve = COMMANDS.filter((c) => allowedUnderReserve(cdbOf(c))).map((c) => c.name);
  // SPC-2 §5.5.1 Table 10: INQUIRY, REPORT LUNS, REQUEST SENSE, RELEASE; REPORT TARGET PORT GROUPS too.
  assert.deepEqual(underReserve.sort(), [
    'INQUIRY',
    'RELEASE(10)',
    'RELEASE(6)',
    'REPORT LUNS',
    'REPORT TARGET PORT GROUPS',
    'REQUEST SENSE',
  ]);
  const noLu = COMMANDS.filter((c) => c.withoutLogicalUnit !== undefined).map((c) => c.name);
  assert.deepEqual(noLu.sort(), ['INQUIRY', 'REPORT LUNS', 'REQUEST SENSE']);
  for (const c of COMMANDS) assert.equal(commandFor(cdbOf(c)), c, `${c.name} is found by its CDB`);
});
