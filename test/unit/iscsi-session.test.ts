// Session-level tests over loopback with the real IscsiServer, the project's TestInitiator and a small
// in-memory SCSI device defined here (transport tests only; the e2e tests use the real device).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type {
  ITNexus,
  ScsiCommand,
  ScsiResponse,
  ScsiTargetDevice,
  TaskManagementFunction,
  TaskManagementResult,
} from '../../src/scsi/types.js';
import type { Portal, TargetEntry, TargetRegistry } from '../../src/target/types.js';
import { TestInitiator } from '../support/iscsi-initiator.js';
import { IscsiServer } from '../../src/iscsi/server.js';
import { CmdWindow, serialLe, serialLt } from '../../src/iscsi/cmdsn.js';
import { Opcode, RESERVED_TAG, type R2T, type ScsiCommandPdu } from '../../src/iscsi/pdu.js';

const PORT = 13260;
const BLOCK = 512;

class MemDevice implements ScsiTargetDevice {
  readonly data = Buffer.alloc(4 * 1024 * 1024);
  readonly events: string[] = [];
  readonly hanging = new Map<number, (r: ScsiResponse | null) => void>();
  luns(): number[] {
    return [0];
  }
  execute(cmd: ScsiCommand): Promise<ScsiResponse | null> {
    const c = cmd.cdb;
    switch (c[0]) {
      case 0x00:
        return Promise.resolve({ status: 0, data: null, sense: null });
      case 0x28: {
        const lba = c.readUInt32BE(2);
        const n = c.readUInt16BE(7) * BLOCK;
        const out = Buffer.from(this.data.subarray(lba * BLOCK, lba * BLOCK + Math.min(n, cmd.expectedDataLength)));
        return Promise.resolve({ status: 0, data: out, sense: null, transferLength: n });
      }
      case 0x2a: {
        const lba = c.readUInt32BE(2);
        const n = c.readUInt16BE(7) * BLOCK;
        cmd.dataOut?.copy(this.data, lba * BLOCK, 0, Math.min(n, cmd.dataOut.length));
        return Promise.resolve({ status: 0, data: null, sense: null, transferLength: n });
      }
      case 0xc3: // completes after 300 ms
        return new Promise((resolve) => setTimeout(() => resolve({ status: 0, data: null, sense: null }), 300));
      case 0xc4: // a device bug: rejected promise
        return Promise.reject(new Error('device bug'));
      case 0xc5: // a device bug: synchronous throw
        throw new Error('device bug (sync)');
      case 0xc1: // hangs until aborted
        return new Promise((resolve) => this.hanging.set(cmd.taskTag, resolve));
      default: {
        const sense = Buffer.alloc(18);
        sense[0] = 0x70;
        sense[2] = 0x05;
        sense[7] = 10;
        sense[12] = 0x20;
        return Promise.resolve({ status: 0x02, data: null, sense });
      }
    }
  }
  taskManagement(fn: TaskManagementFunction, _nexus: ITNexus, lun: number, ref?: number): Promise<TaskManagementResult> {
    this.events.push(`tmf:${fn}:${lun}`);
    if (fn === 'abort-task') {
      const r = ref === undefined ? undefined : this.hanging.get(ref);
      if (!r) return Promise.resolve('task-does-not-exist');
      this.hanging.delete(ref!);
      r(null);
      return Promise.resolve('function-complete');
    }
    for (const [k, r] of this.hanging) {
      this.hanging.delete(k);
      r(null);
    }
    return Promise.resolve('function-complete');
  }
  nexusAdded(n: ITNexus): void {
    this.events.push(`added:${n.key}`);
  }
  nexusRemoved(n: ITNexus): void {
    this.events.push(`removed:${n.key}`);
    for (const [k, r] of this.hanging) {
      this.hanging.delete(k);
      r(null);
    }
  }
}

