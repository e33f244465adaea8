// NodeStageVolume / NodeUnstageVolume over a simulated node (test/support/fake-host.ts): the commands
// each step runs, the never-format rules for every blkid outcome, the stale-LUN (WWID mismatch) rule,
// idempotency, unstage from the staging record after a restart, and unstage with the target unreachable.

import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { nodeCsiError } from '../../src/csi/node.js';
import { HostError } from '../../src/host/errors.js';
import { stageVolume, type StageRequest } from '../../src/node/stage.js';
import { unstageVolume } from '../../src/node/unstage.js';
import type { NodeEnv } from '../../src/node/types.js';
import { fail, FakeNode, fakeNodeWith, nodeEnvFor } from '../support/fake-host.js';

const IQN = 'iqn.2026-11.io.lunar:vol-1';
const WWID = '360014050000000000000000000000001';
const P0 = '10.0.2.2:3260';
const P1 = '10.0.3.2:3260';
const STAGING = '/var/lib/kubelet/plugins/kubernetes.io/csi/iscsi.lunar.dev/abc/globalmount';
const CHAP = { user: 'vol-1-user', secret: 'S3cretSecretXyz1', mutualUser: 'target-user', mutualSecret: 'MutualSecret9876' };

let fake: FakeNode;
let env: NodeEnv;
let stateDir: string;

beforeEach(() => {
  fake = fakeNodeWith(IQN, WWID);
  stateDir = mkdtempSync(join(tmpdir(), 'lunar-node-'));
  env = nodeEnvFor(fake, stateDir);
});

function req(over: Partial<StageRequest> = {}): StageRequest {
  return {
    volumeId: 'vol-1',
    stagingPath: STAGING,
    accessType: 'mount',
    fsType: 'ext4',
    mountFlags: [],
    target: { iqn: IQN, portals: [P0, P1], lun: 0, wwid: WWID, chap: null, discoveryChap: null },
    ...over,
  };
}

const stage = (q: StageRequest = req(), e: NodeEnv = env): Promise<void> => stageVolume(e, q, Date.now() + 10_000);

async function rejectsWith(p: Promise<unknown>, code: status, re?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    const c = nodeCsiError(err);
    assert.equal(c.code, code, `code ${c.code}: ${c.message}`);
    if (re) assert.match(c.message, re);
    return true;
  });
}

