// Atomic state files and the state store.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../../src/util/atomic-file.js';
import { StateError, StateStore, STATE_FILE } from '../../src/volumes/state.js';

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'lunar-unit-'));
}

test('writeFileAtomic replaces content, leaves no temporary file, mode 0600', async () => {
  const d = await tempDir();
  try {
    const p = join(d, 'f.json');
    await writeFileAtomic(p, 'one');
    await writeFileAtomic(p, 'two');
    assert.equal(await readFile(p, 'utf8'), 'two');
    assert.deepEqual(await readdir(d), ['f.json']);
    assert.equal((await stat(p)).mode & 0o777, 0o600);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('writeFileAtomic: concurrent writers never produce a mixed file', async () => {
  const d = await tempDir();
  try {
    const p = join(d, 'f');
    const a = 'a'.repeat(1 << 20);
    const b = 'b'.repeat(1 << 20);
    await Promise.all([writeFileAtomic(p, a), writeFileAtomic(p, b), writeFileAtomic(p, a)]);
    const c = await readFile(p, 'utf8');
    assert.ok(c === a || c === b);
    assert.deepEqual(await readdir(d), ['f']);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('StateStore: creates a state file with a server identity, reloads it, saves coalesced', async () => {
  const d = await tempDir();
  try {
    const s1 = await StateStore.open(d);
    assert.equal(s1.created, true);
    assert.deepEqual(await readdir(d), [], 'nothing is written before the first save');
    const id = s1.data.server.id;
    assert.match(id, /^[0-9a-f-]{36}$/);
    s1.data.snapshots['snap-0000000000000001'] = {
      id: 'snap-0000000000000001',
      name: 'n',
      sourceVolumeId: 'vol-1',
      sizeBytes: 1,
      createdAt: 'x',
    };
    await Promise.all([s1.save(), s1.save(), s1.save()]);
    const s2 = await StateStore.open(d);
    assert.equal(s2.created, false);
    assert.equal(s2.data.server.id, id);
    assert.equal(s2.data.snapshots['snap-0000000000000001']?.name, 'n');
    const onDisk = JSON.parse(await readFile(join(d, STATE_FILE), 'utf8')) as { format: string; version: number };
    assert.equal(onDisk.format, 'lunar-state');
    assert.equal(onDisk.version, 1);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('StateStore: a damaged or foreign state file stops startup with a clear error and is not overwritten', async () => {
  const d = await tempDir();
  try {
    await writeFile(join(d, STATE_FILE), '{"format": "lunar-state", "version": 1, "server": {');
    await assert.rejects(StateStore.open(d), (e: unknown) => e instanceof StateError && /not valid JSON/.test(e.message));
    assert.match(await readFile(join(d, STATE_FILE), 'utf8'), /"server": \{$/);
    await writeFile(join(d, STATE_FILE), '{"hello": 1}');
    await assert.rejects(StateStore.open(d), /not a Lunar state file/);
    await writeFile(join(d, STATE_FILE), '{"format": "lunar-state", "version": 9}');
    await assert.rejects(StateStore.open(d), /state version 9/);
    await writeFile(
      join(d, STATE_FILE),
      JSON.stringify({ format: 'lunar-state', version: 1, server: { id: 'x' }, volumes: { a: { id: 'b' } }, snapshots: {} }),
    );
    await assert.rejects(StateStore.open(d), /volume record "a" is malformed/);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('StateStore: leftovers of an interrupted atomic write are removed at open', async () => {
  const d = await tempDir();
  try {
    await (await StateStore.open(d)).save();
    await writeFile(join(d, `.tmp-${STATE_FILE}.abcdef`), 'partial');
    await StateStore.open(d);
    assert.deepEqual((await readdir(d)).sort(), [STATE_FILE]);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('StateStore: saveSync is durable at once and an older in-flight async save never overwrites it', async () => {
  const d = await tempDir();
  try {
    const s = await StateStore.open(d);
    await s.save();
    for (let round = 0; round < 20; round++) {
      s.data.server.createdAt = `async-${round}`;
      const pending = [s.save(), s.save()];
      // Let the async save get to different phases (serialised, temp file written, ...) before the sync one.
      for (let tick = 0; tick < round; tick++) await new Promise((r) => setImmediate(r));
      s.data.server.createdAt = `sync-${round}`;
      s.saveSync();
      const onDisk = JSON.parse(await readFile(join(d, STATE_FILE), 'utf8')) as { server: { createdAt: string } };
      assert.equal(onDisk.server.createdAt, `sync-${round}`);
      await Promise.all(pending);
      const later = JSON.parse(await readFile(join(d, STATE_FILE), 'utf8')) as { server: { createdAt: string } };
      assert.equal(later.server.createdAt, `sync-${round}`, 'the async save started earlier did not roll the file back');
    }
    assert.deepEqual(await readdir(d), [STATE_FILE]);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});