const device = new MemDevice();
const portal: Portal = { host: '127.0.0.1', port: PORT, tpgt: 1 };
const targets: TargetEntry[] = [
  { iqn: 'iqn.2026-01.io.lunar:t0', portals: [], access: { allow: null }, chap: null, device },
  ...Array.from({ length: 40 }, (_, i): TargetEntry => ({
    iqn: `iqn.2026-01.io.lunar:many-${String(i).padStart(3, '0')}`,
    portals: [],
    access: { allow: null },
    chap: null,
    device,
  })),
  { iqn: 'iqn.2026-01.io.lunar:hidden', portals: [], access: { allow: ['iqn.2026-01.io.node:other'] }, chap: null, device },
];
const registry: TargetRegistry = {
  findTarget: (i) => targets.find((t) => t.iqn === i),
  listTargets: () => targets,
  portals: () => [portal],
  discoveryChap: () => null,
};
const INITIATOR = 'iqn.2026-01.io.node:unit';
let server: IscsiServer;

async function session(keys: Record<string, string> = {}, isid?: string): Promise<TestInitiator> {
  const i = await TestInitiator.connect('127.0.0.1', PORT);
  const r = await i.login({ initiatorName: INITIATOR, targetName: 'iqn.2026-01.io.lunar:t0', keys, ...(isid ? { isid } : {}) });
  assert.equal(r.statusClass, 0, `login failed ${r.statusClass}/${r.statusDetail}`);
  return i;
}
const read10 = (lba: number, blocks: number): Buffer => {
  const c = Buffer.alloc(10);
  c[0] = 0x28;
  c.writeUInt32BE(lba, 2);
  c.writeUInt16BE(blocks, 7);
  return c;
};
const write10 = (lba: number, blocks: number): Buffer => {
  const c = read10(lba, blocks);
  c[0] = 0x2a;
  return c;
};
/** A SCSI Command PDU without a data segment for this ITT and CDB (placed in the 16-byte field); `o` on top. */
function scsiCommand(i: TestInitiator, itt: number, cdb: Buffer, o: Partial<ScsiCommandPdu> = {}): ScsiCommandPdu {
  const field = Buffer.alloc(16);
  cdb.copy(field);
  return i.scsiCommandPdu({ initiatorTaskTag: itt, cdb: field, ...o });
}
/** RFC 7143 §11.5.1 task management function codes. */
const Tmf = { ABORT_TASK: 1, LOGICAL_UNIT_RESET: 5, TARGET_COLD_RESET: 7, TASK_REASSIGN: 8 } as const;
/** An immediate Task Management Function Request (RFC 7143 §11.5) on LUN 0. */
function sendTmf(i: TestInitiator, fn: number, itt: number, referencedTaskTag: number = RESERVED_TAG, refCmdSN = 0): void {
  i.send({
    opcode: Opcode.TASK_MGMT_REQUEST,
    immediate: true,
    dataSegmentLength: 0,
    function: fn,
    lun: 0n,
    initiatorTaskTag: itt,
    referencedTaskTag,
    cmdSN: i.cmdSN,
    expStatSN: i.expStatSN,
    refCmdSN,
    expDataSN: 0,
  });
}
const pattern = (n: number, seed: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

describe('CmdSN window (RFC 7143 §4.2.2.1)', () => {
  it('serial arithmetic wraps at 2^32', () => {
    assert.ok(serialLt(0xfffffff0, 5));
    assert.ok(!serialLt(5, 0xfffffff0));
    assert.ok(serialLe(7, 7));
  });

  it('delivers in CmdSN order, holds early commands, ignores out-of-window and duplicates', () => {
    const w = new CmdWindow<string>(10, 4);
    assert.equal(w.maxCmdSN(0), 13);
    assert.deepEqual(w.offer(11, 'b'), []);
    assert.deepEqual(w.offer(11, 'b2'), null, 'duplicate of a waiting command');
    assert.deepEqual(w.offer(10, 'a'), ['a', 'b']);
    assert.equal(w.expCmdSN, 12);
    assert.deepEqual(w.offer(9, 'old'), null, 'below ExpCmdSN');
    assert.deepEqual(w.offer(16, 'far'), null, 'beyond MaxCmdSN');
    assert.deepEqual(w.offer(12, 'c'), ['c']);
  });

  it('MaxCmdSN shrinks the window by outstanding commands but never moves backwards', () => {
    const w = new CmdWindow<number>(1, 4);
    assert.equal(w.maxCmdSN(0), 4);
    w.offer(1, 1);
    w.offer(2, 2);
    assert.equal(w.maxCmdSN(2), 4, 'two outstanding: window stays at 4');
    assert.equal(w.maxCmdSN(0), 6);
    assert.equal(w.maxCmdSN(4), 6, 'never decreases');
  });

  it('works across the 2^32 wrap', () => {
    const w = new CmdWindow<string>(0xffffffff, 8);
    assert.deepEqual(w.offer(0xffffffff, 'x'), ['x']);
    assert.equal(w.expCmdSN, 0);
    assert.deepEqual(w.offer(0, 'y'), ['y']);
  });
});

describe('graceful shutdown', () => {
  it('close({ logoutGraceMs }) sends an Async Message asking for logout, then ends the session', async () => {
    const srv = new IscsiServer({
      registry: { ...registry, portals: () => [{ host: '127.0.0.1', port: PORT + 1, tpgt: 1 }] },
      logger: pino({ level: 'silent' }),
    });
    await srv.listen();
    const i = await TestInitiator.connect('127.0.0.1', PORT + 1);
    assert.equal((await i.login({ initiatorName: INITIATOR, targetName: 'iqn.2026-01.io.lunar:t0' })).statusClass, 0);
    const closing = srv.close({ logoutGraceMs: 2000 });
    const msg = await i.expect();
    assert.equal(msg.pdu.opcode, 0x32);
    assert.equal(msg.pdu.asyncEvent, 1);
    assert.equal(msg.pdu.parameter3, 2);
    const t0 = Date.now();
    assert.equal(await i.logout(), 0);
    await closing;
    assert.ok(Date.now() - t0 < 1500, 'close() returns once the initiator logged out');
    await i.closed;
  });
});

describe('iSCSI session over loopback (in-memory device)', () => {
  before(async () => {
    server = new IscsiServer({ registry, logger: pino({ level: 'silent' }), tuning: { nopInIntervalMs: 300, nopInTimeoutMs: 1500 } });
    await server.listen();
  });
  after(async () => {
    await server.close();
  });

  it('writes with immediate data + R2Ts under MaxBurstLength and reads back (InitialR2T=No)', async () => {
    const i = await session({ FirstBurstLength: '65536', MaxBurstLength: '262144', InitialR2T: 'Yes' });
    assert.equal(i.initialR2T, true);
    const data = pattern(1024 * 1024, 1);
    const w = await i.command(write10(0, data.length / BLOCK), { writeData: data });
    assert.equal(w.status, 0);
    // 64 KiB immediate, then 960 KiB solicited in bursts of ≤ 256 KiB → 4 R2Ts.
    assert.equal(w.r2ts, 4);
    const r = await i.command(read10(0, data.length / BLOCK), { readLength: data.length });
    assert.equal(r.status, 0);
    assert.ok(r.data.equals(data));
    i.close();
  });

  it('accepts unsolicited Data-Out up to FirstBurstLength when InitialR2T=No', async () => {
    const i = await session({ ImmediateData: 'No' });
    assert.equal(i.initialR2T, false);
    assert.equal(i.immediateData, false);
    const data = pattern(512 * 1024, 2);
    const w = await i.command(write10(100, data.length / BLOCK), { writeData: data });
    assert.equal(w.status, 0);
    assert.equal(w.r2ts, 1, '256 KiB unsolicited, 256 KiB in one R2T');
    assert.ok(device.data.subarray(100 * BLOCK, 100 * BLOCK + data.length).equals(data));
    i.close();
  });

  it('splits Data-In at the initiator MaxRecvDataSegmentLength and reports residual underflow/overflow (§11.4.5)', async () => {
    const i = await session({ MaxRecvDataSegmentLength: '4096' });
    const under = await i.command(read10(0, 8), { readLength: 8192 });
    assert.equal(under.status, 0);
    assert.equal(under.data.length, 4096);
    assert.equal(under.underflow, true);
    assert.equal(under.residualCount, 4096);
    const over = await i.command(read10(0, 8), { readLength: 2048 });
    assert.equal(over.data.length, 2048);
    assert.equal(over.overflow, true);
    assert.equal(over.residualCount, 2048);
    const exact = await i.command(read10(0, 64), { readLength: 32768 });
    assert.equal(exact.data.length, 32768);
    assert.equal(exact.underflow || exact.overflow, false);
    i.close();
  });

  it('sends CHECK CONDITION with sense data behind its 2-byte length (§11.4.7)', async () => {
    const i = await session();
    const r = await i.command(Buffer.from([0xc2, 0, 0, 0, 0, 0]));
    assert.equal(r.status, 2);
    assert.equal(r.sense?.length, 18);
    assert.equal(r.sense[2], 5);
    i.close();
  });

  it('a Data-Out that does not fit its R2T ends the command with ABORTED COMMAND and its iSCSI sense code (§11.4.7.2)', async () => {
    const i = await session({ InitialR2T: 'Yes', ImmediateData: 'No' });
    const cases: Array<[string, (r2t: R2T) => { ttt: number; dataSN: number; bufferOffset: number; length: number }, number, number]> = [
      ['DataSN out of sequence', (r) => ({ ttt: r.targetTransferTag, dataSN: 1, bufferOffset: r.bufferOffset, length: 512 }), 0x4b, 0x00],
      ['Buffer Offset out of place', (r) => ({ ttt: r.targetTransferTag, dataSN: 0, bufferOffset: 512, length: 512 }), 0x4b, 0x05],
      ['a TTT no R2T gave', (r) => ({ ttt: (r.targetTransferTag + 1000) >>> 0, dataSN: 0, bufferOffset: 0, length: 512 }), 0x0c, 0x0d],
      [
        'more than the R2T asked for',
        (r) => ({ ttt: r.targetTransferTag, dataSN: 0, bufferOffset: 0, length: r.desiredDataTransferLength + 512 }),
        0x0c,
        0x0d,
      ],
    ];
    for (const [what, dataOut, asc, ascq] of cases) {
      const itt = i.nextItt();
      i.send(scsiCommand(i, itt, write10(0, 2), { write: true, expectedDataTransferLength: 1024 }));
      i.cmdSN = (i.cmdSN + 1) >>> 0;
      const r2t = (await i.expect()).pdu;
      assert.equal(r2t.opcode, 0x31, `${what}: R2T`);
      const d = dataOut(r2t);
      i.send(
        {
          opcode: 0x05,
          dataSegmentLength: d.length,
          final: true,
          lun: 0n,
          initiatorTaskTag: itt,
          targetTransferTag: d.ttt,
          expStatSN: i.expStatSN,
          dataSN: d.dataSN,
          bufferOffset: d.bufferOffset,
        },
        Buffer.alloc(d.length),
      );
      const res = await i.expect();
      assert.equal(res.pdu.opcode, 0x21, `${what}: SCSI Response`);
      assert.equal(res.pdu.initiatorTaskTag, itt);
      assert.equal(res.pdu.status, 2, `${what}: CHECK CONDITION`);
      const sense = res.data.subarray(2, 2 + res.data.readUInt16BE(0));
      assert.equal(sense.length, 18);
      assert.equal(sense[0], 0x70);
      assert.equal(sense[2], 0x0b, `${what}: ABORTED COMMAND`);
      assert.deepEqual([sense[12], sense[13]], [asc, ascq], `${what}: ASC/ASCQ`);
    }
    assert.equal((await i.command(Buffer.alloc(6))).status, 0, 'the session goes on');
    i.close();
  });

  it('a failing device gets SCSI Response "target failure" (0x01), and the session goes on', async () => {
    const i = await session();
    for (const op of [0xc4, 0xc5]) {
      const r = await i.command(Buffer.from([op, 0, 0, 0, 0, 0]));
      assert.equal(r.response, 0x01);
    }
    assert.equal((await i.command(Buffer.alloc(6))).status, 0);
    i.close();
  });

  it('answers NOP-Out pings with their data and pings idle initiators itself', async () => {
    const i = await session();
    const echo = await i.ping(Buffer.from('hello'));
    assert.equal(echo.data.toString(), 'hello');
    assert.equal(echo.pdu.opcode === 0x20 && echo.pdu.targetTransferTag, RESERVED_TAG);
    // Our TestInitiator answers NOP-In pings: after 3 intervals the connection is still alive.
    await new Promise((r) => setTimeout(r, 1200));
    assert.equal(i.isClosed, false);
    assert.equal((await i.command(Buffer.alloc(6))).status, 0);
    i.close();
  });

  it('drops a peer that does not answer NOP-In pings', async () => {
    const i = await session();
    i.answerPings = false;
    await Promise.race([i.closed, new Promise((_, rej) => setTimeout(() => rej(new Error('not dropped')), 6000))]);
    assert.equal(i.isClosed, true);
  });

  it('delivers commands in CmdSN order even when they arrive out of order', async () => {
    const i = await session();
    const base = i.cmdSN;
    const send = (itt: number, cmdSN: number): void => i.send(scsiCommand(i, itt, Buffer.alloc(16), { cmdSN }));
    send(1001, base + 1);
    send(1000, base);
    const a = await i.expect();
    const b = await i.expect();
    assert.deepEqual([a.pdu.opcode, b.pdu.opcode], [0x21, 0x21]);
    assert.deepEqual([a, b].map((x) => (x.pdu.opcode === 0x21 ? x.pdu.initiatorTaskTag : 0)).sort(), [1000, 1001]);
    const last = b.pdu.opcode === 0x21 ? b.pdu.expCmdSN : 0;
    assert.equal(last, (base + 2) >>> 0);
    i.close();
  });

  it('ABORT TASK ends a running task without a SCSI Response; LOGICAL UNIT RESET reaches the device', async () => {
    const i = await session();
    const itt = 5000;
    i.send(scsiCommand(i, itt, Buffer.from([0xc1])));
    const refCmdSN = i.cmdSN;
    i.cmdSN++;
    await new Promise((r) => setTimeout(r, 50));
    sendTmf(i, Tmf.ABORT_TASK, 5001, itt, refCmdSN);
    const r = await i.expect();
    assert.equal(r.pdu.opcode, 0x22);
    assert.equal(r.pdu.response, 0);
    sendTmf(i, Tmf.LOGICAL_UNIT_RESET, 5002);
    const lr = await i.expect();
    assert.equal(lr.pdu.opcode === 0x22 && lr.pdu.initiatorTaskTag, 5002);
    assert.ok(device.events.includes('tmf:abort-task:0'));
    assert.ok(device.events.includes('tmf:logical-unit-reset:0'));
    // No SCSI Response for the aborted task arrives.
    assert.equal(await i.next(200), null);
    // Unknown task, RefCmdSN already acknowledged → task does not exist; TASK REASSIGN → not supported.
    sendTmf(i, Tmf.ABORT_TASK, 5003, 777, refCmdSN);
    const nx = await i.expect();
    assert.equal(nx.pdu.opcode === 0x22 && nx.pdu.response, 1);
    sendTmf(i, Tmf.TASK_REASSIGN, 5004, 777);
    const ra = await i.expect();
    assert.equal(ra.pdu.opcode === 0x22 && ra.pdu.response, 4);
    i.close();
  });

  it('TARGET COLD RESET answers, then ends the sessions of the target', async () => {
    const i = await session();
    sendTmf(i, Tmf.TARGET_COLD_RESET, 6000);
    const r = await i.expect();
    assert.equal(r.pdu.opcode === 0x22 && r.pdu.response, 0);
    await i.closed;
  });

  it('rejects SNACK at ErrorRecoveryLevel 0 and keeps the connection', async () => {
    const i = await session();
    i.send({
      opcode: 0x10,
      dataSegmentLength: 0,
      type: 0,
      lun: 0n,
      initiatorTaskTag: 1,
      targetTransferTag: RESERVED_TAG,
      expStatSN: i.expStatSN,
      begRun: 0,
      runLength: 0,
    });
    const r = await i.expect();
    assert.equal(r.pdu.opcode, 0x3f);
    assert.equal(r.pdu.reason, 0x04);
    assert.equal(r.data.length, 48, 'the rejected header comes back');
    assert.equal((await i.command(Buffer.alloc(6))).status, 0);
    i.close();
  });

  it('works with HeaderDigest and DataDigest CRC32C', async () => {
    const i = await session({ HeaderDigest: 'CRC32C', DataDigest: 'CRC32C' });
    assert.equal(i.headerDigest, true);
    assert.equal(i.dataDigest, true);
    const data = pattern(300 * 1024 + 3 * BLOCK, 9);
    assert.equal((await i.command(write10(2000, data.length / BLOCK), { writeData: data })).status, 0);
    const r = await i.command(read10(2000, data.length / BLOCK), { readLength: data.length });
    assert.ok(r.data.equals(data));
    i.close();
  });

  it('drops the connection on a data digest error after a Reject (§11.17.1 reason 0x02)', async () => {
    const i = await session({ DataDigest: 'CRC32C' });
    i.dataDigest = false; // send without computing it: the target reads garbage where the digest should be
    i.send(
      {
        opcode: 0x00,
        immediate: true,
        dataSegmentLength: 8,
        lun: 0n,
        initiatorTaskTag: 9,
        targetTransferTag: RESERVED_TAG,
        cmdSN: i.cmdSN,
        expStatSN: i.expStatSN,
      },
      Buffer.alloc(8, 1),
    );
    i.sendRaw(Buffer.from([1, 2, 3, 4]));
    i.dataDigest = true;
    const r = await i.next(2000);
    assert.equal(r?.pdu.opcode, 0x3f);
    await i.closed;
  });

  it('session reinstatement: a new login with the same ISID ends the old session (nexusRemoved before nexusAdded)', async () => {
    const isid = '400000abcdef';
    const a = await session({}, isid);
    const mark = device.events.length;
    const b = await session({}, isid);
    await a.closed;
    const ev = device.events.slice(mark).filter((e) => e.includes(isid));
    assert.deepEqual(
      ev.map((e) => e.split(':')[0]),
      ['removed', 'added'],
    );
    assert.equal((await b.command(Buffer.alloc(6))).status, 0);
    const infos = server.sessions().filter((s) => s.isid === isid);
    assert.equal(infos.length, 1);
    assert.equal(infos[0]!.targetName, 'iqn.2026-01.io.lunar:t0');
    assert.equal(infos[0]!.initiatorName, INITIATOR);
    assert.equal(server.closeSessions({ initiatorName: INITIATOR, targetName: 'iqn.2026-01.io.lunar:t0' }) >= 1, true);
    await b.closed;
  });

  it('logout closes the session and removes the nexus', async () => {
    const i = await session({}, '400000000777');
    assert.equal(await i.logout(), 0);
    await i.closed;
    assert.ok(device.events.some((e) => e.startsWith('removed:') && e.includes('400000000777')));
    assert.equal(
      server.sessions().some((s) => s.isid === '400000000777'),
      false,
    );
  });

  it('frames PDUs however the byte stream is split (1-byte and random pieces, digests on)', async () => {
    for (const mode of ['bytes', 'random'] as const) {
      const i = await session({ HeaderDigest: 'CRC32C', DataDigest: 'CRC32C', ImmediateData: 'Yes', InitialR2T: 'No' });
      const realSend = i.sendRaw.bind(i);
      const pieces: Buffer[] = [];
      i.sendRaw = (b: Buffer): void => {
        pieces.push(b);
      };
      const data = pattern(6000, mode === 'bytes' ? 3 : 4); // 4 KiB immediate... and the rest unsolicited (MRDSL 4096 below)
      i.maxXmit = 4096;
      const lba = mode === 'bytes' ? 3000 : 3100;
      const pending = i.command(write10(lba, 12), { writeData: Buffer.concat([data, Buffer.alloc(144)]) });
      const stream = Buffer.concat(pieces);
      i.sendRaw = realSend;
      let off = 0;
      let seed = 12345;
      while (off < stream.length) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        const n = mode === 'bytes' ? 1 : 1 + (seed % 97);
        realSend(stream.subarray(off, off + n));
        off += n;
        if (off % 64 < n) await new Promise((r) => setImmediate(r));
      }
      const w = await pending;
      assert.equal(w.status, 0);
      assert.ok(device.data.subarray(lba * BLOCK, lba * BLOCK + 6000).equals(data));
      i.close();
    }
  });

  it('logout waits for running commands: their responses come before the Logout Response', async () => {
    const i = await session();
    i.send(scsiCommand(i, 4242, Buffer.from([0xc3])));
    i.cmdSN++;
    i.send({
      opcode: 0x06,
      immediate: false,
      dataSegmentLength: 0,
      reasonCode: 0,
      initiatorTaskTag: 4243,
      cid: 0,
      cmdSN: i.cmdSN++,
      expStatSN: i.expStatSN,
    });
    const first = await i.expect();
    assert.equal(first.pdu.opcode === 0x21 && first.pdu.initiatorTaskTag, 4242);
    const second = await i.expect();
    assert.equal(second.pdu.opcode === 0x26 && second.pdu.response, 0);
    await i.closed;
  });

  it('logout of another CID answers "CID not found" and keeps the session', async () => {
    const i = await session();
    i.send({
      opcode: 0x06,
      immediate: true,
      dataSegmentLength: 0,
      reasonCode: 1,
      initiatorTaskTag: 4244,
      cid: 9,
      cmdSN: i.cmdSN,
      expStatSN: i.expStatSN,
    });
    const r = await i.expect();
    assert.equal(r.pdu.opcode === 0x26 && r.pdu.response, 1);
    assert.equal((await i.command(Buffer.alloc(6))).status, 0);
    i.close();
  });

  it('SendTargets=All in a discovery session lists visible targets, continuing long answers (§6.2)', async () => {
    const i = await TestInitiator.connect('127.0.0.1', PORT);
    const r = await i.login({ initiatorName: INITIATOR, sessionType: 'Discovery', keys: { MaxRecvDataSegmentLength: '512' } });
    assert.equal(r.statusClass, 0);
    const pairs = await i.text([{ key: 'SendTargets', value: 'All' }]);
    const names = pairs.filter((p) => p.key === 'TargetName').map((p) => p.value);
    assert.equal(names.length, 41);
    assert.ok(!names.includes('iqn.2026-01.io.lunar:hidden'));
    assert.ok(pairs.filter((p) => p.key === 'TargetAddress').every((p) => p.value === '127.0.0.1:13260,1'));
    // A request continued over two PDUs (C bit), the second under the TTT the target handed out (§11.10.2).
    const part1 = Buffer.from('SendTar');
    i.send(
      {
        opcode: 0x04,
        immediate: true,
        dataSegmentLength: part1.length,
        final: false,
        continue: true,
        lun: 0n,
        initiatorTaskTag: 300,
        targetTransferTag: RESERVED_TAG,
        cmdSN: i.cmdSN,
        expStatSN: i.expStatSN,
      },
      part1,
    );
    const empty = await i.expect();
    assert.equal(empty.pdu.opcode, 0x24);
    assert.equal(empty.data.length, 0);
    const ttt = empty.pdu.targetTransferTag;
    assert.notEqual(ttt, RESERVED_TAG);
    const part2 = Buffer.from('gets=iqn.2026-01.io.lunar:t0\0');
    i.send(
      {
        opcode: 0x04,
        immediate: true,
        dataSegmentLength: part2.length,
        final: true,
        continue: false,
        lun: 0n,
        initiatorTaskTag: 300,
        targetTransferTag: ttt,
        cmdSN: i.cmdSN,
        expStatSN: i.expStatSN,
      },
      part2,
    );
    const full = await i.expect();
    assert.equal(full.pdu.opcode === 0x24 && full.pdu.final, true);
    assert.match(full.data.toString(), /^TargetName=iqn.2026-01.io.lunar:t0\0TargetAddress=127.0.0.1:13260,1\0$/);
    // libiscsi iSCSISendTargets.Invalid: unknown key, bad values, wrong case → Reject; then a valid one works.
    for (const bad of ['SendTargetsPlease=All', 'SendTargets=Alle', 'SendTargets=A', 'sENDtARGETS=aLL']) {
      const d = Buffer.from(`${bad}\0`);
      i.send(
        {
          opcode: 0x04,
          immediate: true,
          dataSegmentLength: d.length,
          final: true,
          continue: false,
          lun: 0n,
          initiatorTaskTag: 310,
          targetTransferTag: RESERVED_TAG,
          cmdSN: i.cmdSN,
          expStatSN: i.expStatSN,
        },
        d,
      );
      assert.equal((await i.expect()).pdu.opcode, 0x3f, bad);
    }
    assert.ok((await i.text([{ key: 'SendTargets', value: 'iqn.2026-01.io.lunar:nonexistent' }])).length === 0);
    // A TTT the target never gave is rejected.
    i.send({
      opcode: 0x04,
      immediate: true,
      dataSegmentLength: 0,
      final: true,
      continue: false,
      lun: 0n,
      initiatorTaskTag: 301,
      targetTransferTag: 0x5555,
      cmdSN: i.cmdSN,
      expStatSN: i.expStatSN,
    });
    assert.equal((await i.expect()).pdu.opcode, 0x3f);
    // SCSI commands are not allowed in a discovery session.
    i.send(scsiCommand(i, 77, Buffer.alloc(16), { immediate: true }));
    const rej = await i.expect();
    assert.equal(rej.pdu.opcode, 0x3f);
    assert.equal(await i.logout(), 0);
    await i.closed;
  });
});

