// Property tests: whatever CDB / parameter data an initiator sends, the device answers with a
// well-formed SCSI response (never a rejection, never more data than expected).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { decodeBlock, decodeModeSense, encodeLun } from '../../src/scsi/cdb.js';
import { COMMANDS } from '../../src/scsi/commands.js';
import { createTargetDevice, type TargetDevice } from '../../src/scsi/device.js';
import { encodeFixedSense, decodeSense, ScsiError, SenseKey, Asc } from '../../src/scsi/sense.js';
import { blockStatus } from '../../src/scsi/sbc.js';
import { ScsiStatus, type ITNexus } from '../../src/scsi/types.js';
import { openFileStore } from '../../src/storage/file-store.js';
import type { BackingStore } from '../../src/storage/types.js';

const BS = 512;
const BLOCKS = 4096;

const nexus: ITNexus = {
  initiatorName: 'iqn.2024-01.test:fuzz',
  isid: '400000000001',
  initiatorPortName: 'iqn.2024-01.test:fuzz,i,0x400000000001',
  targetPortName: 'iqn.2024-01.test:t,t,0x0001',
  targetPortalGroupTag: 1,
  relativeTargetPortId: 1,
  key: 'iqn.2024-01.test:fuzz,i,0x400000000001|iqn.2024-01.test:t,t,0x0001',
};

const ALLOWED_STATUS = new Set<number>([
  ScsiStatus.GOOD,
  ScsiStatus.CHECK_CONDITION,
  ScsiStatus.RESERVATION_CONFLICT,
  ScsiStatus.CONDITION_MET,
]);

