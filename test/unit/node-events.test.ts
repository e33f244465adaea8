// The node plugin's Events on the PVC (volume_context pvcName/pvcNamespace), posted through PvcEvents to
// the fake API server over a simulated node (test/support/fake-host.ts): VolumeFormatted on a first
// stage, VolumeHoldsData when the device holds something else, StagingFailed when the stage fails,
// PathFailed / PathRestored from the path check; and the node operation observer the metrics use.

import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { NodeService } from '../../src/csi/node.js';
import type { CallContext } from '../../src/csi/unary-call.js';
import { dropInText } from '../../src/host/multipath.js';
import { KubeClient } from '../../src/kube/client.js';
import { PvcEvents } from '../../src/kube/events.js';
import { PathMonitor } from '../../src/node/path-monitor.js';
import type { NodeEnv } from '../../src/node/types.js';
import { FakeApiServer } from '../support/fake-apiserver.js';
import { FakeNode, fakeNodeWith, nodeEnvFor } from '../support/fake-host.js';

const IQN = 'iqn.2026-11.io.lunar:vol-1';
const WWID = '360014050000000000000000000000001';
const STAGING = '/kubelet/staging/vol-1';
const PC = { targetIqn: IQN, portals: '10.0.2.2:3260,10.0.3.2:3260', lun: '0', wwid: WWID, chap: 'none' };
const MOUNT_CAP = {
  mount: { fs_type: 'ext4', mount_flags: [], volume_mount_group: '' },
  access_mode: { mode: 'SINGLE_NODE_WRITER' as const },
  access_type: 'mount' as const,
};
const FAST = { attempts: 2, baseMs: 5, maxMs: 10 };
const ctx = (): CallContext => ({ deadline: Date.now() + 10_000, signal: new AbortController().signal });
const stageReq = (volumeContext: Record<string, string> = { pvcName: 'db', pvcNamespace: 'apps' }) =>
  ({
    volume_id: 'vol-1',
    publish_context: PC,
    staging_target_path: STAGING,
    volume_capability: MOUNT_CAP,
    secrets: {},
    volume_context: volumeContext,
  }) as never;