describe('session identity across portal groups (RFC 7143 §2.2: session id = ISID + TPGT)', () => {
  const p1: Portal = { host: '127.0.0.1', port: PORT + 2, tpgt: 1 };
  const p2: Portal = { host: '127.0.0.1', port: PORT + 3, tpgt: 2 };
  const twoPortals: TargetRegistry = { ...registry, portals: () => [p1, p2] };
  let multi: IscsiServer;
  before(async () => {
    multi = new IscsiServer({ registry: twoPortals, logger: pino({ level: 'silent' }) });
    await multi.listen();
  });
  after(async () => {
    await multi.close();
  });

  async function loginAt(p: Portal, isid: string, discovery: boolean): Promise<TestInitiator> {
    const i = await TestInitiator.connect(p.host, p.port);
    const r = await i.login({
      initiatorName: INITIATOR,
      isid,
      ...(discovery ? { sessionType: 'Discovery' as const } : { targetName: 'iqn.2026-01.io.lunar:t0' }),
    });
    assert.equal(r.statusClass, 0, `login at tpgt ${p.tpgt} failed ${r.statusClass}/${r.statusDetail}`);
    return i;
  }

  for (const discovery of [true, false]) {
    it(`the same ISID on two portal groups makes two sessions, neither reinstates the other (${discovery ? 'discovery' : 'normal'})`, async () => {
      const isid = discovery ? '400001370000' : '400000abc123';
      const a = await loginAt(p1, isid, discovery);
      const b = await loginAt(p2, isid, discovery);
      let aClosed = false;
      void a.closed.then(() => (aClosed = true));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(aClosed, false, 'the login on portal group 2 closed the session on portal group 1');
      assert.equal(multi.sessions().filter((s) => s.isid === isid).length, 2);
      // On the same portal group it is a reinstatement: the session there ends.
      const c = await loginAt(p1, isid, discovery);
      await a.closed;
      assert.equal(multi.sessions().filter((s) => s.isid === isid).length, 2);
      b.close();
      c.close();
    });
  }
});
