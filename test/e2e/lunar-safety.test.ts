// Data safety against a real `lunar serve` (issue 9): files without a record are kept aside as orphans
// and can be re-adopted (the restored-backup reproduction), names of the id form are refused and
// destructive commands name what they destroyed, a resize whose record cannot be written changes nothing
// an initiator can see, and the smaller CLI/admin-socket checks. libiscsi's tools and QEMU's iSCSI driver
// are the initiators. Every child process has a timeout; every server is stopped in `finally`.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { copyFile, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { adminCall, AdminError } from '../../src/admin/client.js';
import { loadCsiPackage } from '../../src/csi/proto.js';
import { JOURNAL_PREFIX, STATE_FILE } from '../../src/volumes/state-file.js';
import type { Orphan, Volume } from '../../src/volumes/types.js';
import { LUNAR_CLI, startLunarProcess, type CliResult, type LunarProcess } from '../support/lunar.js';
import { liveJournal } from '../support/state-on-disk.js';

const exec = promisify(execFile);
const PORTAL = '127.0.0.1:13355';
const MiB = 1024 * 1024;
const TEST_TIMEOUT = 120_000;
const CHILD_TIMEOUT_MS = 60_000;

/** `lunar ARGS` against dataDir, killed after CHILD_TIMEOUT_MS (then code 124). */
function cli(dataDir: string, args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [LUNAR_CLI, ...args], {
      env: { ...process.env, LUNAR_DATA_DIR: dataDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      c.kill('SIGKILL');
    }, CHILD_TIMEOUT_MS);
    c.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
    c.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
    c.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    c.on('close', (code) => {
      clearTimeout(timer);
      resolve({
        code: timedOut ? 124 : (code ?? -1),
        stdout,
        stderr: timedOut ? `${stderr}\n(killed after ${CHILD_TIMEOUT_MS} ms)` : stderr,
      });
    });
  });
}

async function ok(dataDir: string, args: string[]): Promise<string> {
  const r = await cli(dataDir, args);
  assert.equal(r.code, 0, `lunar ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function createJson(dataDir: string, args: string[]): Promise<Volume> {
  return JSON.parse(await ok(dataDir, ['volume', 'create', ...args, '--json'])) as Volume;
}

function urlOf(v: Volume): string {
  return `iscsi://${PORTAL}/${v.iqn}/0`;
}

async function qemuIo(url: string, cmds: string[], extra: string[] = []): Promise<string> {
  const { stdout } = await exec('qemu-io', ['-f', 'raw', '-t', 'writeback', ...extra, ...cmds.flatMap((c) => ['-c', c]), url], {
    timeout: CHILD_TIMEOUT_MS,
    killSignal: 'SIGKILL',
    maxBuffer: 16 * MiB,
  });
  return stdout;
}

async function readCapacity(v: Volume): Promise<number> {
  const { stdout } = await exec('iscsi-readcapacity16', ['-i', 'iqn.2026-11.test:safety', urlOf(v)], {
    timeout: CHILD_TIMEOUT_MS,
    killSignal: 'SIGKILL',
  });
  const total = /Total size:\s*(\d+)/.exec(stdout);
  assert.ok(total, `unexpected iscsi-readcapacity16 output:\n${stdout}`);
  return Number(total[1]);
}

/** One admin-socket request with a bounded wait. */
function call(lunar: LunarProcess, method: string, params: Record<string, unknown>): Promise<unknown> {
  return adminCall(lunar.socketPath, method, params, CHILD_TIMEOUT_MS);
}

type Unary = (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null) => void) => void;

/** One unary CSI call with a deadline; resolves with the gRPC status code (0 = OK) and message. */
function csiStatus(client: grpc.Client, method: string, req: object): Promise<{ code: number; details: string }> {
  const fn = (client as unknown as Record<string, Unary>)[method]!;
  return new Promise((resolve) =>
    fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + CHILD_TIMEOUT_MS }, (err) =>
      resolve({ code: err ? err.code : 0, details: err ? err.details : '' }),
    ),
  );
}