test('stage: discovery, manual node records, one login per portal, LUN-only scan, map, mkfs on an empty device, mount', async () => {
  await stage();
  const lines = fake.runner.lines();
  for (const [p, dir] of [
    [P0, '10.0.2.2,3260,1'],
    [P1, '10.0.3.2,3260,1'],
  ] as const) {
    assert.ok(lines.includes(`iscsiadm -m discovery -t sendtargets -p ${p} -I default -o new`), `discovery on ${p}`);
    assert.equal(lines.filter((l) => l === `iscsiadm -m node -T ${IQN} -p ${p} -I default --login`).length, 1);
    // The record's settings in its file (one rewrite), not one iscsiadm -o update per key.
    const rec = (await fake.fs.readText(`/etc/iscsi/nodes/${IQN}/${dir}/default`)) ?? '';
    for (const kv of [
      'node.startup = manual',
      'node.session.scan = manual',
      'node.session.timeo.replacement_timeout = 120',
      'node.conn[0].timeo.noop_out_interval = 2',
      'node.conn[0].timeo.noop_out_timeout = 2',
      'node.conn[0].timeo.login_timeout = 5',
      'node.session.initial_login_retry_max = 2',
      'node.session.auth.authmethod = None',
    ])
      assert.ok(rec.split('\n').includes(kv), `${kv} in the record of ${p}:\n${rec}`);
    assert.match(rec, /^# BEGIN RECORD[\s\S]*# END RECORD\n$/);
  }
  assert.ok(!lines.some((l) => l.includes(' -o update')), 'no iscsiadm -o update');
  assert.ok(lines.includes('multipathd reconfigure'), 'drop-in written and read');
  assert.match(
    (await fake.fs.readText('/etc/multipath/conf.d/lunar.conf')) ?? '',
    /vendor "LUNAR"[\s\S]*fast_io_fail_tmo 5[\s\S]*no_path_retry 12/,
  );
  assert.equal(lines.filter((l) => l.startsWith('multipath -a ')).length, 1, 'the WWID added once for find_multipaths strict');
  assert.ok(lines.includes('multipathd add path sda') && lines.includes('multipathd add path sdb'));
  assert.ok(lines.includes('blkid -p -o export /dev/dm-0'));
  assert.ok(lines.includes('mkfs.ext4 -q -m 0 -E nodiscard /dev/dm-0'));
  assert.ok(lines.includes(`mount -t ext4 /dev/dm-0 ${STAGING}`));
  assert.ok(!lines.includes('resize2fs /dev/dm-0'), 'a filesystem just made fills its device: not grown');
  assert.ok(!lines.some((l) => / -[fF]( |$)/.test(l) && l.startsWith('mkfs')), 'mkfs never forced');
  // Every command has a timeout and the request's deadline.
  for (const c of fake.runner.calls) assert.ok(c.timeoutMs > 0 && c.deadline !== undefined && Number.isFinite(c.deadline), c.cmd);
  const rec = await env.records.load('vol-1');
  assert.equal(rec?.phase, 'staged');
  assert.deepEqual(rec?.pairs, [
    { portal: P0, iface: 'default' },
    { portal: P1, iface: 'default' },
  ]);
  assert.deepEqual(rec?.map, { name: 'mpath0', kernelName: 'dm-0' });
  assert.equal(rec?.devices.length, 2);
  assert.equal(rec?.fsType, 'ext4');
});

test('stage with mutual CHAP: the secrets are in the node record file, in no argv', async () => {
  await stage(req({ target: { iqn: IQN, portals: [P0, P1], lun: 0, wwid: WWID, chap: CHAP, discoveryChap: null } }));
  for (const c of fake.runner.calls) {
    const argv = [c.cmd, ...c.args].join(' ');
    assert.ok(!argv.includes(CHAP.secret) && !argv.includes(CHAP.mutualSecret), `secret in argv: ${argv}`);
    assert.ok(!JSON.stringify(c.env ?? {}).includes(CHAP.secret));
  }
  const rec = (await fake.fs.readText(`/etc/iscsi/nodes/${IQN}/10.0.2.2,3260,1/default`)) ?? '';
  assert.match(rec, /^node\.session\.auth\.authmethod = CHAP$/m);
  assert.match(rec, new RegExp(`^node\\.session\\.auth\\.password = ${CHAP.secret}$`, 'm'));
  assert.match(rec, new RegExp(`^node\\.session\\.auth\\.password_in = ${CHAP.mutualSecret}$`, 'm'));
  assert.match(rec, /# END RECORD\n$/);
  assert.ok(!JSON.stringify(await env.records.load('vol-1')).includes(CHAP.secret), 'no secret in the staging record');
});

test('stage with NICs: one iface per NIC, bound by net_ifacename, each portal through the NIC of its subnet', async () => {
  env = nodeEnvFor(fake, stateDir, { nics: ['eth0', 'eth1'] });
  await stage();
  const lines = fake.runner.lines();
  assert.ok(lines.includes('iscsiadm -m iface -I lunar-eth0 -o new'));
  assert.ok(lines.includes('iscsiadm -m iface -I lunar-eth0 -o update -n iface.net_ifacename -v eth0'));
  assert.ok(lines.includes('iscsiadm -m iface -I lunar-eth1 -o update -n iface.net_ifacename -v eth1'));
  assert.deepEqual(
    lines.filter((l) => l.endsWith('--login')),
    [`iscsiadm -m node -T ${IQN} -p ${P0} -I lunar-eth0 --login`, `iscsiadm -m node -T ${IQN} -p ${P1} -I lunar-eth1 --login`],
  );
  fake.runner.calls.length = 0;
  await stage(
    req({
      volumeId: 'vol-2',
      stagingPath: '/staging/2',
      target: { iqn: IQN, portals: [P0], lun: 1, wwid: '360014050000000000000000000000002', chap: null, discoveryChap: null },
    }),
  ).catch(() => undefined);
  assert.ok(!fake.runner.lines().some((l) => l.includes('-o new') && l.includes('-m iface')), 'an existing iface is not created again');
});

test('unstage with NICs deletes every node record of the target, also those discovery made for pairs never logged in', async () => {
  env = nodeEnvFor(fake, stateDir, { nics: ['eth0', 'eth1'] });
  fake.targetPortals = [P0, P1]; // SendTargets on either portal reports both (2 portals x 2 ifaces = 4 records)
  await stage();
  const records = (): string[] => [...fake.fs.files.keys()].filter((f) => f.startsWith(`/etc/iscsi/nodes/${IQN}/`));
  assert.equal(records().length, 4, 'discovery recorded both portals on both ifaces');
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  assert.deepEqual(records(), [], 'no node record of the target is left');
  assert.equal(fake.sessionList().length, 0);
});

test('stage is idempotent: a repeat checks the mount and answers OK without a login or a mkfs', async () => {
  await stage();
  fake.runner.calls.length = 0;
  await stage();
  assert.deepEqual(fake.runner.lines(), []);
});

test('stage again with another staging path or filesystem: ALREADY_EXISTS', async () => {
  await stage();
  await rejectsWith(stage(req({ stagingPath: '/other' })), status.ALREADY_EXISTS, /staged at/);
  await rejectsWith(stage(req({ fsType: 'xfs' })), status.ALREADY_EXISTS, /ext4/);
  await rejectsWith(stage(req({ accessType: 'block', fsType: '' })), status.ALREADY_EXISTS, /mount volume/);
});

test('a staged mount whose device is gone is unmounted and mounted again, never stacked', async () => {
  await stage();
  // The map went away under the mount (a reconnect gave a new map).
  fake.runner.handlers.unshift(() => undefined);
  fake.fs.rmTree('/sys/block/dm-0');
  await stage();
  const lines = fake.runner.lines();
  assert.ok(lines.includes(`umount ${STAGING}`), 'stale mount removed');
  assert.equal(fake.mounts.filter((m) => m.split(' ')[4] === STAGING).length, 1, 'one mount at the staging path');
});

test('stage of a block volume mounts nothing and records the map', async () => {
  await stage(req({ accessType: 'block', fsType: '' }));
  const lines = fake.runner.lines();
  assert.ok(!lines.some((l) => l.startsWith('mount') || l.startsWith('mkfs') || l.startsWith('blkid')));
  const rec = await env.records.load('vol-1');
  assert.equal(rec?.map?.kernelName, 'dm-0');
  assert.equal(rec?.accessType, 'block');
});

// ---- never format -------------------------------------------------------------------------------

const noMkfs = (): void => assert.ok(!fake.runner.lines().some((l) => l.startsWith('mkfs')), 'mkfs ran');

test('a device that holds the requested filesystem is mounted, not formatted, and grown to the device', async () => {
  fake.lus.get(`${IQN}/0`)!.blkid = 'ext4';
  await stage();
  noMkfs();
  const lines = fake.runner.lines();
  assert.ok(lines.indexOf('resize2fs /dev/dm-0') > lines.indexOf(`mount -t ext4 /dev/dm-0 ${STAGING}`));
  assert.ok(lines.includes(`mount -t ext4 /dev/dm-0 ${STAGING}`));
});

test('discovery runs on both portals at once, and the records are written only after both have ended', async () => {
  let inFlight = 0;
  let most = 0;
  const ended: string[] = [];
  fake.runner.handlers.unshift(async (s) => {
    if (s.cmd !== 'iscsiadm' || !s.args.includes('discovery')) return undefined;
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, 30));
    inFlight--;
    ended.push(s.args[s.args.indexOf('-p') + 1]!);
    return undefined; // the fake's own discovery answers
  });
  const writeAtomic = fake.fs.writeAtomic.bind(fake.fs);
  const recordWrites: number[] = [];
  fake.fs.writeAtomic = (file: string, data: string) => {
    if (file.startsWith(`/etc/iscsi/nodes/${IQN}/`)) recordWrites.push(ended.length);
    return writeAtomic(file, data);
  };
  await stage();
  assert.equal(most, 2, 'both discoveries in flight together');
  assert.deepEqual(recordWrites, [2, 2], 'each record rewritten once, after both discoveries');
});

