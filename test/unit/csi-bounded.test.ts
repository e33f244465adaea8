// src/csi/bounded.ts: error messages and logged values stay small whatever a caller sends.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { boundedMessage, boundedValue, keyList, MAX_MESSAGE_CHARS } from '../../src/csi/bounded.js';
import { parseParameters } from '../../src/csi/validate.js';

describe('CSI bounds', () => {
  it('keyList names the first keys and counts the rest', () => {
    assert.equal(keyList(['a']), '"a"');
    assert.equal(keyList(['a', 'b', 'c', 'd', 'e']), '"a", "b", "c", "d", "e"');
    assert.equal(keyList(['a', 'b', 'c', 'd', 'e', 'f', 'g']), '"a", "b", "c", "d", "e" and 2 more');
    assert.ok(keyList(['x'.repeat(10_000)]).length < 100);
  });

  it('messages are cut to MAX_MESSAGE_CHARS, saying how much was left out', () => {
    assert.equal(boundedMessage('short'), 'short');
    const m = boundedMessage('y'.repeat(100_000));
    assert.equal(m.length, MAX_MESSAGE_CHARS);
    assert.match(m, /… \(\d+ more characters\)$/);
  });

  it('logged values: long strings, big maps and arrays, deep nesting bounded', () => {
    const params: Record<string, string> = {};
    for (let i = 0; i < 10_000; i++) params[`k${i}`] = 'v'.repeat(1000);
    let deep: unknown = 'leaf';
    for (let i = 0; i < 100; i++) deep = { d: deep };
    const out = JSON.stringify(boundedValue({ name: 'n'.repeat(100_000), parameters: params, list: new Array(5000).fill('x'), deep }));
    assert.ok(out.length < 20_000, `${out.length} characters`);
    assert.match(out, /"…":"9968 more keys"/);
    assert.match(out, /"… 4968 more"/);
    assert.match(out, /nested too deep/);
    assert.deepEqual(boundedValue({ a: 1, b: [true, null], c: 's' }), { a: 1, b: [true, null], c: 's' });
  });

  it('10,000 unknown StorageClass parameters: INVALID_ARGUMENT with a short message', () => {
    const params: Record<string, string> = {};
    for (let i = 0; i < 10_000; i++) params[`unknown-${i}`] = 'x';
    assert.throws(
      () => parseParameters(params),
      (err: Error) => err.message.length < 400 && /unknown keys "unknown-0", .* and 9995 more; Lunar understands/.test(err.message),
    );
  });
});
