// The CSI Node service over a simulated node: NodeGetInfo's node_id form, capabilities, request checks,
// publish/unpublish idempotency (ALREADY_EXISTS on a repeat with other arguments), block publish,
// expansion, VolumeCondition naming a down path, and the per-volume serialisation over gRPC (a second
// call waits for the first until shortly before its deadline, then ABORTED).

import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { NodeService, nodeBinding, nodeCsiError } from '../../src/csi/node.js';
import { startCsiPluginServer } from '../../src/csi/plugin-server.js';
import { loadCsiPackage } from '../../src/csi/proto.js';
import type { CallContext } from '../../src/csi/unary-call.js';
import { parseNodeId } from '../../src/csi/validate.js';
import type { NodeEnv } from '../../src/node/types.js';
import { FakeNode, fakeNodeWith, nodeEnvFor } from '../support/fake-host.js';
import { pino } from 'pino';

const IQN = 'iqn.2026-11.io.lunar:vol-1';
const WWID = '360014050000000000000000000000001';
const STAGING = '/kubelet/staging/vol-1';
const TARGET = '/kubelet/pods/p1/volumes/vol-1/mount';
const PC = {
  targetIqn: IQN,
  portals: '10.0.2.2:3260,10.0.3.2:3260',
  lun: '0',
  wwid: WWID,
  chap: 'none',
  initiatorName: 'iqn.2024-01.io.e2e:guest',
};
const MOUNT_CAP = {
  mount: { fs_type: 'xfs', mount_flags: [], volume_mount_group: '' },
  access_mode: { mode: 'SINGLE_NODE_WRITER' as const },
  access_type: 'mount' as const,
};
const BLOCK_CAP = { block: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' as const }, access_type: 'block' as const };

let fake: FakeNode;
let env: NodeEnv;
let node: NodeService;
const ctx = (): CallContext => ({ deadline: Date.now() + 10_000, signal: new AbortController().signal });

beforeEach(() => {
  fake = fakeNodeWith(IQN, WWID);
  env = nodeEnvFor(fake, mkdtempSync(join(tmpdir(), 'lunar-node-')));
  node = new NodeService(env);
});

async function code(p: Promise<unknown>): Promise<number> {
  return p.then(
    () => grpc.status.OK,
    (err: unknown) => nodeCsiError(err).code,
  );
}

const stageReq = (cap: object = MOUNT_CAP) =>
  ({
    volume_id: 'vol-1',
    publish_context: PC,
    staging_target_path: STAGING,
    volume_capability: cap,
    secrets: {},
    volume_context: {},
  }) as never;
const pubReq = (over: object = {}) =>
  ({
    volume_id: 'vol-1',
    publish_context: PC,
    staging_target_path: STAGING,
    target_path: TARGET,
    volume_capability: MOUNT_CAP,
    readonly: false,
    secrets: {},
    volume_context: {},
    ...over,
  }) as never;

test('NodeGetInfo: node_id "<node name>#<initiator IQN>" the controller parses; missing initiator name → FAILED_PRECONDITION', async () => {
  const info = await node.nodeGetInfo();
  assert.equal(info.node_id, 'worker-1#iqn.2024-01.io.e2e:guest');
  assert.deepEqual(parseNodeId(info.node_id), { nodeName: 'worker-1', initiatorName: 'iqn.2024-01.io.e2e:guest' });
  assert.equal(info.max_volumes_per_node, '0');
  assert.equal(info.accessible_topology, null);
  const topo = new NodeService(nodeEnvFor(fake, '/tmp', { maxVolumes: 64, topology: { 'topology.lunar.dev/zone': 'a' } }));
  const t = await topo.nodeGetInfo();
  assert.equal(t.max_volumes_per_node, '64');
  assert.deepEqual(t.accessible_topology, { segments: { 'topology.lunar.dev/zone': 'a' } });
  fake.fs.files.delete('/etc/iscsi/initiatorname.iscsi');
  assert.equal(await code(node.nodeGetInfo()), grpc.status.FAILED_PRECONDITION);
});

test('NodeGetCapabilities', () => {
  assert.deepEqual(
    node.nodeGetCapabilities().capabilities.map((c) => c.rpc?.type),
    ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'SINGLE_NODE_MULTI_WRITER'],
  );
});

