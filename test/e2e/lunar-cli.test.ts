// `lunar` CLI against a real `lunar serve` process: create/list/resize/delete, idempotency, errors and
// exit codes, restart persistence, one server per data directory. libiscsi checks what initiators see.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LUNAR_CLI, startLunarProcess, type LunarProcess } from '../support/lunar.js';
import type { Volume } from '../../src/volumes/types.js';

const run = promisify(execFile);
const PORTAL = '127.0.0.1:13320';
let lunar: LunarProcess;

before(async () => {
  lunar = await startLunarProcess({ portals: [PORTAL] });
});
after(async () => {
  await lunar?.remove();
});

async function createJson(args: string[]): Promise<Volume> {
  const r = await lunar.cli(['volume', 'create', ...args, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Volume;
}

async function readCapacity(v: Volume): Promise<number> {
  const { stdout } = await run('iscsi-readcapacity16', ['-i', 'iqn.2026-11.test:cli', `iscsi://${PORTAL}/${v.iqn}/0`]);
  const total = /Total size:\s*(\d+)/.exec(stdout);
  assert.ok(total, `unexpected iscsi-readcapacity16 output:\n${stdout}`);
  return Number(total[1]);
}

test('create prints target, LUN, portals and WWID; idempotent; conflicting spec exits 5', async () => {
  const r = await lunar.cli(['volume', 'create', 'alpha', '--size', '64MiB']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /target:\s+iqn\.2026-11\.io\.lunar:vol-[0-9a-f]{16}/);
  assert.match(r.stdout, /lun:\s+0/);
  assert.match(r.stdout, /portals:\s+127\.0\.0\.1:13320,1/);
  assert.match(r.stdout, /wwid:\s+36[0-9a-f]{31}/);
  const v = await createJson(['alpha', '--size', '64MiB']);
  assert.equal(v.name, 'alpha');
  assert.equal(v.sizeBytes, 64 * 1024 * 1024);
  assert.ok(r.stdout.includes(v.iqn), 'the same volume is returned');
  const conflict = await lunar.cli(['volume', 'create', 'alpha', '--size', '128MiB']);
  assert.equal(conflict.code, 5);
  assert.match(conflict.stderr, /already exists .* different specification \(size 64 MiB vs 128 MiB\)/);
  assert.equal(await readCapacity(v), 64 * 1024 * 1024);
});

test('list shows volumes (table and JSON)', async () => {
  const r = await lunar.cli(['volume', 'list']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^NAME\s+ID\s+SIZE\s+TYPE\s+AUTH\s+TARGET\s+WWID/);
  assert.match(r.stdout, /alpha\s+vol-[0-9a-f]{16}\s+64 MiB\s+thin\s+none/);
  const j = await lunar.cli(['volume', 'list', '--json']);
  const vols = JSON.parse(j.stdout) as Volume[];
  assert.ok(vols.some((v) => v.name === 'alpha'));
});

test('resize grows (initiators see the new capacity), refuses shrinking with exit 2', async () => {
  const v = await createJson(['growme', '--size', '32MiB']);
  const r = await lunar.cli(['volume', 'resize', 'growme', '--size', '96MiB']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /is now 96 MiB/);
  assert.equal(await readCapacity(v), 96 * 1024 * 1024);
  const shrink = await lunar.cli(['volume', 'resize', 'growme', '--size', '16MiB']);
  assert.equal(shrink.code, 2);
  assert.match(shrink.stderr, /can only grow/);
  const missing = await lunar.cli(['volume', 'resize', 'nope', '--size', '1GiB']);
  assert.equal(missing.code, 4);
  assert.match(missing.stderr, /no volume with id or name "nope"/);
});

test('CHAP and ACL options are validated and stored', async () => {
  const auto = await createJson(['sec', '--size', '8MiB', '--chap', 'auto']);
  assert.ok(auto.chap && auto.chap.secret.length === 16);
  const given = await createJson([
    'sec2',
    '--size',
    '8MiB',
    '--chap',
    'iqn.2026-11.test:alice:alice-secret-1',
    '--mutual-chap',
    'tgt:target-secret-1',
  ]);
  assert.deepEqual(given.chap, {
    user: 'iqn.2026-11.test:alice',
    secret: 'alice-secret-1',
    mutualUser: 'tgt',
    mutualSecret: 'target-secret-1',
  });
  const short = await lunar.cli(['volume', 'create', 'sec3', '--size', '8MiB', '--chap', 'u:short']);
  assert.equal(short.code, 2);
  assert.match(short.stderr, /CHAP secret must be at least 12 characters/);
  const acl = await createJson(['acl', '--size', '8MiB', '--allow', 'iqn.1993-08.org.debian:01:n1', '--allow', '10.0.0.1']);
  assert.deepEqual(acl.allow, ['iqn.1993-08.org.debian:01:n1', '10.0.0.1/32']);
  const bad = await lunar.cli(['volume', 'create', 'acl2', '--size', '8MiB', '--allow', 'everyone']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /invalid ACL entry "everyone"/);
  const list = await lunar.cli(['volume', 'list']);
  assert.match(list.stdout, /sec2\s+\S+\s+8 MiB\s+thin\s+mutual/);
});

test('status reports version, portals, volumes and space', async () => {
  const r = await lunar.cli(['status']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Lunar \d+\.\d+\.\d+ \(pid \d+\) ready/);
  assert.match(r.stdout, /portals:\s+127\.0\.0\.1:13320,1/);
  assert.match(r.stdout, /volumes:\s+\d+/);
  const j = JSON.parse((await lunar.cli(['status', '--json'])).stdout) as { ready: boolean; pid: number; volumes: number };
  assert.equal(j.ready, true);
  assert.equal(j.pid, lunar.pid);
  assert.ok(j.volumes >= 1);
});

test('sessions lists nothing when idle; delete removes volume and file; deleting again exits 4', async () => {
  const s = await lunar.cli(['sessions', '--json']);
  assert.equal(s.code, 0, s.stderr);
  assert.deepEqual(JSON.parse(s.stdout), []);
  const v = await createJson(['doomed', '--size', '8MiB']);
  const file = join(lunar.dataDir, 'volumes', `${v.id}.img`);
  assert.ok(existsSync(file));
  const d = await lunar.cli(['volume', 'delete', 'doomed']);
  assert.equal(d.code, 0, d.stderr);
  assert.match(d.stdout, /deleted volume doomed/);
  assert.ok(!existsSync(file));
  const again = await lunar.cli(['volume', 'delete', 'doomed']);
  assert.equal(again.code, 4);
  assert.match(again.stderr, /no volume with id or name "doomed"/);
  const ls = await run('iscsi-ls', ['-i', 'iqn.2026-11.test:cli', `iscsi://${PORTAL}`]);
  assert.ok(!ls.stdout.includes(v.iqn), 'a deleted volume is no longer discovered');
  assert.ok(ls.stdout.includes('iqn.2026-11.io.lunar:'), `discovery lists the other volumes:\n${ls.stdout}`);
});

/** A `lunar serve` that must refuse to start: its exit code and stderr (killed after 20 s). */
function serveRefused(args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [LUNAR_CLI, 'serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const t = setTimeout(() => c.kill('SIGKILL'), 20_000);
    c.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stderr });
    });
  });
}

