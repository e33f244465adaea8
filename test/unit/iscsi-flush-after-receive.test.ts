// When a connection's PDUs leave (src/iscsi/connection.ts send(), receive(), flush()): what is queued
// while receive() handles bytes from the socket (commands answered synchronously, login responses)
// is written before receive() returns, in one write; what is queued outside it (completions of commands
// that waited for I/O) at the end of the event-loop turn, in one write for the whole turn.
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { IscsiConnection } from '../../src/iscsi/connection.js';
import { encodePdu } from '../../src/iscsi/pdu.js';
import type { TargetRegistry } from '../../src/target/types.js';
import { testConnectionHooks } from '../support/connection-hooks.js';
import { FakeSocketBase } from '../support/fake-socket.js';

/** A socket whose stream writes complete at once and are only counted (the kernel takes everything). */
class FakeSocket extends FakeSocketBase {
  readonly writableLength = 0;
  streamWrites = 0;
  write(_buf: Buffer, cb?: () => void): boolean {
    this.streamWrites++;
    cb?.();
    return true;
  }
}

const REGISTRY: TargetRegistry = { findTarget: () => undefined, listTargets: () => [], portals: () => [], discoveryChap: () => null };

function rig(): { conn: IscsiConnection; sock: FakeSocket; writes: Buffer[] } {
  const sock = new FakeSocket();
  const writes: Buffer[] = [];
  const base = testConnectionHooks();
  const hooks = testConnectionHooks({
    login: { ...base.login, registry: REGISTRY },
    sendNoWait: (_fd, pieces) => {
      const all = Buffer.concat(pieces);
      writes.push(all);
      return all.length;
    },
  });
  return { conn: new IscsiConnection(sock as unknown as Socket, hooks), sock, writes };
}

/** A Login Request of a discovery session in the security stage, asking to go on (RFC 7143 §11.12). */
function loginRequest(itt: number): Buffer {
  const text = Buffer.from('InitiatorName=iqn.2024-01.test:initiator\0SessionType=Discovery\0AuthMethod=None\0');
  const header = encodePdu({
    opcode: 0x03,
    dataSegmentLength: text.length,
    transit: false,
    continue: false,
    csg: 0,
    nsg: 1,
    versionMax: 0,
    versionMin: 0,
    isid: '400000000001',
    tsih: 0,
    initiatorTaskTag: itt,
    cid: 0,
    cmdSN: 1,
    expStatSN: 0,
  });
  return Buffer.concat([header, text, Buffer.alloc((4 - (text.length % 4)) % 4)]);
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('connection: when queued PDUs are written', () => {
  it('a response queued while receive() handles a PDU is written before receive() returns', async () => {
    const r = rig();
    r.conn.receive(loginRequest(7));
    assert.equal(r.writes.length, 1, 'written inside receive()');
    const w = r.writes[0]!;
    assert.equal(w[0]! & 0x3f, 0x23, 'a Login Response');
    assert.equal(w.readUInt32BE(16), 7, 'for that request');
    assert.equal(w[36], 0, 'status class: success');
    assert.equal(r.sock.writableEnded, false, 'the login goes on');
    await turn();
    assert.equal(r.writes.length, 1, 'nothing more at the end of the turn');
    assert.equal(r.sock.streamWrites, 0);
  });

  it('PDUs queued outside receive() are written at the end of the turn, all in one write', async () => {
    const r = rig();
    const a = Buffer.alloc(48, 0x3f);
    const b = Buffer.alloc(48, 0x20);
    r.conn.send(a);
    r.conn.send(b, Buffer.alloc(8, 1));
    assert.equal(r.writes.length, 0, 'not written yet');
    await turn();
    assert.equal(r.writes.length, 1, 'one write for the turn');
    assert.deepEqual(r.writes[0], Buffer.concat([a, b, Buffer.alloc(8, 1)]));
  });

  it('after receive() a later send() in the same turn waits for the end of the turn again', async () => {
    const r = rig();
    r.conn.receive(loginRequest(3));
    assert.equal(r.writes.length, 1);
    r.conn.send(Buffer.alloc(48, 0x3f));
    assert.equal(r.writes.length, 1, 'not inside receive() any more: queued for the turn');
    await turn();
    assert.equal(r.writes.length, 2);
    assert.deepEqual(r.writes[1], Buffer.alloc(48, 0x3f));
  });
});