test('request checks: missing fields, relative paths, mount with multi-node writer, bad publish_context → INVALID_ARGUMENT', async () => {
  const bad = [
    { ...(stageReq() as object), volume_id: '' },
    { ...(stageReq() as object), staging_target_path: 'relative' },
    { ...(stageReq() as object), volume_capability: null },
    { ...(stageReq() as object), volume_capability: { ...MOUNT_CAP, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } } },
    { ...(stageReq() as object), publish_context: {} },
    { ...(stageReq() as object), publish_context: { ...PC, wwid: '' } },
    { ...(stageReq() as object), publish_context: { ...PC, lun: 'x' } },
    { ...(stageReq() as object), publish_context: { ...PC, chap: 'chap' } },
  ];
  for (const r of bad) assert.equal(await code(node.nodeStageVolume(r as never, ctx())), grpc.status.INVALID_ARGUMENT, JSON.stringify(r));
  assert.equal(fake.runner.calls.length, 0, 'a bad request costs nothing on the host');
});

test('publish is idempotent; a repeat with other arguments → ALREADY_EXISTS; unpublish removes the target', async () => {
  await node.nodeStageVolume(stageReq(), ctx());
  await node.nodePublishVolume(pubReq(), ctx());
  assert.ok(fake.runner.lines().includes(`mount --bind ${STAGING} ${TARGET}`));
  fake.runner.calls.length = 0;
  await node.nodePublishVolume(pubReq(), ctx());
  assert.deepEqual(fake.runner.lines(), [], 'repeat: nothing run');
  assert.equal(await code(node.nodePublishVolume(pubReq({ readonly: true }), ctx())), grpc.status.ALREADY_EXISTS);
  await node.nodeUnpublishVolume({ volume_id: 'vol-1', target_path: TARGET }, ctx());
  assert.ok(fake.runner.lines().includes(`umount ${TARGET}`));
  assert.ok(!(await fake.fs.exists(TARGET)));
  await node.nodeUnpublishVolume({ volume_id: 'vol-1', target_path: TARGET }, ctx());
  await node.nodePublishVolume(pubReq({ readonly: true }), ctx());
  assert.ok(fake.runner.lines().includes(`mount --bind -o ro ${STAGING} ${TARGET}`));
});

test('publish before stage → FAILED_PRECONDITION', async () => {
  assert.equal(await code(node.nodePublishVolume(pubReq(), ctx())), grpc.status.FAILED_PRECONDITION);
});

test('block volume: stage mounts nothing; publish binds the multipath device node onto the target file', async () => {
  await node.nodeStageVolume(stageReq(BLOCK_CAP), ctx());
  await node.nodePublishVolume(pubReq({ volume_capability: BLOCK_CAP, target_path: '/kubelet/pods/p1/dev/vol-1' }), ctx());
  assert.ok(fake.runner.lines().includes('mount --bind /dev/dm-0 /kubelet/pods/p1/dev/vol-1'));
  assert.equal(await fake.fs.readText('/kubelet/pods/p1/dev/vol-1'), '', 'target file created');
  const stats = await node.nodeGetVolumeStats(
    { volume_id: 'vol-1', volume_path: '/kubelet/pods/p1/dev/vol-1', staging_target_path: '' },
    ctx(),
  );
  assert.deepEqual(stats.usage, [{ unit: 'BYTES', total: String(64 << 20), available: '0', used: '0' }]);
});