describe('SCSI device robustness (fast-check)', () => {
  let dir: string;
  let store: BackingStore;
  let dev: TargetDevice;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lunar-fuzz-'));
    store = await openFileStore(join(dir, 'fuzz.img'), { create: { size: BLOCKS * BS } });
    dev = createTargetDevice({
      luns: new Map([
        [
          0,
          {
            identity: { naa: '60014050123456789abcdef012345678', serial: 'fuzz', vendor: 'LUNAR', product: 'Fuzz', revision: '1' },
            store,
            thinProvisioned: true,
          },
        ],
      ]),
      targetPorts: [1],
    });
    dev.nexusAdded(nexus);
  });
  after(async () => {
    await dev.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('any CDB gets a well-formed response within the expected length', async () => {
    const opcodes = [...new Set(COMMANDS.map((c) => c.opcode))];
    let tag = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.constantFrom(...opcodes), fc.integer({ min: 0, max: 255 })),
        fc.uint8Array({ minLength: 15, maxLength: 15 }),
        fc.integer({ min: 0, max: 3 * BS }),
        fc.option(fc.uint8Array({ minLength: 0, maxLength: 3 * BS }), { nil: null }),
        fc.integer({ min: 0, max: 1 }),
        async (op, rest, edtl, out, lun) => {
          const cdb = Buffer.concat([Buffer.from([op]), Buffer.from(rest)]);
          const dataOut = out ? Buffer.from(out.subarray(0, Math.min(out.length, edtl))) : null;
          const res = await dev.execute({
            nexus,
            lun,
            taskTag: tag++,
            attribute: 'simple',
            cdb,
            expectedDataLength: edtl,
            read: !dataOut,
            write: !!dataOut,
            dataOut,
          });
          assert.ok(res, 'never aborted without a TMF');
          assert.ok(ALLOWED_STATUS.has(res.status), `status ${res.status} for ${cdb.toString('hex')}`);
          if (res.data) assert.ok(res.data.length <= edtl, 'never more than ExpectedDataTransferLength');
          if (res.status === ScsiStatus.CHECK_CONDITION) {
            assert.equal(res.sense!.length, 18);
            assert.equal(res.sense![0]! & 0x7f, 0x70);
            assert.equal(res.data, null);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('block CDB decoders agree with the field layouts', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.integer({ min: 0, max: 0xffffffff }), (lba, len) => {
        const c16 = Buffer.alloc(16);
        c16[0] = 0x88;
        c16.writeBigUInt64BE(lba, 2);
        c16.writeUInt32BE(len, 10);
        const d = decodeBlock(c16);
        assert.equal(d.blocks, len);
        assert.equal(d.lba, Number(lba));
        const c10 = Buffer.alloc(10);
        c10[0] = 0x28;
        c10.writeUInt32BE(Number(lba & 0xffffffffn), 2);
        c10.writeUInt16BE(len & 0xffff, 7);
        const e = decodeBlock(c10);
        assert.equal(e.lba, Number(lba & 0xffffffffn));
        assert.equal(e.blocks, len & 0xffff);
      }),
    );
    const r6 = decodeBlock(Buffer.from([0x08, 0x1f, 0xff, 0xff, 0x00, 0x00]));
    assert.equal(r6.lba, 0x1fffff);
    assert.equal(r6.blocks, 256, 'READ(6) transfer length 0 = 256 blocks');
    const ms = decodeModeSense(Buffer.from([0x5a, 0x18, 0x7f, 0xff, 0, 0, 0, 0x12, 0x34, 0]));
    assert.deepEqual([ms.dbd, ms.llbaa, ms.pc, ms.pageCode, ms.subpageCode, ms.allocationLength], [true, true, 1, 0x3f, 0xff, 0x1234]);
  });

  it('LUN encoding: peripheral below 256, flat space above', () => {
    const b = Buffer.alloc(8);
    encodeLun(5, b, 0);
    assert.deepEqual([...b], [0, 5, 0, 0, 0, 0, 0, 0]);
    encodeLun(300, b, 0);
    assert.deepEqual([...b], [0x41, 0x2c, 0, 0, 0, 0, 0, 0]);
  });

  it('fixed sense data layout (SPC-4 §4.5.3)', () => {
    const s = encodeFixedSense(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY_OPERATION, { information: 1234 });
    assert.equal(s[0], 0xf0);
    assert.equal(s[2], 0x0e);
    assert.equal(s.readUInt32BE(3), 1234);
    assert.equal(s[7], 10);
    assert.deepEqual([s[12], s[13]], [0x1d, 0x00]);
    const f = new ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, { field: { cdb: true, byte: 2, bit: 7 } }).toResponse();
    assert.equal(f.sense![15], 0x80 | 0x40 | 0x08 | 7);
    assert.equal(f.sense!.readUInt16BE(16), 2);
    assert.deepEqual(decodeSense(f.sense!), { key: 5, asc: 0x24, ascq: 0 });
  });

  it('blockStatus: a block is deallocated only when it is entirely a hole; extents cover the range', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 1, max: 5000 }), fc.boolean()), { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 0, max: 20 }),
        (parts, startBlock) => {
          const extents: { offset: number; length: number; mapped: boolean }[] = [];
          let off = startBlock * BS;
          for (const [len, mapped] of parts) {
            extents.push({ offset: off, length: len, mapped });
            off += len;
          }
          const blocks = Math.floor((off - startBlock * BS) / BS);
          if (blocks === 0) return;
          const st = blockStatus(extents, startBlock, blocks, BS);
          assert.equal(st[0]!.lba, startBlock);
          let next = startBlock;
          for (const s of st) {
            assert.equal(s.lba, next);
            assert.ok(s.blocks > 0);
            next += s.blocks;
            if (s.deallocated) {
              for (let b = s.lba; b < s.lba + s.blocks; b++) {
                const from = b * BS;
                const to = from + BS;
                assert.ok(
                  extents.every((e) => !e.mapped || e.offset + e.length <= from || e.offset >= to),
                  `block ${b} touches data`,
                );
              }
            }
          }
          assert.equal(next, startBlock + blocks);
        },
      ),
    );
  });
});
