// Drives createTargetDevice().execute() with real CDBs against a real sparse file.
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { createTargetDevice, type TargetDevice } from '../../src/scsi/device.js';
import { decodeSense } from '../../src/scsi/sense.js';
import { ScsiStatus, type ITNexus, type ScsiResponse } from '../../src/scsi/types.js';
import { openFileStore } from '../../src/storage/file-store.js';
import type { BackingStore } from '../../src/storage/types.js';

const BS = 512;
const BLOCKS = 8192; // 4 MiB
const NAA = '6001405' + 'abcdef0123456789abcdef012'.slice(0, 25);

function nexus(i: number, tpgt = 1): ITNexus {
  const initiatorName = `iqn.2024-01.test:init${i}`;
  const isid = `40000000000${i}`;
  const initiatorPortName = `${initiatorName},i,0x${isid}`;
  const targetPortName = `iqn.2024-01.test:target,t,0x${tpgt.toString(16).padStart(4, '0')}`;
  return {
    initiatorName,
    isid,
    initiatorPortName,
    targetPortName,
    targetPortalGroupTag: tpgt,
    relativeTargetPortId: tpgt,
    key: `${initiatorPortName}|${targetPortName}`,
  };
}

const A = nexus(1);
const B = nexus(2, 2);

function cdb(bytes: number[], len = 16): Buffer {
  const b = Buffer.alloc(Math.max(len, 16));
  Buffer.from(bytes).copy(b);
  return b;
}

function rw10(op: number, lba: number, blocks: number, flags = 0): Buffer {
  const b = cdb([op, flags]);
  b.writeUInt32BE(lba, 2);
  b.writeUInt16BE(blocks, 7);
  return b;
}

function rw16(op: number, lba: number | bigint, blocks: number, flags = 0): Buffer {
  const b = cdb([op, flags]);
  b.writeBigUInt64BE(BigInt(lba), 2);
  b.writeUInt32BE(blocks, 10);
  return b;
}

let tag = 1;
async function exec(
  dev: TargetDevice,
  c: Buffer,
  o: { dataOut?: Buffer; edtl?: number; nexus?: ITNexus; lun?: number } = {},
): Promise<ScsiResponse> {
  const res = await dev.execute({
    nexus: o.nexus ?? A,
    lun: o.lun ?? 0,
    taskTag: tag++,
    attribute: 'simple',
    cdb: c,
    expectedDataLength: o.edtl ?? (o.dataOut ? o.dataOut.length : 65536),
    read: !o.dataOut,
    write: !!o.dataOut,
    dataOut: o.dataOut ?? null,
  });
  assert.ok(res, 'not aborted');
  return res;
}

function assertSense(res: ScsiResponse, key: number, asc: number, ascq: number): void {
  assert.equal(res.status, ScsiStatus.CHECK_CONDITION, `status ${res.status}`);
  const s = decodeSense(res.sense!);
  assert.deepEqual([s.key, s.asc, s.ascq], [key, asc, ascq]);
}

function assertGood(res: ScsiResponse): void {
  if (res.status !== ScsiStatus.GOOD) {
    assert.fail(`expected GOOD, got ${res.status} ${res.sense ? JSON.stringify(decodeSense(res.sense)) : ''}`);
  }
}

