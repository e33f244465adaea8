// src/iscsi/buffer-pool.ts: buffers are reused only when they came from the pool, for the same size, within the cap.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool } from '../../src/iscsi/buffer-pool.js';

describe('BufferPool', () => {
  it('hands a returned buffer out again for the same size only', () => {
    const pool = new BufferPool(8 << 20);
    const a = pool.take(1 << 20);
    assert.equal(a.length, 1 << 20);
    pool.give(a);
    assert.equal(pool.freeBytes, 1 << 20);
    assert.notEqual(pool.take(512 << 10), a, 'another size gets a new buffer');
    assert.equal(pool.take(1 << 20), a, 'same size: reused');
    assert.equal(pool.freeBytes, 0);
    assert.notEqual(pool.take(1 << 20), a, 'a buffer is handed out once');
  });

  it('takes back a view of a lent buffer as the whole buffer, once', () => {
    const pool = new BufferPool(8 << 20, 4096);
    const a = pool.take(8192);
    pool.give(a.subarray(0, 4096));
    assert.equal(pool.freeBytes, 8192);
    pool.give(a);
    assert.equal(pool.freeBytes, 8192, 'a second give of the same buffer is ignored');
    assert.equal(pool.take(8192), a);
  });

  it('takes a lent buffer back once whichever comes first, itself or a view, and lends it again', () => {
    const pool = new BufferPool(8 << 20, 4096);
    const a = pool.take(8192);
    pool.give(a);
    pool.give(a.subarray(4096));
    pool.give(a);
    assert.equal(pool.freeBytes, 8192, 'one return, later ones ignored');
    assert.equal(pool.take(8192), a);
    pool.give(a.subarray(0, 100));
    pool.give(a);
    assert.equal(pool.freeBytes, 8192, 'a view first, then the buffer itself: still one return');
    assert.equal(pool.take(8192), a);
    pool.give(a);
    assert.equal(pool.take(8192), a, 'lent again after every return');
    assert.equal(pool.freeBytes, 0);
  });

  it('keeps no small buffers, nothing it did not lend and nothing beyond its cap', () => {
    const pool = new BufferPool(2 << 20);
    const small = pool.take(4096);
    pool.give(small);
    pool.give(Buffer.allocUnsafe(1 << 20));
    assert.equal(pool.freeBytes, 0);
    const lent = [pool.take(1 << 20), pool.take(1 << 20), pool.take(1 << 20)];
    for (const b of lent) pool.give(b);
    assert.equal(pool.freeBytes, 2 << 20);
  });
});