async function chattr(flag: '+i' | '-i', path: string): Promise<void> {
  await exec('chattr', [flag, path], { timeout: 10_000 });
}

/** The state store's files (state.json and its journals), as an operator's backup copies them. */
async function stateFiles(dataDir: string): Promise<string[]> {
  return (await readdir(dataDir)).filter((n) => n === STATE_FILE || n.startsWith(JOURNAL_PREFIX));
}

async function backUp(dataDir: string, to: string): Promise<void> {
  for (const n of await stateFiles(dataDir)) await copyFile(join(dataDir, n), join(to, n));
}

async function restore(dataDir: string, from: string): Promise<void> {
  for (const n of await stateFiles(dataDir)) await rm(join(dataDir, n));
  for (const n of await readdir(from)) await copyFile(join(from, n), join(dataDir, n));
}

async function withLunar(fn: (lunar: LunarProcess) => Promise<void>): Promise<void> {
  const lunar = await startLunarProcess({ portals: [PORTAL], readyTimeoutMs: 30_000 });
  try {
    await fn(lunar);
  } finally {
    await lunar.remove();
  }
}

const PATTERN = [`write -P 90 0 1M`, `write -P 165 ${15 * MiB} 1M`, 'flush'];
const CHECK = [`read -P 90 0 1M`, `read -P 165 ${15 * MiB} 1M`];

async function assertPattern(v: Volume): Promise<void> {
  const out = await qemuIo(urlOf(v), CHECK, ['-r']);
  assert.ok(!/Pattern verification failed/.test(out), `the volume serves other bytes:\n${out}`);
  assert.equal((out.match(/^read 1048576\/1048576 bytes/gm) ?? []).length, 2, out);
}

test(
  'a restored older state.json keeps the newer volume file as an orphan; adopting it serves the same bytes',
  { timeout: TEST_TIMEOUT },
  async () => {
    const backup = await mkdtemp(join(tmpdir(), 'lunar-backup-'));
    try {
      await withLunar(async (lunar) => {
        const d = lunar.dataDir;
        const older = await createJson(d, ['older', '--size', '8MiB']);
        await lunar.stop();
        await backUp(d, backup);
        await lunar.restart();
        const newer = await createJson(d, ['newer', '--size', '16MiB']);
        await qemuIo(urlOf(newer), PATTERN);
        await lunar.stop();
        await restore(d, backup);
        // A temporary file of an interrupted create: the one kind of file startup may remove.
        const tmpFile = join(d, 'volumes', '.tmp-vol-00000000000000aa.img');
        await writeFile(tmpFile, 'half a volume');
        await lunar.restart();

        assert.deepEqual(await readdir(join(d, 'volumes')), [`${older.id}.img`], 'the temporary file is removed');
        assert.deepEqual(await readdir(join(d, 'orphans')), [`${newer.id}.img`], 'the newer volume file is kept in orphans/');
        assert.equal((await stat(join(d, 'orphans', `${newer.id}.img`))).size, 16 * MiB);
        const warn = lunar
          .output()
          .split('\n')
          .find((l) => l.includes('moved to orphans/'));
        assert.ok(warn, `no warn line for the orphan:\n${lunar.output().slice(-3000)}`);
        const line = JSON.parse(warn) as { level: number; file: string; movedTo: string; sizeBytes: number };
        assert.equal(line.level, 40, 'logged as a warning');
        assert.equal(line.file, join(d, 'volumes', `${newer.id}.img`));
        assert.equal(line.movedTo, join(d, 'orphans', `${newer.id}.img`));
        assert.equal(line.sizeBytes, 16 * MiB);

        assert.match(await ok(d, ['status']), /^ {2}orphans: {2}1 file\(s\) without a record/m);
        assert.equal((JSON.parse(await ok(d, ['status', '--json'])) as { orphans: number }).orphans, 1);
        const listed = JSON.parse(await ok(d, ['orphans', 'list', '--json'])) as Orphan[];
        assert.equal(listed.length, 1);
        assert.deepEqual(
          { file: listed[0]!.file, id: listed[0]!.id, idInUse: listed[0]!.idInUse, sizeBytes: listed[0]!.sizeBytes },
          { file: `${newer.id}.img`, id: newer.id, idInUse: false, sizeBytes: 16 * MiB },
        );
        assert.ok(!Number.isNaN(Date.parse(listed[0]!.modifiedAt)));
        assert.match(await ok(d, ['orphans', 'list']), new RegExp(`^${newer.id}\\.img\\s+16 MiB\\s+\\S+\\s+${newer.id}\\s+no$`, 'm'));

        // Its id is used by no record: the adopted volume keeps it (and so its IQN).
        const adopted = JSON.parse(await ok(d, ['orphans', 'adopt', `${newer.id}.img`, '--name', 'newer-again', '--json'])) as Volume;
        assert.equal(adopted.id, newer.id);
        assert.equal(adopted.iqn, newer.iqn);
        assert.equal(adopted.sizeBytes, 16 * MiB);
        assert.deepEqual(await readdir(join(d, 'orphans')), []);
        assert.deepEqual((await readdir(join(d, 'volumes'))).sort(), [`${older.id}.img`, `${newer.id}.img`].sort());
        assert.match(await ok(d, ['status']), /^ {2}orphans: {2}0$/m);
        await assertPattern(adopted);

        // The record is durable: the volume is still there after a restart.
        await lunar.restart();
        const vols = JSON.parse(await ok(d, ['volume', 'list', '--json'])) as Volume[];
        assert.deepEqual(vols.map((v) => v.name).sort(), ['newer-again', 'older']);
        await assertPattern(adopted);
      });
    } finally {
      await rm(backup, { recursive: true, force: true });
    }
  },
);

