// Malformed and hostile input against the iSCSI target: every bad PDU gets a Reject or its connection
// closed, a healthy session keeps working, and the server stays up. Real SCSI device behind it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import { createTargetDevice, type TargetDevice } from '../../src/scsi/device.js';
import type { BackingStore } from '../../src/storage/types.js';
import { openFileStore } from '../../src/storage/file-store.js';
import { loadNative } from '../../src/storage/native.js';
import type { Portal, TargetEntry, TargetRegistry } from '../../src/target/types.js';
import { TestInitiator } from '../support/iscsi-initiator.js';
import { loginRequest } from '../support/iscsi-pdus.js';
import { encodePdu, RESERVED_TAG, type ScsiCommandPdu } from '../../src/iscsi/pdu.js';
import { IscsiServer } from '../../src/iscsi/server.js';
import { encodeText } from '../../src/iscsi/text.js';

const PORT = 13270;
const HOST = '127.0.0.1';
const HEALTHY = 'iqn.2026-01.io.lunar.bad:healthy';
const FUZZ = 'iqn.2026-01.io.lunar.bad:fuzz';
const NODE = 'iqn.2026-01.io.lunar.node:bad';

let dir = '';
const stores: BackingStore[] = [];
const devices: TargetDevice[] = [];
let server: IscsiServer | undefined;
let healthy: TestInitiator | undefined;

async function makeDevice(name: string, serial: string): Promise<TargetDevice> {
  const store = await openFileStore(join(dir, name), { create: { size: 16 * 1024 * 1024 } });
  stores.push(store);
  const d = createTargetDevice({
    luns: new Map([
      [
        0,
        {
          identity: {
            naa: `600140500000000000000000000000${serial}`,
            serial: `BAD${serial}`,
            vendor: 'LUNAR',
            product: 'MALFORMED',
            revision: '0001',
          },
          store,
          thinProvisioned: true,
        },
      ],
    ]),
    targetPorts: [1],
  });
  devices.push(d);
  return d;
}

async function login(target = FUZZ, keys: Record<string, string> = {}): Promise<TestInitiator> {
  const i = await TestInitiator.connect(HOST, PORT);
  const r = await i.login({ initiatorName: NODE, targetName: target, keys });
  assert.equal(r.statusClass, 0, `login ${r.statusClass}/${r.statusDetail}`);
  // Clear the power-on unit attention.
  await i.command(Buffer.alloc(6));
  return i;
}

/** Outcome of a bad input: the first PDU answered, or that the connection closed. */
async function outcome(
  i: TestInitiator,
  ms = 3000,
): Promise<'closed' | 'timeout' | { opcode: number; reason?: number; status?: number; data: Buffer }> {
  const r = await i.next(ms);
  if (!r) return i.isClosed ? 'closed' : 'timeout';
  const p = r.pdu;
  return {
    opcode: p.opcode,
    ...(p.opcode === 0x3f ? { reason: p.reason } : {}),
    ...(p.opcode === 0x21 ? { status: p.status } : {}),
    data: r.data,
  };
}
function assertRejected(o: Awaited<ReturnType<typeof outcome>>, reason?: number): void {
  assert.ok(typeof o === 'object' && o.opcode === 0x3f, `expected Reject, got ${JSON.stringify(o)}`);
  if (reason !== undefined) assert.equal(o.reason, reason);
  assert.equal(o.data.length, 48, 'Reject carries the offending header');
}
async function stillWorks(i: TestInitiator): Promise<void> {
  const echo = await i.ping(Buffer.from('alive'));
  assert.equal(echo.data.toString(), 'alive');
}
function raw(): Promise<{ sock: net.Socket; closed: Promise<void>; received: Buffer[] }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: HOST, port: PORT }, () => resolve({ sock, closed, received }));
    const received: Buffer[] = [];
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    sock.on('data', (d: Buffer) => received.push(d));
    sock.on('error', () => undefined);
    sock.once('error', reject);
  });
}
const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, new Promise<T>((_, rej) => setTimeout(() => rej(new Error(`${what} not within ${ms} ms`)), ms))]);
const scsi = (i: TestInitiator, over: Partial<ScsiCommandPdu> = {}): ScsiCommandPdu => i.scsiCommandPdu(over);

