// A turn's PDUs straight to the kernel (src/iscsi/connection.ts flush(), hooks.sendNoWait, native
// sendNoWait): what the kernel took followed by what went on the stream is exactly what was queued, in
// order; the kernel is written to only when the stream holds nothing, the socket has a handle and is not
// ended; slabs and afterWrite() callbacks are released at once when the kernel took everything and only
// after the stream's write completed otherwise; reading paused at the high-water mark resumes.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync, mkdtempSync } from 'node:fs';
import net, { type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { outputSlabs, SLAB_SIZE } from '../../src/iscsi/buffer-pool.js';
import { IscsiConnection, type ConnectionHooks } from '../../src/iscsi/connection.js';
import { loadNative } from '../../src/storage/native.js';
import { testConnectionHooks } from '../support/connection-hooks.js';
import { FakeSocketBase } from '../support/fake-socket.js';

const FD = 57;
const EAGAIN = 11;
const EPIPE = 32;
const ENOTSOCK = 88;
/** Data segments above it are queued by reference (connection.ts COPY_LIMIT). */
const COPY_LIMIT = 16 * 1024;
/** connection.ts WRITE_HIGH_WATER: send() pauses reading above it. */
const WRITE_HIGH_WATER = 16 * 1024 * 1024;

/**
 * The part of net.Socket that IscsiConnection uses. Writes are held until complete(); writableLength
 * counts the bytes of writes not completed, write() returns false at the high-water mark and 'drain'
 * follows once such a write completed (as Writable does). `wire` is what the peer received, in order:
 * what the fake kernel took, and each stream write's bytes as they are when the write completes.
 */
class FakeSocket extends FakeSocketBase {
  override _handle: { fd: number } | null = { fd: FD };
  private needDrain = false;
  readonly writes: { buf: Buffer; cb: (() => void) | undefined }[] = [];
  readonly wire: Buffer[] = [];
  get writableLength(): number {
    return this.writes.reduce((n, w) => n + w.buf.length, 0);
  }
  write(buf: Buffer, cb?: () => void): boolean {
    this.writes.push({ buf, cb });
    const ok = this.writableLength < this.writableHighWaterMark;
    if (!ok) this.needDrain = true;
    return ok;
  }
  override destroy(): this {
    super.destroy();
    // Node calls pending writes' callbacks with ERR_STREAM_DESTROYED; their bytes never leave.
    for (const w of this.writes.splice(0)) w.cb?.();
    return this;
  }
  /** The first `count` writes reach the peer, in order, and their callbacks run. */
  complete(count = this.writes.length): void {
    for (const w of this.writes.splice(0, count)) {
      this.wire.push(Buffer.from(w.buf));
      w.cb?.();
    }
    if (this.writes.length === 0 && this.needDrain) {
      this.needDrain = false;
      this.emit('drain');
    }
  }
  wireBytes(): Buffer {
    return Buffer.concat(this.wire);
  }
}

/** How many bytes the fake kernel takes of a sendmsg of `pieces`: a count, or -errno. */
type Take = (pieces: readonly Buffer[]) => number;

interface Rig {
  conn: IscsiConnection;
  sock: FakeSocket;
  /** The descriptor of every sendNoWait call. */
  calls: number[];
  /** Calls made while the stream held bytes, or after end or destroy. */
  violations: string[];
  take: { next: Take };
}

function rig(): Rig {
  const sock = new FakeSocket();
  const calls: number[] = [];
  const violations: string[] = [];
  const take: { next: Take } = { next: (p) => total(p) };
  const hooks = testConnectionHooks({
    sendNoWait: (fd, pieces) => {
      calls.push(fd);
      if (sock.writableLength > 0) violations.push(`called while the stream holds ${sock.writableLength} bytes`);
      if (sock.writableEnded) violations.push('called after end');
      if (sock.destroyed || sock._handle === null) violations.push('called without a handle');
      const n = take.next(pieces);
      assert.ok(n <= total(pieces), `take ${n} of ${total(pieces)}`);
      if (n > 0) sock.wire.push(Buffer.from(Buffer.concat(pieces as Buffer[]).subarray(0, n)));
      return n;
    },
  });
  return { conn: new IscsiConnection(sock as unknown as Socket, hooks), sock, calls, violations, take };
}

function total(pieces: readonly Buffer[]): number {
  return pieces.reduce((n, b) => n + b.length, 0);
}

/** A 48-byte header with recognisable bytes. */
function header(tag: number): Buffer {
  const h = Buffer.alloc(48, tag & 0xff);
  h.writeUInt32BE(tag >>> 0, 4);
  return h;
}

/** n bytes of a pattern that differs with seed and offset. */
function data(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (seed * 31 + i * 7 + (i >> 8)) & 0xff;
  return b;
}

/** What the connection puts on the wire for send(h, d) without digests: header, data, zero padding. */
function pdu(h: Buffer, d?: Buffer): Buffer {
  if (!d || d.length === 0) return Buffer.from(h);
  return Buffer.concat([h, d, Buffer.alloc((4 - (d.length % 4)) % 4)]);
}

/** Enough free slabs in the pool that every take and give of a test leaves freeBytes where it was. */
function warmPool(slabs: number): number {
  const lent = Array.from({ length: slabs }, () => outputSlabs.take(SLAB_SIZE));
  for (const b of lent) outputSlabs.give(b);
  return outputSlabs.freeBytes;
}

/**
 * One turn of four PDUs: a copied 4 KiB segment, a 40 KiB and a 100 KiB segment queued by reference,
 * and a header alone. Pieces: [h1 d1 h2] [d2] [h3] [d3] [h4].
 */
function queueTurn(conn: IscsiConnection, expected: Buffer[], seed = 1): void {
  const sends: [Buffer, Buffer | undefined][] = [
    [header(seed), data(4096, seed)],
    [header(seed + 1), data(40 * 1024, seed + 1)],
    [header(seed + 2), data(100 * 1024 + 2, seed + 2)],
    [header(seed + 3), undefined],
  ];
  for (const [h, d] of sends) {
    expected.push(pdu(h, d));
    conn.send(h, d);
  }
}

const PIECES = [48 + 4096 + 48, 40 * 1024, 48, 100 * 1024 + 2, 2 + 48];

const cases: { name: string; take: Take; all: boolean }[] = [
  { name: 'everything', take: (p) => total(p), all: true },
  { name: 'nothing (0)', take: () => 0, all: false },
  { name: 'EAGAIN', take: () => -EAGAIN, all: false },
  { name: 'EPIPE', take: () => -EPIPE, all: false },
  { name: 'a cut inside the first piece (a slab view)', take: () => 100, all: false },
  { name: 'a cut inside a piece queued by reference', take: () => PIECES[0]! + 12345, all: false },
  { name: 'a cut at a piece boundary', take: () => PIECES[0]! + PIECES[1]!, all: false },
  { name: 'all but the last byte', take: (p) => total(p) - 1, all: false },
];

describe('direct send: one flush, the kernel taking a chosen amount', () => {
  it('the turn is queued as the pieces this test assumes', () => {
    const r = rig();
    const seen: number[] = [];
    r.take.next = (p) => {
      seen.push(...p.map((b) => b.length));
      return total(p);
    };
    queueTurn(r.conn, []);
    r.conn.flush();
    assert.deepEqual(seen, PIECES);
  });

  for (const c of cases) {
    it(`kernel takes ${c.name}: bytes in order, slabs and afterWrite released when the bytes are gone`, () => {
      const free = warmPool(16);
      const r = rig();
      r.take.next = c.take;
      const expected: Buffer[] = [];
      queueTurn(r.conn, expected);
      let after = 0;
      r.conn.afterWrite(() => after++);
      r.conn.flush();
      assert.deepEqual(r.calls, [FD], 'one sendmsg on the socket descriptor');
      if (c.all) {
        assert.equal(r.sock.writes.length, 0, 'nothing on the stream');
        assert.equal(after, 1, 'afterWrite at once');
        assert.equal(outputSlabs.freeBytes, free, 'slabs back at once');
      } else {
        assert.ok(r.sock.writes.length > 0, 'the rest is on the stream');
        assert.equal(after, 0, 'afterWrite waits for the stream');
        assert.ok(outputSlabs.freeBytes < free, 'slabs held while the stream holds their bytes');
        // Other connections take slabs meanwhile: a slab given back too early would be written over.
        const other = rig();
        other.take.next = (p) => total(p);
        for (let i = 0; i < 4; i++) other.conn.send(header(0xee), Buffer.alloc(8000, 0xee));
        other.conn.flush();
        r.sock.complete();
        assert.equal(after, 1, 'afterWrite once the stream write completed');
        assert.equal(outputSlabs.freeBytes, free, 'slabs back once the stream write completed');
      }
      assert.deepEqual(r.violations, []);
      assert.ok(r.sock.wireBytes().equals(Buffer.concat(expected)), 'kernel bytes then stream bytes = the PDUs in order');
    });
  }

  it('the next turn goes to the stream while the stream holds bytes, and to the kernel again once it is empty', () => {
    const free = warmPool(16);
    const r = rig();
    const expected: Buffer[] = [];
    r.take.next = () => PIECES[0]! + 7;
    queueTurn(r.conn, expected, 1);
    r.conn.flush();
    assert.equal(r.calls.length, 1);
    r.take.next = (p) => total(p);
    queueTurn(r.conn, expected, 10);
    let after = 0;
    r.conn.afterWrite(() => after++);
    r.conn.flush();
    assert.equal(r.calls.length, 1, 'no sendmsg while the stream holds bytes: they would be overtaken');
    assert.equal(after, 0);
    r.sock.complete(1); // part of the stream's writes completed: it still holds bytes
    assert.ok(r.sock.writableLength > 0);
    queueTurn(r.conn, expected, 20);
    r.conn.flush();
    assert.equal(r.calls.length, 1, 'still none');
    r.sock.complete();
    assert.equal(after, 1);
    queueTurn(r.conn, expected, 30);
    r.conn.flush();
    assert.equal(r.calls.length, 2, 'the stream is empty: straight to the kernel');
    assert.equal(r.sock.writes.length, 0);
    assert.deepEqual(r.violations, []);
    assert.ok(r.sock.wireBytes().equals(Buffer.concat(expected)));
    assert.equal(outputSlabs.freeBytes, free);
  });

  it('no sendmsg without a handle, after end, or after destroy', () => {
    const free = warmPool(16);
    // The handle is gone (closing): everything goes to the stream.
    const a = rig();
    const expectedA: Buffer[] = [];
    queueTurn(a.conn, expectedA);
    a.sock._handle = null;
    a.conn.flush();
    assert.deepEqual(a.calls, []);
    a.sock.complete();
    assert.ok(a.sock.wireBytes().equals(Buffer.concat(expectedA)));

    // The descriptor is read from the live handle each time.
    const b = rig();
    queueTurn(b.conn, []);
    b.conn.flush();
    b.sock._handle = { fd: FD + 1 };
    queueTurn(b.conn, []);
    b.conn.flush();
    assert.deepEqual(b.calls, [FD, FD + 1]);

    // Ended: no direct write.
    const c = rig();
    queueTurn(c.conn, []);
    c.sock.writableEnded = true;
    c.conn.flush();
    assert.deepEqual(c.calls, []);
    c.sock.complete();

    // Destroyed with PDUs queued: nothing is written, slabs and afterWrite are released at once.
    const d = rig();
    queueTurn(d.conn, []);
    let after = 0;
    d.conn.afterWrite(() => after++);
    d.sock.destroy();
    d.conn.flush();
    assert.deepEqual(d.calls, []);
    assert.equal(d.sock.writes.length, 0);
    assert.equal(after, 1);
    assert.equal(outputSlabs.freeBytes, free);

    // Closing flushes what is queued (straight to the kernel while the handle lives), then ends.
    const e = rig();
    const expectedE: Buffer[] = [];
    queueTurn(e.conn, expectedE);
    e.conn.destroy('test');
    assert.deepEqual(e.calls, [FD]);
    assert.ok(e.sock.wireBytes().equals(Buffer.concat(expectedE)));
    assert.equal(e.conn.send(header(9)), false);
    e.conn.flush();
    assert.deepEqual(e.calls, [FD], 'nothing after destroy');
    for (const x of [a, b, c, d, e]) assert.deepEqual(x.violations, []);
    assert.equal(outputSlabs.freeBytes, free);
  });
});

describe('direct send: reading paused at the high-water mark resumes', () => {
  /** More than WRITE_HIGH_WATER in one turn, so that send() pauses reading. */
  function bigTurn(conn: IscsiConnection, expected: Buffer[]): void {
    const d = data(1024 * 1024, 5);
    for (let i = 0; i <= WRITE_HIGH_WATER / d.length; i++) {
      const h = header(i);
      expected.push(pdu(h, d));
      conn.send(h, d);
    }
  }

  it('at once when the kernel took everything', () => {
    const r = rig();
    const expected: Buffer[] = [];
    bigTurn(r.conn, expected);
    assert.equal(r.sock.paused, true, 'send() paused reading');
    r.conn.flush();
    assert.equal(r.sock.paused, false);
    assert.ok(r.sock.wireBytes().equals(Buffer.concat(expected)));
    r.conn.send(header(1), Buffer.alloc(100));
    assert.equal(r.sock.paused, false, 'the bytes the kernel took no longer count against the high-water mark');
    r.conn.flush();
  });

  it('on drain when the kernel took nothing', () => {
    const r = rig();
    r.take.next = () => -EAGAIN;
    const expected: Buffer[] = [];
    bigTurn(r.conn, expected);
    r.conn.flush();
    assert.equal(r.sock.paused, true);
    r.sock.complete();
    assert.equal(r.sock.paused, false);
    assert.ok(r.sock.wireBytes().equals(Buffer.concat(expected)));
  });

  it('once the stream wrote the rest when the kernel took all but a few bytes (less than the stream high-water mark: no drain)', () => {
    const r = rig();
    r.take.next = (p) => total(p) - 100;
    const expected: Buffer[] = [];
    bigTurn(r.conn, expected);
    r.conn.flush();
    assert.equal(r.sock.writableLength, 100);
    r.sock.complete();
    assert.ok(r.sock.wireBytes().equals(Buffer.concat(expected)));
    assert.equal(r.sock.paused, false, 'reading stays paused: nothing will ever resume it');
  });
});

/** What the fake kernel takes at a flush: everything, an errno, the pieces before a boundary, or a fraction of the bytes. */
type TakeSpec = 'all' | 'eagain' | 'epipe' | 'boundary' | number;

type Step = { kind: 'send'; size: number; after: boolean } | { kind: 'flush'; take: TakeSpec } | { kind: 'complete'; count: number };

const takeArb: fc.Arbitrary<TakeSpec> = fc.oneof(
  fc.constant('all' as const),
  fc.constant('eagain' as const),
  fc.constant('epipe' as const),
  fc.constant('boundary' as const),
  fc.double({ min: 0, max: 1, noNaN: true }),
);

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('send' as const),
      size: fc.oneof(
        fc.constant(0),
        fc.integer({ min: 1, max: 64 }),
        fc.integer({ min: 1, max: COPY_LIMIT }),
        fc.integer({ min: COPY_LIMIT + 1, max: 200 * 1024 }),
      ),
      after: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('flush' as const), take: takeArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('complete' as const), count: fc.integer({ min: 1, max: 4 }) }) },
);