test('restart keeps volumes, identities and credentials; a second server on the same data dir is refused', async () => {
  const before = JSON.parse((await lunar.cli(['volume', 'list', '--json'])).stdout) as Volume[];
  const second = await serveRefused(['--data-dir', lunar.dataDir, '--portal', '127.0.0.1:13321']);
  assert.equal(second.code, 1);
  assert.match(second.stderr, /another Lunar server is already running with this data directory/);
  await lunar.kill9();
  const down = await lunar.cli(['volume', 'list', '--wait', '1']);
  assert.equal(down.code, 7, 'exit 7: not reachable within --wait');
  assert.match(down.stderr, /no Lunar server at .*admin\.sock .*start one with `lunar serve --data-dir/);
  await lunar.restart();
  const afterList = JSON.parse((await lunar.cli(['volume', 'list', '--json'])).stdout) as Volume[];
  assert.deepEqual(afterList, before);
});

test('serve refuses a portal already in use with a clear message', async () => {
  const r = await serveRefused(['--data-dir', join(lunar.dataDir, 'other'), '--portal', PORTAL]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /address already in use/);
});

test('a volume whose file vanished while stopped is kept, shown ABNORMAL and not served', async () => {
  const ok = await lunar.cli(['volume', 'show', 'growme']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /condition: healthy/);
  const v = JSON.parse((await lunar.cli(['volume', 'show', 'growme', '--json'])).stdout) as Volume;
  await lunar.stop();
  await rm(join(lunar.dataDir, 'volumes', `${v.id}.img`));
  await lunar.restart();
  const bad = await lunar.cli(['volume', 'show', 'growme']);
  assert.equal(bad.code, 0, bad.stderr);
  assert.match(bad.stdout, /condition: ABNORMAL — backing file .* is missing/);
  const ls = await run('iscsi-ls', ['-i', 'iqn.2026-11.test:cli', `iscsi://${PORTAL}`]);
  assert.ok(!ls.stdout.includes(v.iqn), 'an abnormal volume is not offered');
  const d = await lunar.cli(['volume', 'delete', 'growme']);
  assert.equal(d.code, 0, d.stderr);
});
