// SendTargets discovery CHAP on the node (`lunar serve --discovery-chap`): the controller hands the
// credentials to the node in publish_context; the node writes them into the portal's discovery record
// (never argv, never a global file), discovers through `-m discoverydb … --discover` (the legacy
// `-m discovery` mode ignores the record), and takes the secret out of the record again, also when the
// discovery fails.

import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { ControllerService } from '../../src/csi/controller.js';
import { nodeCsiError } from '../../src/csi/node.js';
import { parsePublishContext } from '../../src/node/publish-context.js';
import { stageVolume, type StageRequest } from '../../src/node/stage.js';
import { unstageVolume } from '../../src/node/unstage.js';
import type { NodeEnv } from '../../src/node/types.js';
import type { Volume, VolumeService } from '../../src/volumes/types.js';
import { FakeNode, fakeNodeWith, nodeEnvFor } from '../support/fake-host.js';

const IQN = 'iqn.2026-11.io.lunar:vol-1';
const WWID = '360014050000000000000000000000001';
const P0 = '10.0.2.2:3260';
const P1 = '10.0.3.2:3260';
const STAGING = '/staging/vol-1';
const DISC = { user: 'lunar-discovery', secret: 'DiscoverySecret42' };

let fake: FakeNode;
let env: NodeEnv;

beforeEach(() => {
  fake = fakeNodeWith(IQN, WWID);
  fake.discoveryChap = DISC;
  env = nodeEnvFor(fake, mkdtempSync(join(tmpdir(), 'lunar-node-')));
});

const req = (discoveryChap: StageRequest['target']['discoveryChap']): StageRequest => ({
  volumeId: 'vol-1',
  stagingPath: STAGING,
  accessType: 'mount',
  fsType: 'ext4',
  mountFlags: [],
  target: { iqn: IQN, portals: [P0, P1], lun: 0, wwid: WWID, chap: null, discoveryChap },
});

const stFile = (portal: string): string => `/etc/iscsi/send_targets/${portal.replace(':', ',')}/st_config`;

test('discovery CHAP: discoverydb record made, CHAP in the record during --discover only, never in argv', async () => {
  await stageVolume(env, req(DISC), Date.now() + 10_000);
  const lines = fake.runner.lines();
  for (const p of [P0, P1]) {
    const newAt = lines.indexOf(`iscsiadm -m discoverydb -t sendtargets -p ${p} -o new`);
    const discoverAt = lines.indexOf(`iscsiadm -m discoverydb -t sendtargets -p ${p} -I default -o new --discover`);
    assert.ok(newAt >= 0 && discoverAt > newAt, lines.join('\n'));
  }
  assert.ok(!lines.some((l) => l.includes('-m discovery ')), 'the legacy discovery mode ignores the record');
  for (const c of fake.runner.calls) {
    assert.ok(![c.cmd, ...c.args].join(' ').includes(DISC.secret), `secret in argv: ${c.cmd} ${c.args.join(' ')}`);
    assert.ok(!JSON.stringify(c.env ?? {}).includes(DISC.secret));
  }
  // What --discover saw: the CHAP keys; what is left: none of them.
  assert.deepEqual(fake.discoveryLogins, [
    { authmethod: 'CHAP', user: DISC.user, secret: DISC.secret },
    { authmethod: 'CHAP', user: DISC.user, secret: DISC.secret },
  ]);
  for (const p of [P0, P1]) {
    const rec = (await fake.fs.readText(stFile(p))) ?? '';
    assert.match(rec, /^discovery\.sendtargets\.auth\.authmethod = None$/m);
    assert.ok(!rec.includes(DISC.secret) && !rec.includes('auth.password'), rec);
  }
  assert.equal(fake.sessionList().length, 2, 'both paths logged in');
  assert.ok(!JSON.stringify(await env.records.load('vol-1')).includes(DISC.secret), 'no secret in the staging record');
  await unstageVolume(env, 'vol-1', STAGING, Date.now() + 10_000);
  assert.equal(fake.sessionList().length, 0);
});

test('discovery CHAP: the secret is taken out of the record when the discovery fails too', async () => {
  fake.discoveryChap = { user: DISC.user, secret: 'AnotherSecret99' };
  await assert.rejects(stageVolume(env, req(DISC), Date.now() + 10_000), (err: unknown) => {
    assert.equal(nodeCsiError(err).code, status.FAILED_PRECONDITION);
    assert.match(nodeCsiError(err).message, /CHAP|authentication/);
    return true;
  });
  for (const p of [P0, P1]) assert.ok(!((await fake.fs.readText(stFile(p))) ?? '').includes(DISC.secret));
});

test('without discovery CHAP the plain discovery runs (and a target that requires it refuses it)', async () => {
  fake.discoveryChap = null;
  await stageVolume(env, req(null), Date.now() + 10_000);
  assert.ok(fake.runner.lines().includes(`iscsiadm -m discovery -t sendtargets -p ${P0} -I default -o new`));
  assert.ok(!fake.runner.lines().some((l) => l.includes('discoverydb')));
});

test('publish_context / secrets: discovery CHAP keys parsed; one without the other refused', () => {
  const pc = { targetIqn: IQN, portals: P0, lun: '0', wwid: WWID, chap: 'none' };
  assert.deepEqual(parsePublishContext({ ...pc, discoveryChapUser: 'u', discoveryChapSecret: 's' }, {}).discoveryChap, {
    user: 'u',
    secret: 's',
  });
  assert.deepEqual(parsePublishContext(pc, { discoveryChapUser: 'u2', discoveryChapSecret: 's2' }).discoveryChap, {
    user: 'u2',
    secret: 's2',
  });
  assert.equal(parsePublishContext(pc, {}).discoveryChap, null);
  assert.throws(
    () => parsePublishContext({ ...pc, discoveryChapUser: 'u' }, {}),
    (e: unknown) => nodeCsiError(e).code === status.INVALID_ARGUMENT && /discoveryChapSecret/.test(nodeCsiError(e).message),
  );
});

test('controller: publish_context carries the discovery CHAP of lunar serve --discovery-chap, and none without it', () => {
  const v = {
    id: 'vol-1',
    iqn: IQN,
    lun: 0,
    naa: '60014050000000000000000000000001',
    serial: 'S1',
    portals: [{ host: '10.0.2.2', port: 3260, tpgt: 1 }],
    chap: null,
    parameters: {},
  } as unknown as Volume;
  const volumes = {} as VolumeService;
  const withChap = new ControllerService({ volumes, discoveryChap: DISC }).publishContext(v, 'iqn.2024-01.io.e2e:guest');
  assert.equal(withChap.discoveryChapUser, DISC.user);
  assert.equal(withChap.discoveryChapSecret, DISC.secret);
  const parsed = parsePublishContext(withChap, {});
  assert.deepEqual(parsed.discoveryChap, DISC);
  const without = new ControllerService({ volumes }).publishContext(v, 'iqn.2024-01.io.e2e:guest');
  assert.ok(!('discoveryChapUser' in without) && !('discoveryChapSecret' in without));
});