function takeOf(spec: TakeSpec, seed: number): Take {
  if (spec === 'all') return (p) => total(p);
  if (spec === 'eagain') return () => -EAGAIN;
  if (spec === 'epipe') return () => -EPIPE;
  if (spec === 'boundary') return (p) => total(p.slice(0, seed % (p.length + 1)));
  return (p) => Math.floor(total(p) * spec);
}

describe('direct send: random turns (property)', () => {
  it('the wire carries what was sent, in order; afterWrite only after its bytes left; every slab comes back', () => {
    const free = warmPool(128);
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 1, maxLength: 60 }), fc.nat(), (steps, seed) => {
        const r = rig();
        const expected: Buffer[] = [];
        let expectedBytes = 0;
        let pendingAfter = 0;
        const early: string[] = [];
        let n = 0;
        for (const step of steps) {
          if (step.kind === 'send') {
            const h = header(n);
            const d = step.size > 0 ? data(step.size, seed + n) : undefined;
            n++;
            const p = pdu(h, d);
            expected.push(p);
            expectedBytes += p.length;
            const byRef = r.conn.send(h, d);
            assert.equal(byRef, step.size > COPY_LIMIT);
            if (step.after) {
              const due = expectedBytes;
              pendingAfter++;
              r.conn.afterWrite(() => {
                pendingAfter--;
                const on = r.sock.wire.reduce((k, b) => k + b.length, 0);
                if (on < due) early.push(`afterWrite with ${on} of ${due} bytes on the wire`);
                // The caller reuses its buffer: a piece still queued would carry the new bytes.
                d?.fill(0xa5);
              });
            }
          } else if (step.kind === 'flush') {
            r.take.next = takeOf(step.take, seed + n);
            r.conn.flush();
          } else {
            r.sock.complete(step.count);
          }
          if (r.sock.writes.length === 0 && r.conn['out'].length === 0 && r.conn['slab'] === null) {
            assert.equal(outputSlabs.freeBytes, free, 'nothing in flight: every slab is back');
          }
        }
        r.take.next = takeOf(seed % 2 === 0 ? 'all' : 0.5, 0);
        r.conn.flush();
        r.sock.complete();
        assert.deepEqual(r.violations, []);
        assert.deepEqual(early, []);
        assert.equal(pendingAfter, 0, 'every afterWrite ran');
        assert.ok(r.sock.wireBytes().equals(Buffer.concat(expected)), 'the wire is what was sent, in order');
        assert.equal(outputSlabs.freeBytes, free, 'every slab came back');
      }),
      { numRuns: 300 },
    );
  });
});