test('a discovery that fails on one portal leaves the other pair staged', async () => {
  fake.runner.handlers.unshift((s) =>
    s.cmd === 'iscsiadm' && s.args.includes('discovery') && s.args.includes(P1) ? fail(4, 'iscsiadm: connection refused') : undefined,
  );
  await stage();
  const lines = fake.runner.lines();
  assert.ok(lines.includes(`iscsiadm -m node -T ${IQN} -p ${P0} -I default --login`));
  assert.ok(!lines.includes(`iscsiadm -m node -T ${IQN} -p ${P1} -I default --login`));
});

for (const [holds, re] of [
  ['xfs', /already holds xfs/],
  ['PTTYPE=gpt', /gpt partition table/],
  ['PTTYPE=dos', /dos partition table/],
  ['LVM2_member', /LVM2_member/],
  ['linux_raid_member', /linux_raid_member/],
  ['crypto_LUKS', /crypto_LUKS/],
] as const) {
  test(`a device holding ${holds} is neither formatted nor mounted (FAILED_PRECONDITION)`, async () => {
    fake.lus.get(`${IQN}/0`)!.blkid = holds;
    await rejectsWith(stage(), status.FAILED_PRECONDITION, re);
    noMkfs();
    assert.ok(!fake.runner.lines().some((l) => l.startsWith('mount')));
  });
}