describe('malformed input against the iSCSI target', () => {
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lunar-iscsi-bad-'));
    const dh = await makeDevice('healthy.img', '01');
    const df = await makeDevice('fuzz.img', '02');
    const portal: Portal = { host: HOST, port: PORT, tpgt: 1 };
    const targets: TargetEntry[] = [
      { iqn: HEALTHY, portals: [], access: { allow: null }, chap: null, device: dh },
      { iqn: FUZZ, portals: [], access: { allow: null }, chap: null, device: df },
    ];
    const registry: TargetRegistry = {
      findTarget: (n) => targets.find((t) => t.iqn === n),
      listTargets: () => targets,
      portals: () => [portal],
      discoveryChap: () => null,
    };
    server = new IscsiServer({
      registry,
      logger: pino({ level: 'silent' }),
      // As `lunar serve` runs it: connections on sockets of the transport's own (one reused read buffer).
      duplicateFd: (fd) => loadNative().duplicateFd(fd),
      tuning: {
        loginTimeoutMs: 1500,
        nopInIntervalMs: 500,
        nopInTimeoutMs: 2000,
        maxWriteLength: 4 * 1024 * 1024,
        maxSessionWriteBuffer: 32 * 1024 * 1024,
      },
    });
    await server.listen();
    healthy = await login(HEALTHY);
    const data = randomBytes(64 * 1024);
    const w = Buffer.from([0x2a, 0, 0, 0, 0, 16, 0, 0, 128, 0]);
    assert.equal((await healthy.command(w, { writeData: data })).status, 0);
  });

  after(async () => {
    healthy?.close();
    await server?.close();
    for (const d of devices) await d.close();
    for (const s of stores) await s.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  describe('during login', () => {
    it('a truncated header is dropped at the login timeout', async () => {
      const c = await raw();
      c.sock.write(Buffer.alloc(20, 0x43));
      await within(c.closed, 4000, 'close');
    });

    it('a non-login PDU before login closes the connection', async () => {
      const c = await raw();
      const b = Buffer.alloc(48);
      b[0] = 0x01;
      b[1] = 0x80;
      c.sock.write(b);
      await within(c.closed, 2000, 'close');
    });

    it('a Login Request with more than 8192 bytes of data closes the connection', async () => {
      const c = await raw();
      const h = encodePdu(loginRequest({ dataSegmentLength: 9000, isid: '400000000001' }));
      c.sock.write(h);
      c.sock.write(Buffer.alloc(9000, 0x41));
      await within(c.closed, 2000, 'close');
    });

    it('random bytes close the connection', async () => {
      for (let k = 0; k < 5; k++) {
        const c = await raw();
        c.sock.write(randomBytes(1000));
        await within(c.closed, 4000, 'close');
      }
    });

    it('garbage login text gets an initiator-error Login Response (0x0200) and a close', async () => {
      const i = await TestInitiator.connect(HOST, PORT);
      const data = Buffer.from('this is not a key value list\0');
      i.send(loginRequest({ dataSegmentLength: data.length, isid: '400000000002' }), data);
      const r = await i.expect();
      assert.equal(r.pdu.opcode, 0x23);
      assert.equal((r.pdu.statusClass << 8) | r.pdu.statusDetail, 0x0200);
      await within(i.closed, 3000, 'close');
    });
  });

  describe('in full feature phase', () => {
    it('an unknown opcode gets Reject "command not supported" (0x05); the connection stays', async () => {
      const i = await login();
      const b = Buffer.alloc(48);
      b[0] = 0x1c;
      b[1] = 0x80;
      i.sendRaw(b);
      assertRejected(await outcome(i), 0x05);
      await stillWorks(i);
      i.close();
    });

    it('a target opcode sent by the initiator gets Reject "protocol error" (0x04)', async () => {
      const i = await login();
      const b = Buffer.alloc(48);
      b[0] = 0x21;
      b[1] = 0x80;
      i.sendRaw(b);
      assertRejected(await outcome(i), 0x04);
      await stillWorks(i);
      i.close();
    });

    it('a DataSegmentLength shorter than the data: the rest is framed as a bad header and rejected', async () => {
      const i = await login();
      const nop = encodePdu({
        opcode: 0x00,
        immediate: true,
        dataSegmentLength: 4,
        lun: 0n,
        initiatorTaskTag: 99,
        targetTransferTag: RESERVED_TAG,
        cmdSN: i.cmdSN,
        expStatSN: i.expStatSN,
      });
      i.sendRaw(Buffer.concat([nop, Buffer.from('abcd'), Buffer.alloc(48)])); // the extra 48 zero bytes: a NOP-Out without F bit
      const first = await outcome(i);
      assert.ok(typeof first === 'object' && first.opcode === 0x20, 'the NOP-Out itself is answered');
      assertRejected(await outcome(i), 0x09);
      await stillWorks(i);
      i.close();
    });

    it('a DataSegmentLength longer than the data: the stalled peer is dropped by the NOP-In ping', async () => {
      const i = await login();
      i.answerPings = false;
      const nop = encodePdu({
        opcode: 0x00,
        immediate: true,
        dataSegmentLength: 100,
        lun: 0n,
        initiatorTaskTag: 98,
        targetTransferTag: RESERVED_TAG,
        cmdSN: i.cmdSN,
        expStatSN: i.expStatSN,
      });
      i.sendRaw(Buffer.concat([nop, Buffer.alloc(10)]));
      await within(i.closed, 8000, 'close');
    });

    it('commands outside the CmdSN window are ignored (§4.2.2.1) and the session goes on', async () => {
      const i = await login();
      i.send(scsi(i, { cmdSN: (i.cmdSN + 1000) >>> 0 }));
      i.send(scsi(i, { cmdSN: (i.cmdSN - 1) >>> 0 }));
      assert.equal(await outcome(i, 500), 'timeout');
      const r = await i.command(Buffer.alloc(6));
      assert.equal(r.status, 0);
      i.close();
    });

    it('a data segment above MaxRecvDataSegmentLength gets a Reject and the connection closes', async () => {
      const i = await login();
      const h = encodePdu({
        opcode: 0x05,
        dataSegmentLength: 300000,
        final: true,
        lun: 0n,
        initiatorTaskTag: 5,
        targetTransferTag: RESERVED_TAG,
        expStatSN: i.expStatSN,
        dataSN: 0,
        bufferOffset: 0,
      });
      i.sendRaw(h);
      i.sendRaw(Buffer.alloc(300000));
      const o = await outcome(i);
      assert.ok(o === 'closed' || (typeof o === 'object' && o.opcode === 0x3f), JSON.stringify(o));
      await within(i.closed, 3000, 'close');
    });

    it('Data-Out for an unknown task gets Reject "invalid PDU field" (0x09)', async () => {
      const i = await login();
      i.send(
        {
          opcode: 0x05,
          dataSegmentLength: 512,
          final: true,
          lun: 0n,
          initiatorTaskTag: 0x1234,
          targetTransferTag: 7,
          expStatSN: i.expStatSN,
          dataSN: 0,
          bufferOffset: 0,
        },
        Buffer.alloc(512),
      );
      assertRejected(await outcome(i), 0x09);
      await stillWorks(i);
      i.close();
    });

    it('an unknown AHS type gets a Reject (and its CmdSN is used up); a Login Request in full feature phase too', async () => {
      const i = await login();
      const h = encodePdu(scsi(i));
      const withAhs = Buffer.concat([h, Buffer.from([0, 1, 9, 0])]);
      withAhs[4] = 1;
      i.sendRaw(withAhs);
      assertRejected(await outcome(i), 0x09);
      // The rejected command used up its CmdSN: the next one is not held back waiting for it.
      i.cmdSN++;
      assert.equal((await i.command(Buffer.alloc(6))).status, 0);
      i.send(loginRequest({ isid: i.isid, tsih: i.tsih, initiatorTaskTag: 3, cmdSN: i.cmdSN, expStatSN: i.expStatSN }));
      assertRejected(await outcome(i), 0x04);
      await stillWorks(i);
      i.close();
    });

    it('immediate data on a command without W bit gets a Reject', async () => {
      const i = await login();
      i.send(scsi(i, { dataSegmentLength: 16, immediate: true }), Buffer.alloc(16));
      assertRejected(await outcome(i), 0x04);
      await stillWorks(i);
      i.close();
    });

    it('a 4 GiB write gets CHECK CONDITION / ILLEGAL REQUEST instead of a buffer', async () => {
      const i = await login();
      const cdb = Buffer.alloc(16);
      cdb[0] = 0x8a;
      i.send(scsi(i, { write: true, final: true, expectedDataTransferLength: 0xfffffe00, cdb }));
      i.cmdSN++;
      const o = await outcome(i);
      assert.ok(typeof o === 'object' && o.opcode === 0x21 && o.status === 2, JSON.stringify(o));
      assert.equal(o.data[2 + 2], 0x05);
      await stillWorks(i);
      i.close();
    });

    it('a header digest error closes the connection', async () => {
      const i = await login(FUZZ, { HeaderDigest: 'CRC32C' });
      const h = encodePdu({
        opcode: 0x00,
        immediate: true,
        dataSegmentLength: 0,
        lun: 0n,
        initiatorTaskTag: 4,
        targetTransferTag: RESERVED_TAG,
        cmdSN: i.cmdSN,
        expStatSN: i.expStatSN,
      });
      i.sendRaw(Buffer.concat([h, Buffer.from([0xde, 0xad, 0xbe, 0xef])]));
      await within(i.closed, 3000, 'close');
    });

    it('endless text continuation (C bit) is cut off with a Reject', async () => {
      const i = await login();
      const chunk = Buffer.alloc(8192, 0x41);
      const itt = i.nextItt();
      let rejected = false;
      for (let k = 0; k < 12 && !rejected; k++) {
        i.send(
          {
            opcode: 0x04,
            immediate: true,
            dataSegmentLength: chunk.length,
            final: false,
            continue: true,
            lun: 0n,
            initiatorTaskTag: itt,
            targetTransferTag: RESERVED_TAG,
            cmdSN: i.cmdSN,
            expStatSN: i.expStatSN,
          },
          chunk,
        );
        const o = await outcome(i);
        assert.ok(typeof o === 'object', JSON.stringify(o));
        if (o.opcode === 0x3f) rejected = true;
        else assert.equal(o.opcode, 0x24);
      }
      assert.ok(rejected);
      await stillWorks(i);
      i.close();
    });
  });

  it('hundreds of random PDUs: each is answered, rejected or closes its connection; the server lives on', async (t) => {
    const initiatorOps = [0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x10];
    const otherOps = [0x03, 0x07, 0x1c, 0x20, 0x21, 0x25, 0x3f];
    let conn = await login();
    let closes = 0;
    let answered = 0;
    const samples = fc.sample(
      fc.record({
        op: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...initiatorOps) }, { weight: 1, arbitrary: fc.constantFrom(...otherOps) }),
        immediate: fc.boolean(),
        flags: fc.integer({ min: 0, max: 255 }),
        fields: fc.uint8Array({ minLength: 48, maxLength: 48 }),
        dataLength: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 2048 })),
        sane: fc.boolean(),
      }),
      { numRuns: 300, seed: 7143 },
    );
    for (const s of samples) {
      if (conn.isClosed) {
        closes++;
        conn = await login();
      }
      const h = Buffer.from(s.fields);
      h[0] = (s.immediate ? 0x40 : 0) | s.op;
      h[1] = s.flags;
      h[4] = 0; // no AHS: keep the framing in step so that every PDU is judged on its own
      h.writeUIntBE(s.dataLength, 5, 3);
      if (s.sane) {
        // Plausible sequence numbers and small lengths, to get past the first checks.
        h.writeUInt32BE(conn.cmdSN, 24);
        h.writeUInt32BE(conn.expStatSN, 28);
        if (s.op === 0x01 || s.op === 0x05) h.writeUInt32BE(s.fields[20]! * 512, 20);
        h.writeBigUInt64BE(0n, 8);
        if (s.op === 0x06) h[1] = 0x80 | 1; // logout of a non-existent CID: response 1, no close
        if (s.op === 0x02 && (h[1] & 0x7f) === 7) h[1] = 0x81; // no cold reset of the fuzz target's other sessions mid-run
      }
      conn.sendRaw(Buffer.concat([h, randomBytes(s.dataLength), Buffer.alloc((4 - (s.dataLength & 3)) & 3)]));
      // Drain what comes back (or the close) for a moment.
      for (;;) {
        const r = await conn.next(25);
        if (!r) break;
        answered++;
      }
    }
    if (conn.isClosed) closes++;
    conn.close();
    // The healthy session on the other target is untouched and its data intact.
    assert.ok(healthy, 'the healthy session was set up');
    await stillWorks(healthy);
    const r = await healthy.command(Buffer.from([0x28, 0, 0, 0, 0, 16, 0, 0, 128, 0]), { readLength: 64 * 1024 });
    assert.equal(r.status, 0);
    assert.equal(r.data.length, 64 * 1024);
    // A fresh login still works, and so does a real initiator.
    const fresh = await login();
    await stillWorks(fresh);
    fresh.close();
    const inq = await new Promise<{ code: number; out: string }>((resolve) => {
      execFile('iscsi-inq', ['-i', NODE, `iscsi://${HOST}:${PORT}/${HEALTHY}/0`], { timeout: 30000 }, (e, out) =>
        resolve({ code: e ? 1 : 0, out }),
      );
    });
    assert.equal(inq.code, 0);
    assert.match(inq.out, /Product:MALFORMED/);
    assert.ok(answered > 0, 'the target answered some of the random PDUs');
    t.diagnostic(`random PDUs: ${samples.length}, target PDUs received: ${answered}, connections closed by the target: ${closes}`);
  });

  it('discovery text with a malformed pair gets a Reject', async () => {
    const i = await TestInitiator.connect(HOST, PORT);
    assert.equal((await i.login({ initiatorName: NODE, sessionType: 'Discovery' })).statusClass, 0);
    const data = encodeText([{ key: 'SendTargets', value: 'All' }]);
    const bad = Buffer.concat([data, Buffer.from('nokeyvalue\0')]);
    i.send(
      {
        opcode: 0x04,
        immediate: true,
        dataSegmentLength: bad.length,
        final: true,
        continue: false,
        lun: 0n,
        initiatorTaskTag: 1,
        targetTransferTag: RESERVED_TAG,
        cmdSN: i.cmdSN,
        expStatSN: i.expStatSN,
      },
      bad,
    );
    assertRejected(await outcome(i));
    const pairs = await i.text([{ key: 'SendTargets', value: 'All' }]);
    assert.deepEqual(
      pairs
        .filter((p) => p.key === 'TargetName')
        .map((p) => p.value)
        .sort(),
      [FUZZ, HEALTHY].sort(),
    );
    i.close();
  });
});