describe('SCSI target device on a sparse file', () => {
  let dir: string;
  let store: BackingStore;
  let dev: TargetDevice;
  let n = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lunar-scsi-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function makeDevice(o: { thin?: boolean; readOnly?: boolean; blockSize?: number; naa?: string } = {}): Promise<TargetDevice> {
    const bs = o.blockSize ?? BS;
    store = await openFileStore(join(dir, `lu${n++}.img`), { create: { size: BLOCKS * bs } });
    opened.push(store);
    const d = createTargetDevice({
      luns: new Map([
        [
          0,
          {
            identity: { naa: o.naa ?? NAA, serial: 'lunar-serial-0001', vendor: 'LUNAR', product: 'Lunar Volume', revision: '0001' },
            store,
            blockSize: bs,
            thinProvisioned: o.thin ?? true,
            readOnly: o.readOnly ?? false,
          },
        ],
      ]),
      targetPorts: [1, 2],
    });
    d.nexusAdded(A);
    d.nexusAdded(B);
    // consume the power-on unit attentions
    await clearUa(d, A);
    await clearUa(d, B);
    return d;
  }

  async function clearUa(d: TargetDevice, nx: ITNexus): Promise<void> {
    for (let i = 0; i < 8; i++) {
      const r = await exec(d, cdb([0x00], 6), { nexus: nx });
      if (r.status === ScsiStatus.GOOD) return;
    }
  }

  const opened: BackingStore[] = [];
  beforeEach(async () => {
    dev = await makeDevice();
  });
  afterEach(async () => {
    await dev.close();
    for (const s of opened.splice(0)) await s.close();
  });

  it('reports POWER ON/RESET once per new nexus, not for INQUIRY/REPORT LUNS, and via REQUEST SENSE', async () => {
    const C = nexus(3);
    dev.nexusAdded(C);
    assertGood(await exec(dev, cdb([0x12, 0, 0, 0, 96, 0]), { nexus: C }));
    assertGood(await exec(dev, cdb([0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), { nexus: C }));
    const rs = await exec(dev, cdb([0x03, 0, 0, 0, 18, 0]), { nexus: C });
    assertGood(rs);
    const s = decodeSense(rs.data!);
    assert.deepEqual([s.key, s.asc, s.ascq], [6, 0x29, 0x00]);
    assertGood(await exec(dev, cdb([0x00]), { nexus: C }));
    const D = nexus(4);
    dev.nexusAdded(D);
    assertSense(await exec(dev, cdb([0x00]), { nexus: D }), 6, 0x29, 0x00);
    assertGood(await exec(dev, cdb([0x00]), { nexus: D }));
    const rs2 = await exec(dev, cdb([0x03, 0, 0, 0, 18, 0]), { nexus: D });
    assert.equal(decodeSense(rs2.data!).key, 0);
  });

  it('standard INQUIRY: direct access, TPGS=01b, CMDQUE, identity strings, allocation length and EDTL respected', async () => {
    const r = await exec(dev, cdb([0x12, 0, 0, 0, 255, 0]));
    assertGood(r);
    const d = r.data!;
    assert.equal(d[0], 0x00);
    assert.equal((d[5]! >> 4) & 3, 1);
    assert.equal(d[7]! & 0x02, 0x02);
    assert.equal(d.toString('latin1', 8, 16), 'LUNAR   ');
    assert.equal(d.toString('latin1', 16, 32), 'Lunar Volume    ');
    assert.equal(d[4]! + 5, d.length);
    const short = await exec(dev, cdb([0x12, 0, 0, 0, 36, 0]));
    assert.equal(short.data!.length, 36);
    const edtl = await exec(dev, cdb([0x12, 0, 0, 0, 255, 0]), { edtl: 20 });
    assert.equal(edtl.data!.length, 20);
    assert.equal(edtl.transferLength, d.length);
    assertSense(await exec(dev, cdb([0x12, 0, 0x80, 0, 255, 0])), 5, 0x24, 0); // page code without EVPD
  });

  it('VPD pages 00, 80, 83, B0, B1, B2', async () => {
    const vpd = async (p: number): Promise<Buffer> => {
      const r = await exec(dev, cdb([0x12, 1, p, 0x10, 0, 0]));
      assertGood(r);
      assert.equal(r.data![1], p);
      return r.data!;
    };
    assert.deepEqual([...(await vpd(0x00)).subarray(4)], [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    assert.equal((await vpd(0x80)).toString('latin1', 4), 'lunar-serial-0001');
    const p83 = await vpd(0x83);
    const designators: { assoc: number; type: number; value: Buffer }[] = [];
    for (let off = 4; off < p83.length;) {
      const len = p83[off + 3]!;
      designators.push({ assoc: (p83[off + 1]! >> 4) & 3, type: p83[off + 1]! & 0xf, value: p83.subarray(off + 4, off + 4 + len) });
      off += 4 + len;
    }
    const naa = designators.find((x) => x.type === 3 && x.assoc === 0)!;
    assert.equal(naa.value.toString('hex'), NAA, 'Linux WWID is 3 + this');
    assert.ok(designators.some((x) => x.type === 1 && x.assoc === 0));
    assert.equal(designators.find((x) => x.type === 4)!.value.readUInt16BE(2), 1, 'relative target port of nexus A');
    assert.equal(designators.find((x) => x.type === 5)!.value.readUInt16BE(2), 1, 'target port group');
    assert.match(designators.find((x) => x.type === 8)!.value.toString('utf8'), /,t,0x0001\0/);
    // nexus B arrives through port 2
    const rB = await exec(dev, cdb([0x12, 1, 0x83, 0x10, 0, 0]), { nexus: B });
    assert.ok(rB.data!.includes(Buffer.from([0x51, 0x94, 0x00, 0x04, 0x00, 0x00, 0x00, 0x02])));
    const b0 = await vpd(0xb0);
    assert.equal(b0[4]! & 1, 0, 'WSNZ=0');
    assert.equal(b0[5], 1, 'MAXIMUM COMPARE AND WRITE LENGTH');
    assert.ok(b0.readUInt32BE(8) > 0, 'max transfer');
    assert.ok(b0.readUInt32BE(20) > 0 && b0.readUInt32BE(24) > 0, 'max unmap lba/descriptor count');
    assert.equal(b0.readUInt32BE(28), 8, 'optimal unmap granularity 4 KiB');
    assert.equal(b0.readBigUInt64BE(36), 0n, 'no WRITE SAME limit');
    const b1 = await vpd(0xb1);
    assert.equal(b1.readUInt16BE(4), 1, 'non-rotating');
    const b2 = await vpd(0xb2);
    assert.equal(b2[5]! & 0xe0, 0xe0, 'LBPU LBPWS LBPWS10');
    assert.equal((b2[5]! >> 2) & 7, 1, 'LBPRZ');
    assert.equal(b2[6]! & 7, 2, 'thin');
    assertSense(await exec(dev, cdb([0x12, 1, 0x86, 0, 255, 0])), 5, 0x24, 0);
  });

  it('READ/WRITE 6/10/12/16 round trip, FUA, residuals, range checks', async () => {
    const data = Buffer.alloc(4 * BS);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    assertGood(await exec(dev, rw10(0x2a, 100, 4, 0x08), { dataOut: data }));
    const r10 = await exec(dev, rw10(0x28, 100, 4));
    assertGood(r10);
    assert.deepEqual(r10.data, data);
    assert.equal(r10.transferLength, 4 * BS);
    const r16 = await exec(dev, rw16(0x88, 101, 2));
    assert.deepEqual(r16.data, data.subarray(BS, 3 * BS));
    const r12c = cdb([0xa8]);
    r12c.writeUInt32BE(102, 2);
    r12c.writeUInt32BE(1, 6);
    assert.deepEqual((await exec(dev, r12c)).data, data.subarray(2 * BS, 3 * BS));
    const r6 = await exec(dev, cdb([0x08, 0, 0, 103, 1, 0]));
    assert.deepEqual(r6.data, data.subarray(3 * BS));
    // WRITE(6) with 0 means 256 blocks
    const w6 = await exec(dev, cdb([0x0a, 0, 0, 0, 0, 0]), { dataOut: Buffer.alloc(256 * BS, 0x11) });
    assertGood(w6);
    assert.equal(w6.transferLength, 256 * BS);
    // EDTL smaller than the CDB: only EDTL is read / written
    const partial = await exec(dev, rw10(0x28, 100, 4), { edtl: BS });
    assert.equal(partial.data!.length, BS);
    assert.equal(partial.transferLength, 4 * BS);
    assertGood(await exec(dev, rw10(0x2a, 300, 2), { dataOut: Buffer.alloc(BS, 0x22) }));
    const back = (await exec(dev, rw10(0x28, 300, 2))).data!;
    assert.ok(back.subarray(0, BS).every((b) => b === 0x22) && back.subarray(BS).every((b) => b === 0));
    // zero-length transfers
    const z = await exec(dev, rw10(0x28, 0, 0));
    assertGood(z);
    assert.equal(z.data, null);
    // out of range
    assertSense(await exec(dev, rw10(0x28, BLOCKS - 1, 2)), 5, 0x21, 0);
    assertSense(await exec(dev, rw16(0x88, 0xffffffffffffffffn, 1)), 5, 0x21, 0);
    assertSense(await exec(dev, rw16(0x8a, BLOCKS, 1), { dataOut: Buffer.alloc(BS) }), 5, 0x21, 0);
    assertGood(await exec(dev, rw10(0x28, BLOCKS - 1, 1)));
    // protection information is not supported
    assertSense(await exec(dev, rw10(0x28, 0, 1, 0x20)), 5, 0x24, 0);
  });

  it('READ CAPACITY 10/16 with LBPME/LBPRZ on thin LUs', async () => {
    const r = await exec(dev, cdb([0x25], 10));
    assert.equal(r.data!.readUInt32BE(0), BLOCKS - 1);
    assert.equal(r.data!.readUInt32BE(4), BS);
    const c16 = cdb([0x9e, 0x10]);
    c16.writeUInt32BE(32, 10);
    const r16 = await exec(dev, c16);
    assert.equal(r16.data!.readBigUInt64BE(0), BigInt(BLOCKS - 1));
    assert.equal(r16.data![14]! & 0xc0, 0xc0);
    assert.equal(r16.data![13]! & 0x0f, 3, '8 logical blocks per 4 KiB physical block');

    assertSense(await exec(dev, cdb([0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0])), 5, 0x24, 0); // LBA without PMI
  });

  it('UNMAP punches holes, accepts zero-length descriptors, validates; GET LBA STATUS starts at the LBA asked', async () => {
    assertGood(await exec(dev, rw10(0x2a, 0, 256), { dataOut: Buffer.alloc(256 * BS, 0xee) }));
    const param = (descs: [number, number][]): Buffer => {
      const p = Buffer.alloc(8 + 16 * descs.length);
      p.writeUInt16BE(6 + 16 * descs.length, 0);
      p.writeUInt16BE(16 * descs.length, 2);
      descs.forEach(([lba, n], i) => {
        p.writeBigUInt64BE(BigInt(lba), 8 + 16 * i);
        p.writeUInt32BE(n, 16 + 16 * i);
      });
      return p;
    };
    const unmapCdb = (len: number): Buffer => {
      const c = cdb([0x42], 10);
      c.writeUInt16BE(len, 7);
      return c;
    };
    const p = param([
      [64, 64],
      [200, 0],
    ]);
    assertGood(await exec(dev, unmapCdb(p.length), { dataOut: p }));
    const map = await store.allocationMap(0, 256 * BS);
    assert.deepEqual(
      map.map((e) => [e.offset / BS, e.length / BS, e.mapped]),
      [
        [0, 64, true],
        [64, 64, false],
        [128, 128, true],
      ],
    );
    const rd = (await exec(dev, rw10(0x28, 64, 64))).data!;
    assert.ok(rd.every((b) => b === 0));
    // zero-length parameter list and zero-length descriptor only
    assertGood(await exec(dev, unmapCdb(0)));
    const z = param([[10, 0]]);
    assertGood(await exec(dev, unmapCdb(z.length), { dataOut: z }));
    // beyond the end: nothing deallocated
    const bad = param([
      [0, 8],
      [BLOCKS - 1, 2],
    ]);
    assertSense(await exec(dev, unmapCdb(bad.length), { dataOut: bad }), 5, 0x21, 0);
    assert.ok((await exec(dev, rw10(0x28, 0, 1))).data!.every((b) => b === 0xee));
    assertSense(await exec(dev, unmapCdb(4), { dataOut: Buffer.alloc(4) }), 5, 0x1a, 0);

    const gls = (lba: number, alloc = 1024): Buffer => {
      const c = cdb([0x9e, 0x12]);
      c.writeBigUInt64BE(BigInt(lba), 2);
      c.writeUInt32BE(alloc, 10);
      return c;
    };
    const g = (await exec(dev, gls(80))).data!;
    assert.equal(g.readBigUInt64BE(8), 80n, 'first descriptor at the requested LBA');
    assert.equal(g.readUInt32BE(16), 48);
    assert.equal(g[20]! & 0xf, 1, 'deallocated');
    assert.equal(g.readBigUInt64BE(24), 128n);
    assert.equal(g[36]! & 0xf, 0, 'mapped');
    const g0 = (await exec(dev, gls(3))).data!;
    assert.equal(g0.readBigUInt64BE(8), 3n);
    assert.equal(g0.readUInt32BE(16), 61);
    assert.equal(g0[20]! & 0xf, 0);
    assertSense(await exec(dev, gls(BLOCKS)), 5, 0x21, 0);
    assertGood(await exec(dev, gls(BLOCKS - 1)));
    // one descriptor only when the allocation length says so
    const one = await exec(dev, gls(0, 24));
    assert.equal(one.data!.length, 24);
  });

  it('WRITE SAME 10/16: pattern, UNMAP of zeroes deallocates, NDOB, WSNZ, limits', async () => {
    const ws10 = (lba: number, n: number, flags = 0): Buffer => rw10(0x41, lba, n, flags);
    const block = Buffer.alloc(BS, 0x5a);
    assertGood(await exec(dev, ws10(10, 20), { dataOut: block }));
    const r = (await exec(dev, rw10(0x28, 9, 22))).data!;
    assert.ok(r.subarray(0, BS).every((b) => b === 0));
    assert.ok(r.subarray(BS, 21 * BS).every((b) => b === 0x5a));
    assert.ok(r.subarray(21 * BS).every((b) => b === 0));
    // WRITE SAME(16) UNMAP with a zero block deallocates
    assertGood(await exec(dev, rw16(0x8a, 1024, 512), { dataOut: Buffer.alloc(512 * BS, 1) }));
    const before = (await stat(store.path)).blocks;
    assertGood(await exec(dev, rw16(0x93, 1024, 512, 0x08), { dataOut: Buffer.alloc(BS) }));
    assert.ok((await stat(store.path)).blocks < before, 'blocks freed');
    assert.ok((await exec(dev, rw10(0x28, 1024, 512))).data!.every((b) => b === 0));
    // NDOB + UNMAP: no data-out at all
    assertGood(await exec(dev, rw16(0x8a, 2048, 8), { dataOut: Buffer.alloc(8 * BS, 3) }));
    assertGood(await exec(dev, rw16(0x93, 2048, 8, 0x09)));
    assert.ok((await exec(dev, rw10(0x28, 2048, 8))).data!.every((b) => b === 0));
    // UNMAP on a thin LU deallocates whatever the block holds (LBPRZ: reads back zeroes), like LIO and tgt
    assertGood(await exec(dev, ws10(3000, 2, 0x08), { dataOut: block }));
    assert.ok((await exec(dev, rw10(0x28, 3000, 2))).data!.every((b) => b === 0));
    // the Data-Out buffer must be exactly one block
    assertSense(await exec(dev, ws10(3000, 2), { dataOut: Buffer.alloc(2 * BS) }), 5, 0x24, 0);
    assertSense(await exec(dev, ws10(3000, 2), { dataOut: Buffer.alloc(BS / 2) }), 5, 0x24, 0);
    // NUMBER OF LOGICAL BLOCKS 0: through the last LBA (WSNZ=0); a zero block is fallocate()d, not written
    assertGood(await exec(dev, ws10(BLOCKS - 16, 0), { dataOut: block }));
    assert.ok((await exec(dev, rw10(0x28, BLOCKS - 16, 16))).data!.every((b) => b === 0x5a));
    const zeroAll = await exec(dev, ws10(4096, 0), { dataOut: Buffer.alloc(BS) });
    assertGood(zeroAll);
    assert.ok((await exec(dev, rw10(0x28, 4096, BLOCKS - 4096))).data!.every((b) => b === 0));
    // the blocks are provisioned (ext4 keeps them as unwritten extents, which SEEK_DATA reports as holes)
    assert.ok((await stat(store.path)).blocks * 512 >= (BLOCKS - 4096) * BS, 'WRITE SAME without UNMAP allocates');
    assertSense(await exec(dev, ws10(BLOCKS + 1, 0), { dataOut: block }), 5, 0x21, 0);
    assertSense(await exec(dev, ws10(BLOCKS - 1, 2), { dataOut: block }), 5, 0x21, 0);
    assertSense(await exec(dev, rw16(0x93, 0xffffffffffffffffn, 1), { dataOut: block }), 5, 0x21, 0);
  });

  it('COMPARE AND WRITE: writes on match, MISCOMPARE with offset otherwise, atomic under concurrency', async () => {
    const caw = (lba: number, n: number): Buffer => {
      const c = cdb([0x89]);
      c.writeBigUInt64BE(BigInt(lba), 2);
      c[13] = n;
      return c;
    };
    const oldData = Buffer.alloc(BS, 0);
    const newData = Buffer.alloc(BS, 0x77);
    assertGood(await exec(dev, caw(5, 1), { dataOut: Buffer.concat([oldData, newData]) }));
    assert.deepEqual((await exec(dev, rw10(0x28, 5, 1))).data, newData);
    const wrong = Buffer.alloc(BS, 0x77);
    wrong[100] = 1;
    const res = await exec(dev, caw(5, 1), { dataOut: Buffer.concat([wrong, oldData]) });
    assertSense(res, 0xe, 0x1d, 0x00);
    assert.equal(decodeSense(res.sense!).information, 100);
    assert.deepEqual((await exec(dev, rw10(0x28, 5, 1))).data, newData);
    assertSense(await exec(dev, caw(5, 2), { dataOut: Buffer.alloc(4 * BS) }), 5, 0x24, 0);
    assertSense(await exec(dev, caw(5, 1), { dataOut: Buffer.alloc(4 * BS) }), 5, 0x24, 0);
    assertSense(await exec(dev, caw(5, 0), { dataOut: Buffer.alloc(2 * BS) }), 5, 0x24, 0);
    assertGood(await exec(dev, caw(5, 0), { edtl: 0 }));
    assertSense(await exec(dev, caw(BLOCKS, 1), { dataOut: Buffer.alloc(2 * BS) }), 5, 0x21, 0);
    // 20 concurrent increments through CAW: exactly one succeeds per value
    const counter = (v: number): Buffer => {
      const b = Buffer.alloc(BS);
      b.writeUInt32BE(v, 0);
      return b;
    };
    assertGood(await exec(dev, rw10(0x2a, 7, 1), { dataOut: counter(0) }));
    const results = await Promise.all(
      Array.from({ length: 20 }, () => exec(dev, caw(7, 1), { dataOut: Buffer.concat([counter(0), counter(1)]) })),
    );
    assert.equal(results.filter((x) => x.status === ScsiStatus.GOOD).length, 1);
  });

  it('VERIFY 10/12/16: BYTCHK 0 checks the range only, 1 compares, 3 compares one block to each', async () => {
    assertGood(await exec(dev, rw10(0x2a, 40, 2), { dataOut: Buffer.alloc(2 * BS, 9) }));
    assertGood(await exec(dev, rw10(0x2f, 40, 2), { dataOut: Buffer.alloc(2 * BS, 1) })); // BYTCHK=0: no compare
    assertGood(await exec(dev, rw10(0x2f, 40, 2, 0x02), { dataOut: Buffer.alloc(2 * BS, 9) }));
    const d = Buffer.alloc(2 * BS, 9);
    d[BS + 3] = 0;
    const m = await exec(dev, rw16(0x8f, 40, 2, 0x02), { dataOut: d });
    assertSense(m, 0xe, 0x1d, 0);
    assert.equal(decodeSense(m.sense!).information, BS + 3);
    assertGood(await exec(dev, rw10(0x2f, 40, 2, 0x06), { dataOut: Buffer.alloc(BS, 9) }));
    assertSense(await exec(dev, rw10(0x2f, 40, 2, 0x04), { dataOut: Buffer.alloc(BS, 9) }), 5, 0x24, 0);
    assertSense(await exec(dev, rw10(0x2f, BLOCKS, 1)), 5, 0x21, 0);
    // WRITE AND VERIFY writes
    assertGood(await exec(dev, rw10(0x2e, 50, 1), { dataOut: Buffer.alloc(BS, 4) }));
    assert.ok((await exec(dev, rw10(0x28, 50, 1))).data!.every((b) => b === 4));
  });

  it('SYNCHRONIZE CACHE, PRE-FETCH, ORWRITE, START STOP UNIT, TEST UNIT READY', async () => {
    assertGood(await exec(dev, rw10(0x35, 0, 0)));
    assertGood(await exec(dev, rw16(0x91, 0, BLOCKS)));
    assertSense(await exec(dev, rw10(0x35, BLOCKS, 1)), 5, 0x21, 0);
    assertGood(await exec(dev, rw10(0x34, 0, 10)));
    assertSense(await exec(dev, rw16(0x90, BLOCKS + 1, 0)), 5, 0x21, 0);
    assertGood(await exec(dev, rw10(0x2a, 60, 1), { dataOut: Buffer.alloc(BS, 0x0f) }));
    assertGood(await exec(dev, rw16(0x8b, 60, 1), { dataOut: Buffer.alloc(BS, 0xf0) }));
    assert.ok((await exec(dev, rw10(0x28, 60, 1))).data!.every((b) => b === 0xff));
    assertGood(await exec(dev, cdb([0x1b, 0, 0, 0, 1, 0])));
    assertGood(await exec(dev, cdb([0x00])));
  });

  it('MODE SENSE 6/10 pages, DPOFUA, block descriptors; MODE SELECT WCE and SWP raise MODE PARAMETERS CHANGED', async () => {
    const all = await exec(dev, cdb([0x1a, 0, 0x3f, 0, 255, 0]));
    assertGood(all);
    const d = all.data!;
    assert.equal(d[0]! + 1, d.length);
    assert.equal(d[2]! & 0x10, 0x10, 'DPOFUA');
    assert.equal(d[2]! & 0x80, 0, 'not WP');
    assert.equal(d[3], 8);
    assert.equal(d.readUInt32BE(4), BLOCKS);
    const pages: number[] = [];
    for (let off = 12; off < d.length;) {
      pages.push(d[off]! & 0x3f);
      off += 2 + d[off + 1]!;
    }
    assert.deepEqual(pages, [0x08, 0x0a, 0x1c]);
    const sub = await exec(dev, cdb([0x5a, 0x08, 0x3f, 0xff, 0, 0, 0, 1, 0, 0]));
    assertGood(sub);
    assert.ok(sub.data!.includes(Buffer.from([0x4a, 0x01, 0x00, 0x1c])), 'control extension subpage');
    const ten = await exec(dev, cdb([0x5a, 0x10, 0x08, 0, 0, 0, 0, 1, 0, 0]));
    assert.equal(ten.data!.readUInt16BE(6), 16, 'long LBA descriptor');
    assert.equal(ten.data![8 + 16 + 2]! & 0x04, 0x04, 'WCE');
    assertSense(await exec(dev, cdb([0x1a, 0, 0xc8, 0, 255, 0])), 5, 0x39, 0);
    assertSense(await exec(dev, cdb([0x1a, 0, 0x02, 0, 255, 0])), 5, 0x24, 0);
    const changeable = await exec(dev, cdb([0x1a, 0x08, 0x48, 0, 255, 0]));
    assert.equal(changeable.data![4 + 2], 0x04);

    // MODE SELECT(6): WCE off
    const cur = (await exec(dev, cdb([0x1a, 0x08, 0x08, 0, 255, 0]))).data!;
    const sel = Buffer.from(cur);
    sel[0] = 0;
    sel[2] = 0;
    sel[4] = 0x08; // PS bit cleared
    sel[6] = 0;
    assertGood(await exec(dev, cdb([0x15, 0x10, 0, 0, sel.length, 0]), { dataOut: sel }));
    assert.equal(dev.logicalUnit(0)!.mode.wce, false);
    assertSense(await exec(dev, cdb([0x00]), { nexus: B }), 6, 0x2a, 0x01);
    assertGood(await exec(dev, cdb([0x00]), { nexus: A }));
    assertGood(await exec(dev, rw10(0x2a, 1, 1), { dataOut: Buffer.alloc(BS) })); // write-through path
    // a non-changeable bit is refused
    const bad = Buffer.from(sel);
    bad[4 + 2] = bad[4 + 2]! | 0x01; // RCD
    assertSense(await exec(dev, cdb([0x15, 0x10, 0, 0, bad.length, 0]), { dataOut: bad }), 5, 0x26, 0);
    assertSense(await exec(dev, cdb([0x15, 0x11, 0, 0, sel.length, 0]), { dataOut: sel }), 5, 0x24, 0); // SP=1

    // SWP through the control page
    const ctl = (await exec(dev, cdb([0x1a, 0x08, 0x0a, 0, 255, 0]))).data!;
    const ctlSel = Buffer.from(ctl);
    ctlSel[0] = 0;
    ctlSel[2] = 0;
    ctlSel[4 + 4] = ctlSel[4 + 4]! | 0x08;
    assertGood(await exec(dev, cdb([0x15, 0x10, 0, 0, ctlSel.length, 0]), { dataOut: ctlSel }));
    assertSense(await exec(dev, rw10(0x2a, 1, 1), { dataOut: Buffer.alloc(BS) }), 7, 0x27, 0);
    assert.equal((await exec(dev, cdb([0x1a, 0, 0x3f, 0, 255, 0]))).data![2]! & 0x80, 0x80, 'WP');
    assertGood(await exec(dev, rw10(0x28, 1, 1)));
  });

  it('REPORT SUPPORTED OPERATION CODES comes from the dispatch table', async () => {
    const rsoc = (opts: number, op = 0, sa = 0, alloc = 8192): Buffer => {
      const c = cdb([0xa3, 0x0c, opts, op]);
      c.writeUInt16BE(sa, 4);
      c.writeUInt32BE(alloc, 6);
      return c;
    };
    const all = (await exec(dev, rsoc(0))).data!;
    const len = all.readUInt32BE(0);
    assert.equal(len % 8, 0);
    const listed: [number, number, boolean][] = [];
    for (let off = 4; off < 4 + len; off += 8) listed.push([all[off]!, all.readUInt16BE(off + 2), (all[off + 5]! & 1) === 1]);
    for (const op of [0x28, 0x2a, 0x41, 0x93, 0x42, 0x89, 0x35, 0x12, 0xa0])
      assert.ok(
        listed.some(([o]) => o === op),
        `opcode ${op}`,
      );
    assert.ok(listed.some(([o, s, sv]) => o === 0x9e && s === 0x12 && sv));
    // Every listed command dispatches (never INVALID COMMAND OPERATION CODE)
    for (const [op, sa, sv] of listed) {
      const c = cdb([op, sv ? sa : 0]);
      const r = await exec(dev, c, { edtl: 0 });
      if (r.status === ScsiStatus.CHECK_CONDITION) {
        const s = decodeSense(r.sense!);
        assert.ok(!(s.key === 5 && s.asc === 0x20), `opcode ${op.toString(16)} listed but not dispatched`);
      }
    }
    const timeouts = (await exec(dev, rsoc(0x80))).data!;
    assert.equal(timeouts.readUInt32BE(0), (len / 8) * 20);
    const one = (await exec(dev, rsoc(1, 0x28))).data!;
    assert.equal(one[1]! & 7, 3);
    assert.equal(one.readUInt16BE(2), 10);
    assert.equal(one[4], 0x28);
    const oneSa = (await exec(dev, rsoc(2, 0x9e, 0x10))).data!;
    assert.equal(oneSa[1]! & 7, 3);
    assert.equal(oneSa.readUInt16BE(2), 16);
    const unsupported = (await exec(dev, rsoc(1, 0xe5))).data!;
    assert.equal(unsupported[1]! & 7, 1);
    assertSense(await exec(dev, rsoc(1, 0x9e)), 5, 0x24, 0);
    assertSense(await exec(dev, rsoc(2, 0x28)), 5, 0x24, 0);
    const withTimeouts = (await exec(dev, rsoc(0x81, 0x2a))).data!;
    assert.equal(withTimeouts[1]! & 0x80, 0x80);
    assert.equal(withTimeouts.length, 4 + 10 + 12);
    assertSense(await exec(dev, cdb([0xe5])), 5, 0x20, 0);
    assertSense(await exec(dev, cdb([0x9e, 0x1f])), 5, 0x24, 0);
  });

  it('thick LUs offer neither UNMAP nor GET LBA STATUS, and no VPD B2', async () => {
    const thick = await makeDevice({ thin: false });
    const c = cdb([0x42], 10);
    assertSense(await exec(thick, c), 5, 0x20, 0);
    const r = await exec(thick, cdb([0x12, 1, 0, 0, 255, 0]));
    assert.ok(!r.data!.subarray(4).includes(0xb2));
    const c16 = cdb([0x9e, 0x10]);
    c16.writeUInt32BE(32, 10);
    assert.equal((await exec(thick, c16)).data![14]! & 0xc0, 0);
    assertSense(await exec(thick, rw10(0x41, 0, 1, 0x08), { dataOut: Buffer.alloc(BS) }), 5, 0x24, 0);
    assertGood(await exec(thick, rw10(0x41, 0, 1), { dataOut: Buffer.alloc(BS) }));
  });

  it('REPORT LUNS and absent LUNs', async () => {
    const rl = await exec(dev, cdb([0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0]));
    assert.equal(rl.data!.readUInt32BE(0), 8);
    assert.deepEqual([...rl.data!.subarray(8, 16)], [0, 0, 0, 0, 0, 0, 0, 0]);
    const rl5 = await exec(dev, cdb([0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), { lun: 5 });
    assertGood(rl5);
    assert.equal(rl5.data!.readUInt32BE(0), 8);
    const wk = await exec(dev, cdb([0xa0, 0, 1, 0, 0, 0, 0, 0, 1, 0]));
    assert.equal(wk.data!.readUInt32BE(0), 0);
    assertSense(await exec(dev, cdb([0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 8])), 5, 0x24, 0);
    const inq = await exec(dev, cdb([0x12, 0, 0, 0, 96, 0]), { lun: 5 });
    assert.equal(inq.data![0], 0x7f);
    assertSense(await exec(dev, cdb([0x00]), { lun: 5 }), 5, 0x25, 0);
    const rs = await exec(dev, cdb([0x03, 0, 0, 0, 18, 0]), { lun: 5 });
    assertGood(rs);
    assert.equal(decodeSense(rs.data!).asc, 0x25);
  });

  it('capacity change raises CAPACITY DATA HAS CHANGED to every nexus', async () => {
    await store.resize(BLOCKS * 2 * BS);
    dev.logicalUnit(0)!.capacityChanged();
    assertSense(await exec(dev, cdb([0x00]), { nexus: A }), 6, 0x2a, 0x09);
    assertSense(await exec(dev, cdb([0x25], 10), { nexus: B }), 6, 0x2a, 0x09);
    const r = await exec(dev, cdb([0x25], 10), { nexus: B });
    assert.equal(r.data!.readUInt32BE(0), BLOCKS * 2 - 1);
  });

  it('ABORT TASK finds a task by nexus and tag: the same tag on another nexus is another task', async () => {
    const lu = dev.logicalUnit(0)!;
    const resume = await lu.quiesce();
    const t = 777;
    const write = (nx: ITNexus, fill: number): Promise<ScsiResponse | null> | ScsiResponse | null =>
      dev.execute({
        nexus: nx,
        lun: 0,
        taskTag: t,
        attribute: 'simple',
        cdb: rw10(0x2a, 8, 1),
        expectedDataLength: BS,
        read: false,
        write: true,
        dataOut: Buffer.alloc(BS, fill),
      });
    const fromA = write(A, 0xaa);
    const fromB = write(B, 0xbb);
    await new Promise((r) => setImmediate(r));
    assert.equal(lu.taskCount(), 2);
    assert.equal(await dev.taskManagement('abort-task', B, 0, t), 'function-complete');
    assert.equal(await fromB, null);
    assert.equal(lu.taskCount(), 1, "A's task with the same tag is still there");
    assert.equal(await dev.taskManagement('abort-task', B, 0, t), 'task-does-not-exist');
    resume();
    assertGood((await fromA)!);
    assert.ok(
      (await exec(dev, rw10(0x28, 8, 1))).data!.every((b) => b === 0xaa),
      "A's write landed, B's did not",
    );
  });

  it('ABORT TASK stops a write held behind quiesce; LU RESET tells the other nexuses', async () => {
    const lu = dev.logicalUnit(0)!;
    const resume = await lu.quiesce();
    const t = 424242;
    const pending = dev.execute({
      nexus: A,
      lun: 0,
      taskTag: t,
      attribute: 'simple',
      cdb: rw10(0x2a, 0, 1),
      expectedDataLength: BS,
      read: false,
      write: true,
      dataOut: Buffer.alloc(BS, 0x99),
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(lu.taskCount(), 1);
    assert.equal(await dev.taskManagement('abort-task', A, 0, t), 'function-complete');
    assert.equal(await pending, null);
    resume();
    assert.ok(
      (await exec(dev, rw10(0x28, 0, 1))).data!.every((b) => b === 0),
      'aborted write never landed',
    );
    assert.equal(await dev.taskManagement('abort-task', A, 0, 1), 'task-does-not-exist');
    assert.equal(await dev.taskManagement('abort-task', A, 9, 1), 'lun-does-not-exist');
    // quiesce blocks writes but not reads
    const resume2 = await lu.quiesce();
    let wrote = false;
    const w = exec(dev, rw10(0x2a, 0, 1), { dataOut: Buffer.alloc(BS, 1) }).then((r) => {
      wrote = true;
      return r;
    });
    assertGood(await exec(dev, rw10(0x28, 0, 1)));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(wrote, false);
    resume2();
    assertGood(await w);
    assert.equal(await dev.taskManagement('logical-unit-reset', A, 0), 'function-complete');
    assertSense(await exec(dev, cdb([0x00]), { nexus: B }), 6, 0x29, 0x03);
    assertSense(await exec(dev, cdb([0x00]), { nexus: A }), 6, 0x29, 0x03);
    assertGood(await exec(dev, cdb([0x00]), { nexus: A }));
    assert.equal(await dev.taskManagement('clear-aca', A, 0), 'function-not-supported');
  });

  it('READ DEFECT DATA reports an empty list', async () => {
    const r = await exec(dev, cdb([0x37, 0, 0x18 | 0x05, 0, 0, 0, 0, 0, 32, 0]));
    assertGood(r);
    assert.deepEqual([...r.data!], [0, 0x1d, 0, 0]);
    const r12 = await exec(dev, cdb([0xb7, 0x1d, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]));
    assert.equal(r12.data!.length, 8);
    assert.equal(r12.data!.readUInt32BE(4), 0);
  });

  it('ORDERED waits for older tasks and holds younger SIMPLE ones; HEAD OF QUEUE does not wait', async () => {
    const lu = dev.logicalUnit(0)!;
    const resume = await lu.quiesce();
    const order: string[] = [];
    const run = (name: string, attribute: 'simple' | 'ordered' | 'head-of-queue', c: Buffer, dataOut?: Buffer): Promise<unknown> =>
      Promise.resolve(
        dev.execute({
          nexus: A,
          lun: 0,
          taskTag: tag++,
          attribute,
          cdb: c,
          expectedDataLength: dataOut ? dataOut.length : BS,
          read: !dataOut,
          write: !!dataOut,
          dataOut: dataOut ?? null,
        }),
      ).then((r) => {
        order.push(name);
        return r;
      });
    const w = run('write', 'simple', rw10(0x2a, 0, 1), Buffer.alloc(BS, 1)); // blocked by quiesce
    const o = run('ordered', 'ordered', rw10(0x28, 0, 1));
    const s = run('simple-after', 'simple', rw10(0x28, 0, 1));
    const h = run('head', 'head-of-queue', rw10(0x28, 0, 1));
    const abortedTag = tag;
    const victim = run('aborted', 'simple', rw10(0x28, 0, 1));
    await h;
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(order, ['head']);
    // a task waiting behind the ORDERED one can be aborted without waiting for its turn
    assert.equal(await dev.taskManagement('abort-task', A, 0, abortedTag), 'function-complete');
    assert.equal(await victim, null);
    resume();
    await Promise.all([w, o, s]);
    assert.deepEqual(order, ['head', 'aborted', 'write', 'ordered', 'simple-after']);
  });

  it('EXTENDED COPY within the device (sparse-aware), limits, and never into another device', async () => {
    const xcopyList = (naa: string, segs: [number, number, number, number, number][], listId = 1): Buffer => {
      const p = Buffer.alloc(16 + 32 + 28 * segs.length);
      p[0] = listId;
      p.writeUInt16BE(32, 2);
      p.writeUInt32BE(28 * segs.length, 8);
      p[16] = 0xe4;
      p[20] = 0x01; // code set binary
      p[21] = 0x03; // LU association, NAA
      p[23] = 16;
      Buffer.from(naa, 'hex').copy(p, 24);
      p.writeUIntBE(BS, 16 + 29, 3);
      segs.forEach(([src, dst, n, sl, dl], i) => {
        const o = 48 + 28 * i;
        p[o] = 0x02;
        p.writeUInt16BE(0x18, o + 2);
        p.writeUInt16BE(src, o + 4);
        p.writeUInt16BE(dst, o + 6);
        p.writeUInt16BE(n, o + 10);
        p.writeBigUInt64BE(BigInt(sl), o + 12);
        p.writeBigUInt64BE(BigInt(dl), o + 20);
      });
      return p;
    };
    const xcopy = (p: Buffer, d = dev): Promise<ScsiResponse> => {
      const c = cdb([0x83]);
      c.writeUInt32BE(p.length, 10);
      return exec(d, c, { dataOut: p });
    };
    // source: 8 blocks of data, 8 blocks hole, 8 blocks data; destination was all 0xdd
    assertGood(await exec(dev, rw10(0x2a, 0, 8), { dataOut: Buffer.alloc(8 * BS, 0x61) }));
    assertGood(await exec(dev, rw10(0x2a, 16, 8), { dataOut: Buffer.alloc(8 * BS, 0x62) }));
    assertGood(await exec(dev, rw10(0x2a, 1000, 24), { dataOut: Buffer.alloc(24 * BS, 0xdd) }));
    assertGood(await xcopy(xcopyList(NAA, [[0, 0, 24, 0, 1000]])));
    const got = (await exec(dev, rw10(0x28, 1000, 24))).data!;
    assert.ok(got.subarray(0, 8 * BS).every((b) => b === 0x61));
    assert.ok(got.subarray(8 * BS, 16 * BS).every((b) => b === 0));
    assert.ok(got.subarray(16 * BS).every((b) => b === 0x62));
    // overlapping copy inside the LU (forward overlap handled backwards)
    assertGood(await xcopy(xcopyList(NAA, [[0, 0, 16, 1000, 1004]])));
    const ov = (await exec(dev, rw10(0x28, 1004, 16))).data!;
    assert.ok(ov.subarray(0, 8 * BS).every((b) => b === 0x61) && ov.subarray(8 * BS).every((b) => b === 0));
    // RECEIVE COPY RESULTS
    const rcr = (sa: number, listId = 1): Buffer => {
      const c = cdb([0x84, sa, listId]);
      c.writeUInt32BE(1024, 10);
      return c;
    };
    const op = (await exec(dev, rcr(3))).data!;
    assert.equal(op.readUInt16BE(8), 4);
    assert.equal(op.readUInt16BE(10), 16);
    assert.deepEqual([...op.subarray(44)], [0x02, 0xe4]);
    const st = (await exec(dev, rcr(0, 1))).data!;
    assert.equal(st[4]! & 0x7f, 1);
    assertSense(await exec(dev, rcr(0, 7)), 5, 0x24, 0);
    // errors
    assertSense(await xcopy(xcopyList(NAA, [[0, 1, 8, 0, 100]])), 0x0a, 0x0d, 0x02);
    assertSense(await xcopy(xcopyList(NAA, [[0, 0, 8, 0, BLOCKS - 4]])), 0x0a, 0, 0);
    const unsupported = xcopyList(NAA, [[0, 0, 8, 0, 100]]);
    unsupported[16] = 0xe0;
    assertSense(await xcopy(unsupported), 5, 0x26, 0x07);
    const tooMany = xcopyList(
      NAA,
      Array.from({ length: 17 }, () => [0, 0, 1, 0, 100] as [number, number, number, number, number]),
    );
    assertSense(await xcopy(tooMany), 5, 0x26, 0x08);
    assertSense(await xcopy(xcopyList(NAA, [[0, 0, 8, 0, 100]]).subarray(0, 40)), 5, 0x1a, 0);
    assertGood(await exec(dev, cdb([0x83]), { edtl: 0 }));
    // another device's LU is unreachable even with its NAA
    const otherNaa = '600140500000000000000000000000ff';
    const other = await makeDevice({ naa: otherNaa });
    assertGood(await exec(other, rw10(0x2a, 0, 8), { dataOut: Buffer.alloc(8 * BS, 0x77) }));
    const before = (await exec(dev, rw10(0x28, 500, 8))).data!;
    assertSense(await xcopy(xcopyList(otherNaa, [[0, 0, 8, 0, 500]])), 0x0a, 0x0d, 0x02);
    assert.deepEqual((await exec(dev, rw10(0x28, 500, 8))).data, before);
    assertGood(await xcopy(xcopyList(otherNaa, [[0, 0, 8, 0, 100]]), other));
    await other.close();
  });

  it('SPC-2 RESERVE from one nexus gives the other RESERVATION CONFLICT', async () => {
    assertGood(await exec(dev, cdb([0x16], 6), { nexus: A }));
    const r = await exec(dev, rw10(0x2a, 0, 1), { nexus: B, dataOut: Buffer.alloc(BS) });
    assert.equal(r.status, ScsiStatus.RESERVATION_CONFLICT);
    assertGood(await exec(dev, rw10(0x2a, 0, 1), { nexus: A, dataOut: Buffer.alloc(BS) }));
    assertGood(await exec(dev, cdb([0x17], 6), { nexus: A }));
    assertGood(await exec(dev, rw10(0x2a, 0, 1), { nexus: B, dataOut: Buffer.alloc(BS) }));
  });

  it('read-only LUs refuse writes with WRITE PROTECTED and report WP', async () => {
    const ro = await makeDevice({ readOnly: true });
    assertSense(await exec(ro, rw10(0x2a, 0, 1), { dataOut: Buffer.alloc(BS) }), 7, 0x27, 0);
    assertSense(await exec(ro, rw10(0x41, 0, 1), { dataOut: Buffer.alloc(BS) }), 7, 0x27, 0);
    assert.equal((await exec(ro, cdb([0x1a, 0, 0x3f, 0, 255, 0]))).data![2]! & 0x80, 0x80);
    assertGood(await exec(ro, rw10(0x28, 0, 1)));
  });

  it('4096-byte blocks', async () => {
    const d4 = await makeDevice({ blockSize: 4096 });
    assertGood(await exec(d4, rw10(0x2a, 3, 1), { dataOut: Buffer.alloc(4096, 8) }));
    assert.equal((await exec(d4, cdb([0x25], 10))).data!.readUInt32BE(4), 4096);
    assert.equal((await stat(store.path)).size, BLOCKS * 4096);
    assert.ok((await exec(d4, rw10(0x28, 3, 1))).data!.every((b) => b === 8));
  });
});
