// src/volumes/space-condition.ts: writes that fail for want of space are logged once at once, then summed up
// at most once per interval; the condition is abnormal until free space is seen again, not when a write
// succeeds. The interval is shortened here; the free space is a number the test sets.

import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { SPACE_BACK_BYTES, SpaceConditions } from '../../src/volumes/space-condition.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function harness(intervalMs: number): { sc: SpaceConditions; lines: Record<string, unknown>[]; setFree: (n: number) => void } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  let free = 0;
  const sc = new SpaceConditions({
    log: pino({ level: 'info' }, sink),
    dataDir: '/data',
    availableBytes: () => Promise.resolve(free),
    intervalMs,
  });
  return { sc, lines, setFree: (n) => (free = n) };
}

describe('space conditions', () => {
  it('logs the first failure at once and then one summary per interval, however many failures', { timeout: 10_000 }, async () => {
    const { sc, lines } = harness(200);
    try {
      for (let i = 0; i < 10_000; i++) sc.failed('vol-a');
      sc.failed('vol-b');
      assert.equal(lines.length, 2, 'one line per volume at once');
      assert.match(String(lines[0]?.msg), /a write to vol-a failed with ENOSPC: no space left in \/data/);
      await sleep(300);
      const summaries = lines.filter((l) => l.count !== undefined);
      assert.equal(summaries.length, 1, JSON.stringify(lines));
      assert.equal(summaries[0]?.msg, '9999 writes failed with ENOSPC on vol-a in the last 0.2 s');
      for (let i = 0; i < 5; i++) sc.failed('vol-a');
      await sleep(50);
      assert.equal(lines.filter((l) => l.count !== undefined).length, 1, 'no second summary within the interval');
      await sleep(250);
      assert.equal(lines.filter((l) => l.count !== undefined).at(-1)?.msg, '5 writes failed with ENOSPC on vol-a in the last 0.2 s');
    } finally {
      sc.close();
    }
  });

  it(
    'the condition stays abnormal until free space is seen, then clears with one line; a new failure starts over',
    { timeout: 10_000 },
    async () => {
      const { sc, lines, setFree } = harness(60_000);
      try {
        assert.equal(await sc.condition('vol-a'), null);
        sc.failed('vol-a');
        sc.failed('vol-a');
        const c = await sc.condition('vol-a');
        assert.equal(c?.abnormal, true);
        assert.match(c?.message ?? '', /writes fail with ENOSPC: no space left in \/data \(2 writes failed since \d{4}-/);
        setFree(SPACE_BACK_BYTES - 1);
        assert.equal((await sc.condition('vol-a'))?.abnormal, true, 'less than the threshold is not space back');
        setFree(SPACE_BACK_BYTES);
        assert.equal(await sc.condition('vol-a'), null);
        const back = lines.filter((l) => l.event === 'space-back');
        assert.equal(back.length, 1);
        assert.equal(back[0]?.failedWrites, 2);
        setFree(0);
        sc.failed('vol-a');
        assert.equal((await sc.condition('vol-a'))?.abnormal, true);
        assert.equal(lines.filter((l) => l.event === 'no-space' && l.count === undefined).length, 2, 'a new episode logs at once again');
        sc.forget('vol-a');
        assert.equal(await sc.condition('vol-a'), null);
      } finally {
        sc.close();
      }
    },
  );

  it('clears on its own timer once space is back, without anyone asking', { timeout: 10_000 }, async () => {
    const { sc, lines, setFree } = harness(100);
    try {
      sc.failed('vol-a');
      setFree(10 * SPACE_BACK_BYTES);
      await sleep(250);
      assert.equal(lines.filter((l) => l.event === 'space-back').length, 1);
    } finally {
      sc.close();
    }
  });
});