for (const [what, result] of [
  ['exit 4 (error)', fail(4, 'blkid: error')],
  ['exit 2 with an error message (device not opened)', fail(2, 'error: /dev/dm-0: No such device or address')],
  ['exit 1', fail(1, '')],
] as const) {
  test(`blkid ${what}: the stage fails and nothing is formatted`, async () => {
    fake.runner.handlers.unshift((s) => (s.cmd === 'blkid' ? result : undefined));
    await rejectsWith(stage(), status.INTERNAL, /not formatted/);
    noMkfs();
  });
}

test('blkid exit 8 (ambivalent: several signatures) is a signature: never formatted', async () => {
  fake.runner.handlers.unshift((s) => (s.cmd === 'blkid' ? { code: 8, stdout: '', stderr: '' } : undefined));
  await rejectsWith(stage(), status.FAILED_PRECONDITION, /several signatures/);
  noMkfs();
});

test('blkid finds nothing but the device holds data: refused, not formatted', async () => {
  const data = Buffer.alloc(64 << 20);
  data[4096] = 0x5a;
  fake.lus.get(`${IQN}/0`)!.data = data;
  await rejectsWith(stage(), status.FAILED_PRECONDITION, /does not recognise/);
  noMkfs();
});

test('blkid finds nothing but the device cannot be read: fails, not formatted', async () => {
  fake.fs.readFailures.set('/dev/dm-0', Object.assign(new Error('EIO: i/o error'), { code: 'EIO' }));
  await rejectsWith(stage(), status.INTERNAL, /not formatted/);
  noMkfs();
});

// ---- stale LUN ------------------------------------------------------------------------------------

test('a device with another WWID at the LUN address is deleted and the LUN rescanned; the right one is used', async () => {
  fake.stale.set(`${IQN}/0`, { wwid: '3600140500000000000000000000000ff', count: 1 });
  await stage();
  const rec = await env.records.load('vol-1');
  assert.equal(rec?.phase, 'staged');
  // The stale device (sda) was deleted; the map holds only devices with the volume's WWID.
  assert.ok(!(await fake.fs.exists('/sys/block/sda')));
  const slaves = await fake.fs.readdir('/sys/block/dm-0/slaves');
  assert.equal(slaves.length, 2);
  assert.ok(!slaves.includes('sda'));
});

test('a device that keeps the wrong WWID is refused: never multipathed, formatted or mounted', async () => {
  fake.stale.set(`${IQN}/0`, { wwid: '3600140500000000000000000000000ff', count: 100 });
  await rejectsWith(stage(), status.FAILED_PRECONDITION, /refusing to use it/);
  const lines = fake.runner.lines();
  assert.ok(!lines.some((l) => l.startsWith('multipath -a') || l.startsWith('mkfs') || l.startsWith('mount') || l.startsWith('blkid')));
});

// ---- partial paths, failures ------------------------------------------------------------------------

test('one portal down at stage: the volume stages on the other path', async () => {
  fake.unreachable.add(P1);
  await stage();
  const rec = await env.records.load('vol-1');
  assert.equal(rec?.phase, 'staged');
  assert.equal(rec?.devices.length, 1);
});

test('no portal reachable: UNAVAILABLE naming the portals, nothing formatted', async () => {
  fake.unreachable.add(P0);
  fake.unreachable.add(P1);
  await rejectsWith(stage(), status.UNAVAILABLE, /10\.0\.2\.2:3260.*10\.0\.3\.2:3260/);
  noMkfs();
});

test('a target the portal does not offer (not published to this node): FAILED_PRECONDITION', async () => {
  fake.targets = [];
  await rejectsWith(stage(), status.FAILED_PRECONDITION, /does not offer target/);
});

// ---- unstage --------------------------------------------------------------------------------------