test('VolumeCondition: abnormal naming the down path, normal again when it returns', async () => {
  await node.nodeStageVolume(stageReq(BLOCK_CAP), ctx());
  const path = '/kubelet/pods/p1/dev/vol-1';
  await node.nodePublishVolume(pubReq({ volume_capability: BLOCK_CAP, target_path: path }), ctx());
  const cond = async () =>
    (await node.nodeGetVolumeStats({ volume_id: 'vol-1', volume_path: path, staging_target_path: '' }, ctx())).volume_condition;
  assert.deepEqual(await cond(), { abnormal: false, message: 'all 2 path(s) up' });
  fake.setSessionState('10.0.3.2:3260', 'FAILED');
  const down = await cond();
  assert.equal(down?.abnormal, true);
  assert.match(down?.message ?? '', /1 of 2 path\(s\) down: path 10\.0\.3\.2:3260 via iface default \(session2, sdb\): session FAILED/);
  fake.setSessionState('10.0.3.2:3260', 'LOGGED_IN');
  assert.equal((await cond())?.abnormal, false);
  assert.equal(
    await code(node.nodeGetVolumeStats({ volume_id: 'vol-1', volume_path: '/nope', staging_target_path: '' }, ctx())),
    grpc.status.NOT_FOUND,
  );
  assert.equal(
    await code(node.nodeGetVolumeStats({ volume_id: 'other', volume_path: path, staging_target_path: '' }, ctx())),
    grpc.status.NOT_FOUND,
  );
});

test('VolumeCondition of a block volume: abnormal when the multipath map is gone, replaced, or has no running path', async () => {
  await node.nodeStageVolume(stageReq(BLOCK_CAP), ctx());
  const path = '/kubelet/pods/p1/dev/vol-1';
  await node.nodePublishVolume(pubReq({ volume_capability: BLOCK_CAP, target_path: path }), ctx());
  const stats = () => node.nodeGetVolumeStats({ volume_id: 'vol-1', volume_path: path, staging_target_path: '' }, ctx());
  assert.equal((await stats()).volume_condition?.abnormal, false);
  // Every path device offline: each path is named, and the map has no active path.
  fake.setDeviceState('sda', 'transport-offline');
  fake.setDeviceState('sdb', 'transport-offline');
  let c = (await stats()).volume_condition;
  assert.equal(c?.abnormal, true);
  assert.match(c?.message ?? '', /multipath map mpath0 \(dm-0\) has no active path \(2 path device\(s\), none running\)/);
  assert.match(c?.message ?? '', /2 of 2 path\(s\) down/);
  fake.setDeviceState('sda', 'running');
  fake.setDeviceState('sdb', 'running');
  assert.equal((await stats()).volume_condition?.abnormal, false);
  // The map flushed behind Lunar's back while sessions and devices are up: abnormal, and no size to report.
  const saved = [...fake.fs.files].filter(([k]) => k.startsWith('/sys/block/dm-0/'));
  fake.fs.rmTree('/sys/block/dm-0');
  const gone = await stats();
  assert.deepEqual(gone.volume_condition, { abnormal: true, message: `multipath map mpath0 (dm-0) of WWID ${WWID} is gone` });
  assert.deepEqual(gone.usage, []);
  // Built again as another dm device: the published bind mount is on the old one.
  for (const [k, v] of saved) fake.fs.set(k.replace('/dm-0/', '/dm-4/'), v);
  c = (await stats()).volume_condition;
  assert.equal(c?.abnormal, true);
  assert.match(c?.message ?? '', /now dm-4, not the dm-0 the volume was staged on/);
  fake.fs.rmTree('/sys/block/dm-4');
  for (const [k, v] of saved) fake.fs.set(k, v);
  assert.deepEqual((await stats()).volume_condition, { abnormal: false, message: 'all 2 path(s) up' });
  assert.deepEqual((await stats()).usage, [{ unit: 'BYTES', total: String(64 << 20), available: '0', used: '0' }]);
});

test('an unknown volume_id is NOT_FOUND for stats and expand and so is a staged one at a relative volume_path (the volume is not there); a missing volume_path is INVALID_ARGUMENT', async () => {
  const stats = (id: string, p: string) => code(node.nodeGetVolumeStats({ volume_id: id, volume_path: p, staging_target_path: '' }, ctx()));
  const expand = (id: string, p: string) =>
    code(
      node.nodeExpandVolume(
        { volume_id: id, volume_path: p, capacity_range: null, staging_target_path: '', volume_capability: null, secrets: {} },
        ctx(),
      ),
    );
  assert.equal(await stats('unknown-vol', 'some/path'), grpc.status.NOT_FOUND);
  assert.equal(await expand('unknown-vol', 'some/path'), grpc.status.NOT_FOUND);
  assert.equal(await stats('unknown-vol', ''), grpc.status.INVALID_ARGUMENT, 'a missing volume_path stays INVALID_ARGUMENT');
  await node.nodeStageVolume(stageReq(), ctx());
  // csi-sanity "NodeGetVolumeStats should fail when volume does not exist on the specified path".
  assert.equal(await stats('vol-1', 'some/path'), grpc.status.NOT_FOUND);
  assert.equal(await expand('vol-1', 'some/path'), grpc.status.NOT_FOUND);
  assert.equal(await stats('vol-1', ''), grpc.status.INVALID_ARGUMENT);
});

