// The CSI node plugin (`lunar node`) proven with the kernel initiator and dm-multipath: the controller
// (`lunar serve`, two portals) runs on the host in the bed's network namespace, `lunar node` in two QEMU
// guests (the host's built Lunar on the read-only virtio-lunar disk); the test drives both over CSI as
// kubelet and the sidecars would. Issue 8, "What it must show". Both guests are booted once and every
// scenario runs on them, in order; each scenario leaves the guests clean (checked) for the next.
// How the bed works: docs/guest.md; the node-plugin parts: test/guest/node-bed.ts.
// xfs volumes are at least 512 MiB: mkfs.xfs of xfsprogs 6.x refuses file systems below 300 MiB.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { FakeApiServer, kubeconfigFor } from '../support/fake-apiserver.js';
import { parsePrometheusText, sampleValue } from '../support/prom-text.js';
import { Bed, buildGuest, buildLunarDisk, run, sleep, SUBNETS, type Guest } from './harness.js';
import { kernelEvents, markKernelLog, q, writerScript } from './initiator.js';
import {
  call,
  codeOf,
  controllerPublish,
  controllerUnpublish,
  createVolume,
  capability,
  forwardIn,
  GiB,
  kubeletPaths,
  leftovers,
  mapOf,
  MiB,
  nodePublish,
  NodePlugin,
  nodeStage,
  nodeUnpublish,
  nodeUnstage,
  nothingLeft,
  sampleArgv,
  sessionsTo,
  startController,
  volumeStats,
  writeSignature,
  type Controller,
  type CsiVolume,
  type Fs,
  type Signature,
} from './node-bed.js';

const timings: [string, number][] = [];
const timing = (step: string, ms: number): void => void timings.push([step, ms]);
const timed = async <T>(step: string, f: () => Promise<T>): Promise<T> => {
  const t0 = Date.now();
  const r = await f();
  timing(step, Date.now() - t0);
  return r;
};

/** The stand-in API server, as guest 0's plugin reaches it (a host address of the first subnet), and its metrics port. */
const API_PORT = 16443;
const METRICS_PORT = 19808;
const KUBECONFIG = '/run/lunar-kubeconfig';
/** The discovery CHAP the controller requires: every NodeStage discovers through the discovery record. */
const DISCOVERY_CHAP = { user: 'lunar-disc', secret: 'DiscoveryOnly-Secret-7' };
/** CreateVolume parameters of a volume made for the PVC ns/name (what external-provisioner adds). */
const forPvc = (ns: string, name: string): Record<string, string> => ({
  'csi.storage.k8s.io/pvc/name': name,
  'csi.storage.k8s.io/pvc/namespace': ns,
});

/** Errors on the map or the file system (a failed command on one sdX path is expected during failover). */
const mapErrors = (ev: readonly string[]): string[] =>
  ev.filter((l) => /dev dm-\d+|Buffer I\/O error|XFS .*(error|[Ss]hut)|EXT4-fs error/.test(l));

