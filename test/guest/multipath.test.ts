// The Linux kernel initiator (open-iscsi) with dm-multipath, in QEMU guests the test boots, against the
// target chosen by TARGET (lunar, default; tgt for comparison). One guest is shared by scenarios a–e; f boots
// a second one. Scenarios depend on each other in order (a logs in, b makes the file system, ...).
// How the bed works: docs/guest.md. Timings are printed at the end (scenario g).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Bed, buildGuest, buildLunarDisk, sleep, type Guest } from './harness.js';
import {
  allActive,
  connectBothPaths,
  discover,
  dmesgFrom,
  guestNowMs,
  kernelDelay,
  kernelEvents,
  login,
  logout,
  mapState,
  markKernelLog,
  probeScript,
  probeStats,
  sessionPaths,
  setChap,
  setupIfaces,
  verifySums,
  vpdWwid,
  waitMap,
  writerScript,
  type MapState,
} from './initiator.js';
import { startTarget, targetKind, type BedTarget, type BedVolume } from './targets.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const MNT = '/mnt/lunar';

const kind = targetKind();

/** Failed commands on a single path (sdX) are expected during failover; errors on dm-N or the file system are not. */
const mapErrors = (ev: readonly string[]): string[] =>
  ev.filter((l) => /dev dm-\d+|Buffer I\/O error|XFS .*(error|[Ss]hut)|EXT4-fs error/.test(l));

const sessionCount = async (gg: Guest, iqn: string): Promise<number> =>
  Number((await gg.sh(`iscsiadm -m session 2>/dev/null | grep -c -F ' ${iqn} ' || true`)).trim());
const timings: [string, number][] = [];
const facts: string[] = [];
const timing = (step: string, ms: number): void => {
  timings.push([step, ms]);
};

