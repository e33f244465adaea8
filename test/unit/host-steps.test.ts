// The host steps one by one: the runner (timeouts, deadline, nsenter argv, stdin), and the parsers and
// pure decisions the steps rest on (VPD 0x83 WWID, SendTargets output, ifaces, node record edits,
// mountinfo, initiator name, blkid export, path pairs).

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseExport, probe } from '../../src/host/blkid.js';
import { HostError } from '../../src/host/errors.js';
import { mkfsCommand } from '../../src/host/filesystem.js';
import { DEFAULT_TIMEOUTS, type Host } from '../../src/host/types.js';
import { deleteTargetRecords, iscsiadmErrorKind, parseDiscovery, parseIfaces, updateNodeRecord } from '../../src/host/iscsiadm.js';
import { isGone } from '../../src/host/host-fs.js';
import { pollUntil } from '../../src/host/poll.js';
import { parseInitiatorName } from '../../src/host/iscsid.js';
import { mountAt, parseMountinfo, unmount } from '../../src/host/mount.js';
import { dropInText } from '../../src/host/multipath.js';
import { authValues, setRecordValues, splitPortal } from '../../src/host/node-record.js';
import { commandLine, createRunner, timeLeft } from '../../src/host/runner.js';
import { deleteDevice, scanLun, sysfsWriteSpec, writeAttribute } from '../../src/host/scsi-sysfs.js';
import { wwidFromSysfs, wwidFromVpd83 } from '../../src/host/vpd.js';
import { choosePairs, parseIpAddr } from '../../src/node/pairs.js';
import { fail, FakeFs, FakeRunner, vpd83 } from '../support/fake-host.js';

const hostWith = (runner: FakeRunner, deadline = Date.now() + 5000): Host => ({
  runner,
  fs: new FakeFs(),
  deadline,
  timeouts: DEFAULT_TIMEOUTS,
  commandPath: (p) => p,
});

test('runner: direct argv as given; nsenter enters PID 1 mount/net/ipc/uts without forking (no --pid)', () => {
  assert.deepEqual(commandLine('direct', { cmd: 'iscsiadm', args: ['-m', 'session'] }), { file: 'iscsiadm', argv: ['-m', 'session'] });
  assert.deepEqual(commandLine('nsenter', { cmd: 'iscsiadm', args: ['-m', 'session'] }), {
    file: 'nsenter',
    argv: ['--target', '1', '--mount', '--net', '--ipc', '--uts', '--', 'iscsiadm', '-m', 'session'],
  });
});

test('runner: exit code and output returned; stdin fed; environment passed', async () => {
  const r = createRunner('direct');
  const a = await r.run({
    cmd: 'sh',
    args: ['-c', 'cat; echo "$LUNAR_T" >&2; exit 3'],
    timeoutMs: 5000,
    stdin: 'hello',
    env: { LUNAR_T: 'x' },
  });
  assert.deepEqual(a, { code: 3, stdout: 'hello', stderr: 'x\n' });
});

test('runner: a command past its timeout is killed and reported as a timeout', async () => {
  const started = Date.now();
  await assert.rejects(
    createRunner('direct').run({ cmd: 'sleep', args: ['10'], timeoutMs: 200 }),
    (e: unknown) => e instanceof HostError && e.kind === 'timeout',
  );
  assert.ok(Date.now() - started < 3000);
});

test('runner: the request deadline cuts the timeout; a passed deadline runs nothing', async () => {
  assert.equal(timeLeft({ timeoutMs: 10_000, deadline: 1500 }, 1000), 500);
  assert.equal(timeLeft({ timeoutMs: 100, deadline: Infinity }, 0), 100);
  await assert.rejects(
    createRunner('direct').run({ cmd: 'true', args: [], timeoutMs: 1000, deadline: Date.now() - 1 }),
    (e: unknown) => e instanceof HostError && e.kind === 'timeout',
  );
  const started = Date.now();
  await assert.rejects(createRunner('direct').run({ cmd: 'sleep', args: ['10'], timeoutMs: 60_000, deadline: Date.now() + 200 }));
  assert.ok(Date.now() - started < 3000);
});

test('runner: a timed-out command is answered at once, even while something it started holds its output open', async () => {
  // The grandchild keeps stdout open for 20 s: a runner that waits for "close" after the kill waits 20 s.
  const started = Date.now();
  await assert.rejects(
    createRunner('direct').run({ cmd: 'sh', args: ['-c', 'sleep 20 & sleep 20'], timeoutMs: 300 }),
    (e: unknown) => e instanceof HostError && e.kind === 'timeout',
  );
  assert.ok(Date.now() - started < 3000, `answered after ${Date.now() - started} ms`);
});

