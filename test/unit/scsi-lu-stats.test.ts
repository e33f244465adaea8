// Per-LU statistics fed by the data path: a logical unit with a LuStats observer counts every command it
// answers under the kind its opcode-table entry names, with the bytes it moved, its latency and whether
// it succeeded; commands the table marks as reads/writes/flushes/unmaps and everything else (INQUIRY,
// unknown opcodes) land where metrics report them.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildNexus } from '../../src/iscsi/session.js';
import { LuStats } from '../../src/metrics/lu-stats.js';
import { COMMANDS } from '../../src/scsi/commands.js';
import { createTargetDevice, type TargetDevice } from '../../src/scsi/device.js';
import { IO_KIND_NAMES, IoKind } from '../../src/scsi/types.js';
import { openFileStore } from '../../src/storage/file-store.js';
import type { BackingStore } from '../../src/storage/types.js';
import { addNexus, execute } from '../support/scsi.js';

const BS = 512;
const nexus = buildNexus('iqn.2024-01.test:stats', '400000000001', 'iqn.2024-01.test:target', 1);

function rw10(op: number, lba: number, blocks: number): Buffer {
  const b = Buffer.alloc(10);
  b[0] = op;
  b.writeUInt32BE(lba, 2);
  b.writeUInt16BE(blocks, 7);
  return b;
}

describe('per-LU statistics from the data path', () => {
  let dir: string;
  let store: BackingStore;
  let dev: TargetDevice;
  const stats = new LuStats();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lunar-lustats-'));
    store = await openFileStore(join(dir, 'lu.img'), { create: { size: 2048 * BS } });
    dev = createTargetDevice({
      luns: new Map([
        [
          0,
          {
            identity: {
              naa: '6001405abcdef0123456789abcdef012',
              serial: 'stats-0001',
              vendor: 'LUNAR',
              product: 'VOLUME',
              revision: '010',
            },
            store,
            thinProvisioned: true,
            observer: stats,
          },
        ],
      ]),
      targetPorts: [1],
    });
    await addNexus(dev, nexus);
  });
  after(async () => {
    await dev.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('the kinds are the names metrics report, in order', () => {
    assert.deepEqual(IO_KIND_NAMES, ['read', 'write', 'flush', 'unmap', 'other']);
    assert.deepEqual(Object.values(IoKind), [0, 1, 2, 3, 4]);
    // Every READ and WRITE form of the table carries its kind (dispatch and statistics read one table).
    for (const c of COMMANDS) {
      if (/^READ\((6|10|12|16)\)$/.test(c.name)) assert.equal(c.io, IoKind.Read, c.name);
      if (/^(WRITE|WRITE AND VERIFY|WRITE SAME)\(\d+\)$|^ORWRITE|^COMPARE AND WRITE/.test(c.name)) assert.equal(c.io, IoKind.Write, c.name);
      if (c.name.startsWith('SYNCHRONIZE CACHE')) assert.equal(c.io, IoKind.Flush, c.name);
    }
  });

  it('counts commands by kind, bytes by direction, errors and latency', async () => {
    const before = { cmds: Array.from(stats.commands), errors: Array.from(stats.errors), count: stats.count, sum: stats.latencySum };
    const data = Buffer.alloc(8 * BS, 0xa5);
    assert.equal((await execute(dev, nexus, rw10(0x2a, 0, 8), data, data.length)).status, 0); // WRITE(10)
    assert.equal((await execute(dev, nexus, rw10(0x28, 0, 8), null, 8 * BS)).status, 0); // READ(10)
    assert.equal((await execute(dev, nexus, rw10(0x28, 0, 2), null, 2 * BS)).status, 0); // READ(10)
    assert.equal((await execute(dev, nexus, rw10(0x35, 0, 0), null, 0)).status, 0); // SYNCHRONIZE CACHE(10)
    const unmap = Buffer.alloc(24);
    unmap.writeUInt16BE(22, 0);
    unmap.writeUInt16BE(16, 2);
    unmap.writeBigUInt64BE(0n, 8);
    unmap.writeUInt32BE(8, 16);
    const unmapCdb = Buffer.alloc(10);
    unmapCdb[0] = 0x42;
    unmapCdb.writeUInt16BE(unmap.length, 7);
    assert.equal((await execute(dev, nexus, unmapCdb, unmap, unmap.length)).status, 0); // UNMAP
    const inquiry = Buffer.from([0x12, 0, 0, 0, 96, 0]);
    assert.equal((await execute(dev, nexus, inquiry, null, 96)).status, 0);
    // Beyond the last LBA: CHECK CONDITION (LBA OUT OF RANGE), a read error that moved no data.
    assert.equal((await execute(dev, nexus, rw10(0x28, 4096, 1), null, BS)).status, 2);
    // An opcode outside the table: INVALID COMMAND OPERATION CODE, counted as other.
    assert.equal((await execute(dev, nexus, Buffer.from([0xc7, 0, 0, 0, 0, 0]), null, 0)).status, 2);

    const delta = (k: IoKind): number => stats.commands[k]! - before.cmds[k]!;
    assert.equal(delta(IoKind.Read), 3);
    assert.equal(delta(IoKind.Write), 1);
    assert.equal(delta(IoKind.Flush), 1);
    assert.equal(delta(IoKind.Unmap), 1);
    assert.equal(delta(IoKind.Other), 2);
    assert.equal(stats.readBytes, 10 * BS, 'Data-In of the two good reads');
    assert.equal(stats.writeBytes, 8 * BS, 'Data-Out of the write');
    const errors = (k: IoKind): number => stats.errors[k]! - before.errors[k]!;
    assert.equal(errors(IoKind.Read), 1);
    assert.equal(errors(IoKind.Other), 1);
    assert.equal(errors(IoKind.Write), 0);
    const buckets = stats.buckets.reduce((a, b) => a + b, 0);
    assert.equal(buckets, stats.count, 'every command is in one latency bucket');
    assert.equal(stats.count - before.count, 8);
    assert.ok(stats.latencySum > before.sum && stats.latencySum < 10, `latency sum ${stats.latencySum} s`);
  });
});
