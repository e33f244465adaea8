// Orphans (src/volumes/orphans.ts) through VolumeManager over a real data directory: moves never
// overwrite, moves and adopts interrupted between their link and unlink are finished at startup without
// two names of one file ever becoming two volumes, and what adopt refuses.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { link, mkdir, mkdtemp, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IscsiServer } from '../../src/iscsi/server.js';
import { VolumeTargetRegistry } from '../../src/target/registry.js';
import { VolumeManager } from '../../src/volumes/manager.js';
import { orphanFileId } from '../../src/volumes/orphans.js';
import { VolumeError } from '../../src/volumes/types.js';

const MiB = 1024 * 1024;
const portals = [{ host: '127.0.0.1', port: 13338, tpgt: 1 }];

async function withDir(fn: (d: string) => Promise<void>): Promise<void> {
  const d = await mkdtemp(join(tmpdir(), 'lunar-orphans-'));
  try {
    await fn(d);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
}

async function withManager(d: string, fn: (m: VolumeManager, reg: VolumeTargetRegistry) => Promise<void>): Promise<void> {
  const reg = new VolumeTargetRegistry(portals);
  const m = await VolumeManager.open({ dataDir: d, portals, registry: reg, sessions: new IscsiServer({ registry: reg }) });
  try {
    await fn(m, reg);
  } finally {
    await m.close();
  }
}

function code(c: string, re?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => e instanceof VolumeError && e.code === c && (re === undefined || re.test(e.message));
}

async function fileOf(path: string, size: number): Promise<void> {
  await writeFile(path, '');
  await truncate(path, size);
}

test('orphan file names: <id>.img and <id>.<n>.img carry the id', () => {
  assert.equal(orphanFileId('vol-0123456789abcdef.img'), 'vol-0123456789abcdef');
  assert.equal(orphanFileId('snap-0123456789abcdef.3.img'), 'snap-0123456789abcdef');
  assert.equal(orphanFileId('vol-0123456789ABCDEF.img'), null);
  assert.equal(orphanFileId('disk.img'), null);
  assert.equal(orphanFileId('.tmp-vol-0123456789abcdef.img'), null);
});

test('a file without a record never replaces an orphan of the same name: it gets a suffix', async () => {
  await withDir(async (d) => {
    await withManager(d, () => Promise.resolve());
    await mkdir(join(d, 'orphans'));
    await fileOf(join(d, 'orphans', 'vol-2222222222222222.img'), MiB);
    await fileOf(join(d, 'volumes', 'vol-2222222222222222.img'), 2 * MiB);
    await withManager(d, async (m) => {
      assert.deepEqual(
        (await m.orphans()).map((o) => [o.file, o.sizeBytes, o.id]),
        [
          ['vol-2222222222222222.1.img', 2 * MiB, 'vol-2222222222222222'],
          ['vol-2222222222222222.img', MiB, 'vol-2222222222222222'],
        ],
      );
      assert.deepEqual(await readdir(join(d, 'volumes')), []);
    });
  });
});

test('a move to orphans/ interrupted after its link is finished at startup (one name left, in orphans/)', async () => {
  await withDir(async (d) => {
    await withManager(d, () => Promise.resolve());
    await mkdir(join(d, 'orphans'));
    await fileOf(join(d, 'volumes', 'vol-3333333333333333.img'), MiB);
    await link(join(d, 'volumes', 'vol-3333333333333333.img'), join(d, 'orphans', 'vol-3333333333333333.img'));
    await withManager(d, async (m) => {
      assert.deepEqual(await readdir(join(d, 'volumes')), []);
      assert.deepEqual(await readdir(join(d, 'orphans')), ['vol-3333333333333333.img']);
      assert.equal((await stat(join(d, 'orphans', 'vol-3333333333333333.img'))).nlink, 1);
      // With one name only, it can be adopted.
      const v = await m.adoptOrphan('vol-3333333333333333.img', { name: 'three' });
      assert.equal(v.id, 'vol-3333333333333333');
    });
  });
});

test('an adopt interrupted after its record is finished at startup: the volume owns the file', async () => {
  await withDir(async (d) => {
    let id = '';
    await withManager(d, async (m) => {
      id = (await m.create({ name: 'owned', sizeBytes: MiB })).id;
    });
    await mkdir(join(d, 'orphans'));
    await link(join(d, 'volumes', `${id}.img`), join(d, 'orphans', `${id}.img`));
    await withManager(d, async (m, reg) => {
      assert.deepEqual(await m.orphans(), []);
      assert.deepEqual(await readdir(join(d, 'orphans')), []);
      assert.equal((await stat(join(d, 'volumes', `${id}.img`))).nlink, 1);
      assert.ok(reg.findTarget(`iqn.2026-11.io.lunar:${id}`));
    });
  });
});

test('adopt refuses files that cannot be a volume, bad names and paths; a snapshot file gets a volume id', async () => {
  await withDir(async (d) => {
    await withManager(d, async (m, reg) => {
      await mkdir(join(d, 'orphans'));
      await fileOf(join(d, 'orphans', 'vol-4444444444444444.img'), 1000);
      await assert.rejects(
        m.adoptOrphan('vol-4444444444444444.img', { name: 'odd' }),
        code('failed-precondition', /not a positive multiple of 1 MiB/),
      );
      await fileOf(join(d, 'orphans', 'vol-5555555555555555.img'), MiB);
      await link(join(d, 'orphans', 'vol-5555555555555555.img'), join(d, 'orphans', 'copy.img'));
      await assert.rejects(m.adoptOrphan('copy.img', { name: 'linked' }), code('failed-precondition', /2 names \(hard links\)/));
      await rm(join(d, 'orphans', 'copy.img'));
      for (const file of ['../state.json', '', '.hidden', 'a/b']) {
        await assert.rejects(m.adoptOrphan(file, { name: 'x' }), code('invalid-argument', /file name in/), file);
      }
      await assert.rejects(m.adoptOrphan('vol-5555555555555555.img', { name: '  ' }), code('invalid-argument', /blank/));
      await assert.rejects(m.adoptOrphan('vol-5555555555555555.img', { name: 'x', allow: ['not an iqn'] }), code('invalid-argument'));
      await fileOf(join(d, 'orphans', 'snap-6666666666666666.img'), 2 * MiB);
      const v = await m.adoptOrphan('snap-6666666666666666.img', { name: 'from-snap', masked: true });
      assert.match(v.id, /^vol-[0-9a-f]{16}$/);
      assert.equal(v.sizeBytes, 2 * MiB);
      assert.equal(v.thin, true);
      assert.equal(v.masked, true);
      assert.deepEqual(reg.findTarget(v.iqn)?.access, { allow: [] }, 'masked: nobody until published');
      assert.deepEqual((await m.orphans()).map((o) => o.file).sort(), ['vol-4444444444444444.img', 'vol-5555555555555555.img']);
    });
  });
});
