import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AbortedError, IoGate } from '../../src/scsi/gate.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('IoGate (shared writes, exclusive COMPARE AND WRITE / quiesce)', () => {
  it('shares between writers, excludes an exclusive holder, FIFO so exclusives are not starved', async () => {
    const g = new IoGate();
    const order: string[] = [];
    const r1 = await g.acquire(false);
    const r2 = await g.acquire(false);
    const ex = g.acquire(true).then((rel) => {
      order.push('exclusive');
      return rel;
    });
    const late = g.acquire(false).then((rel) => {
      order.push('late-shared');
      return rel;
    });
    await tick();
    assert.deepEqual(order, [], 'exclusive waits for shared holders; a later shared waits behind it');
    r1();
    await tick();
    assert.deepEqual(order, []);
    r2();
    const relEx = await ex;
    await tick();
    assert.deepEqual(order, ['exclusive']);
    relEx();
    relEx(); // idempotent
    (await late)();
    assert.deepEqual(order, ['exclusive', 'late-shared']);
  });

  it('an aborted waiter leaves the queue and the next one proceeds', async () => {
    const g = new IoGate();
    const hold = await g.acquire(true);
    const ac = new AbortController();
    const aborted = g.acquire(false, ac.signal);
    const next = g.acquire(false);
    ac.abort();
    await assert.rejects(aborted, AbortedError);
    hold();
    (await next)();
    await assert.rejects(g.acquire(true, ac.signal), AbortedError);
    const again = await g.acquire(true);
    again();
  });

  it('run() releases on failure', async () => {
    const g = new IoGate();
    await assert.rejects(
      g.run(true, undefined, async () => Promise.reject(new Error('boom'))),
      /boom/,
    );
    const r = await g.acquire(true);
    r();
  });
});