test('unstage: umount, flush + multipath -f, delete the SCSI devices, log out, delete the records, drop the record', async () => {
  await stage();
  fake.runner.calls.length = 0;
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  const lines = fake.runner.lines();
  const at = (l: string): number => lines.indexOf(l);
  assert.ok(at(`umount ${STAGING}`) >= 0);
  assert.ok(at('blockdev --flushbufs /dev/dm-0') > at(`umount ${STAGING}`));
  assert.ok(at('multipath -f mpath0') > at('blockdev --flushbufs /dev/dm-0'));
  for (const p of [P0, P1]) {
    assert.ok(at(`iscsiadm -m node -T ${IQN} -p ${p} -I default --logout`) > at('multipath -f mpath0'));
    assert.ok(at(`iscsiadm -m node -T ${IQN} -o delete`) > at(`iscsiadm -m node -T ${IQN} -p ${p} -I default --logout`));
  }
  assert.equal(fake.sessionList().length, 0);
  assert.deepEqual(await fake.fs.readdir('/sys/class/scsi_device'), []);
  assert.deepEqual(await fake.fs.readdir(`/etc/iscsi/nodes/${IQN}/10.0.2.2,3260,1`), []);
  assert.equal(await env.records.load('vol-1'), null);
  // Again: nothing to do, OK.
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
});

test('wwids file: the WWID Lunar adds at stage is removed at unstage, after the map flush and before the devices go', async () => {
  await stage();
  assert.ok(((await fake.fs.readText('/etc/multipath/wwids')) ?? '').includes(`/${WWID}/`));
  assert.equal((await env.records.load('vol-1'))?.wwidAdded, true, 'recorded as added by Lunar');
  fake.runner.calls.length = 0;
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  const lines = fake.runner.lines();
  const removal = lines.indexOf(`multipath -w ${WWID}`);
  assert.ok(removal > lines.indexOf('multipath -f mpath0'), lines.join('\n'));
  const firstDelete = lines.findIndex((l) => l.startsWith('sh ') && l.endsWith('/device/delete'));
  assert.ok(firstDelete > removal, 'the entry goes before the SCSI devices');
  assert.ok(!((await fake.fs.readText('/etc/multipath/wwids')) ?? '').includes(`/${WWID}/`));
});

test('wwids file: an entry the host listed before the stage stays after the unstage', async () => {
  fake.fs.set('/etc/multipath/wwids', `# Multipath wwids, Version : 1.0\n/${WWID}/\n`);
  await stage();
  assert.notEqual((await env.records.load('vol-1'))?.wwidAdded, true);
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  assert.ok(!fake.runner.lines().some((l) => l.startsWith('multipath -w')));
  assert.ok(((await fake.fs.readText('/etc/multipath/wwids')) ?? '').includes(`/${WWID}/`));
});

test('wwids file: a stage retried after a crash still knows Lunar added the WWID, and the unstage removes it', async () => {
  // The first try added the WWID and died before the map was there (the record says "attaching").
  fake.runner.handlers.unshift((s) => (s.cmd === 'multipathd' && s.args[0] === 'add' ? fail(1, 'multipathd down') : undefined));
  await assert.rejects(stage());
  fake.runner.handlers.shift();
  assert.equal((await env.records.load('vol-1'))?.wwidAdded, true);
  await stage(); // finds the WWID listed (by the first try)
  assert.equal((await env.records.load('vol-1'))?.wwidAdded, true);
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  assert.ok(!((await fake.fs.readText('/etc/multipath/wwids')) ?? '').includes(`/${WWID}/`));
});

/** multipathd under find_multipaths greedy: it lists a WWID in the wwids file itself as the paths log in. */
function multipathdListsOnLogin(wwid: string): void {
  fake.runner.handlers.unshift((s) => {
    if (s.cmd === 'iscsiadm' && s.args.includes('--login')) {
      const text = fake.fs.files.get('/etc/multipath/wwids')?.toString() ?? '# Multipath wwids, Version : 1.0\n';
      if (!text.includes(`/${wwid}/`)) fake.fs.set('/etc/multipath/wwids', `${text}/${wwid}/\n`);
    }
    return undefined;
  });
}

test('wwids file: an entry multipathd lists itself as the paths appear (find_multipaths greedy) is removed at unstage', async () => {
  multipathdListsOnLogin(WWID);
  await stage();
  assert.equal((await env.records.load('vol-1'))?.wwidAdded, true, "not listed before the first login: Lunar's");
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  assert.ok(!((await fake.fs.readText('/etc/multipath/wwids')) ?? '').includes(`/${WWID}/`));
});

