// src/scsi/gate.ts TaskAbort: the per-task abort flag that stands in for an AbortController.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AbortedError, IoGate, TaskAbort } from '../../src/scsi/gate.js';

describe('TaskAbort', () => {
  it('runs each listener once on abort, none after removal, none added after abort', () => {
    const a = new TaskAbort();
    let ran = 0;
    let removed = 0;
    const gone = (): void => {
      removed++;
    };
    a.addEventListener('abort', () => ran++);
    a.addEventListener('abort', gone);
    a.removeEventListener('abort', gone);
    assert.equal(a.aborted, false);
    a.abort();
    a.abort();
    assert.equal(a.aborted, true);
    assert.equal(ran, 1);
    assert.equal(removed, 0);
    a.addEventListener('abort', () => ran++);
    assert.equal(ran, 1);
  });

  it('ends a wait for the IoGate like an AbortSignal does', async () => {
    const gate = new IoGate();
    const release = await gate.acquire(true);
    const a = new TaskAbort();
    const waiting = gate.acquire(false, a);
    a.abort();
    await assert.rejects(waiting, AbortedError);
    release();
    await assert.rejects(gate.acquire(false, a), AbortedError);
    const r = await gate.acquire(false, new TaskAbort());
    r();
  });
});
