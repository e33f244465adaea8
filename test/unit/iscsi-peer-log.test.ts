// src/iscsi/peer-log.ts: the warn lines a peer can cause are bounded per peer, per interval and in
// total, summed up once per interval, and the limiter's own memory is bounded; EventSummary writes one
// line per interval for events never logged one by one. The clock is a number the test moves.

import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { pino, type Logger } from 'pino';
import { EventSummary, PeerLog, type PeerEvent } from '../../src/iscsi/peer-log.js';

function sink(): { lines: Record<string, unknown>[]; logger: Logger } {
  const lines: Record<string, unknown>[] = [];
  const w = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, logger: pino({ level: 'info' }, w) };
}

describe('peer log', () => {
  it('writes a few lines per peer, then one summary per interval with the counts', () => {
    const { lines, logger } = sink();
    let now = 1_000_000;
    const pl = new PeerLog({ logger, now: () => now, linesPerPeer: 3 });
    for (let i = 0; i < 500; i++) pl.warn('192.0.2.7', 'malformed-pdu', { err: `bad ${i}` }, 'malformed PDU rejected');
    pl.warn('192.0.2.7', 'login-refused', {}, 'iSCSI login refused');
    pl.warn('192.0.2.8', 'malformed-pdu', {}, 'malformed PDU rejected');
    assert.equal(lines.length, 4, 'three lines of the flooding peer, one of the other');
    assert.deepEqual(
      lines.map((l) => l.remote),
      ['192.0.2.7', '192.0.2.7', '192.0.2.7', '192.0.2.8'],
    );
    assert.equal(lines[0]!.err, 'bad 0');
    assert.equal(pl.suppressed, 498);
    now += 59_999;
    pl.tick();
    assert.equal(lines.length, 4, 'no summary before the minute is over');
    now += 1;
    pl.tick();
    assert.equal(lines.length, 5, 'one summary: the quiet peer logged everything it caused');
    assert.equal(lines[4]!.msg, '500 malformed PDUs, 1 refused login from 192.0.2.7 in the last minute');
    assert.equal(lines[4]!.notLogged, 498);
    // A new window: the peer gets its lines again.
    pl.warn('192.0.2.7', 'reject', {}, 'SCSI command rejected');
    assert.equal(lines.length, 6);
    pl.tick();
    assert.equal(lines.length, 6);
  });

  it('flush writes the summaries of the window at once (shutdown)', () => {
    const { lines, logger } = sink();
    const pl = new PeerLog({ logger, now: () => 0, linesPerPeer: 1 });
    pl.warn('a', 'reject', {}, 'x');
    pl.warn('a', 'reject', {}, 'x');
    pl.flush();
    assert.equal(lines.at(-1)!.msg, '2 rejected commands from a in the last minute');
    pl.flush();
    assert.equal(lines.length, 2, 'nothing left to say');
  });

  it('tracks at most maxPeers peers; the evicted ones are summed up in one line', () => {
    const { lines, logger } = sink();
    let now = 0;
    const pl = new PeerLog({ logger, now: () => now, linesPerPeer: 1, maxPeers: 10, linesPerInterval: 1000 });
    for (let p = 0; p < 100; p++) for (let k = 0; k < 3; k++) pl.warn(`10.0.${p}.1`, 'malformed-pdu', {}, 'm');
    assert.equal(pl.trackedPeers, 10);
    assert.equal(lines.length, 100);
    now = 60_000;
    pl.tick();
    const summaries = lines.slice(100);
    assert.equal(summaries.length, 11, 'the 10 tracked peers, then the others');
    assert.equal(summaries.at(-1)!.msg, '270 malformed PDUs from 90 other peers in the last minute');
  });

  it('bounds the lines per interval whatever the peers and events (property)', () => {
    const events: PeerEvent[] = ['malformed-pdu', 'reject', 'login-refused', 'protocol-error'];
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ peer: fc.integer({ min: 0, max: 400 }), ev: fc.integer({ min: 0, max: 3 }), dt: fc.integer({ min: 0, max: 2000 }) }),
          {
            maxLength: 3000,
          },
        ),
        (ops) => {
          const { lines, logger } = sink();
          let now = 0;
          const opts = { linesPerPeer: 4, linesPerInterval: 50, summaryLinesPerInterval: 10, maxPeers: 64, intervalMs: 60_000 };
          const pl = new PeerLog({ logger, now: () => now, ...opts });
          const perWindow = new Map<number, number>();
          let total = 0;
          for (const o of ops) {
            now += o.dt;
            const before = lines.length;
            pl.warn(`p${o.peer}`, events[o.ev]!, {}, 'line');
            total += 1;
            const w = Math.floor(now / 60_000);
            perWindow.set(w, (perWindow.get(w) ?? 0) + lines.length - before);
            assert.ok(pl.trackedPeers <= opts.maxPeers);
          }
          pl.flush();
          // A window's own lines plus the previous window's summaries (written when it closes).
          for (const n of perWindow.values())
            assert.ok(n <= opts.linesPerInterval + opts.summaryLinesPerInterval + 1, `${n} lines in a window`);
          // Nothing is lost: every event is in a line or a summary.
          const oneByOne = lines.filter((l) => l.event !== 'peer-summary').length;
          assert.equal(oneByOne + pl.suppressed, total);
          if (pl.suppressed > 0)
            assert.ok(
              lines.some((l) => l.event === 'peer-summary'),
              'what was not logged is summed up',
            );
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('event summary', () => {
  it('writes one line per interval with the count, the reasons and a few addresses', () => {
    const { lines, logger } = sink();
    let now = 0;
    const s = new EventSummary({
      logger,
      now: () => now,
      sampleAddresses: 3,
      line: ({ count, byReason, addresses, span }) => ({
        fields: { event: 'test' },
        msg: `${count} timeouts (${byReason.get('x') ?? 0} x) in the last ${span}, from ${addresses}`,
      }),
    });
    for (let i = 0; i < 1000; i++) s.record(`127.0.0.${i % 7}`, i % 2 === 0 ? 'x' : 'y');
    assert.equal(lines.length, 0, 'never one by one');
    now = 60_000;
    s.tick();
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.msg, '1000 timeouts (500 x) in the last minute, from 127.0.0.0, 127.0.0.1, 127.0.0.2 and 4 more');
    assert.equal(lines[0]!.count, 1000);
    assert.equal(lines[0]!.distinctAddresses, 7);
    assert.equal(s.total, 1000);
    now = 120_000;
    s.tick();
    assert.equal(lines.length, 1, 'a quiet interval writes nothing');
    s.record('::1');
    s.flush();
    assert.equal(lines.length, 2);
  });
});