describe('node Events on the PVC', () => {
  let api: FakeApiServer;
  let fake: FakeNode;
  let env: NodeEnv;
  let ops: [string, boolean][];
  let node: NodeService;

  before(async () => {
    api = await new FakeApiServer().start();
    api.pvcs.set('apps/db', { uid: 'uid-db' });
  });
  after(() => api.close());
  beforeEach(() => {
    api.events.clear();
    fake = fakeNodeWith(IQN, WWID);
    const events = new PvcEvents({
      client: new KubeClient({ server: api.url }, { component: 'node', retry: FAST }),
      component: 'lunar-node',
      host: 'worker-1',
      logger: pino({ level: 'silent' }),
    });
    env = { ...nodeEnvFor(fake, mkdtempSync(join(tmpdir(), 'lunar-node-'))), events };
    ops = [];
    node = new NodeService(env, (op, ok) => ops.push([op, ok]));
  });

  /** Recording is not awaited by the CSI call: wait until the API server has what is expected. */
  const settled = async (want: string[]): Promise<void> => {
    for (let i = 0; i < 100 && JSON.stringify(reasons()) !== JSON.stringify(want); i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(reasons(), want);
  };
  const reasons = (): string[] => [...api.events.values()].map((e) => String(e.reason)).sort();
  const only = (reason: string): Record<string, unknown> => {
    const e = [...api.events.values()].filter((x) => x.reason === reason);
    assert.equal(e.length, 1, `one ${reason} Event (have ${reasons().join(', ')})`);
    return e[0]!;
  };

  it('VolumeFormatted (Normal) on the PVC named by the volume_context when an empty volume is formatted', async () => {
    await node.nodeStageVolume(stageReq(), ctx());
    await settled(['VolumeFormatted']);
    const e = only('VolumeFormatted');
    assert.equal(e.type, 'Normal');
    assert.deepEqual(e.involvedObject, { kind: 'PersistentVolumeClaim', apiVersion: 'v1', namespace: 'apps', name: 'db', uid: 'uid-db' });
    assert.deepEqual(e.source, { component: 'lunar-node', host: 'worker-1' });
    assert.match(String(e.message), /vol-1.*ext4/);
    assert.deepEqual(reasons(), ['VolumeFormatted']);
    assert.deepEqual(ops, [['stage', true]]);
    // A volume with no PVC in its context raises nothing.
    api.events.clear();
    await node.nodeUnstageVolume({ volume_id: 'vol-1', staging_target_path: STAGING }, ctx());
    fake.lus.set(`${IQN}/0`, { wwid: WWID, sizeBytes: 64 << 20, blkid: null });
    await node.nodeStageVolume(stageReq({}), ctx());
    assert.deepEqual(reasons(), []);
    assert.deepEqual(
      ops.map(([o]) => o),
      ['stage', 'unstage', 'stage'],
    );
  });

  it('VolumeHoldsData and StagingFailed (Warning) when the device already holds xfs and ext4 was asked', async () => {
    fake.lus.set(`${IQN}/0`, { wwid: WWID, sizeBytes: 64 << 20, blkid: 'xfs' });
    await assert.rejects(node.nodeStageVolume(stageReq(), ctx()), /already holds xfs/);
    assert.ok(!fake.runner.lines().some((l) => l.startsWith('mkfs')), 'never formatted');
    await settled(['StagingFailed', 'VolumeHoldsData']);
    const held = only('VolumeHoldsData');
    assert.equal(held.type, 'Warning');
    assert.match(String(held.message), /refused to format it as ext4/);
    const failed = only('StagingFailed');
    assert.equal(failed.type, 'Warning');
    assert.deepEqual(failed.involvedObject, {
      kind: 'PersistentVolumeClaim',
      apiVersion: 'v1',
      namespace: 'apps',
      name: 'db',
      uid: 'uid-db',
    });
    assert.match(String(failed.message), /could not be staged on node worker-1: .*already holds xfs/);
    assert.deepEqual(ops, [['stage', false]]);
  });

  it('PathFailed naming the path when a session fails, PathRestored when it is back; counts by state', async () => {
    await node.nodeStageVolume(stageReq(), ctx());
    await settled(['VolumeFormatted']);
    api.events.clear();
    const monitor = new PathMonitor(env);
    await monitor.checkAll();
    assert.deepEqual(monitor.counts(), [{ volume: 'vol-1', up: 2, down: 0 }]);
    assert.deepEqual(reasons(), []);
    fake.setSessionState('10.0.3.2:3260', 'FAILED');
    await monitor.checkAll();
    await monitor.checkAll(); // still down: no second Event
    assert.deepEqual(monitor.counts(), [{ volume: 'vol-1', up: 1, down: 1 }]);
    await settled(['PathFailed']);
    const failed = only('PathFailed');
    assert.equal(failed.type, 'Warning');
    assert.equal(failed.count, 1);
    assert.deepEqual(failed.involvedObject, {
      kind: 'PersistentVolumeClaim',
      apiVersion: 'v1',
      namespace: 'apps',
      name: 'db',
      uid: 'uid-db',
    });
    assert.match(String(failed.message), /path 10\.0\.3\.2:3260 via iface default \(session2, sdb\): session FAILED/);
    fake.setSessionState('10.0.3.2:3260', 'LOGGED_IN');
    await monitor.checkAll();
    await settled(['PathFailed', 'PathRestored']);
    const back = only('PathRestored');
    assert.equal(back.type, 'Normal');
    assert.match(String(back.message), /path 10\.0\.3\.2:3260 via iface default is back/);
    assert.deepEqual(monitor.counts(), [{ volume: 'vol-1', up: 2, down: 0 }]);
    // Unstaged volumes are forgotten.
    await node.nodeUnstageVolume({ volume_id: 'vol-1', staging_target_path: STAGING }, ctx());
    await monitor.checkAll();
    assert.deepEqual(monitor.counts(), []);
  });
});

describe('no_path_retry queue', () => {
  it('is written into the drop-in, and unstage turns queueing off before flushing the map', async () => {
    assert.match(dropInText({ fastIoFailTmo: 2, noPathRetry: 'queue' }), /\n\t\tno_path_retry queue\n/);
    const fake = fakeNodeWith(IQN, WWID);
    const env = nodeEnvFor(fake, mkdtempSync(join(tmpdir(), 'lunar-node-')), { multipath: { fastIoFailTmo: 2, noPathRetry: 'queue' } });
    const node = new NodeService(env);
    await node.nodeStageVolume(stageReq({}), ctx());
    assert.match((await fake.fs.readText('/etc/multipath/conf.d/lunar.conf')) ?? '', /no_path_retry queue/);
    await node.nodeUnstageVolume({ volume_id: 'vol-1', staging_target_path: STAGING }, ctx());
    const lines = fake.runner.lines();
    const off = lines.findIndex((l) => /^multipathd disablequeueing map \S+$/.test(l));
    const flush = lines.findIndex((l) => /^multipath -f /.test(l));
    assert.ok(off >= 0 && flush > off, `disablequeueing before multipath -f:\n${lines.join('\n')}`);
  });
});
