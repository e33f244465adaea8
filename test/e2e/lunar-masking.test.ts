// LUN masking as CSI uses it, end to end with QEMU's libiscsi driver: a masked volume admits nobody,
// publish admits that node's initiator, unpublish ends its live session and refuses it again; delete ends
// the sessions of the deleted volume. `lunar sessions` reports what is logged in.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { startLunarProcess, type LunarProcess } from '../support/lunar.js';
import type { SessionInfo } from '../../src/target/types.js';
import type { Volume } from '../../src/volumes/types.js';

const exec = promisify(execFile);
const PORTAL = '127.0.0.1:13324';
const NODE1 = 'iqn.2026-11.test.masking:node1';
let lunar: LunarProcess;
const children: ChildProcess[] = [];

before(async () => {
  lunar = await startLunarProcess({ portals: [PORTAL] });
});
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await lunar?.remove();
});

function imageOpts(v: Volume, initiator: string): string {
  return `driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=${PORTAL},file.target=${v.iqn},file.lun=0,file.initiator-name=${initiator}`;
}

async function canLogIn(v: Volume, initiator: string): Promise<boolean> {
  try {
    await exec('qemu-img', ['info', '--image-opts', imageOpts(v, initiator)], { timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}

/** A qemu-io that logs in as initiator and then idles, keeping its session. */
function holdSession(v: Volume, initiator: string): ChildProcess {
  const c = spawn('qemu-io', ['--image-opts', '-c', 'read 0 512', '-c', 'sleep 60000', imageOpts(v, initiator)], { stdio: 'ignore' });
  children.push(c);
  return c;
}

async function sessionsOf(v: Volume): Promise<SessionInfo[]> {
  const r = await lunar.cli(['sessions', '--volume', v.name, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as SessionInfo[];
}

async function waitFor(what: string, cond: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `lunar volume create <name> --size 16MiB [extra]`, the created volume. */
async function createVolume(name: string, ...extra: string[]): Promise<Volume> {
  const r = await lunar.cli(['volume', 'create', name, '--size', '16MiB', ...extra, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Volume;
}

/** A new volume with one session of NODE1 on it (qemu-io holding the connection). */
async function volumeInUse(name: string): Promise<{ v: Volume; holder: ChildProcess }> {
  const v = await createVolume(name);
  const holder = holdSession(v, NODE1);
  await waitFor('the session', async () => (await sessionsOf(v)).length === 1);
  return { v, holder };
}

test('masked volume: nobody → publish admits the node → unpublish ends its session and refuses it', async () => {
  const v = await createVolume('masked', '--masked');
  assert.equal(await canLogIn(v, NODE1), false, 'a masked, unpublished volume admits nobody');

  const p = await lunar.cli(['volume', 'publish', 'masked', '--node', 'node1', '--initiator', NODE1]);
  assert.equal(p.code, 0, p.stderr);
  assert.equal(await canLogIn(v, NODE1), true, 'the published initiator gets in');
  assert.equal(await canLogIn(v, 'iqn.2026-11.test.masking:node2'), false, 'others still do not');

  const holder = holdSession(v, NODE1);
  await waitFor('the session to show in `lunar sessions`', async () =>
    (await sessionsOf(v)).some((s) => s.initiatorName === NODE1 && !s.discovery),
  );
  const s = (await sessionsOf(v)).find((x) => x.initiatorName === NODE1)!;
  assert.equal(s.targetName, v.iqn);
  assert.ok(s.connections >= 1);

  const u = await lunar.cli(['volume', 'unpublish', 'masked', '--node', 'node1']);
  assert.equal(u.code, 0, u.stderr);
  await waitFor('unpublish to end the session', async () => (await sessionsOf(v)).length === 0, 5000);
  // libiscsi tries to reconnect the idle session; it must stay out.
  await new Promise((r) => setTimeout(r, 1000));
  assert.deepEqual(await sessionsOf(v), []);
  assert.equal(await canLogIn(v, NODE1), false, 'after unpublish the node is refused');
  holder.kill('SIGKILL');
});

test('delete ends the sessions of the volume', async () => {
  const { v, holder } = await volumeInUse('busyvol');
  const all = await lunar.cli(['sessions']);
  assert.match(all.stdout, new RegExp(`${v.iqn.replace(/\./g, '\\.')}\\s+${NODE1.replace(/\./g, '\\.')}`));
  const d = await lunar.cli(['volume', 'delete', 'busyvol']);
  assert.equal(d.code, 0, d.stderr);
  const left = JSON.parse((await lunar.cli(['sessions', '--json'])).stdout) as SessionInfo[];
  assert.ok(!left.some((x) => x.targetName === v.iqn), 'no session to a deleted volume remains');
  holder.kill('SIGKILL');
});

test('SIGTERM with a live session: the server ends the session and exits 0 promptly', async () => {
  const { v, holder } = await volumeInUse('term');
  const t0 = Date.now();
  await lunar.stop();
  const took = Date.now() - t0;
  assert.deepEqual(lunar.lastExit, { code: 0, signal: null });
  assert.ok(took < 5000, `graceful stop took ${took} ms`);
  holder.kill('SIGKILL');
  await lunar.restart();
  assert.equal((JSON.parse((await lunar.cli(['volume', 'show', 'term', '--json'])).stdout) as Volume).id, v.id);
});