test('wwids file: the WWID of a wrong LU at the LUN address, listed by multipathd during the refused stage, is removed at unstage', async () => {
  const wrong = '3600140500000000000000000000000ff';
  const hostsOwn = '3600140500000000000000000000000ee';
  fake.fs.set('/etc/multipath/wwids', `# Multipath wwids, Version : 1.0\n/${hostsOwn}/\n`);
  fake.stale.set(`${IQN}/0`, { wwid: wrong, count: 100 });
  multipathdListsOnLogin(wrong);
  await rejectsWith(stage(), status.FAILED_PRECONDITION, /refusing to use it/);
  assert.deepEqual((await env.records.load('vol-1'))?.foreignWwids, [wrong]);
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  const text = (await fake.fs.readText('/etc/multipath/wwids')) ?? '';
  assert.ok(!text.includes(`/${wrong}/`), text);
  assert.ok(!text.includes(`/${WWID}/`), text);
  assert.ok(text.includes(`/${hostsOwn}/`), "the host's own entry stays");
  assert.equal(await env.records.load('vol-1'), null);
});

test('wwids file: a wrong LU whose WWID the host listed before the stage keeps its entry', async () => {
  const wrong = '3600140500000000000000000000000ff';
  fake.fs.set('/etc/multipath/wwids', `# Multipath wwids, Version : 1.0\n/${wrong}/\n`);
  fake.stale.set(`${IQN}/0`, { wwid: wrong, count: 100 });
  await rejectsWith(stage(), status.FAILED_PRECONDITION, /refusing to use it/);
  assert.equal((await env.records.load('vol-1'))?.foreignWwids, undefined);
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  assert.ok(((await fake.fs.readText('/etc/multipath/wwids')) ?? '').includes(`/${wrong}/`));
});

test('unstage: a map "in use" for a moment after the unmount (no holder) is flushed on a later try', async () => {
  await stage();
  let inUse = 2;
  fake.runner.handlers.unshift((s) =>
    s.cmd === 'multipath' && s.args[0] === '-f' && inUse-- > 0 ? fail(1, 'mpath0: map in use') : undefined,
  );
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  assert.equal(fake.runner.lines().filter((l) => l === 'multipath -f mpath0').length, 3);
  assert.equal(await env.records.load('vol-1'), null);
});

test('unstage: a map that stays in use, or has a holder, is FAILED_PRECONDITION and nothing is logged out', async () => {
  await stage();
  fake.runner.handlers.unshift((s) => (s.cmd === 'multipath' && s.args[0] === '-f' ? fail(1, 'mpath0: map in use') : undefined));
  await rejectsWith(unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000), status.FAILED_PRECONDITION, /still in use after 5 tries/);
  assert.ok(!fake.runner.lines().some((l) => l.includes('--logout')));
  fake.runner.calls.length = 0;
  fake.fs.set('/sys/block/dm-0/holders/dm-7', '');
  await rejectsWith(unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000), status.FAILED_PRECONDITION, /held by dm-7/);
  assert.equal(fake.runner.lines().filter((l) => l === 'multipath -f mpath0').length, 1, 'a holder: no retry');
  assert.equal(fake.sessionList().length, 2);
});

test('unstage: iscsiadm -o delete tripping over a session another unstage is ending (exit 6) is tried again', async () => {
  await stage();
  let races = 2;
  fake.runner.handlers.unshift((s) =>
    s.cmd === 'iscsiadm' && s.args.includes('delete') && races-- > 0
      ? fail(6, 'iscsiadm: could not read session targetname: 5\niscsiadm: could not find session info for session38')
      : undefined,
  );
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  assert.equal(await env.records.load('vol-1'), null);
  assert.deepEqual(await fake.fs.readdir(`/etc/iscsi/nodes/${IQN}`), []);
});