test('sysfs writes run through the runner, bounded by the sysfs timeout and the deadline, path and data as arguments', async () => {
  const runner = new FakeRunner();
  const h: Host = { ...hostWith(runner, 12345), commandPath: (p) => `/host${p}` };
  const session = {
    name: 'session3',
    targetIqn: 'iqn.x',
    portal: '10.0.0.5:3260',
    iface: 'default',
    state: 'LOGGED_IN',
    host: 4,
    channel: 0,
    target: 0,
  };
  await scanLun(h, session, 7);
  const spec = runner.calls[0]!;
  assert.deepEqual(sysfsWriteSpec(h, '/sys/class/scsi_host/host4/scan', '0 0 7'), spec);
  assert.equal(spec.cmd, 'sh');
  assert.deepEqual(spec.args.slice(2), ['lunar-sysfs-write', '0 0 7', '/host/sys/class/scsi_host/host4/scan']);
  assert.equal(spec.timeoutMs, DEFAULT_TIMEOUTS.sysfs);
  assert.equal(spec.deadline, 12345);
  // A write the runner times out is a timeout of the step (DEADLINE_EXCEEDED), not a plain failure.
  const hung = new FakeRunner();
  hung.handlers.push(() => Promise.reject(new HostError('timeout', 'sh: killed after 15000 ms')));
  const fs2 = new FakeFs();
  const h2: Host = { ...hostWith(hung), fs: fs2 };
  fs2.set('/sys/class/scsi_device/4:0:0:7/device/delete', '');
  await assert.rejects(
    deleteDevice(h2, '4:0:0:7'),
    (e: unknown) => e instanceof HostError && e.kind === 'timeout' && /deleting SCSI device 4:0:0:7/.test(e.message),
  );
});

test('sysfs write script: writes the data to an existing attribute, exit 66 for a missing one (real sh)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lunar-sysfs-'));
  await writeFile(join(dir, 'scan'), '');
  const runner = createRunner('direct');
  const h: Host = { ...hostWith(new FakeRunner()), runner, commandPath: (p) => join(dir, p) };
  assert.equal(await writeAttribute(h, '/scan', '0 0 3'), 'written');
  assert.equal(await readFile(join(dir, 'scan'), 'utf8'), '0 0 3');
  assert.equal(await writeAttribute(h, '/gone', '1'), 'gone');
  await rm(dir, { recursive: true });
});

test('runner: a missing command says so', async () => {
  await assert.rejects(createRunner('direct').run({ cmd: 'lunar-no-such-tool', args: [], timeoutMs: 1000 }), /command not found/);
});

test('iscsiadm: no secret ever through argv (guard)', async () => {
  const runner = new FakeRunner();
  await assert.rejects(
    updateNodeRecord(hostWith(runner), 'iqn.2026-11.io.lunar:v', { portal: 'a:1', iface: 'default' }, 'node.session.auth.password', 'x'),
    /argv/,
  );
  assert.equal(runner.calls.length, 0);
});

test('iscsiadm exit codes: unreachable → unavailable, auth/refused → precondition', () => {
  assert.equal(iscsiadmErrorKind(8), 'unavailable');
  assert.equal(iscsiadmErrorKind(20), 'unavailable');
  assert.equal(iscsiadmErrorKind(24), 'precondition');
  assert.equal(iscsiadmErrorKind(19), 'precondition');
  assert.equal(iscsiadmErrorKind(6), 'failed');
});

test('SendTargets and iface listings parse', () => {
  assert.deepEqual(parseDiscovery('10.0.2.2:3260,1 iqn.2026-11.io.lunar:a\n[fd00::2]:3260,2 iqn.2026-11.io.lunar:a\njunk\n'), [
    { portal: '10.0.2.2:3260', tpgt: 1, iqn: 'iqn.2026-11.io.lunar:a' },
    { portal: '[fd00::2]:3260', tpgt: 2, iqn: 'iqn.2026-11.io.lunar:a' },
  ]);
  const ifaces = parseIfaces('default tcp,<empty>,<empty>,<empty>,<empty>\nlunar-eth1 tcp,<empty>,<empty>,eth1,<empty>\n');
  assert.equal(ifaces.get('lunar-eth1'), 'eth1');
  assert.equal(ifaces.get('default'), '<empty>');
});