test(
  'an orphan whose id a record uses is adopted under a new id; a failed save leaves it in orphans/',
  { timeout: TEST_TIMEOUT },
  async () => {
    await withLunar(async (lunar) => {
      const d = lunar.dataDir;
      const src = await createJson(d, ['source', '--size', '16MiB']);
      await qemuIo(urlOf(src), PATTERN);
      // A copy of a live volume's file under that volume's name: its id is taken.
      const copy = join(d, 'orphans', `${src.id}.img`);
      await mkdir(join(d, 'orphans'), { recursive: true });
      await copyFile(join(d, 'volumes', `${src.id}.img`), copy);
      const listed = JSON.parse(await ok(d, ['orphans', 'list', '--json'])) as Orphan[];
      assert.deepEqual(
        listed.map((o) => [o.file, o.idInUse]),
        [[`${src.id}.img`, true]],
      );
      assert.match(await ok(d, ['orphans', 'list']), /yes \(adopt gives a new id\)/);

      // Names are checked as for create.
      const badName = await cli(d, ['orphans', 'adopt', `${src.id}.img`, '--name', src.id]);
      assert.equal(badName.code, 2, badName.stderr);
      assert.match(badName.stderr, /must not have the form of a Lunar id/);
      const taken = await cli(d, ['orphans', 'adopt', `${src.id}.img`, '--name', 'source']);
      assert.equal(taken.code, 5, taken.stderr);
      const missing = await cli(d, ['orphans', 'adopt', 'vol-00000000000000ff.img', '--name', 'x']);
      assert.equal(missing.code, 4, missing.stderr);

      // The state cannot be written: an error, and the file stays where it was.
      const journal = await liveJournal(d);
      await chattr('+i', journal);
      try {
        const failed = await cli(d, ['orphans', 'adopt', `${src.id}.img`, '--name', 'copy']);
        assert.equal(failed.code, 1, failed.stderr);
        assert.match(failed.stderr, /could not record volume "copy" .*stays in .*orphans/);
      } finally {
        await chattr('-i', journal);
      }
      assert.deepEqual(await readdir(join(d, 'orphans')), [`${src.id}.img`]);
      assert.deepEqual(await readdir(join(d, 'volumes')), [`${src.id}.img`]);
      assert.equal((JSON.parse(await ok(d, ['volume', 'list', '--json'])) as Volume[]).length, 1);

      const adopted = JSON.parse(await ok(d, ['orphans', 'adopt', copy, '--name', 'copy', '--json'])) as Volume;
      assert.notEqual(adopted.id, src.id, 'a used id is never given to a second volume');
      assert.match(adopted.id, /^vol-[0-9a-f]{16}$/);
      assert.notEqual(adopted.naa, src.naa);
      await assertPattern(adopted);
      await assertPattern(src);
    });
  },
);

