// src/iscsi/buffer-pool.ts: write buffers are reused only when whole, of the same size, within the cap.
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

  it('keeps no small buffers, no views and nothing beyond its cap', () => {
    const pool = new BufferPool(2 << 20);
    pool.give(Buffer.allocUnsafe(4096));
    const big = Buffer.allocUnsafe(4 << 20);
    pool.give(big.subarray(0, 1 << 20));
    assert.equal(pool.freeBytes, 0);
    pool.give(Buffer.allocUnsafe(1 << 20));
    pool.give(Buffer.allocUnsafe(1 << 20));
    pool.give(Buffer.allocUnsafe(1 << 20));
    assert.equal(pool.freeBytes, 2 << 20);
  });
});