describe('CSI node plugin in QEMU guests, controller on the host', { timeout: 30 * 60_000 }, () => {
  let bed: Bed | undefined;
  let ctl: Controller;
  let g0: Guest;
  let g1: Guest;
  let n0: NodePlugin;
  let n1: NodePlugin;
  let api: FakeApiServer;

  /** Reasons of the Events on the PVC ns/name, waiting up to waitMs for `want` to be among them. */
  const eventsOn = async (
    ns: string,
    name: string,
    want: string[] = [],
    waitMs = 20_000,
  ): Promise<{ reason: string; message: string }[]> => {
    const list = (): { reason: string; message: string }[] =>
      [...api.events.values()]
        .map((e) => e as { reason?: string; message?: string; involvedObject?: { namespace?: string; name?: string } })
        .filter((e) => e.involvedObject?.namespace === ns && e.involvedObject.name === name)
        .map((e) => ({ reason: e.reason ?? '', message: e.message ?? '' }));
    const deadline = Date.now() + waitMs;
    while (!want.every((r) => list().some((e) => e.reason === r)) && Date.now() < deadline) await sleep(250);
    return list();
  };
  /** guest 0's plugin /metrics, fetched inside the guest. */
  const metrics0 = async () =>
    parsePrometheusText(
      await g0.sh(
        `/usr/local/bin/node -e "fetch('http://127.0.0.1:${METRICS_PORT}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))"`,
      ),
    );

  /**
   * Checks that nothing of the volume is left in the guest: session, node record, map, SCSI device, mount,
   * staging record. A leftover is recorded and the scenario goes on (one guest run shows every problem);
   * the scenario fails at its end (endScenario) if anything was left.
   */
  let leftoverProblems: string[] = [];
  const assertClean = async (n: NodePlugin, vol: CsiVolume, what: string): Promise<void> => {
    const l = await leftovers(n.g, vol);
    if (JSON.stringify(l) !== JSON.stringify(nothingLeft)) {
      leftoverProblems.push(`${what}: left in guest ${n.g.index}: ${JSON.stringify(l)}`);
      // Clean up what the plugin left, so the next scenarios start from a clean guest.
      await n.g.exec(
        `iscsiadm -m node -T ${q(vol.volume_context.targetIqn!)} --logout >/dev/null 2>&1; iscsiadm -m node -T ${q(vol.volume_context.targetIqn!)} -o delete >/dev/null 2>&1; true`,
        60,
      );
    }
  };
  const endScenario = (): void => {
    const p = leftoverProblems;
    leftoverProblems = [];
    assert.deepEqual(p, [], 'something of a volume was left after its NodeUnstage');
  };

  /** Checks the staged volume: one session per portal, one map whose paths are all active. */
  const assertStaged = async (n: NodePlugin, vol: CsiVolume): Promise<string> => {
    assert.equal(await sessionsTo(n.g, vol.volume_context.targetIqn!), 2, 'one session per portal');
    const m = await mapOf(n.g, vol.volume_context.wwid!);
    assert.ok(m, `no multipath map for ${vol.volume_context.wwid}`);
    assert.equal(m.paths.length, 2, `map paths: ${JSON.stringify(m.paths)}`);
    assert.ok(
      m.paths.every((p) => p.dm === 'active'),
      `map paths: ${JSON.stringify(m.paths)}`,
    );
    return m.name;
  };

  /** Writes data with checksums into a published volume; returns what verify() needs. */
  const writeData = async (g: Guest, target: string, fs: Fs, tag: string): Promise<string> => {
    if (fs === 'block') {
      return g.sh(
        `head -c 8M /dev/urandom > /run/${tag}.bin; dd if=/run/${tag}.bin of=${q(target)} bs=1M oflag=direct conv=fsync,notrunc status=none; sha256sum < /run/${tag}.bin | cut -c1-64`,
      );
    }
    return g.sh(`cd ${q(target)}; for i in 1 2 3; do head -c 4M /dev/urandom > f$i; done; sync; sha256sum f1 f2 f3`);
  };
  const verifyData = async (g: Guest, target: string, fs: Fs, sums: string): Promise<void> => {
    if (fs === 'block') {
      const got = await g.sh(`dd if=${q(target)} bs=1M count=8 iflag=direct status=none | sha256sum | cut -c1-64`);
      assert.equal(got.trim(), sums.trim(), 'block data read back on the other guest');
      return;
    }
    await g.sh(
      `echo 3 > /proc/sys/vm/drop_caches; cd ${q(target)}; echo ${Buffer.from(sums).toString('base64')} | base64 -d | sha256sum --quiet -c`,
    );
  };

  const deleteVolume = (vol: CsiVolume): Promise<unknown> => call(ctl.controller, 'DeleteVolume', { volume_id: vol.volume_id });

  /** CreateVolume → ControllerPublish → NodeStage → NodePublish → write → unpublish → unstage → (clean) → second guest → data intact → DeleteVolume. */
  const lifecycle = async (fs: Fs, name: string, a: NodePlugin, b: NodePlugin, label: string): Promise<void> => {
    const vol = await createVolume(ctl, name, fs, 512 * MiB);
    let pc = await controllerPublish(ctl, vol, a, fs);
    await timed(`${label}: NodeStage (2 paths${fs === 'block' ? '' : ', mkfs'})`, () => nodeStage(a, vol, pc, fs));
    await assertStaged(a, vol);
    if (fs !== 'block') {
      const { staging } = kubeletPaths(vol.volume_id);
      const t = (await a.g.sh(`findmnt -n -o FSTYPE --target ${q(staging)}`)).trim();
      assert.equal(t, fs, `file system mounted at the staging path`);
    }
    const target = await nodePublish(a, vol, pc, fs);
    const sums = await writeData(a.g, target, fs, name);
    await nodeUnpublish(a, vol);
    await timed(`${label}: NodeUnstage`, () => nodeUnstage(a, vol));
    await assertClean(a, vol, `${label}: after NodeUnstage on guest ${a.g.index}`);
    await controllerUnpublish(ctl, vol, a);
    pc = await controllerPublish(ctl, vol, b, fs);
    await timed(`${label}: NodeStage on the second guest (no mkfs)`, () => nodeStage(b, vol, pc, fs));
    await assertStaged(b, vol);
    const target2 = await nodePublish(b, vol, pc, fs);
    await verifyData(b.g, target2, fs, sums);
    await nodeUnpublish(b, vol);
    await nodeUnstage(b, vol);
    await assertClean(b, vol, `${label}: after NodeUnstage on guest ${b.g.index}`);
    await controllerUnpublish(ctl, vol, b);
    await deleteVolume(vol);
  };

  before(async () => {
    let t0 = Date.now();
    const imageDir = await buildGuest();
    timing('guest image (build or cache hit)', Date.now() - t0);
    bed = await Bed.create(imageDir);
    ctl = await timed('lunar serve start (controller, 2 portals)', () =>
      startController(bed!, { discoveryChap: `${DISCOVERY_CHAP.user}:${DISCOVERY_CHAP.secret}` }),
    );
    // The stand-in Kubernetes API server (the one fake allowed), reached by guest 0 through the netns.
    const apiSock = path.join(bed.runDir, 'apiserver.sock');
    api = await new FakeApiServer().start(apiSock);
    const stopApiForward = await forwardIn(bed, SUBNETS[0]!.hostAddress, API_PORT, apiSock);
    bed.onClose(async () => {
      await stopApiForward();
      await api.close();
    });
    const lunarDisk = await timed('Lunar disk image', () => buildLunarDisk(bed!.runDir));
    t0 = Date.now();
    [g0, g1] = await Promise.all([bed.bootGuest({ index: 0, extraDisk: lunarDisk }), bed.bootGuest({ index: 1, extraDisk: lunarDisk })]);
    timing('two guests boot in parallel (QEMU spawn -> agent ready)', Date.now() - t0);
    // Guest 0 binds one iscsiadm iface per NIC (--iface), guest 1 uses the default iface: both code paths.
    await g0.sh(`cat > ${KUBECONFIG} <<'EOF'\n${kubeconfigFor(`http://${SUBNETS[0]!.hostAddress}:${API_PORT}`)}EOF`);
    // Guest 0's plugin also puts Events on PVCs and serves /metrics.
    n0 = new NodePlugin(g0, { ifaces: true, extraArgs: ['--kubeconfig', KUBECONFIG, '--metrics-address', `127.0.0.1:${METRICS_PORT}`] });
    n1 = new NodePlugin(g1);
    bed.onClose(async () => {
      await n0.close();
      await n1.close();
    });
    await timed('lunar node start in both guests (-> Probe answers)', () => Promise.all([n0.start(), n1.start()]));
  });

  after(async () => {
    const rows = timings.map(([k, v]) => `| ${k} | ${(v / 1000).toFixed(2)} s |`);
    console.log(`\nnode plugin in the guest: timings (TCG)\n| step | time |\n|---|---|\n${rows.join('\n')}\n`);
    if (bed) {
      if (process.env.LUNAR_GUEST_KEEP_RUN === '1') {
        for (const n of [n0, n1]) if (n) console.log(`plugin log of ${n.nodeName} (tail):\n${await n.logTail(60).catch(() => '')}`);
      }
      await bed.close();
    }
  });

  // Every scenario fails if it left anything of a volume behind (see assertClean).
  afterEach(() => endScenario());

  test('Identity and NodeGetInfo / NodeGetCapabilities of the plugin in the guest', async () => {
    const info = await call<{ name: string }>(n0.identity, 'GetPluginInfo');
    assert.equal(info.name, 'iscsi.lunar.dev');
    const caps = await call<{ capabilities: { service?: { type: string } }[] }>(n0.identity, 'GetPluginCapabilities');
    assert.ok(
      !caps.capabilities.some((c) => c.service?.type === 'CONTROLLER_SERVICE'),
      `node plugin reports CONTROLLER_SERVICE: ${JSON.stringify(caps)}`,
    );
    assert.equal(n0.nodeId, `g0#${g0.initiatorName}`);
    assert.equal(n1.nodeId, `g1#${g1.initiatorName}`);
    const nc = await call<{ capabilities: { rpc: { type: string } }[] }>(n0.node, 'NodeGetCapabilities');
    const types = nc.capabilities.map((c) => c.rpc.type);
    for (const t of ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'SINGLE_NODE_MULTI_WRITER']) {
      assert.ok(types.includes(t), `NodeGetCapabilities lacks ${t}: ${types.join(', ')}`);
    }
  });

  for (const fs of ['ext4', 'xfs', 'block'] as const) {
    test(`full lifecycle, ${fs}: stage on guest 0, write, unstage (nothing left), stage on guest 1, data intact`, async () => {
      await lifecycle(fs, `life-${fs}`, n0, n1, fs);
    });
  }

  test('pod mode: own mount namespace, /dev /sys kubelet dir rshared, host commands through nsenter — the same lifecycle', async () => {
    await n0.restart({ pod: true });
    const ns = await g0.sh(`readlink /proc/1/ns/mnt /proc/${n0.pid}/ns/mnt`);
    const [host, plugin] = ns.trim().split('\n');
    assert.notEqual(plugin, host, 'the plugin runs in its own mount namespace');
    assert.match(await n0.log(), /=== start \S+ pod/);
    try {
      await lifecycle('ext4', 'pod-ext4', n0, n1, 'pod mode ext4');
      // the same with the pod as the second node: its mounts must be visible in the host's namespace
      const vol = await createVolume(ctl, 'pod-xfs', 'xfs', 512 * MiB);
      const pc = await controllerPublish(ctl, vol, n0, 'xfs');
      await nodeStage(n0, vol, pc, 'xfs');
      const target = await nodePublish(n0, vol, pc, 'xfs');
      // the agent runs in the guest's root mount namespace: the pod's mounts propagated there
      assert.equal((await g0.sh(`findmnt -n -o FSTYPE --target ${q(target)}`)).trim(), 'xfs', 'publish mount visible on the host');
      await g0.sh(`echo pod > ${q(target)}/hello; sync`);
      await nodeUnpublish(n0, vol);
      await nodeUnstage(n0, vol);
      await assertClean(n0, vol, 'pod mode xfs');
      await controllerUnpublish(ctl, vol, n0);
      await deleteVolume(vol);
    } finally {
      await n0.restart();
    }
  });

  test('MULTI_NODE_MULTI_WRITER block on two guests at once, then the live-migration hand-over', async () => {
    const mode = 'MULTI_NODE_MULTI_WRITER' as const;
    const vol = await createVolume(ctl, 'rwx-block', 'block', 128 * MiB, { mode });
    const pcs = [await controllerPublish(ctl, vol, n0, 'block', mode), await controllerPublish(ctl, vol, n1, 'block', mode)];
    await Promise.all([nodeStage(n0, vol, pcs[0]!, 'block', { mode }), nodeStage(n1, vol, pcs[1]!, 'block', { mode })]);
    const t0 = await nodePublish(n0, vol, pcs[0]!, 'block', 'pod1', mode);
    const t1 = await nodePublish(n1, vol, pcs[1]!, 'block', 'pod1', mode);
    const writeRegion = (g: Guest, t: string, i: number): Promise<string> =>
      g.sh(
        `head -c 8M /dev/urandom > /run/r${i}; dd if=/run/r${i} of=${q(t)} bs=1M seek=${i * 8} oflag=direct conv=fsync,notrunc status=none; sha256sum < /run/r${i} | cut -c1-64`,
      );
    const readRegion = async (g: Guest, t: string, i: number): Promise<string> =>
      (await g.sh(`dd if=${q(t)} bs=1M count=8 skip=${i * 8} iflag=direct status=none | sha256sum | cut -c1-64`)).trim();
    const [s0, s1] = await Promise.all([writeRegion(g0, t0, 0), writeRegion(g1, t1, 1)]);
    assert.equal(await readRegion(g0, t0, 1), s1.trim(), 'guest 0 reads what guest 1 wrote');
    assert.equal(await readRegion(g1, t1, 0), s0.trim(), 'guest 1 reads what guest 0 wrote');
    await nodeUnpublish(n1, vol);

    // Hand-over: the source (guest 0) keeps writing 1 MiB blocks from 16 MiB on; the destination publishes
    // for the new pod while it writes; the source stops, flushes and unpublishes; the destination reads all.
    const writer = g0.exec(
      `rm -f /run/ho.stop; : > /run/ho.sums; i=0
while :; do head -c 1M /dev/urandom > /run/ho.blk; dd if=/run/ho.blk of=${q(t0)} bs=1M seek=$((16+i)) oflag=direct conv=notrunc status=none || exit 1
  echo "$i $(sha256sum < /run/ho.blk | cut -c1-64)" >> /run/ho.sums; i=$((i+1)); [ -e /run/ho.stop ] && [ $i -ge 4 ] && break; [ $i -ge 64 ] && break; done
blockdev --flushbufs ${q(t0)}; echo $i`,
      300,
    );
    for (let i = 0; (await g0.exec('test -s /run/ho.sums')).code !== 0; i++) {
      assert.ok(i < 200, 'hand-over writer did not start');
      await sleep(100);
    }
    const tNew = await timed('hand-over: NodePublish on the destination while the source writes', () =>
      nodePublish(n1, vol, pcs[1]!, 'block', 'pod2', mode),
    );
    await g0.sh('touch /run/ho.stop');
    const w = await writer;
    assert.equal(w.code, 0, `source writes failed during the hand-over: ${w.stderr}`);
    await nodeUnpublish(n0, vol);
    const sums = (await g0.sh('cat /run/ho.sums')).trim().split('\n');
    assert.ok(sums.length >= 4, `source wrote only ${sums.length} blocks`);
    const got = (
      await g1.sh(
        `for i in $(seq 0 ${sums.length - 1}); do echo "$i $(dd if=${q(tNew)} bs=1M count=1 skip=$((16+i)) iflag=direct status=none | sha256sum | cut -c1-64)"; done`,
      )
    )
      .trim()
      .split('\n');
    assert.deepEqual(got, sums, 'the destination reads every block the source wrote');
    assert.equal(await readRegion(g1, tNew, 0), s0.trim(), 'earlier region intact');
    await call(n1.node, 'NodeUnpublishVolume', { volume_id: vol.volume_id, target_path: kubeletPaths(vol.volume_id, 'pod2').target });
    await Promise.all([nodeUnstage(n0, vol), nodeUnstage(n1, vol)]);
    await assertClean(n0, vol, 'RWX source');
    await assertClean(n1, vol, 'RWX destination');
    await controllerUnpublish(ctl, vol, n0);
    await controllerUnpublish(ctl, vol, n1);
    await deleteVolume(vol);
  });

  test('kill -9 of the plugin between stage and unstage: the restarted plugin unstages everything', async () => {
    const vol = await createVolume(ctl, 'crash-staged', 'ext4', 256 * MiB);
    const pc = await controllerPublish(ctl, vol, n0, 'ext4');
    await nodeStage(n0, vol, pc, 'ext4');
    await nodePublish(n0, vol, pc, 'ext4');
    await n0.restart();
    await nodeUnpublish(n0, vol);
    await nodeUnstage(n0, vol);
    await assertClean(n0, vol, 'unstage after kill -9');
    await controllerUnpublish(ctl, vol, n0);
    await deleteVolume(vol);
  });

  test('kill -9 of the plugin during NodeStage: the next NodeStage succeeds, no duplicate session', async () => {
    const vol = await createVolume(ctl, 'crash-staging', 'xfs', 512 * MiB);
    const pc = await controllerPublish(ctl, vol, n0, 'xfs');
    const iqn = vol.volume_context.targetIqn!;
    const first = nodeStage(n0, vol, pc, 'xfs', { timeoutMs: 60_000 }).then(
      () => 'completed',
      (e: unknown) => String(e),
    );
    // Kill it once the first session is up (mid-stage: the second login, scan, map and mkfs still to come).
    for (let i = 0; (await sessionsTo(g0, iqn)) === 0; i++) {
      assert.ok(i < 300, `no session came up during the first NodeStage\n${await n0.logTail()}`);
      await sleep(100);
    }
    await n0.kill9();
    const r = await first;
    assert.notEqual(r, 'completed', 'the first NodeStage completed before the kill: the test did not kill it mid-stage');
    await n0.start();
    await nodeStage(n0, vol, pc, 'xfs');
    await assertStaged(n0, vol);
    assert.equal(await sessionsTo(g0, iqn), 2, 'no duplicate session after the retried stage');
    // and a repeated stage of the staged volume is OK and changes nothing
    await nodeStage(n0, vol, pc, 'xfs');
    assert.equal(await sessionsTo(g0, iqn), 2);
    assert.equal(
      (await g0.sh(`grep -c -F ${q(kubeletPaths(vol.volume_id).staging)} /proc/self/mountinfo || true`)).trim(),
      '1',
      'one mount, never stacked',
    );
    await nodeUnstage(n0, vol);
    await assertClean(n0, vol, 'after the retried stage');
    await controllerUnpublish(ctl, vol, n0);
    await deleteVolume(vol);
  });

  test('never formats a LU that holds ext4, a partition table or an LVM signature; a wrong WWID is refused', async () => {
    const sha = async (file: string): Promise<string> => {
      const b = await readFile(file);
      return createHash('sha256')
        .update(b.subarray(0, 64 * MiB))
        .digest('hex');
    };
    const cases: [Signature, Fs, RegExp][] = [
      ['ext4', 'xfs', /TYPE="ext4"/],
      ['dos-partition-table', 'ext4', /PTTYPE="dos"/],
      ['lvm2', 'xfs', /TYPE="LVM2_member"/],
    ];
    for (const [sig, fs, blkid] of cases) {
      api.pvcs.set(`apps/sig-${sig}`, { uid: `uid-sig-${sig}` });
      const vol = await createVolume(ctl, `sig-${sig}`, fs, 128 * MiB, { parameters: forPvc('apps', `sig-${sig}`) });
      const file = ctl.volumeFile(vol.volume_id);
      await writeSignature(file, sig);
      const probe = await run('blkid', ['-p', file]);
      assert.match(probe.stdout, blkid, `host blkid sees the ${sig} signature written into the volume file`);
      const before = await sha(file);
      const pc = await controllerPublish(ctl, vol, n0, fs);
      const code = await codeOf(nodeStage(n0, vol, pc, fs));
      assert.notEqual(code, 'OK', `NodeStage(${fs}) of a LU holding ${sig} succeeded`);
      assert.equal(await sha(file), before, `the ${sig} LU was written to by the refused stage`);
      const { staging } = kubeletPaths(vol.volume_id);
      assert.notEqual((await g0.exec(`mountpoint -q ${q(staging)}`)).code, 0, 'nothing mounted');
      const ev = await eventsOn('apps', `sig-${sig}`, ['StagingFailed']);
      assert.ok(
        ev.some((e) => e.reason === 'StagingFailed'),
        `StagingFailed Event on the PVC of the ${sig} volume: ${JSON.stringify(ev)}`,
      );
      if (sig === 'ext4')
        assert.ok(
          ev.some((e) => e.reason === 'VolumeHoldsData' && /ext4/.test(e.message)),
          JSON.stringify(ev),
        );
      assert.ok(!ev.some((e) => e.reason === 'VolumeFormatted'), 'a VolumeFormatted Event for a LU that holds data');
      await nodeUnstage(n0, vol);
      await assertClean(n0, vol, `unstage after the refused ${sig} stage`);
      await controllerUnpublish(ctl, vol, n0);
      await deleteVolume(vol);
    }
    // Wrong WWID: the device at the LUN's address is not the volume the CO asked for.
    const vol = await createVolume(ctl, 'wrong-wwid', 'ext4', 128 * MiB);
    const other = await createVolume(ctl, 'wrong-wwid-other', 'ext4', 128 * MiB);
    const pc = await controllerPublish(ctl, vol, n0, 'ext4');
    // Both publish_context and volume_context name the other volume's WWID: whichever the plugin reads.
    const wrong = other.volume_context.wwid!;
    const asked = { ...vol, volume_context: { ...vol.volume_context, wwid: wrong } };
    const code = await codeOf(nodeStage(n0, asked, { ...pc, wwid: wrong }, 'ext4', { timeoutMs: 150_000 }));
    assert.notEqual(code, 'OK', 'NodeStage with the wrong WWID at the LUN address succeeded');
    const probe = await run('blkid', ['-p', ctl.volumeFile(vol.volume_id)]);
    assert.notEqual(probe.code, 0, `the LU behind the wrong WWID was formatted: ${probe.stdout}`);
    assert.notEqual((await g0.exec(`mountpoint -q ${q(kubeletPaths(vol.volume_id).staging)}`)).code, 0, 'nothing mounted');
    await nodeUnstage(n0, vol);
    await assertClean(n0, vol, 'unstage after the wrong-WWID stage');
    await controllerUnpublish(ctl, vol, n0);
    await deleteVolume(vol);
    await deleteVolume(other);
  });

  test('online expansion of a mounted xfs volume; NodeGetVolumeStats shows the new size', async () => {
    const vol = await createVolume(ctl, 'grow-xfs', 'xfs', 512 * MiB);
    const pc = await controllerPublish(ctl, vol, n0, 'xfs');
    await nodeStage(n0, vol, pc, 'xfs');
    const target = await nodePublish(n0, vol, pc, 'xfs');
    const sums = await writeData(g0, target, 'xfs', 'grow');
    const total = async (): Promise<number> =>
      Number((await volumeStats(n0, vol, target)).usage.find((u) => u.unit === 'BYTES')?.total ?? 0);
    const t1 = await total();
    assert.ok(t1 > 400 * MiB && t1 <= 512 * MiB, `stats total before: ${t1}`);
    await call(ctl.controller, 'ControllerExpandVolume', {
      volume_id: vol.volume_id,
      capacity_range: { required_bytes: String(1024 * MiB) },
      volume_capability: capability('xfs'),
    });
    await timed('NodeExpandVolume 512 -> 1024 MiB (rescan, multipathd resize, xfs_growfs)', () =>
      call(n0.node, 'NodeExpandVolume', {
        volume_id: vol.volume_id,
        volume_path: target,
        staging_target_path: kubeletPaths(vol.volume_id).staging,
        capacity_range: { required_bytes: String(1024 * MiB) },
        volume_capability: capability('xfs'),
      }),
    );
    const t2 = await total();
    assert.ok(t2 > 900 * MiB, `stats total after expansion: ${t2} (before ${t1})`);
    const m = await mapOf(g0, vol.volume_context.wwid!);
    assert.equal(Number((await g0.sh(`blockdev --getsize64 /dev/mapper/${m!.name}`)).trim()), 1024 * MiB, 'map grown');
    await verifyData(g0, target, 'xfs', sums);
    await nodeUnpublish(n0, vol);
    await nodeUnstage(n0, vol);
    await assertClean(n0, vol, 'after expansion');
    await controllerUnpublish(ctl, vol, n0);
    await deleteVolume(vol);
  });

  test('cut one NIC during writes: VolumeCondition abnormal naming the path, 0 I/O errors; restored: normal', async () => {
    api.pvcs.set('apps/cut-claim', { uid: 'uid-cut-claim' });
    const vol = await createVolume(ctl, 'cut-xfs', 'xfs', 1 * GiB, { parameters: forPvc('apps', 'cut-claim') });
    const pc = await controllerPublish(ctl, vol, n0, 'xfs');
    await nodeStage(n0, vol, pc, 'xfs');
    const formatted = await eventsOn('apps', 'cut-claim', ['VolumeFormatted']);
    assert.ok(
      formatted.some((e) => e.reason === 'VolumeFormatted' && e.message.includes('xfs')),
      `VolumeFormatted Event: ${JSON.stringify(formatted)}`,
    );
    const target = await nodePublish(n0, vol, pc, 'xfs');
    const cond = async (): Promise<{ abnormal: boolean; message: string }> =>
      (await volumeStats(n0, vol, target)).volume_condition ?? { abnormal: false, message: '(none)' };
    assert.equal((await cond()).abnormal, false, 'condition normal before the cut');
    await markKernelLog(g0, 'LUNAR-NODE-CUT');
    const writer = g0.exec(writerScript(`${target}/w`, 'wcut', 96, 16), 600);
    for (let i = 0; (await g0.exec('test -s /run/wcut.count')).code !== 0; i++) {
      assert.ok(i < 300, 'writer did not start');
      await sleep(200);
    }
    const cutAt = Date.now();
    await g0.setLink('n1', false);
    let c = await cond();
    for (const deadline = Date.now() + 60_000; !c.abnormal; c = await cond()) {
      assert.ok(Date.now() < deadline, `VolumeCondition still normal 60 s after the cut: ${c.message}`);
      await sleep(500);
    }
    timing('NIC cut -> VolumeCondition abnormal', Date.now() - cutAt);
    const failedEv = (await eventsOn('apps', 'cut-claim', ['PathFailed'])).filter((e) => e.reason === 'PathFailed');
    assert.ok(
      failedEv.some((e) => e.message.includes(g0.nics[1]!.subnet.hostAddress)),
      `PathFailed Event naming the cut path: ${JSON.stringify(failedEv)}`,
    );
    const down = sampleValue(await metrics0(), 'lunar_volume_paths', { volume: vol.volume_id, state: 'down' });
    assert.equal(down, 1, 'lunar_volume_paths{state="down"} during the cut');
    const p1 = g0.nics[1]!;
    assert.match(
      c.message,
      new RegExp(`${p1.subnet.hostAddress.replace(/\./g, '\\.')}|${g0.nicNames.get('n1')}`),
      `the message names the cut path: ${c.message}`,
    );
    const filesAtFail = Number((await g0.sh('cat /run/wcut.count')).trim());
    for (const deadline = Date.now() + 90_000; Number((await g0.sh('cat /run/wcut.count')).trim()) < filesAtFail + 1;) {
      assert.ok(Date.now() < deadline, 'no writes progress on the remaining path');
      await sleep(500);
    }
    const restoreAt = Date.now();
    await g0.setLink('n1', true);
    for (const deadline = Date.now() + 120_000; (c = await cond()).abnormal;) {
      assert.ok(Date.now() < deadline, `VolumeCondition still abnormal 120 s after the restore: ${c.message}`);
      await sleep(500);
    }
    timing('NIC restored -> VolumeCondition normal', Date.now() - restoreAt);
    const back = await eventsOn('apps', 'cut-claim', ['PathRestored']);
    assert.ok(
      back.some((e) => e.reason === 'PathRestored'),
      `PathRestored Event: ${JSON.stringify(back)}`,
    );
    const m = await metrics0();
    assert.equal(sampleValue(m, 'lunar_volume_paths', { volume: vol.volume_id, state: 'up' }), 2, 'both paths up again');
    assert.equal(sampleValue(m, 'lunar_volume_paths', { volume: vol.volume_id, state: 'down' }), 0);
    assert.ok(
      (sampleValue(m, 'lunar_node_operation_duration_seconds_count', { operation: 'stage', result: 'ok' }) ?? 0) >= 1,
      'stage durations counted',
    );
    await g0.sh('touch /run/wcut.stop');
    const w = await writer;
    assert.equal(w.code, 0, `writer failed across the cut: ${w.stderr}`);
    await g0.sh(`echo 3 > /proc/sys/vm/drop_caches; sha256sum --quiet -c /run/wcut.sums`, 300);
    const ev = await kernelEvents(g0, 'LUNAR-NODE-CUT');
    assert.deepEqual(mapErrors(ev), [], 'I/O errors reached the map or the file system');
    await nodeUnpublish(n0, vol);
    await nodeUnstage(n0, vol);
    await assertClean(n0, vol, 'after the NIC cut');
    await controllerUnpublish(ctl, vol, n0);
    await deleteVolume(vol);
  });

  test('CHAP and mutual CHAP volumes stage; the secrets are in no log and in no process argv', async () => {
    const secrets: string[] = [];
    const stop = await sampleArgv(g0, 'argv');
    const vols: CsiVolume[] = [];
    try {
      for (const chap of ['chap', 'mutual']) {
        const vol = await createVolume(ctl, `chap-${chap}`, 'ext4', 128 * MiB, { parameters: { chap } });
        vols.push(vol);
        const pc = await controllerPublish(ctl, vol, n0, 'ext4');
        assert.ok(pc.chapSecret, `publish_context carries the CHAP secret (${chap})`);
        secrets.push(pc.chapSecret);
        assert.equal(pc.discoveryChapSecret, DISCOVERY_CHAP.secret, 'publish_context carries the discovery CHAP');
        if (!secrets.includes(DISCOVERY_CHAP.secret)) secrets.push(DISCOVERY_CHAP.secret);
        if (chap === 'mutual') {
          assert.ok(pc.mutualSecret, 'publish_context carries the mutual secret');
          secrets.push(pc.mutualSecret);
        }
        await timed(`NodeStage with ${chap === 'chap' ? 'CHAP' : 'mutual CHAP'}`, () => nodeStage(n0, vol, pc, 'ext4'));
        await assertStaged(n0, vol);
      }
    } finally {
      const seen = await stop();
      assert.ok(seen.rounds > 10, `argv sampler made only ${seen.rounds} rounds`);
      assert.ok(
        seen.cmdlines.some((c) => /iscsiadm/.test(c)),
        `the sampler never saw an iscsiadm command line, so it proves nothing: ${seen.cmdlines.length} seen`,
      );
      for (const s of secrets) {
        const hit = seen.cmdlines.filter((c) => c.includes(s));
        assert.deepEqual(hit, [], 'a CHAP secret appeared in a process argv');
      }
    }
    const logs = (await n0.log()) + (await g0.exec('dmesg 2>/dev/null', 30)).stdout + ctl.proc.output();
    for (const s of secrets) assert.ok(!logs.includes(s), 'a CHAP secret appeared in the plugin, kernel or controller log');
    for (const vol of vols) {
      await nodeUnstage(n0, vol);
      await assertClean(n0, vol, 'CHAP volume unstaged');
      await controllerUnpublish(ctl, vol, n0);
      await deleteVolume(vol);
    }
  });
});