test('names of the form of an id are refused for volumes and snapshots (CLI and admin socket)', { timeout: TEST_TIMEOUT }, async () => {
  await withLunar(async (lunar) => {
    const d = lunar.dataDir;
    const alpha = await createJson(d, ['alpha', '--size', '8MiB']);
    for (const name of [alpha.id, alpha.id.toUpperCase(), 'snap-0123456789abcdef']) {
      const r = await cli(d, ['volume', 'create', name, '--size', '8MiB']);
      assert.equal(r.code, 2, `${name}: ${r.stderr}`);
      assert.match(r.stderr, /volume name must not have the form of a Lunar id/);
    }
    await assert.rejects(
      call(lunar, 'volume.create', { name: alpha.id, sizeBytes: MiB }),
      (e: unknown) => e instanceof AdminError && e.code === 'invalid-argument' && /form of a Lunar id/.test(e.message),
    );
    const snapName = await cli(d, ['snapshot', 'create', 'alpha', 'vol-0123456789abcdef']);
    assert.equal(snapName.code, 2, snapName.stderr);
    assert.match(snapName.stderr, /snapshot name must not have the form of a Lunar id/);
    assert.deepEqual(
      (JSON.parse(await ok(d, ['volume', 'list', '--json'])) as Volume[]).map((v) => v.name),
      ['alpha'],
    );
    // CSI (the server's default endpoint unix://<data-dir>/csi.sock) goes through the same rule.
    const controller = new (loadCsiPackage().Controller)(`unix://${join(d, 'csi.sock')}`, grpc.credentials.createInsecure());
    try {
      const vol = await csiStatus(controller, 'CreateVolume', {
        name: alpha.id,
        capacity_range: { required_bytes: String(MiB) },
        volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
        parameters: {},
      });
      assert.equal(vol.code, grpc.status.INVALID_ARGUMENT, vol.details);
      assert.match(vol.details, /form of a Lunar id/);
      const snap = await csiStatus(controller, 'CreateSnapshot', {
        source_volume_id: alpha.id,
        name: 'snap-0123456789abcdef',
        parameters: {},
      });
      assert.equal(snap.code, grpc.status.INVALID_ARGUMENT, snap.details);
      assert.match(snap.details, /form of a Lunar id/);
    } finally {
      controller.close();
    }
    assert.deepEqual(
      (JSON.parse(await ok(d, ['volume', 'list', '--json'])) as Volume[]).map((v) => v.name),
      ['alpha'],
    );
    assert.deepEqual(JSON.parse(await ok(d, ['snapshot', 'list', '--json'])), []);
  });
});

test('volume and snapshot delete name what they deleted by name and id, however it was named', { timeout: TEST_TIMEOUT }, async () => {
  await withLunar(async (lunar) => {
    const d = lunar.dataDir;
    const alpha = await createJson(d, ['alpha', '--size', '8MiB']);
    const snap = JSON.parse(await ok(d, ['snapshot', 'create', 'alpha', 'alpha-snap', '--json'])) as { id: string };
    assert.equal(await ok(d, ['snapshot', 'delete', snap.id]), `deleted snapshot alpha-snap (${snap.id})\n`);
    assert.equal(await ok(d, ['volume', 'delete', alpha.id]), `deleted volume alpha (${alpha.id})\n`);
    const beta = await createJson(d, ['beta', '--size', '8MiB']);
    assert.equal(await ok(d, ['volume', 'delete', 'beta']), `deleted volume beta (${beta.id})\n`);
  });
});