test('node record: auth keys replaced or added before END RECORD; empty values removed; line breaks refused', () => {
  const rec =
    '# BEGIN RECORD 2.1.8\nnode.name = iqn.x\nnode.session.auth.authmethod = None\nnode.session.auth.password = old\n# END RECORD\n';
  const out = setRecordValues(rec, authValues({ user: 'u', secret: 's3cret' }));
  assert.equal(
    out,
    '# BEGIN RECORD 2.1.8\nnode.name = iqn.x\nnode.session.auth.authmethod = CHAP\nnode.session.auth.password = s3cret\nnode.session.auth.username = u\n# END RECORD\n',
  );
  const none = setRecordValues(out, authValues(null));
  assert.ok(!none.includes('s3cret') && none.includes('authmethod = None'));
  assert.throws(() => setRecordValues(rec, { 'node.session.auth.password': 'a\nnode.startup = automatic' }), /line break/);
  assert.deepEqual(splitPortal('[fd00::5]:3260'), ['fd00::5', '3260']);
});

test('VPD 0x83: NAA designator of the LU → "3" + hex; port/target designators ignored; sysfs wwid form', () => {
  const wwid = '360014050000000000000000000000001';
  assert.equal(wwidFromVpd83(vpd83(wwid)), wwid);
  // A target-port NAA (association 01b) before the LU's: not the LU's WWID.
  const port = Buffer.from([0x01, 0x13, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8]);
  const lu = vpd83(wwid).subarray(4);
  const page = Buffer.concat([Buffer.from([0, 0x83, 0, port.length + lu.length]), port, lu]);
  assert.equal(wwidFromVpd83(page), wwid);
  assert.equal(wwidFromVpd83(Buffer.from([0, 0x80, 0, 0])), null);
  assert.equal(wwidFromSysfs('naa.60014050000000000000000000000001\n'), wwid);
  assert.equal(wwidFromSysfs('garbage'), null);
});

test('mountinfo parse: escapes, the mount on top wins', () => {
  const t = parseMountinfo(
    '36 25 253:0 / /var/lib/kubelet/a\\040b rw,relatime shared:1 - ext4 /dev/mapper/mpatha rw\n37 36 253:1 / /var/lib/kubelet/a\\040b ro shared:2 - xfs /dev/dm-1 ro\n',
  );
  assert.equal(t.length, 2);
  assert.equal(mountAt(t, '/var/lib/kubelet/a b')?.device, '253:1');
  assert.deepEqual(mountAt(t, '/var/lib/kubelet/a b')?.options, ['ro']);
  assert.equal(mountAt(t, '/nope'), null);
});

test('umount: busy is an error of kind busy; not mounted is fine', async () => {
  const runner = new FakeRunner();
  runner.handlers.push((s) => (s.args[0] === '/busy' ? fail(32, 'umount: /busy: target is busy.') : fail(32, 'umount: /x: not mounted.')));
  await assert.rejects(unmount(hostWith(runner), '/busy'), (e: unknown) => e instanceof HostError && e.kind === 'busy');
  await unmount(hostWith(runner), '/x');
});

test('blkid: every outcome', async () => {
  const cases: [{ code: number; stdout: string; stderr: string }, string][] = [
    [{ code: 0, stdout: 'DEVNAME=/dev/dm-0\nTYPE=ext4\n', stderr: '' }, 'signature:ext4'],
    [{ code: 0, stdout: 'PTTYPE=gpt\n', stderr: '' }, 'signature:gpt partition table'],
    [{ code: 0, stdout: 'TYPE=LVM2_member\nUSAGE=raid\n', stderr: '' }, 'signature:LVM2_member'],
    [{ code: 8, stdout: '', stderr: '' }, 'signature:several signatures (ambivalent probe)'],
    [{ code: 2, stdout: '', stderr: '' }, 'none'],
    [{ code: 2, stdout: '', stderr: 'error: /dev/dm-0: No such device' }, 'error'],
    [{ code: 4, stdout: '', stderr: 'bad usage' }, 'error'],
  ];
  for (const [result, want] of cases) {
    const runner = new FakeRunner();
    runner.handlers.push(() => result);
    const got = await probe(hostWith(runner), '/dev/dm-0').then(
      (p) => (p.kind === 'none' ? 'none' : `signature:${p.what}`),
      () => 'error',
    );
    assert.equal(got, want, JSON.stringify(result));
    assert.deepEqual(runner.lines(), ['blkid -p -o export /dev/dm-0']);
  }
  assert.deepEqual(parseExport('A=1\nB=x=y\n'), { A: '1', B: 'x=y' });
});

