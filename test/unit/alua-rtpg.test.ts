// REPORT TARGET PORT GROUPS parameter data (SPC-4 §6.36.2).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeReportTargetPortGroups, TARGET_PORT_GROUP_ID, targetPortGroupOf } from '../../src/scsi/alua.js';

test('length-only header (format 000b): one active/optimized group listing every port', () => {
  const b = encodeReportTargetPortGroups([2, 1, 3], false, 1024);
  assert.equal(b.length, 4 + 8 + 3 * 4);
  assert.equal(b.readUInt32BE(0), b.length - 4, 'RETURN DATA LENGTH');
  const d = b.subarray(4);
  assert.equal(d[0]! & 0x0f, 0, 'ASYMMETRIC ACCESS STATE active/optimized');
  assert.equal(d[0]! & 0x80, 0, 'PREF');
  assert.equal(d[1], 0x01, 'AO_SUP only');
  assert.equal(d.readUInt16BE(2), TARGET_PORT_GROUP_ID);
  assert.equal(d[5], 0, 'STATUS CODE');
  assert.equal(d[7], 3, 'TARGET PORT COUNT');
  assert.deepEqual(
    [0, 1, 2].map((i) => d.readUInt16BE(8 + 4 * i + 2)),
    [1, 2, 3],
  );
  assert.deepEqual(
    [0, 1, 2].map((i) => d.readUInt16BE(8 + 4 * i)),
    [0, 0, 0],
  );
});

test('extended header (format 001b) carries the implicit transition time', () => {
  const b = encodeReportTargetPortGroups([1], true, 1024);
  assert.equal(b.length, 8 + 8 + 4);
  assert.equal(b.readUInt32BE(0), b.length - 4);
  assert.equal((b[4]! >> 4) & 0x7, 1, 'FORMAT TYPE');
  assert.ok(b[5]! > 0, 'IMPLICIT TRANSITION TIME');
  assert.equal(b.readUInt16BE(8 + 2), TARGET_PORT_GROUP_ID);
  assert.equal(b[8 + 7], 1);
  assert.equal(b.readUInt16BE(8 + 8 + 2), 1);
});

test('allocation length truncates but RETURN DATA LENGTH reports the full list', () => {
  const full = encodeReportTargetPortGroups([1, 2], true, 4096);
  const b = encodeReportTargetPortGroups([1, 2], true, 6);
  assert.equal(b.length, 6);
  assert.deepEqual(b, full.subarray(0, 6));
  assert.equal(b.readUInt32BE(0), full.length - 4);
  assert.equal(encodeReportTargetPortGroups([1], false, 0).length, 0);
});

test('duplicate ports are listed once; reserved id 0 is dropped; more than 255 ports is refused', () => {
  const b = encodeReportTargetPortGroups([5, 5, 0, 4], false, 1024);
  assert.equal(b[4 + 7], 2);
  assert.throws(
    () =>
      encodeReportTargetPortGroups(
        Array.from({ length: 256 }, (_, i) => i + 1),
        false,
        65535,
      ),
    RangeError,
  );
});

test('targetPortGroupOf agrees with the group REPORT TARGET PORT GROUPS lists for every port', () => {
  for (const port of [1, 2, 7]) {
    const b = encodeReportTargetPortGroups([1, 2, 7], false, 1024);
    assert.equal(b.readUInt16BE(4 + 2), targetPortGroupOf(port));
  }
});