test('whitespace-only names are refused for volumes and snapshots', { timeout: TEST_TIMEOUT }, async () => {
  await withLunar(async (lunar) => {
    const d = lunar.dataDir;
    await createJson(d, ['alpha', '--size', '8MiB']);
    for (const name of ['   ', ' ', '\u00a0\u2003']) {
      const r = await cli(d, ['volume', 'create', name, '--size', '8MiB']);
      assert.equal(r.code, 2, JSON.stringify(name) + r.stderr);
      assert.match(r.stderr, /volume name must not be blank/);
    }
    const blankSnap = await cli(d, ['snapshot', 'create', 'alpha', ' ']);
    assert.equal(blankSnap.code, 2, blankSnap.stderr);
    assert.match(blankSnap.stderr, /snapshot name must not be blank/);
    assert.equal((JSON.parse(await ok(d, ['volume', 'list', '--json'])) as Volume[]).length, 1);
  });
});

test(
  'a resize whose record cannot be written fails, and initiators, the file and the record keep the old size',
  { timeout: TEST_TIMEOUT },
  async () => {
    await withLunar(async (lunar) => {
      const d = lunar.dataDir;
      for (const thick of [false, true]) {
        const name = thick ? 'grow-thick' : 'grow-thin';
        const v = await createJson(d, [name, '--size', '32MiB', ...(thick ? ['--thick'] : [])]);
        const file = join(d, 'volumes', `${v.id}.img`);
        assert.equal(await readCapacity(v), 32 * MiB);
        const journal = await liveJournal(d);
        await chattr('+i', journal);
        let r: CliResult;
        try {
          r = await cli(d, ['volume', 'resize', name, '--size', '64MiB']);
        } finally {
          await chattr('-i', journal);
        }
        assert.equal(r.code, 1, `exit code; stdout: ${r.stdout} stderr: ${r.stderr}`);
        assert.equal(r.stdout, '');
        assert.equal(await readCapacity(v), 32 * MiB, 'the initiator sees the capacity the record holds');
        assert.equal((await stat(file)).size, 32 * MiB, 'the file is back to its recorded size');
        assert.match(r.stderr, /could not record the new size of .* \(the volume keeps 32 MiB\)/);
        const shown = JSON.parse(await ok(d, ['volume', 'show', name, '--json'])) as Volume;
        assert.equal(shown.sizeBytes, 32 * MiB);
        // Works once the state can be written again.
        assert.match(await ok(d, ['volume', 'resize', name, '--size', '64MiB']), /is now 64 MiB/);
        assert.equal(await readCapacity(v), 64 * MiB);
      }
      // And nothing unrecorded survives a restart either.
      await lunar.restart();
      const sizes = (JSON.parse(await ok(d, ['volume', 'list', '--json'])) as Volume[]).map((v) => v.sizeBytes);
      assert.deepEqual(sizes, [64 * MiB, 64 * MiB]);
    });
  },
);

test(
  'every other state change fails with exit 1 and the reason when the state cannot be written, and changes nothing',
  { timeout: TEST_TIMEOUT },
  async () => {
    await withLunar(async (lunar) => {
      const d = lunar.dataDir;
      const v = await createJson(d, ['keep', '--size', '8MiB']);
      const snap = JSON.parse(await ok(d, ['snapshot', 'create', 'keep', 'keep-snap', '--json'])) as { id: string };
      const journal = await liveJournal(d);
      await chattr('+i', journal);
      try {
        for (const args of [
          ['volume', 'create', 'new', '--size', '8MiB'],
          ['volume', 'delete', 'keep'],
          ['volume', 'publish', 'keep', '--node', 'n1', '--initiator', 'iqn.2026-11.test:n1'],
          ['snapshot', 'create', 'keep', 'snap-2'],
          ['snapshot', 'delete', 'keep-snap'],
          ['orphans', 'list'],
        ]) {
          const r = await cli(d, args);
          if (args[0] === 'orphans') {
            assert.equal(r.code, 0, r.stderr);
            continue;
          }
          assert.equal(r.code, 1, `lunar ${args.join(' ')}: ${r.stdout}${r.stderr}`);
          assert.equal(r.stdout, '');
          assert.match(r.stderr, /could not record .*state\.json/, args.join(' '));
        }
      } finally {
        await chattr('-i', journal);
      }
      const vols = JSON.parse(await ok(d, ['volume', 'list', '--json'])) as Volume[];
      assert.deepEqual(
        vols.map((x) => [x.id, x.publications]),
        [[v.id, {}]],
      );
      assert.deepEqual(
        (JSON.parse(await ok(d, ['snapshot', 'list', '--json'])) as Array<{ id: string }>).map((x) => x.id),
        [snap.id],
      );
      assert.deepEqual(await readdir(join(d, 'volumes')), [`${v.id}.img`]);
      assert.equal(await readCapacity(v), 8 * MiB, 'the volume whose delete failed is still served');
    });
  },
);