test('mkfs: ext4 and xfs without force or discard; others refused', () => {
  assert.deepEqual(mkfsCommand('ext4', '/dev/dm-0'), { cmd: 'mkfs.ext4', args: ['-q', '-m', '0', '-E', 'nodiscard', '/dev/dm-0'] });
  assert.deepEqual(mkfsCommand('xfs', '/dev/dm-0'), { cmd: 'mkfs.xfs', args: ['-q', '-K', '/dev/dm-0'] });
  assert.throws(() => mkfsCommand('btrfs', '/dev/dm-0'), /ext4 and xfs/);
});

test('multipath drop-in: Lunar devices only, the timers given', () => {
  const t = dropInText({ fastIoFailTmo: 3, noPathRetry: 7 });
  assert.match(t, /^devices \{\n\tdevice \{\n\t\tvendor "LUNAR"\n\t\tproduct "VOLUME"/m);
  assert.match(t, /fast_io_fail_tmo 3/);
  assert.match(t, /no_path_retry 7/);
  assert.ok(!/defaults|find_multipaths|blacklist/.test(t), 'the host-wide settings are not touched');
});

test('initiator name file', () => {
  assert.equal(parseInitiatorName('## DO NOT EDIT\nInitiatorName=iqn.1993-08.org.debian:01:abc\n'), 'iqn.1993-08.org.debian:01:abc');
  assert.equal(parseInitiatorName('# nothing\n'), null);
});

test('path pairs: portal × iface, a portal in a NIC subnet only through that NIC, a routed one through all', () => {
  const ifaces = [
    { iface: 'lunar-eth0', cidrs: parseIpAddr('2: eth0    inet 10.0.2.15/24 brd 10.0.2.255 scope global eth0') },
    { iface: 'lunar-eth1', cidrs: ['10.0.3.15/24'] },
  ];
  assert.deepEqual(choosePairs(['10.0.2.2:3260', '10.0.3.2:3260', '192.0.2.1:3260'], ifaces), [
    { portal: '10.0.2.2:3260', iface: 'lunar-eth0' },
    { portal: '10.0.3.2:3260', iface: 'lunar-eth1' },
    { portal: '192.0.2.1:3260', iface: 'lunar-eth0' },
    { portal: '192.0.2.1:3260', iface: 'lunar-eth1' },
  ]);
  assert.deepEqual(choosePairs(['10.0.2.2:3260'], [{ iface: 'default', cidrs: [] }]), [{ portal: '10.0.2.2:3260', iface: 'default' }]);
});

test('iscsiadm record deletions of one process run one at a time (they walk the whole node database)', async () => {
  const runner = new FakeRunner();
  let inFlight = 0;
  let most = 0;
  runner.handlers.push(async () => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, 20));
    inFlight--;
    return { code: 0, stdout: '', stderr: '' };
  });
  const h = hostWith(runner);
  await Promise.all(['a', 'b', 'c'].map((v) => deleteTargetRecords(h, `iqn.2026-11.io.lunar:${v}`)));
  assert.equal(runner.calls.length, 3);
  assert.equal(most, 1);
});

test('host fs: a sysfs attribute of an object being removed (ENODEV) reads as gone; other errors do not', () => {
  const e = (code: string): NodeJS.ErrnoException => Object.assign(new Error(code), { code });
  assert.equal(isGone(e('ENODEV')), true);
  assert.equal(isGone(e('ENOENT')), true);
  assert.equal(isGone(e('EIO')), false);
  assert.equal(isGone(e('EACCES')), false);
});

test('poll: pauses start at firstIntervalMs and double up to intervalMs', async () => {
  const at: number[] = [];
  const t0 = Date.now();
  await pollUntil(
    () => {
      at.push(Date.now() - t0);
      return Promise.resolve(at.length === 7 ? true : undefined);
    },
    { timeoutMs: 10_000, deadline: Infinity, intervalMs: 100, firstIntervalMs: 10, what: 'x' },
  );
  const gaps = at.slice(1).map((t, i) => t - at[i]!);
  // 10, 20, 40, 80, 100, 100 ms: timers fire late, never early; the first is far below the interval.
  for (const [i, want] of [10, 20, 40, 80, 100, 100].entries()) assert.ok(gaps[i]! >= want - 1, `gap ${i}: ${gaps.join(', ')}`);
  assert.ok(gaps[0]! < 100, `first pause ${gaps[0]!} ms, not the whole interval`);
});
