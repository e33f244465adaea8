// Outgoing PDU slabs (src/iscsi/connection.ts send()/flush(), pool src/iscsi/buffer-pool.ts outputSlabs):
// a connection takes a slab only when it has something to send, the slab goes back to the pool only
// once the socket's write of it completed, a slab in flight is never handed to another connection,
// and the pool keeps at most its cap.
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { BufferPool, outputSlabs, SLAB_SIZE } from '../../src/iscsi/buffer-pool.js';
import { IscsiConnection } from '../../src/iscsi/connection.js';
import { testConnectionHooks } from '../support/connection-hooks.js';
import { FakeSocketBase } from '../support/fake-socket.js';

/** A socket whose write callbacks wait until complete() is called. */
class FakeSocket extends FakeSocketBase {
  writableLength = 0;
  /** Every write: the memory the socket holds until its callback, and that callback. */
  readonly writes: { buf: Buffer; cb: (() => void) | undefined }[] = [];
  write(buf: Buffer, cb?: () => void): boolean {
    this.writes.push({ buf, cb });
    return true;
  }
  /** Complete every write so far, in order (what libuv reports). */
  complete(): void {
    for (const w of this.writes.splice(0)) w.cb?.();
  }
}

function connection(): { conn: IscsiConnection; sock: FakeSocket } {
  const sock = new FakeSocket();
  const hooks = testConnectionHooks();
  return { conn: new IscsiConnection(sock as unknown as Socket, hooks), sock };
}

/** A 48-byte header with a recognisable first byte. */
function header(tag: number): Buffer {
  const h = Buffer.alloc(48);
  h[0] = tag;
  return h;
}

/** The slab a write's bytes live in. */
function slabOf(b: Buffer): ArrayBufferLike {
  return b.buffer;
}

describe('outgoing PDU slabs', () => {
  it('are taken when there is something to send and come back only after the write completed', () => {
    const { conn, sock } = connection();
    const freeBefore = outputSlabs.freeBytes;
    conn.send(header(1), Buffer.alloc(4096, 1));
    conn.send(header(2));
    conn.flush();
    assert.equal(sock.writes.length, 1, 'one write for the turn');
    const inFlight = slabOf(sock.writes[0]!.buf);
    assert.equal(sock.writes[0]!.buf.length, 48 + 4096 + 48);
    assert.ok(outputSlabs.freeBytes <= freeBefore, 'the slab is not free while the socket holds it');

    // Another connection sending meanwhile gets another slab.
    const other = connection();
    other.conn.send(header(3), Buffer.alloc(512, 3));
    other.conn.flush();
    const otherSlab = slabOf(other.sock.writes[0]!.buf);
    assert.notEqual(otherSlab, inFlight, 'a slab in flight is never handed out');
    assert.equal(sock.writes[0]!.buf[0], 1, 'the bytes in flight are untouched');
    assert.equal(sock.writes[0]!.buf[48], 1);

    const freeInFlight = outputSlabs.freeBytes;
    sock.complete();
    assert.equal(outputSlabs.freeBytes, freeInFlight + SLAB_SIZE, 'back in the pool after the write completed');
    other.sock.complete();
    // The most recently returned slab is the next one handed out.
    const third = connection();
    third.conn.send(header(4));
    third.conn.flush();
    assert.equal(slabOf(third.sock.writes[0]!.buf), otherSlab);
    third.sock.complete();
  });

  it('hold no slab between turns, and reuse one slab turn after turn', () => {
    const { conn, sock } = connection();
    conn.send(header(1), Buffer.alloc(4096));
    conn.flush();
    const first = slabOf(sock.writes[0]!.buf);
    sock.complete();
    const free = outputSlabs.freeBytes;
    assert.ok(free >= SLAB_SIZE, 'the idle connection holds no slab');
    conn.send(header(2), Buffer.alloc(4096));
    conn.flush();
    assert.equal(slabOf(sock.writes[0]!.buf), first, 'the same (warm) slab again');
    assert.equal(outputSlabs.freeBytes, free - SLAB_SIZE);
    sock.complete();
    assert.equal(outputSlabs.freeBytes, free);
  });

  it('span several slabs in one turn and return all of them', () => {
    const { conn, sock } = connection();
    const free = outputSlabs.freeBytes;
    const pdus = Math.ceil((3 * SLAB_SIZE) / (48 + 4096));
    for (let i = 0; i < pdus; i++) conn.send(header(i & 0xff), Buffer.alloc(4096, i & 0xff));
    conn.flush();
    const slabs = new Set(sock.writes.map((w) => slabOf(w.buf)));
    assert.ok(slabs.size >= 3, `${slabs.size} slabs`);
    const bytes = sock.writes.reduce((n, w) => n + w.buf.length, 0);
    assert.equal(bytes, pdus * (48 + 4096), 'every byte queued once');
    sock.complete();
    assert.equal(outputSlabs.freeBytes, Math.max(free, slabs.size * SLAB_SIZE));
  });

  it('go back to the pool at once when the socket is already destroyed', () => {
    const { conn, sock } = connection();
    const free = outputSlabs.freeBytes;
    conn.send(header(1));
    sock.destroyed = true;
    conn.flush();
    assert.equal(sock.writes.length, 0);
    assert.equal(outputSlabs.freeBytes, Math.max(free, SLAB_SIZE));
  });

  it('come from a pool that keeps at most its cap', () => {
    const pool = new BufferPool(2 * SLAB_SIZE, SLAB_SIZE);
    const lent = [pool.take(SLAB_SIZE), pool.take(SLAB_SIZE), pool.take(SLAB_SIZE)];
    assert.equal(new Set(lent).size, 3, 'three distinct slabs while all are lent');
    for (const b of lent) pool.give(b);
    assert.equal(pool.freeBytes, 2 * SLAB_SIZE, 'the third is left to the garbage collector');
    const again = [pool.take(SLAB_SIZE), pool.take(SLAB_SIZE), pool.take(SLAB_SIZE)];
    assert.equal(new Set(again).size, 3, 'never the same slab twice while lent');
    assert.equal(pool.freeBytes, 0);
  });
});