test('--size -1 reports the size problem, not the option parser\'s "ambiguous"', { timeout: TEST_TIMEOUT }, async () => {
  await withLunar(async (lunar) => {
    const d = lunar.dataDir;
    await createJson(d, ['alpha', '--size', '8MiB']);
    for (const args of [
      ['volume', 'create', 'neg', '--size', '-1'],
      ['volume', 'resize', 'alpha', '--size', '-1GiB'],
    ]) {
      const r = await cli(d, args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--size -1(GiB)?: a size must be positive/);
      assert.doesNotMatch(r.stderr, /ambiguous/);
    }
  });
});

test('a 255-character name is cut in the volume list table (--wide and --json print it whole)', { timeout: TEST_TIMEOUT }, async () => {
  await withLunar(async (lunar) => {
    const d = lunar.dataDir;
    const long = 'n'.repeat(255);
    await createJson(d, [long, '--size', '1MiB']);
    const short = await createJson(d, ['short', '--size', '1MiB']);
    const table = await ok(d, ['volume', 'list']);
    const lines = table.trimEnd().split('\n');
    assert.equal(lines.length, 3, table);
    const idAt = lines[0]!.indexOf('ID');
    assert.ok(idAt > 0 && idAt <= 42, `NAME column is at most 40 characters wide (ID at ${idAt}):\n${table}`);
    assert.ok(!table.includes(long), 'the table cuts the long name');
    assert.ok(table.includes(`${'n'.repeat(39)}…`), table);
    assert.ok(
      lines.some((l) => l.startsWith('short ') && l.indexOf(short.id) === idAt),
      table,
    );
    const wide = await ok(d, ['volume', 'list', '--wide']);
    assert.ok(wide.includes(long), '--wide prints the full name');
    const json = JSON.parse(await ok(d, ['volume', 'list', '--json'])) as Volume[];
    assert.ok(
      json.some((v) => v.name === long),
      '--json prints the full name',
    );
  });
});

test(
  'over the admin socket, sizeBytes 2^60 is "too large" (out-of-range), not "not a whole number"',
  { timeout: TEST_TIMEOUT },
  async () => {
    await withLunar(async (lunar) => {
      const v = await createJson(lunar.dataDir, ['alpha', '--size', '1MiB']);
      await assert.rejects(
        call(lunar, 'volume.create', { name: 'huge', sizeBytes: 2 ** 60 }),
        (e: unknown) => e instanceof AdminError && e.code === 'out-of-range' && /too large/.test(e.message),
      );
      await assert.rejects(
        call(lunar, 'volume.resize', { volume: v.id, sizeBytes: 2 ** 60 }),
        (e: unknown) => e instanceof AdminError && e.code === 'out-of-range' && /too large/.test(e.message),
      );
      await assert.rejects(
        call(lunar, 'volume.create', { name: 'frac', sizeBytes: 1.5 }),
        (e: unknown) => e instanceof AdminError && e.code === 'invalid-argument' && /positive whole number/.test(e.message),
      );
    });
  },
);
