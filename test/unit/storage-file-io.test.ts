// src/storage/file-io.ts: the inline (RWF_NOWAIT) path, the io_uring path and the thread-pool fallback give the same results.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileIoEngine, INLINE_WRITE_MAX, preadFile, pwriteFile, type FileIoEngine } from '../../src/storage/file-io.js';
import { openFileStore } from '../../src/storage/file-store.js';

const ENGINES: readonly FileIoEngine[] = ['inline', 'io_uring', 'threadpool'];

describe('file-io', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lunar-fileio-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('uses io_uring on this machine (its kernel allows it) unless LUNAR_NO_IO_URING=1', () => {
    assert.equal(fileIoEngine(), process.env['LUNAR_NO_IO_URING'] === '1' ? 'threadpool' : 'io_uring');
  });

  for (const engine of ENGINES) {
    it(`${engine}: positioned writes and reads, partial buffers, end of file`, async () => {
      const p = join(dir, `rw-${engine}.img`);
      writeFileSync(p, Buffer.alloc(1 << 20));
      const fd = openSync(p, 'r+');
      try {
        const data = randomBytes(64 << 10);
        assert.equal(await pwriteFile(fd, data, 4096, 8192, 12345, engine), 8192);
        const back = Buffer.alloc(10000);
        assert.equal(await preadFile(fd, back, 100, 8192, 12345, engine), 8192);
        assert.deepEqual(back.subarray(100, 100 + 8192), data.subarray(4096, 4096 + 8192));
        assert.deepEqual(readFileSync(p).subarray(12345, 12345 + 8192), data.subarray(4096, 4096 + 8192));
        // At and beyond the end of the file: 0 bytes.
        assert.equal(await preadFile(fd, back, 0, 4096, 1 << 20, engine), 0);
        assert.equal(await preadFile(fd, back, 0, 4096, (1 << 20) - 100, engine), 100);
      } finally {
        closeSync(fd);
      }
    });

    it(`${engine}: errors carry the errno code (EBADF)`, async () => {
      const p = join(dir, `ro-${engine}.img`);
      writeFileSync(p, Buffer.alloc(4096));
      const fd = openSync(p, 'r');
      try {
        await assert.rejects(pwriteFile(fd, Buffer.alloc(512), 0, 512, 0, engine), { code: 'EBADF' });
      } finally {
        closeSync(fd);
      }
    });
  }

  it('inline: a write up to INLINE_WRITE_MAX is in the file when pwriteFile returns (no queue); a larger one is queued', async () => {
    const p = join(dir, 'inline-write.img');
    writeFileSync(p, Buffer.alloc(1 << 20));
    const fd = openSync(p, 'r+');
    try {
      // What the file holds synchronously, before any completion could run (on the ring the SQE is not
      // even submitted yet); compared after the write settled, so that a failure never closes the fd
      // under a queued write.
      const small = randomBytes(4096);
      const pending = pwriteFile(fd, small, 0, 4096, 8192, 'inline');
      const smallNow = readFileSync(p).subarray(8192, 8192 + 4096);
      assert.equal(await pending, 4096);
      assert.deepEqual(smallNow, small);
      const limit = randomBytes(INLINE_WRITE_MAX);
      const atLimit = pwriteFile(fd, limit, 0, limit.length, 65536, 'inline');
      const limitNow = readFileSync(p).subarray(65536, 65536 + limit.length);
      assert.equal(await atLimit, limit.length);
      assert.deepEqual(limitNow, limit);
      if (fileIoEngine() === 'io_uring') {
        const large = randomBytes(INLINE_WRITE_MAX + 4096);
        const queued = pwriteFile(fd, large, 0, large.length, 262144, 'inline');
        const largeNow = readFileSync(p).subarray(262144, 262144 + large.length);
        assert.equal(await queued, large.length);
        assert.notDeepEqual(largeNow, large);
        assert.deepEqual(readFileSync(p).subarray(262144, 262144 + large.length), large);
      }
    } finally {
      closeSync(fd);
    }
  });

  it('more requests at once than the ring has slots: every one completes with the right data', async () => {
    const p = join(dir, 'many.img');
    const blocks = 1000;
    const content = randomBytes(blocks * 512);
    writeFileSync(p, content);
    const fd = openSync(p, 'r+');
    try {
      const bufs = Array.from({ length: blocks }, () => Buffer.alloc(512));
      const order = Array.from({ length: blocks }, (_, i) => (i * 7919) % blocks);
      const n = await Promise.all(order.map((b, i) => preadFile(fd, bufs[i]!, 0, 512, b * 512, 'io_uring')));
      assert.ok(n.every((x) => x === 512));
      order.forEach((b, i) => assert.deepEqual(bufs[i], content.subarray(b * 512, b * 512 + 512), `block ${b}`));
      // Writes too, then read the file back.
      const fresh = randomBytes(blocks * 512);
      await Promise.all(order.map((b) => pwriteFile(fd, fresh, b * 512, 512, b * 512, 'io_uring')));
      assert.deepEqual(readFileSync(p), fresh);
    } finally {
      closeSync(fd);
    }
  });

  it('a store on either engine reads back what the other wrote, and close waits for I/O in flight', async () => {
    const p = join(dir, 'store.img');
    const a = await openFileStore(p, { create: { size: 1 << 20 }, engine: 'io_uring' });
    const data = randomBytes(256 << 10);
    const writes = [0, 1, 2, 3].map((i) => a.write(data.subarray(i << 16, (i + 1) << 16), i << 16, false));
    await Promise.all(writes);
    const reading = a.read(Buffer.alloc(256 << 10), 0);
    await a.close(); // waits for the read above
    await reading;
    const b = await openFileStore(p, { engine: 'threadpool' });
    const c = await openFileStore(p); // default: inline first
    const again = Buffer.alloc(256 << 10);
    await c.read(again, 0);
    assert.deepEqual(again, data);
    await c.close();
    const back = Buffer.alloc(256 << 10);
    await b.read(back, 0);
    assert.deepEqual(back, data);
    await b.close();
  });
});