describe('direct send over a real loopback socket with the native sendmsg', () => {
  const native = loadNative();

  async function pair(): Promise<{ server: net.Server; accepted: Socket; client: Socket }> {
    const server = net.createServer({ noDelay: true, pauseOnConnect: true });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const acceptedP = new Promise<Socket>((resolve) => server.once('connection', resolve));
    const client = net.connect({ port, host: '127.0.0.1' });
    client.pause();
    await new Promise<void>((resolve) => client.once('connect', resolve));
    return { server, accepted: await acceptedP, client };
  }

  /** p, or a failure after ms (bytes lost or reordered would otherwise leave the test waiting). */
  async function within<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
    let t: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what()}: not within ${ms} ms`)), ms);
    });
    try {
      return await Promise.race([p, timeout]);
    } finally {
      clearTimeout(t);
    }
  }

  function hooksWith(sendNoWait: ConnectionHooks['sendNoWait']): ConnectionHooks {
    return testConnectionHooks(sendNoWait ? { sendNoWait } : {});
  }

  it('~32 MiB in PDUs of varied sizes while the peer does not read, then reads: the same bytes in order', async () => {
    const { server, accepted, client } = await pair();
    const results = { full: 0, partial: 0, eagain: 0, other: 0, calls: 0 };
    const conn = new IscsiConnection(
      accepted,
      hooksWith((fd, pieces) => {
        results.calls++;
        const n = native.sendNoWait(fd, pieces);
        if (n === total(pieces)) results.full++;
        else if (n >= 0) results.partial++;
        else if (n === -EAGAIN) results.eagain++;
        else results.other++;
        return n;
      }),
    );
    try {
      const expectHash = createHash('sha256');
      let sent = 0;
      let s = 12345;
      const rand = (k: number): number => {
        s = (s * 1103515245 + 12345) & 0x7fffffff;
        return s % k;
      };
      let tag = 0;
      const sendTurn = (bytes: number): void => {
        let turn = 0;
        while (turn < bytes) {
          const kind = rand(4);
          const size = kind === 0 ? 0 : kind === 1 ? 1 + rand(COPY_LIMIT) : kind === 2 ? 1 + rand(512) : COPY_LIMIT + 1 + rand(1024 * 1024);
          const h = header(tag);
          const d = size > 0 ? data(size, tag) : undefined;
          tag++;
          const p = pdu(h, d);
          expectHash.update(p);
          sent += p.length;
          turn += p.length;
          conn.send(h, d);
        }
      };
      const TOTAL = 32 * 1024 * 1024;
      // The peer does not read: the first turns fill the kernel's buffers, the rest waits on the stream.
      for (let i = 0; i < 6; i++) {
        sendTurn(2 * 1024 * 1024);
        await new Promise((resolve) => setImmediate(resolve));
      }
      assert.ok(results.partial + results.eagain > 0 || accepted.writableLength > 0, 'the kernel buffer filled');
      const got = createHash('sha256');
      let received = 0;
      const done = new Promise<void>((resolve) => {
        client.on('data', (chunk: Buffer) => {
          got.update(chunk);
          received += chunk.length;
          if (received >= TOTAL && received === sent) resolve();
        });
      });
      client.resume();
      // Meanwhile more turns, some while the stream still holds bytes, some after it drained.
      while (sent < TOTAL) {
        sendTurn(Math.min(TOTAL - sent, 256 * 1024 + rand(2 * 1024 * 1024)));
        await new Promise((resolve) => setTimeout(resolve, rand(3)));
      }
      await within(done, 60_000, () => `${received} of ${sent} bytes read`);
      assert.equal(received, sent);
      assert.equal(got.digest('hex'), expectHash.digest('hex'), 'the bytes the peer read are those sent, in order');
      assert.equal(results.other, 0, `no other error (${JSON.stringify(results)})`);
      assert.ok(results.full > 0, `some turns went straight to the kernel (${JSON.stringify(results)})`);
      assert.ok(results.partial + results.eagain > 0, `some did not fit (${JSON.stringify(results)})`);
      assert.equal(accepted.isPaused(), false, 'reading is not left paused');
    } finally {
      conn.destroy('test');
      client.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('reading resumes when the kernel took all but a few bytes of a turn above the high-water mark (net.Socket: no drain)', async () => {
    const { server, accepted, client } = await pair();
    // As if the send buffer had room for all but the last 100 bytes (tcp_wmem above 16 MiB); the bytes
    // themselves are not sent: only the socket's state is looked at.
    const conn = new IscsiConnection(
      accepted,
      hooksWith((_fd, pieces) => total(pieces) - 100),
    );
    accepted.resume();
    const d = data(1024 * 1024, 3);
    for (let i = 0; i <= WRITE_HIGH_WATER / d.length; i++) conn.send(header(i), d);
    assert.equal(accepted.isPaused(), true, 'send() paused reading');
    const written = new Promise<void>((resolve) => conn.afterWrite(resolve));
    conn.flush();
    await within(written, 10_000, () => 'the write of the rest');
    await new Promise((resolve) => setTimeout(resolve, 50));
    const paused = accepted.isPaused();
    conn.destroy('test');
    client.destroy();
    await new Promise((resolve) => server.close(resolve));
    assert.equal(paused, false, 'reading stays paused: the initiator is never read again');
  });

  it('native sendNoWait: -ENOTSOCK on a file and nothing written; at most IOV_MAX buffers; -EAGAIN when full', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lunar-sendnowait-'));
    try {
      const path = join(dir, 'f');
      const fd = openSync(path, 'w+');
      try {
        assert.equal(native.sendNoWait(fd, [Buffer.from('hello'), Buffer.alloc(5000, 1)]), -ENOTSOCK);
      } finally {
        closeSync(fd);
      }
      assert.equal(readFileSync(path).length, 0, 'nothing written to the file');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.throws(() => native.sendNoWait(-1, []), TypeError);
    assert.throws(() => native.sendNoWait(0, [Buffer.alloc(1), 'x' as unknown as Buffer]), TypeError);

    const { server, accepted, client } = await pair();
    try {
      const fd = (accepted as unknown as { _handle: { fd: number } })._handle.fd;
      // 2000 small buffers: one sendmsg carries the first IOV_MAX (1024) of them.
      const small = Array.from({ length: 2000 }, (_, i) => Buffer.alloc(10, i & 0xff));
      assert.equal(native.sendNoWait(fd, small), 1024 * 10);
      assert.equal(native.sendNoWait(fd, []), 0);
      // The peer does not read: the buffers fill and the call returns -EAGAIN without blocking.
      const chunk = Buffer.alloc(1024 * 1024, 7);
      let last = 0;
      let sentBytes = 1024 * 10;
      for (let i = 0; i < 1000 && last >= 0; i++) {
        last = native.sendNoWait(fd, [chunk]);
        if (last > 0) sentBytes += last;
      }
      assert.equal(last, -EAGAIN);
      let received = 0;
      const all = new Promise<void>((resolve) =>
        client.on('data', (c: Buffer) => {
          received += c.length;
          if (received === sentBytes) resolve();
        }),
      );
      client.resume();
      await within(all, 30_000, () => `${received} of ${sentBytes} bytes read`);
    } finally {
      accepted.destroy();
      client.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
