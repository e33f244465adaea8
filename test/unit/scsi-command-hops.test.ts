// How many microtask turns a READ takes through the target device and the LU when the store answers at
// once (a page-cache hit served inline): each turn is a promise job on the event loop's thread, paid by
// every command (docs/benchmarks.md, "async functions that only forward a promise"). The bound is the
// count measured after that lever; the two forwarding async functions removed by it (device execute, LU #run) made it 6,
// and a READ the store serves at once (BackingStore.readNow) now takes none: it is answered synchronously.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createTargetDevice } from '../../src/scsi/device.js';
import { ScsiStatus, type ITNexus, type ScsiCommand, type ScsiResponse } from '../../src/scsi/types.js';
import type { AllocationExtent, BackingStore } from '../../src/storage/types.js';

const SIZE = 1 << 20;

/** A store whose read and write complete without any I/O (the data is not the point here). */
function instantStore(): BackingStore {
  const bytes = Buffer.alloc(SIZE);
  return {
    path: '/instant',
    size: () => SIZE,
    read: (buf, offset) => {
      bytes.copy(buf, 0, offset, offset + buf.length);
      return Promise.resolve();
    },
    write: (buf, offset) => {
      buf.copy(bytes, offset);
      return Promise.resolve();
    },
    flush: () => Promise.resolve(),
    deallocate: () => Promise.resolve(),
    allocationMap: (offset, length): Promise<AllocationExtent[]> => Promise.resolve([{ offset, length, mapped: true }]),
    resize: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
}

const NEXUS: ITNexus = {
  initiatorName: 'iqn.2024-01.test:init',
  isid: '400000000001',
  initiatorPortName: 'iqn.2024-01.test:init,i,0x400000000001',
  targetPortName: 'iqn.2024-01.test:target,t,0x0001',
  targetPortalGroupTag: 1,
  relativeTargetPortId: 1,
  key: 'iqn.2024-01.test:init,i,0x400000000001|iqn.2024-01.test:target,t,0x0001',
};

/** Microtask turns until p settles (a counter re-queued one turn at a time). */
async function turnsUntil(p: ScsiResponse | null | Promise<ScsiResponse | null>): Promise<{ turns: number; res: ScsiResponse | null }> {
  let turns = 0;
  let settled = false;
  const tick = (): void => {
    if (settled) return;
    turns++;
    queueMicrotask(tick);
  };
  queueMicrotask(tick);
  const res = await p;
  settled = true;
  return { turns, res };
}

function read16(lba: number, blocks: number): Buffer {
  const b = Buffer.alloc(16);
  b[0] = 0x88;
  b.writeBigUInt64BE(BigInt(lba), 2);
  b.writeUInt32BE(blocks, 10);
  return b;
}

/** The instant store with readNow (what a file store does on a page-cache hit), counting its calls. */
function instantStoreWithReadNow(): BackingStore & {
  readNowCalls: number;
  readCalls: number;
  writeCalls: number;
  writeNowCalls: number;
  fuaWrites: number;
} {
  const base = instantStore();
  const s = {
    ...base,
    readNowCalls: 0,
    readCalls: 0,
    read(buf: Buffer, offset: number): Promise<void> {
      s.readCalls++;
      return base.read(buf, offset);
    },
    readNow(buf: Buffer, offset: number): boolean {
      s.readNowCalls++;
      buf.fill(0x5a);
      return offset < SIZE / 2; // the first half "cached", the second not
    },
    writeCalls: 0,
    writeNowCalls: 0,
    fuaWrites: 0,
    write(buf: Buffer, offset: number, fua: boolean): Promise<void> {
      s.writeCalls++;
      if (fua) s.fuaWrites++;
      return base.write(buf, offset, fua);
    },
    writeNow(buf: Buffer, offset: number): boolean {
      s.writeNowCalls++;
      if (offset >= SIZE / 2) return false; // the second half "cannot be written now"
      void base.write(buf, offset, false);
      return true;
    },
  };
  return s;
}

function deviceOver(store: BackingStore): ReturnType<typeof createTargetDevice> {
  return createTargetDevice({
    luns: new Map([
      [
        0,
        {
          identity: { naa: '6001405abcdef0123456789abcdef012', serial: 's1', vendor: 'LUNAR', product: 'P', revision: '0001' },
          store,
          blockSize: 512,
          thinProvisioned: true,
          readOnly: false,
        },
      ],
    ]),
    targetPorts: [1],
  });
}

const cmd = (taskTag: number, cdb: Buffer): ScsiCommand => ({
  nexus: NEXUS,
  lun: 0,
  taskTag,
  attribute: 'simple',
  cdb,
  expectedDataLength: 4096,
  read: true,
  write: false,
  dataOut: null,
});

describe('command path: microtask turns per command', () => {
  it('a READ(16) from a store without readNow settles within 4 microtask turns (no forwarding async wrappers)', async () => {
    const dev = deviceOver(instantStore());
    // The first commands report the power-on unit attention; take them out of the way.
    for (let t = 1; t <= 3; t++) await dev.execute(cmd(t, read16(0, 8)));
    const pending = dev.execute(cmd(10, read16(8, 8)));
    assert.ok(pending instanceof Promise, "a read that needs the store's read() answers with a promise");
    const { turns, res } = await turnsUntil(pending);
    assert.equal(res?.status, ScsiStatus.GOOD);
    assert.ok(turns <= 4, `READ settled after ${turns} microtask turns`);
  });

  it('a READ(16) the store serves at once (readNow) is answered synchronously; a miss falls back to read()', async () => {
    const store = instantStoreWithReadNow();
    const dev = deviceOver(store);
    for (let t = 1; t <= 3; t++) await dev.execute(cmd(t, read16(0, 8)));
    const lu = dev.logicalUnit(0)!;
    const hit = dev.execute(cmd(20, read16(8, 8)));
    assert.ok(!(hit instanceof Promise), 'a page-cache hit is no promise');
    assert.equal(hit?.status, ScsiStatus.GOOD);
    assert.deepEqual(hit?.data, Buffer.alloc(4096, 0x5a), 'the bytes readNow put in the buffer');
    assert.equal(lu.taskCount(), 0, 'the task is out of the task table already');
    const readsBefore = store.readCalls;
    const miss = dev.execute(cmd(21, read16(SIZE / 512 - 8, 8)));
    assert.ok(miss instanceof Promise, 'not cached: read() and a promise');
    assert.equal((await miss)?.status, ScsiStatus.GOOD);
    assert.equal(store.readCalls, readsBefore + 1);
    assert.equal(lu.taskCount(), 0);
    // A command that must not run at once (a unit attention pending, an ORDERED task) is answered as before.
    const ordered = dev.execute({ ...cmd(22, read16(8, 8)), attribute: 'ordered' });
    assert.ok(ordered instanceof Promise, 'ORDERED waits for the task set: a promise');
    assert.equal((await ordered)?.status, ScsiStatus.GOOD);
  });

  it('a WRITE without FUA, write cache on, that the store does at once (writeNow) is answered synchronously; FUA, WCE=0, a held gate and a miss are not', async () => {
    const store = instantStoreWithReadNow();
    const dev = deviceOver(store);
    for (let t = 1; t <= 3; t++) await dev.execute(cmd(t, read16(0, 8)));
    const lu = dev.logicalUnit(0)!;
    const write16 = (lba: number, fua: boolean): Buffer => {
      const b = read16(lba, 8);
      b[0] = 0x8a;
      if (fua) b[1] = 0x08;
      return b;
    };
    const w = (tag: number, lba: number, fua = false): ReturnType<typeof dev.execute> =>
      dev.execute({ ...cmd(tag, write16(lba, fua)), read: false, write: true, dataOut: Buffer.alloc(4096, tag) });
    const now = w(30, 8);
    assert.ok(!(now instanceof Promise), 'written at once: no promise');
    assert.equal(now?.status, ScsiStatus.GOOD);
    assert.equal(store.writeNowCalls, 1);
    assert.equal(lu.taskCount(), 0);
    const fua = w(31, 8, true);
    assert.ok(fua instanceof Promise, 'FUA: write() with fua, a promise');
    assert.equal((await fua)?.status, ScsiStatus.GOOD);
    assert.equal(store.fuaWrites, 1);
    assert.equal(store.writeNowCalls, 1, 'FUA never tries writeNow');
    const miss = w(32, SIZE / 512 - 8);
    assert.ok(miss instanceof Promise, 'writeNow declined: write() and a promise');
    assert.equal((await miss)?.status, ScsiStatus.GOOD);
    // A held exclusive gate (a snapshot's quiesce, COMPARE AND WRITE) keeps the write waiting.
    const resume = await lu.quiesce();
    const held = w(33, 8);
    assert.ok(held instanceof Promise, 'gate held: the write waits');
    let done = false;
    void held.then(() => (done = true));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(done, false, 'not before the gate is released');
    resume();
    assert.equal((await held)?.status, ScsiStatus.GOOD);
    // WCE=0: every write is durable before completion, so none is written now.
    lu.mode = { ...lu.mode, wce: false };
    const before = store.fuaWrites;
    const noCache = w(34, 8);
    assert.ok(noCache instanceof Promise);
    assert.equal((await noCache)?.status, ScsiStatus.GOOD);
    assert.equal(store.fuaWrites, before + 1, 'WCE=0: written with fua');
  });
});