test('unstage: exit 6 that names no session (seen with 10 unstages at once) is tried again too; the others are not', async () => {
  await stage();
  let races = 2;
  const generic = 'iscsiadm: Could not execute operation on all records: encountered iSCSI database failure';
  fake.runner.handlers.unshift((s) => (s.cmd === 'iscsiadm' && s.args.includes('delete') && races-- > 0 ? fail(6, generic) : undefined));
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  assert.equal(await env.records.load('vol-1'), null);
  await stage();
  fake.runner.calls.length = 0;
  fake.runner.handlers.unshift((s) => (s.cmd === 'iscsiadm' && s.args.includes('delete') ? fail(7, 'iscsiadm: invalid') : undefined));
  await rejectsWith(unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000), status.INTERNAL, /exit 7/);
  assert.equal(fake.runner.lines().filter((l) => l.endsWith('-o delete')).length, 1, 'another exit: no retry');
});

test('unstage: the sessions of both pairs are logged out at once', async () => {
  await stage();
  let inFlight = 0;
  let most = 0;
  fake.runner.handlers.unshift(async (s) => {
    if (s.cmd !== 'iscsiadm' || !s.args.includes('--logout')) return undefined;
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, 30));
    inFlight--;
    return undefined;
  });
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  assert.equal(most, 2, 'both logouts in flight together');
  assert.equal(fake.sessionList().length, 0);
  assert.equal(await env.records.load('vol-1'), null);
});

test('unstage after a plugin restart works from the staging record alone', async () => {
  await stage(req({ target: { iqn: IQN, portals: [P0, P1], lun: 0, wwid: WWID, chap: CHAP, discoveryChap: null } }));
  const restarted = nodeEnvFor(fake, stateDir); // a new process: nothing in memory but the records on disk
  await unstageVolume(restarted, 'vol-1', STAGING, Date.now() + 10_000);
  assert.equal(fake.sessionList().length, 0);
  assert.equal(fake.mounts.length, 0);
  assert.equal(await restarted.records.load('vol-1'), null);
});

test('unstage after a crash in the middle of a stage (record still "attaching") logs out what was logged in', async () => {
  fake.runner.handlers.unshift((s) => (s.cmd === 'multipath' && s.args[0] === '-a' ? fail(1, 'killed') : undefined));
  await assert.rejects(stage());
  assert.equal((await env.records.load('vol-1'))?.phase, 'attaching');
  assert.equal(fake.sessionList().length, 2);
  fake.runner.handlers.shift();
  await unstageVolume(nodeEnvFor(fake, stateDir), 'vol-1', STAGING, Date.now() + 10_000);
  assert.equal(fake.sessionList().length, 0);
});

test('stage after a crashed stage leaves no duplicate session', async () => {
  fake.runner.handlers.unshift((s) => (s.cmd === 'multipath' && s.args[0] === '-a' ? fail(1, 'killed') : undefined));
  await assert.rejects(stage());
  fake.runner.handlers.shift();
  await stage(req(), nodeEnvFor(fake, stateDir));
  assert.equal(fake.sessionList().length, 2);
  assert.equal((await env.records.load('vol-1'))?.phase, 'staged');
});

test('unstage of a busy mount is an error and logs nothing out', async () => {
  await stage();
  fake.umountFailures.set(STAGING, fail(32, `umount: ${STAGING}: target is busy.`));
  await rejectsWith(unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000), status.FAILED_PRECONDITION, /busy/);
  assert.ok(!fake.runner.lines().some((l) => l.includes('--logout') || l.startsWith('multipath -f')));
  assert.equal(fake.sessionList().length, 2);
  assert.ok(await env.records.load('vol-1'));
});

test('unstage with the target unreachable: bounded commands, the failure returned, the record kept for the retry', async () => {
  await stage();
  fake.runner.handlers.unshift((s) =>
    s.cmd === 'iscsiadm' && s.args.includes('--logout') ? fail(8, 'iscsiadm: Could not logout: timed out') : undefined,
  );
  const started = Date.now();
  await assert.rejects(unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000), (err: unknown) => {
    assert.ok(err instanceof HostError);
    assert.match(err.message, /logout incomplete/);
    return true;
  });
  assert.ok(Date.now() - started < 5000, 'no retry loop');
  assert.equal(fake.runner.lines().filter((l) => l.includes('--logout')).length, 2, 'each session tried once');
  assert.ok(await env.records.load('vol-1'), 'record kept');
  // The target is back: the retry finishes the job.
  fake.runner.handlers.shift();
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  assert.equal(fake.sessionList().length, 0);
});

test('a command that outlives the deadline is not waited for (deadline passed to the runner)', async () => {
  const deadline = Date.now() + 10_000;
  await stageVolume(env, req(), deadline);
  assert.ok(fake.runner.calls.every((c) => c.deadline === deadline));
});