test('expand: rescan each path, wait for the new size on all, multipathd resize map, xfs_growfs on the mount', async () => {
  await node.nodeStageVolume(stageReq(), ctx());
  // The LU grew: each path shows the new size after its rescan.
  const grown = 128 << 20;
  fake.fs.onWrite = (p) => {
    const m = /^\/sys\/class\/scsi_device\/([\d:]+)\/device\/rescan$/.exec(p);
    if (!m) return;
    const sd = [...fake.fs.files.keys()]
      .map((k) => new RegExp(`^/sys/class/scsi_device/${m[1]!}/device/block/(\\w+)$`).exec(k))
      .find((x) => x)?.[1];
    fake.fs.set(`/sys/block/${sd!}/size`, `${grown / 512}\n`);
  };
  fake.runner.handlers.unshift((s) => {
    if (s.cmd === 'multipathd' && s.args[0] === 'resize') fake.fs.set('/sys/block/dm-0/size', `${grown / 512}\n`);
    return undefined;
  });
  fake.runner.calls.length = 0;
  const r = await node.nodeExpandVolume(
    {
      volume_id: 'vol-1',
      volume_path: STAGING,
      capacity_range: { required_bytes: String(grown), limit_bytes: '0' },
      staging_target_path: STAGING,
      volume_capability: null,
      secrets: {},
    },
    ctx(),
  );
  assert.equal(r.capacity_bytes, String(grown));
  // The rescans are sysfs writes through the runner (bounded), then the map and the filesystem grow.
  const rescans = fake.runner.calls.filter((c) => c.cmd === 'sh').map((c) => c.args[4]);
  assert.deepEqual(rescans, ['/sys/class/scsi_device/2:0:0:0/device/rescan', '/sys/class/scsi_device/3:0:0:0/device/rescan']);
  assert.deepEqual(
    fake.runner.lines().filter((l) => !l.startsWith('sh ')),
    ['multipathd resize map mpath0', `xfs_growfs -d ${STAGING}`],
  );
});

// ---- serialisation over gRPC ----------------------------------------------------------------------

test('a call on a volume whose stage is still running waits for it until shortly before its deadline, then ABORTED; the next one succeeds', async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  fake.runner.handlers.unshift(async (s) => {
    if (s.cmd === 'mkfs.xfs') await gate;
    return undefined;
  });
  const server = await startCsiPluginServer({
    endpoint: 'tcp://127.0.0.1:0',
    pluginName: 'iscsi.lunar.dev',
    version: '0.1.0',
    ready: () => true,
    services: [nodeBinding(node)],
    logger: pino({ level: 'silent' }),
  });
  const Node = loadCsiPackage().Node;
  const client = new Node(server.address.replace('tcp://', ''), grpc.credentials.createInsecure());
  const call = (req: object, ms: number): Promise<grpc.status> =>
    new Promise((resolve) => {
      (
        client as unknown as Record<
          string,
          (r: object, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => void
        >
      ).NodeStageVolume!.call(client, req, new grpc.Metadata(), { deadline: Date.now() + ms }, (e) => resolve(e ? e.code : grpc.status.OK));
    });
  try {
    const first = call(stageReq(), 20_000);
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    assert.equal(await call(stageReq(), 800), grpc.status.ABORTED);
    assert.ok(Date.now() - started >= 600, 'waited before giving up');
    const third = call(stageReq(), 20_000); // waits, then finds the volume staged
    release();
    assert.equal(await first, grpc.status.OK);
    assert.equal(await third, grpc.status.OK);
    assert.equal(fake.runner.lines().filter((l) => l.endsWith('--login')).length, 2, 'one login per path, no duplicate');
  } finally {
    client.close();
    await server.close();
  }
});