describe(`kernel initiator + dm-multipath in a QEMU guest, target ${kind}`, { timeout: 15 * 60_000 }, () => {
  let bed: Bed | undefined;
  let target: BedTarget;
  let g: Guest;
  let vol: BedVolume;
  let map: MapState;

  before(async () => {
    let t0 = Date.now();
    const imageDir = await buildGuest();
    timing('guest image (build or cache hit)', Date.now() - t0);
    bed = await Bed.create(imageDir);
    t0 = Date.now();
    target = await startTarget(kind, bed);
    timing(`${kind} start`, Date.now() - t0);
    vol = await target.createVolume({ name: 'mp0', sizeBytes: 2 * GiB });
    // The built Lunar rides along on a read-only disk, for the node-plugin tests to come (checked in a).
    t0 = Date.now();
    const lunarDisk = await buildLunarDisk(bed.runDir);
    timing('Lunar disk image (dist + production node_modules)', Date.now() - t0);
    g = await bed.bootGuest({ index: 0, extraDisk: lunarDisk });
    timing('guest boot (QEMU spawn -> agent ready)', g.bootMs);
  });

  after(async () => {
    const rows = timings.map(([k, v]) => `| ${k} | ${(v / 1000).toFixed(2)} s |`);
    console.log(
      `\nguest bed timings, target ${kind} (TCG)\n| step | time |\n|---|---|\n${rows.join('\n')}\n${facts.map((f) => `- ${f}`).join('\n')}\n`,
    );
    if (bed) {
      for (const guest of bed.guests) {
        const tail = await guest.consoleTail(1500);
        if (/BUG|Oops|Call Trace/.test(tail)) console.log(`guest ${guest.index} console tail:\n${tail}`);
      }
      await bed.close();
    }
  });

  test('a) SendTargets on both portals via two ifaces, two sessions, one map with two active paths, WWID = VPD 0x83 NAA', async () => {
    await setupIfaces(g);
    const r = await connectBothPaths(g, vol, target.portals, timing);
    map = r.map;
    // Discovery through each iface returned the target at that iface's portal, with the real address (no NAT).
    for (let i = 0; i < target.portals.length; i++) {
      const recs = r.discovered[i]!.filter((d) => d.iqn === vol.iqn);
      assert.ok(
        recs.some((d) => d.portal === target.portals[i]),
        `SendTargets via p${i} gave ${JSON.stringify(r.discovered[i])}`,
      );
      facts.push(`SendTargets via ${target.portals[i]}: ${recs.map((d) => `${d.portal},${d.tpgt}`).join(' ')}`);
    }
    // Two sessions, one per iface/portal, each with one disk.
    assert.equal(r.paths.length, 2, JSON.stringify(r.paths));
    assert.deepEqual(r.paths.map((p) => p.iface).sort(), ['p0', 'p1']);
    for (const p of r.paths) assert.equal(p.portal, target.portals[Number(p.iface.slice(1))], `session via ${p.iface} went to ${p.portal}`);
    assert.deepEqual(
      r.paths.map((p) => p.state),
      ['LOGGED_IN', 'LOGGED_IN'],
    );
    // One map grouping both disks, both active; its WWID is the VPD 0x83 NAA designator of every path.
    assert.deepEqual(map.paths.map((p) => p.dev).sort(), r.paths.map((p) => p.dev).sort());
    assert.ok(
      map.paths.every((p) => p.dmState === 'active' && p.checker === 'ready'),
      JSON.stringify(map),
    );
    for (const p of r.paths) assert.equal(await vpdWwid(g, p.dev), map.wwid, `VPD 0x83 of ${p.dev}`);
    if (vol.wwid) assert.equal(map.wwid, vol.wwid, 'multipath WWID must be "3" + the volume NAA');
    // The target's own view: the guest's IQN, once from each NIC's address.
    const ts = await target.sessions(vol);
    assert.deepEqual(
      ts.map((x) => `${x.initiator} ${x.address}`).sort(),
      g.nics.map((n) => `${g.initiatorName} ${n.address}`).sort(),
      `target-side sessions of ${vol.iqn}`,
    );
    const maps = await g.sh(`multipathd show maps raw format '%n %w'`);
    assert.equal(
      maps
        .trim()
        .split('\n')
        .filter((l) => l.includes(map.wwid)).length,
      1,
      maps,
    );
    facts.push(`map ${map.name} wwid ${map.wwid}, paths ${map.paths.map((p) => p.dev).join(',')}`);
    // The host's Node and the built Lunar run in the guest (for the later node-plugin tests).
    assert.match(await g.sh('/usr/local/bin/node -e "process.stdout.write(process.version)"', 60), new RegExp(`^${process.version}$`));
    const t0 = Date.now();
    assert.match(
      await g.sh(
        'mkdir -p /opt/lunar; mount -o ro /dev/disk/by-id/virtio-lunar /opt/lunar; /usr/local/bin/node /opt/lunar/dist/src/cli.js --version',
        120,
      ),
      /lunar \d+\.\d+/,
    );
    timing('mount Lunar disk + `lunar --version` in the guest', Date.now() - t0);
  });

  test('a2) the kernel takes the LU as reported: no warning about its geometry, limits or sense data', async () => {
    // sd prints these when READ CAPACITY(16), Block Limits VPD (0xB0) or a sense response is inconsistent;
    // the hint in question is then ignored (e.g. io_min/io_opt, so mkfs cannot align).
    const disks = map.paths.map((p) => p.dev).join('|');
    const out = await g.sh(
      `dmesg | grep -E '\\[(${disks})\\]' | grep -iE 'not a multiple|unsupported|invalid|unaligned|ignor|not supported|too (big|small|large)|Sense Key|ASC=|Medium|Unit Attention|failed|error' || true`,
    );
    const lines = out.trim().split('\n').filter(Boolean);
    facts.push(`a2 kernel warnings: ${lines.length ? lines.map((l) => l.replace(/^\[[^\]]*\]\s*/, '')).join(' | ') : 'none'}`);
    assert.deepEqual(lines, [], 'kernel warnings about the LU');
  });

  test('b) mkfs.ext4 + mkfs.xfs + mount through the map; 256 MiB written while a NIC is cut: no I/O error, path failed then restored, checksums intact', async () => {
    const dev = `/dev/mapper/${map.name}`;
    let t0 = Date.now();
    await g.sh(`mkfs.ext4 -q -F ${dev}`, 300);
    timing('mkfs.ext4 (2 GiB)', Date.now() - t0);
    await g.sh(
      `mkdir -p ${MNT}; mount ${dev} ${MNT}; head -c 1M /dev/urandom > ${MNT}/x; sha256sum ${MNT}/x > /run/x.sum; umount ${MNT}; mount ${dev} ${MNT}; sha256sum -c /run/x.sum; umount ${MNT}`,
    );
    t0 = Date.now();
    await g.sh(`mkfs.xfs -q -f ${dev}`, 300);
    timing('mkfs.xfs (2 GiB)', Date.now() - t0);
    t0 = Date.now();
    await g.sh(`mount ${dev} ${MNT}`);
    timing('mount xfs', Date.now() - t0);

    // Which disk is behind NIC n1 (iface p1)?
    const cutPath = (await sessionPaths(g)).find((p) => p.iqn === vol.iqn && p.iface === 'p1');
    assert.ok(cutPath, 'no session via p1');
    await markKernelLog(g, 'LUNAR-CUT-B');

    const probe = g.exec(probeScript(`${MNT}/probe.dat`, 'pb'), 600);
    for (let i = 0; ; i++) {
      if ((await g.exec('test -s /run/pb.log')).code === 0) break;
      assert.ok(i < 100, 'probe did not start');
      await sleep(200);
    }
    const writer = g.exec(writerScript(`${MNT}/b`, 'wb', 256, 20), 600);
    await sleep(1500);
    const cutAt = Date.now();
    const guestCutAt = await guestNowMs(g);
    await markKernelLog(g, 'LUNAR-LINK-OFF');
    await g.setLink('n1', false);
    const failed = await waitMap(
      g,
      map.wwid,
      (m) => m.paths.some((p) => p.dev === cutPath.dev && p.dmState === 'failed'),
      60_000,
      'cut path failed',
    );
    timing('NIC cut -> multipathd shows path failed', Date.now() - cutAt);
    assert.ok(
      failed.paths.some((p) => p.dev !== cutPath.dev && p.dmState === 'active'),
      `the other path must stay active: ${JSON.stringify(failed)}`,
    );
    // Keep writing on one path for a while (at least two more 32 MiB files).
    const filesAtFail = Number((await g.sh('cat /run/wb.count 2>/dev/null || echo 0')).trim());
    for (const deadline = Date.now() + 90_000; ;) {
      const n = Number((await g.sh('cat /run/wb.count 2>/dev/null || echo 0')).trim());
      if (n >= filesAtFail + 2) break;
      assert.ok(Date.now() < deadline, 'no writes progress on the remaining path');
      await sleep(500);
    }
    await markKernelLog(g, 'LUNAR-LINK-ON');
    const restoreAt = Date.now();
    await g.setLink('n1', true);
    await waitMap(g, map.wwid, allActive(2), 120_000, 'cut path restored');
    timing('NIC restored -> both paths active/ready', Date.now() - restoreAt);
    timing('NIC cut duration', restoreAt - cutAt);
    await g.sh('touch /run/wb.stop');
    const w = await writer;
    await g.sh('touch /run/pb.stop');
    await probe;
    assert.equal(w.code, 0, `writer failed during failover: ${w.stderr}`);
    const [files, mib] = w.stdout.trim().split(' ').map(Number) as [number, number];
    assert.ok(mib >= 256, `only ${mib} MiB written`);
    const ps = await probeStats(g, 'pb');
    assert.equal(ps.errors, 0, 'probe writes failed');
    timing(`longest 4 KiB O_DSYNC write (I/O pause) around the cut`, ps.maxMs);
    // The pause is noop interval + noop timeout + fast_io_fail_tmo (1 + 1 + 1 s here) plus TCG slowness;
    // a pause near replacement_timeout or no_path_retry would mean failover did not happen as configured.
    assert.ok(ps.maxMs < 8000, `I/O paused ${ps.maxMs} ms during the cut: failover is not working as configured`);
    facts.push(
      `b: ${files} files / ${mib} MiB written, probe ${ps.writes} writes, median ${ps.medianMs.toFixed(1)} ms, max ${ps.maxMs.toFixed(0)} ms starting ${((ps.maxAt - guestCutAt) / 1000).toFixed(2)} s after the cut`,
    );
    const t1 = Date.now();
    assert.match(await verifySums(g, `/dev/mapper/${map.name}`, MNT, 'wb'), /verified \d+ files/);
    timing(`verify ${mib} MiB (remount + sha256)`, Date.now() - t1);
    const klog = await dmesgFrom(g, 'LUNAR-CUT-B');
    const kFail = kernelDelay(klog, 'LUNAR-LINK-OFF', /Failing path/);
    const kBack = kernelDelay(klog, 'LUNAR-LINK-ON', /Reinstating path/);
    if (kFail !== undefined) timing('NIC cut -> kernel "Failing path" (dmesg)', kFail * 1000);
    if (kBack !== undefined) timing('NIC restored -> kernel "Reinstating path" (dmesg)', kBack * 1000);
    const ev = await kernelEvents(g, 'LUNAR-CUT-B');
    facts.push(
      `b kernel: ${ev
        .filter((l) => /Failing|Reinstating|ping timeout|recovery timed out/.test(l))
        .map((l) => l.replace(/^\[[^\]]*\]\s*/, ''))
        .join(' | ')}`,
    );
    assert.deepEqual(mapErrors(ev), [], 'I/O errors reached the map or the file system');
    assert.ok(
      ev.some((l) => /Failing path/.test(l)),
      `kernel did not fail the path:\n${ev.join('\n')}`,
    );
  });

  test('c) kill -9 of the target during writes, restart within the recovery window: I/O resumes without error, data verified', async () => {
    await markKernelLog(g, 'LUNAR-KILL-C');
    const probe = g.exec(probeScript(`${MNT}/probe.dat`, 'pc'), 600);
    for (let i = 0; (await g.exec('test -s /run/pc.log')).code !== 0; i++) {
      assert.ok(i < 100, 'probe did not start');
      await sleep(200);
    }
    const writer = g.exec(writerScript(`${MNT}/c`, 'wc', 128, 12), 600);
    for (let i = 0; (await g.exec('test -s /run/wc.count')).code !== 0; i++) {
      assert.ok(i < 300, 'writer did not start');
      await sleep(200);
    }
    const guestKillAt = await guestNowMs(g);
    const killAt = Date.now();
    await target.kill9();
    await sleep(3000);
    const t0 = Date.now();
    await target.restart();
    timing(`${kind} restart after kill -9`, Date.now() - t0);
    await waitMap(g, map.wwid, allActive(2), 120_000, 'both paths back after target restart');
    timing('kill -9 -> both paths active again (3 s down)', Date.now() - killAt);
    // I/O resumes: the writer completes at least one more 32 MiB file after the paths are back.
    const filesBack = Number((await g.sh('cat /run/wc.count')).trim());
    for (const deadline = Date.now() + 120_000; Number((await g.sh('cat /run/wc.count')).trim()) <= filesBack;) {
      assert.ok(Date.now() < deadline, `writes did not resume after the restart\n${(await kernelEvents(g, 'LUNAR-KILL-C')).join('\n')}`);
      await sleep(500);
    }
    await g.sh('touch /run/wc.stop');
    const w = await writer;
    await g.sh('touch /run/pc.stop');
    await probe;
    assert.equal(
      w.code,
      0,
      `writer failed across the target restart: ${w.stderr}\n${(await kernelEvents(g, 'LUNAR-KILL-C')).join('\n')}\n${target.output().slice(-3000)}`,
    );
    const ps = await probeStats(g, 'pc');
    assert.equal(ps.errors, 0, 'probe writes failed across the restart');
    timing('longest 4 KiB O_DSYNC write around kill -9 + restart', ps.maxMs);
    // The target was gone >= 3 s: an O_DSYNC write that did not wait that long was not really durable.
    assert.ok(ps.maxMs >= 2500, `no probe write waited for the restarted target (max ${ps.maxMs} ms)`);
    facts.push(`c: ${w.stdout.trim()} (files MiB); max pause starts ${((ps.maxAt - guestKillAt) / 1000).toFixed(2)} s after kill`);
    assert.match(await verifySums(g, `/dev/mapper/${map.name}`, MNT, 'wc'), /verified \d+ files/);
    assert.match(await verifySums(g, `/dev/mapper/${map.name}`, MNT, 'wb'), /verified \d+ files/, 'scenario b data changed');
    const ev = await kernelEvents(g, 'LUNAR-KILL-C');
    assert.deepEqual(mapErrors(ev), [], 'I/O errors reached the map or the file system');
  });

  let g2Boot: Promise<Guest> | undefined;
  test('e) online growth: resize the LU, rescan, multipathd resize map, xfs_growfs', async () => {
    // Boot the second guest (scenario f) meanwhile: e and d measure nothing that its boot would distort much.
    const tBoot = Date.now();
    g2Boot = bed!.bootGuest({ index: 1, memoryMiB: 768, cpus: 2 }).then((gg) => {
      timing('second guest boot (during e, d)', Date.now() - tBoot);
      return gg;
    });
    g2Boot.catch(() => undefined);
    const dev = `/dev/mapper/${map.name}`;
    const before = Number((await g.sh(`blockdev --getsize64 ${dev}`)).trim());
    assert.equal(before, 2 * GiB);
    const t0 = Date.now();
    await target.resize(vol, 3 * GiB);
    await g.sh('iscsiadm -m session --rescan >/dev/null', 60);
    // The SCSI disks see the new capacity (rescan, or the capacity-changed unit attention).
    for (const deadline = Date.now() + 30_000; ;) {
      const sizes = await g.sh(
        `for d in ${map.paths.map((p) => p.dev).join(' ')}; do echo 1 > /sys/block/$d/device/rescan; blockdev --getsize64 /dev/$d; done`,
      );
      if (
        sizes
          .trim()
          .split('\n')
          .every((s) => Number(s) === 3 * GiB)
      )
        break;
      assert.ok(Date.now() < deadline, `paths still report ${sizes.trim()} bytes`);
      await sleep(500);
    }
    await g.sh(`multipathd resize map ${map.name}`, 60);
    const mapSize = Number((await g.sh(`blockdev --getsize64 ${dev}`)).trim());
    assert.equal(mapSize, 3 * GiB, 'map size after multipathd resize');
    await g.sh(`xfs_growfs ${MNT} >/dev/null`, 60);
    const fsBytes = Number((await g.sh(`df -B1 --output=size ${MNT} | tail -1`)).trim());
    assert.ok(fsBytes > 2.9 * GiB, `xfs is ${fsBytes} bytes after growfs`);
    timing('online growth 2 -> 3 GiB (resize..xfs_growfs)', Date.now() - t0);
    assert.ok(allActive(2)((await mapState(g, map.wwid))!), 'paths stay active through the resize');
    assert.match(await verifySums(g, dev, MNT, 'wb'), /verified/);
  });

  test('d) CHAP and mutual CHAP logins from the kernel initiator; wrong secrets refused', async () => {
    const chap = { user: 'guestuser', secret: 'guest-secret-0123' };
    const mutual = { user: 'targetuser', secret: 'target-secret-456' };
    const p0 = target.portals[0]!;
    const volChap = await target.createVolume({ name: 'chap1', sizeBytes: 64 * MiB, chap });
    const volMutual = await target.createVolume({ name: 'chap2', sizeBytes: 64 * MiB, chap, mutual });
    const found = await discover(g, p0, 'p0');
    for (const v of [volChap, volMutual])
      assert.ok(
        found.some((d) => d.iqn === v.iqn && d.portal === p0),
        `${v.iqn} not discovered: ${JSON.stringify(found)}`,
      );

    const steps: string[] = [];
    const tryLogin = async (v: BedVolume, c: typeof chap | null, m?: typeof mutual): Promise<{ code: number; stderr: string }> => {
      await setChap(g, v.iqn, p0, 'p0', c, m);
      const t0 = Date.now();
      const r = await login(g, v.iqn, p0, 'p0');
      steps.push(`login ${m ? 'mutual' : c ? 'chap' : 'none'} -> ${r.code} in ${Date.now() - t0} ms`);
      if (r.code === 0) {
        timing(`login with ${m ? 'mutual CHAP' : c ? 'CHAP' : 'no auth'} (1 session)`, Date.now() - t0);
        assert.equal(await sessionCount(g, v.iqn), 1, `one session to ${v.iqn}`);
        const t1 = Date.now();
        await logout(g, v.iqn);
        steps.push(`logout+flush ${Date.now() - t1} ms`);
      }
      return { code: r.code, stderr: r.stderr + r.stdout };
    };
    // Good secrets log in.
    let r = await tryLogin(volChap, chap);
    assert.equal(r.code, 0, `CHAP login refused: ${r.stderr}`);
    r = await tryLogin(volMutual, chap, mutual);
    assert.equal(r.code, 0, `mutual CHAP login refused: ${r.stderr}`);
    // Wrong initiator secret, no credentials at all, wrong target secret (mutual): all refused.
    r = await tryLogin(volChap, { user: chap.user, secret: 'wrong-secret-999' });
    assert.notEqual(r.code, 0, 'login with a wrong CHAP secret succeeded');
    facts.push(`d: wrong CHAP secret -> iscsiadm exit ${r.code}: ${r.stderr.trim().split('\n').pop()}`);
    r = await tryLogin(volChap, null);
    assert.notEqual(r.code, 0, 'login without CHAP to a CHAP target succeeded');
    r = await tryLogin(volMutual, chap, { user: mutual.user, secret: 'not-the-target-1' });
    assert.notEqual(r.code, 0, 'mutual CHAP with a wrong target secret succeeded');
    facts.push(`d: wrong mutual secret -> iscsiadm exit ${r.code}: ${r.stderr.trim().split('\n').pop()}`);
    facts.push(`d steps: ${steps.join('; ')}`);
    assert.equal((await sessionCount(g, volChap.iqn)) + (await sessionCount(g, volMutual.iqn)), 0, 'refused logins left sessions');
  });

  test('f) two guests logged in to the same LU at once, each writes its own region and reads the other one', async () => {
    assert.ok(bed);
    const shared = await target.createVolume({ name: 'shared', sizeBytes: 64 * MiB });
    assert.ok(g2Boot, 'second guest boot was not started');
    const g2 = await g2Boot;
    await setupIfaces(g2);
    const [m1, m2] = [await connectBothPaths(g, shared, target.portals), await connectBothPaths(g2, shared, target.portals)];
    assert.equal(m1.map.wwid, m2.map.wwid);
    assert.ok(allActive(2)((await mapState(g, shared.wwid ?? m1.map.wwid))!), 'guest 1 lost a path when guest 2 logged in');
    const region = (i: number): string => `bs=1M count=8 seek=${i * 8} skip=${i * 8}`;
    const write = (gg: Guest, mapName: string, i: number): Promise<string> =>
      gg.sh(
        `head -c 8M /dev/urandom > /run/r${i}; dd if=/run/r${i} of=/dev/mapper/${mapName} bs=1M count=8 seek=${i * 8} oflag=direct conv=fsync status=none; sha256sum < /run/r${i} | cut -c1-64`,
      );
    const read = (gg: Guest, mapName: string, i: number): Promise<string> =>
      gg.sh(`dd if=/dev/mapper/${mapName} ${region(i).replace(/seek=\d+ /, '')} iflag=direct status=none | sha256sum | cut -c1-64`);
    const [s1, s2] = await Promise.all([write(g, m1.map.name, 0), write(g2, m2.map.name, 1)]);
    assert.equal((await read(g, m1.map.name, 1)).trim(), s2.trim(), 'guest 1 reads guest 2 region');
    assert.equal((await read(g2, m2.map.name, 0)).trim(), s1.trim(), 'guest 2 reads guest 1 region');
    assert.equal((await read(g, m1.map.name, 0)).trim(), s1.trim(), 'guest 1 region intact');
    for (const gg of [g, g2]) {
      const s = (await sessionPaths(gg)).filter((p) => p.iqn === shared.iqn);
      assert.equal(s.length, 2, `guest ${gg.index} sessions: ${JSON.stringify(s)}`);
    }
    const ts = await target.sessions(shared);
    assert.deepEqual(
      ts.map((x) => `${x.initiator} ${x.address}`).sort(),
      [g, g2].flatMap((gg) => gg.nics.map((n) => `${gg.initiatorName} ${n.address}`)).sort(),
      'target-side sessions of the shared volume',
    );
    await logout(g2, shared.iqn);
    assert.equal(await sessionCount(g2, shared.iqn), 0, 'guest 2 logged out');
  });

  test('g) clean teardown: umount, flush the map, log out of every session', async () => {
    // udev may still hold a map open (blkid after the last writes): settle and retry the flush.
    await g.sh(`umount ${MNT}; udevadm settle; for i in $(seq 20); do multipath -F && break; sleep 1; done; multipath -F`, 120);
    await g.sh('iscsiadm -m node --logoutall=all >/dev/null', 120);
    assert.equal((await g.sh(`dmsetup ls --target multipath`)).trim(), 'No devices found');
    const s = await sessionPaths(g);
    assert.equal(s.length, 0, `sessions left: ${JSON.stringify(s)}`);
  });
});
