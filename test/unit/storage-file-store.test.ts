import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openFileStore } from '../../src/storage/file-store.js';

const MiB = 1 << 20;

describe('file-store (real sparse files)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lunar-store-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates a sparse file of the requested size and refuses to overwrite', async () => {
    const p = join(dir, 'sparse.img');
    const s = await openFileStore(p, { create: { size: 64 * MiB } });
    assert.equal(s.size(), 64 * MiB);
    const st = await stat(p);
    assert.equal(st.size, 64 * MiB);
    assert.equal(st.blocks, 0, 'a new volume allocates nothing');
    await s.close();
    await assert.rejects(openFileStore(p, { create: { size: MiB } }), { code: 'EEXIST' });
  });

  it('preallocates when asked', async () => {
    const p = join(dir, 'thick.img');
    const s = await openFileStore(p, { create: { size: 4 * MiB, preallocate: true } });
    const st = await stat(p);
    assert.ok(st.blocks * 512 >= 4 * MiB, `st_blocks=${st.blocks}`);
    await s.close();
  });

  it('reads what was written, holes read as zeroes, FUA and flush succeed', async () => {
    const p = join(dir, 'rw.img');
    const s = await openFileStore(p, { create: { size: 8 * MiB } });
    const data = Buffer.alloc(8192, 0xab);
    await s.write(data, MiB, true);
    await s.flush();
    const back = Buffer.alloc(8192 + 4096, 0x55);
    await s.read(back, MiB - 4096);
    assert.ok(back.subarray(0, 4096).every((b) => b === 0));
    assert.ok(back.subarray(4096).every((b) => b === 0xab));
    await s.close();
    // reopen sees the data and the size
    const s2 = await openFileStore(p);
    assert.equal(s2.size(), 8 * MiB);
    const again = Buffer.alloc(8192);
    await s2.read(again, MiB);
    assert.deepEqual(again, data);
    await s2.close();
  });

  it('readNow serves cached bytes at once, and declines (false) what read() must do: beyond the end, other engines, a closed store', async () => {
    const p = join(dir, 'read-now.img');
    const s = await openFileStore(p, { create: { size: 4 * MiB } });
    const data = Buffer.alloc(64 * 1024);
    for (let k = 0; k < data.length; k += 4) data.writeUInt32LE((k * 2654435761) >>> 0, k);
    await s.write(data, MiB, false); // just written: in the page cache
    const got = Buffer.alloc(data.length, 0xee);
    assert.equal(s.readNow!(got, MiB), true);
    assert.ok(got.equals(data), 'the bytes written');
    const sub = Buffer.alloc(4096);
    assert.equal(s.readNow!(sub, MiB + 8192), true);
    assert.ok(sub.equals(data.subarray(8192, 8192 + 4096)));
    assert.equal(s.readNow!(Buffer.alloc(4096), 4 * MiB), false, 'at the end of the file: nothing to read now');
    assert.equal(s.readNow!(Buffer.alloc(8192), 4 * MiB - 4096), false, 'a read that would be short');
    assert.equal(s.readNow!(Buffer.alloc(4096), -1), false);
    await s.close();
    assert.equal(s.readNow!(Buffer.alloc(4096), MiB), false, 'closed: no read on a descriptor that may be reused');
    for (const engine of ['io_uring', 'threadpool'] as const) {
      const t = await openFileStore(p, { engine });
      assert.equal(t.readNow!(Buffer.alloc(4096), MiB), false, `${engine}: every read stays on that engine`);
      const viaRead = Buffer.alloc(4096);
      await t.read(viaRead, MiB);
      assert.ok(viaRead.equals(data.subarray(0, 4096)));
      await t.close();
    }
  });

  it('writeNow writes small buffers at once and declines (false) what write() must do: large ones, other engines, a closed store', async () => {
    const p = join(dir, 'write-now.img');
    const s = await openFileStore(p, { create: { size: 4 * MiB } });
    const small = Buffer.alloc(8192, 0x3c);
    assert.equal(s.writeNow!(small, MiB + 512), true);
    const back = Buffer.alloc(8192);
    await s.read(back, MiB + 512);
    assert.ok(back.equals(small), 'the bytes are in the file');
    assert.equal(s.writeNow!(Buffer.alloc(256 * 1024, 1), 0), false, 'larger than an inline write: write() does it');
    assert.equal(s.writeNow!(Buffer.alloc(4096), -4096), false);
    await s.close();
    assert.equal(s.writeNow!(Buffer.alloc(4096), 0), false, 'closed');
    for (const engine of ['io_uring', 'threadpool'] as const) {
      const t = await openFileStore(p, { engine });
      assert.equal(t.writeNow!(Buffer.alloc(4096), 0), false, `${engine}: every write stays on that engine`);
      await t.close();
    }
  });

  it('large writes (sent in 256 KiB pieces aligned in the file) land whole, at any offset and length, on every engine', async () => {
    for (const engine of ['inline', 'io_uring', 'threadpool'] as const) {
      const p = join(dir, `pieces-${engine}.img`);
      const s = await openFileStore(p, { create: { size: 8 * MiB }, engine });
      // Unaligned start and end, lengths just under / over piece multiples, one write spanning many pieces.
      const cases: [number, number][] = [
        [0, MiB],
        [512, MiB + 4096],
        [256 * 1024 - 512, 256 * 1024 + 1024],
        [3 * MiB + 4096, 3 * MiB - 8192],
        [7 * MiB, MiB],
      ];
      const expected = Buffer.alloc(8 * MiB);
      for (const [i, [off, len]] of cases.entries()) {
        const b = Buffer.alloc(len);
        for (let k = 0; k < len; k += 4) b.writeUInt32LE((off + k + i * 0x9e3779b9) >>> 0, k);
        await s.write(b, off, i % 2 === 0);
        b.copy(expected, off);
      }
      const got = Buffer.alloc(8 * MiB);
      await s.read(got, 0);
      assert.ok(got.equals(expected), `${engine}: the file holds exactly what was written`);
      await s.close();
    }
  });

  it('a large write whose pieces fail rejects with their error (EBADF on a read-only store), and the store still closes', async () => {
    const p = join(dir, 'pieces-ro.img');
    const w = await openFileStore(p, { create: { size: 4 * MiB } });
    await w.close();
    const s = await openFileStore(p, { readOnly: true });
    await assert.rejects(s.write(Buffer.alloc(2 * MiB), 0, false), { code: 'EBADF' });
    await s.close();
    await assert.rejects(s.read(Buffer.alloc(4096), 0), { code: 'EBADF' });
  });

  it('concurrent FUA writes and flushes share fdatasyncs and all complete with their data', async () => {
    const p = join(dir, 'fua.img');
    const s = await openFileStore(p, { create: { size: 8 * MiB } });
    await Promise.all(Array.from({ length: 64 }, (_, i) => (i % 4 === 3 ? s.flush() : s.write(Buffer.alloc(4096, i), i * 4096, true))));
    for (let i = 0; i < 64; i++) {
      if (i % 4 === 3) continue;
      const b = Buffer.alloc(4096);
      await s.read(b, i * 4096);
      assert.ok(
        b.every((x) => x === i),
        `block ${i}`,
      );
    }
    await s.flush();
    await s.close();
  });

  it('punches real holes (st_blocks drops) and maps them with SEEK_DATA/SEEK_HOLE', async () => {
    const p = join(dir, 'punch.img');
    const s = await openFileStore(p, { create: { size: 16 * MiB } });
    await s.write(Buffer.alloc(4 * MiB, 1), 2 * MiB, false);
    await s.flush();
    const before = (await stat(p)).blocks;
    assert.ok(before * 512 >= 4 * MiB);
    assert.deepEqual(await s.allocationMap(0, 16 * MiB), [
      { offset: 0, length: 2 * MiB, mapped: false },
      { offset: 2 * MiB, length: 4 * MiB, mapped: true },
      { offset: 6 * MiB, length: 10 * MiB, mapped: false },
    ]);
    await s.deallocate(3 * MiB, MiB);
    const afterPunch = (await stat(p)).blocks;
    assert.equal(before - afterPunch, MiB / 512, `blocks ${before} -> ${afterPunch}`);
    assert.equal((await stat(p)).size, 16 * MiB, 'KEEP_SIZE');
    const zero = Buffer.alloc(MiB, 7);
    await s.read(zero, 3 * MiB);
    assert.ok(zero.every((b) => b === 0));
    assert.deepEqual(await s.allocationMap(2 * MiB, 4 * MiB), [
      { offset: 2 * MiB, length: MiB, mapped: true },
      { offset: 3 * MiB, length: MiB, mapped: false },
      { offset: 4 * MiB, length: 2 * MiB, mapped: true },
    ]);
    // a sub-range that starts inside data
    assert.deepEqual(await s.allocationMap(4 * MiB + 512, 512), [{ offset: 4 * MiB + 512, length: 512, mapped: true }]);
    assert.deepEqual(await s.allocationMap(0, 0), []);
    await s.close();
  });

  it('writeZeroes allocates zeroed blocks without writing them (FALLOC_FL_ZERO_RANGE)', async () => {
    const p = join(dir, 'zero.img');
    const s = await openFileStore(p, { create: { size: 8 * MiB } });
    await s.write(Buffer.alloc(2 * MiB, 0xcc), MiB, false);
    await s.writeZeroes(MiB + 4096, MiB, true);
    const b = Buffer.alloc(2 * MiB);
    await s.read(b, MiB);
    assert.ok(b.subarray(0, 4096).every((x) => x === 0xcc));
    assert.ok(b.subarray(4096, 4096 + MiB).every((x) => x === 0));
    assert.ok(b.subarray(4096 + MiB).every((x) => x === 0xcc));
    await s.writeZeroes(4 * MiB, 2 * MiB, false);
    assert.ok((await stat(p)).blocks * 512 >= 4 * MiB, 'zeroed range is allocated');
    await s.close();
  });

  it('close() waits for native calls in flight; later calls fail with EBADF', async () => {
    const p = join(dir, 'closing.img');
    const s = await openFileStore(p, { create: { size: 64 * MiB } });
    await s.write(Buffer.alloc(8 * MiB, 1), 0, false);
    const punch = s.deallocate(0, 8 * MiB);
    await s.close();
    await punch;
    assert.ok((await stat(p)).blocks * 512 < MiB, 'the punch completed on the right file');
    await assert.rejects(s.deallocate(0, 4096), { code: 'EBADF' });
  });

  it('resize grows sparse and shrinks', async () => {
    const p = join(dir, 'grow.img');
    const s = await openFileStore(p, { create: { size: MiB } });
    await s.write(Buffer.alloc(4096, 9), 0, false);
    await s.resize(1024 * MiB);
    assert.equal(s.size(), 1024 * MiB);
    const st = await stat(p);
    assert.equal(st.size, 1024 * MiB);
    assert.ok(st.blocks * 512 <= 64 * 1024, 'growth allocates nothing');
    const map = await s.allocationMap(0, 1024 * MiB);
    assert.equal(map.at(-1)!.mapped, false);
    assert.equal(map.at(-1)!.offset + map.at(-1)!.length, 1024 * MiB);
    await s.resize(MiB / 2);
    assert.equal((await stat(p)).size, MiB / 2);
    await s.close();
  });

  it('rejects bad ranges and opens existing files only if regular', async () => {
    const p = join(dir, 'plain.img');
    await writeFile(p, Buffer.alloc(4096));
    const s = await openFileStore(p);
    await assert.rejects(s.read(Buffer.alloc(1), -1), RangeError);
    await assert.rejects(s.deallocate(0, -5), RangeError);
    await s.close();
    await s.close(); // idempotent
    await assert.rejects(openFileStore(dir), /not a regular file|EISDIR/);
    await assert.rejects(openFileStore(join(dir, 'missing.img')), { code: 'ENOENT' });
  });
});
