import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ScsiTargetDevice } from '../../src/scsi/types.js';
import type { ChapCredentials, TargetEntry, TargetRegistry } from '../../src/target/types.js';
import { isAllowed } from '../../src/iscsi/acl.js';
import { chapMd5, decodeBinary, encodeHex } from '../../src/iscsi/chap.js';
import { LoginStateMachine, type LoginReply } from '../../src/iscsi/login.js';
import { DEFAULT_TUNING } from '../../src/iscsi/negotiation.js';
import type { LoginRequest } from '../../src/iscsi/pdu.js';
import { encodeText, parseText } from '../../src/iscsi/text.js';
import { loginRequest } from '../support/iscsi-pdus.js';

// The login machine never touches the device: a device that fails loudly if used.
const device: ScsiTargetDevice = {
  luns: () => [0],
  execute: () => Promise.reject(new Error('not used by login')),
  taskManagement: () => Promise.reject(new Error('not used by login')),
  nexusAdded: () => undefined,
  nexusRemoved: () => undefined,
};
const T_OPEN: TargetEntry = { iqn: 'iqn.2026-01.io.lunar:open', alias: 'open', portals: [], access: { allow: null }, chap: null, device };
const T_CHAP: TargetEntry = {
  iqn: 'iqn.2026-01.io.lunar:chap',
  portals: [],
  access: { allow: null },
  chap: { user: 'alice', secret: 'alicesecret12' },
  device,
};
const T_ACL: TargetEntry = {
  iqn: 'iqn.2026-01.io.lunar:acl',
  portals: [],
  access: { allow: ['iqn.2026-01.io.node:a', '10.1.0.0/16'] },
  chap: null,
  device,
};
const T_NOBODY: TargetEntry = { iqn: 'iqn.2026-01.io.lunar:nobody', portals: [], access: { allow: [] }, chap: null, device };
const T_OTHERPORTAL: TargetEntry = {
  iqn: 'iqn.2026-01.io.lunar:p2',
  portals: [{ host: '127.0.0.1', port: 3261, tpgt: 2 }],
  access: { allow: null },
  chap: null,
  device,
};

function registry(discovery: ChapCredentials | null = null): TargetRegistry {
  const all = [T_OPEN, T_CHAP, T_ACL, T_NOBODY, T_OTHERPORTAL];
  return {
    findTarget: (i) => all.find((t) => t.iqn === i),
    listTargets: () => all,
    portals: () => [{ host: '127.0.0.1', port: 3260, tpgt: 1 }],
    discoveryChap: () => discovery,
  };
}

function machine(opts: { remote?: string; discovery?: ChapCredentials | null; sessions?: number[] } = {}): LoginStateMachine {
  return new LoginStateMachine({
    registry: registry(opts.discovery ?? null),
    tuning: DEFAULT_TUNING,
    remoteAddress: opts.remote ?? '127.0.0.1',
    portalGroupTag: 1,
    sessionExists: (tsih) => (opts.sessions ?? []).includes(tsih),
  });
}

function req(over: Partial<LoginRequest>, keys: Record<string, string>): [LoginRequest, Buffer] {
  const data = encodeText(Object.entries(keys).map(([key, value]) => ({ key, value })));
  return [loginRequest({ dataSegmentLength: data.length, cmdSN: 10, ...over }), data];
}
const keysOf = (r: LoginReply): Record<string, string> => Object.fromEntries(parseText(r.data).map((p) => [p.key, p.value]));
const status = (r: LoginReply): number => (r.statusClass << 8) | r.statusDetail;
const ID = { InitiatorName: 'iqn.2026-01.io.node:a', SessionType: 'Normal' };

describe('login state machine (RFC 7143 §6.3, §11.12, §11.13)', () => {
  it('normal session without authentication goes straight from operational to full feature phase', () => {
    const m = machine();
    const r = m.handle(
      ...req({}, { ...ID, TargetName: T_OPEN.iqn, MaxRecvDataSegmentLength: '65536', InitialR2T: 'No', ImmediateData: 'Yes' }),
    );
    assert.equal(status(r), 0);
    assert.equal(r.outcome, 'complete');
    assert.equal(r.transit, true);
    assert.equal(r.nsg, 3);
    const k = keysOf(r);
    assert.equal(k.TargetPortalGroupTag, '1');
    assert.equal(k.TargetAlias, 'open');
    assert.equal(k.MaxRecvDataSegmentLength, '262144');
    assert.equal(k.InitialR2T, 'No');
    assert.equal(r.result?.params.maxXmitDataSegmentLength, 65536);
    assert.equal(r.result?.target, T_OPEN);
    assert.equal(r.result?.cmdSN, 10);
    assert.equal(r.result?.isid, '400001370000');
  });

  it('refuses unsupported versions with 0x0205', () => {
    assert.equal(status(machine().handle(...req({ versionMin: 1, versionMax: 2 }, { ...ID, TargetName: T_OPEN.iqn }))), 0x0205);
  });

  it('missing InitiatorName or TargetName → 0x0207; unknown SessionType → 0x0209', () => {
    assert.equal(status(machine().handle(...req({}, { TargetName: T_OPEN.iqn }))), 0x0207);
    assert.equal(status(machine().handle(...req({}, { InitiatorName: ID.InitiatorName }))), 0x0207);
    assert.equal(status(machine().handle(...req({}, { ...ID, SessionType: 'Bogus', TargetName: T_OPEN.iqn }))), 0x0209);
  });

  it('unknown target, or a target not offered on this portal group → 0x0203', () => {
    assert.equal(status(machine().handle(...req({}, { ...ID, TargetName: 'iqn.2026-01.io.lunar:nope' }))), 0x0203);
    assert.equal(status(machine().handle(...req({}, { ...ID, TargetName: T_OTHERPORTAL.iqn }))), 0x0203);
  });

  it('ACL: IQN exact match or CIDR of the remote address; [] nobody → 0x0202', () => {
    assert.equal(status(machine().handle(...req({}, { ...ID, TargetName: T_ACL.iqn }))), 0);
    assert.equal(status(machine().handle(...req({}, { InitiatorName: 'iqn.2026-01.io.node:b', TargetName: T_ACL.iqn }))), 0x0202);
    assert.equal(
      status(machine({ remote: '10.1.2.3' }).handle(...req({}, { InitiatorName: 'iqn.2026-01.io.node:b', TargetName: T_ACL.iqn }))),
      0,
    );
    assert.equal(
      status(machine({ remote: '::ffff:10.1.2.3' }).handle(...req({}, { InitiatorName: 'iqn.2026-01.io.node:b', TargetName: T_ACL.iqn }))),
      0,
    );
    assert.equal(
      status(machine({ remote: '10.2.0.1' }).handle(...req({}, { InitiatorName: 'iqn.2026-01.io.node:b', TargetName: T_ACL.iqn }))),
      0x0202,
    );
    assert.equal(status(machine().handle(...req({}, { ...ID, TargetName: T_NOBODY.iqn }))), 0x0202);
  });

  it('isAllowed handles IPv6 CIDRs and never matches a malformed entry', () => {
    assert.equal(isAllowed({ allow: ['fd00::/8'] }, 'iqn.x', 'fd00::1'), true);
    assert.equal(isAllowed({ allow: ['::1/128'] }, 'iqn.x', '::1'), true);
    assert.equal(isAllowed({ allow: ['::1/128'] }, 'iqn.x', '127.0.0.1'), false);
    assert.equal(isAllowed({ allow: ['10.0.0.0/99'] }, 'iqn.x', '10.0.0.1'), false);
    assert.equal(isAllowed({ allow: null }, 'iqn.x', '1.2.3.4'), true);
  });

  it('CHAP target: skipping the security stage or offering only None → 0x0201', () => {
    assert.equal(status(machine().handle(...req({}, { ...ID, TargetName: T_CHAP.iqn }))), 0x0201);
    assert.equal(status(machine().handle(...req({ csg: 0, nsg: 1 }, { ...ID, TargetName: T_CHAP.iqn, AuthMethod: 'None' }))), 0x0201);
  });

  function chapLogin(m: LoginStateMachine, secret: string): LoginReply {
    let r = m.handle(...req({ csg: 0, nsg: 1 }, { ...ID, TargetName: T_CHAP.iqn, AuthMethod: 'CHAP,None' }));
    assert.equal(status(r), 0);
    assert.equal(keysOf(r).AuthMethod, 'CHAP');
    assert.equal(r.transit, false, 'no transit before authentication');
    r = m.handle(...req({ csg: 0, nsg: 1, transit: false }, { CHAP_A: '5' }));
    const k = keysOf(r);
    const resp = chapMd5(Number(k.CHAP_I), secret, decodeBinary(k.CHAP_C!)!);
    return m.handle(...req({ csg: 0, nsg: 1 }, { CHAP_N: 'alice', CHAP_R: encodeHex(resp) }));
  }

  it('CHAP target: security → operational → full feature with the right secret', () => {
    const m = machine();
    let r = chapLogin(m, 'alicesecret12');
    assert.equal(status(r), 0);
    assert.equal(r.transit, true);
    assert.equal(r.nsg, 1);
    r = m.handle(...req({ csg: 1, nsg: 3 }, { HeaderDigest: 'CRC32C,None' }));
    assert.equal(r.outcome, 'complete');
    assert.equal(keysOf(r).HeaderDigest, 'CRC32C');
    assert.equal(r.result?.params.headerDigest, true);
  });

  it('CHAP target: wrong secret → 0x0201', () => {
    const r = chapLogin(machine(), 'wrongsecret12');
    assert.equal(status(r), 0x0201);
    assert.equal(r.outcome, 'fail');
  });

  it('security keys in the operational stage and CHAP keys without AuthMethod=CHAP are initiator errors', () => {
    assert.equal(status(machine().handle(...req({}, { ...ID, TargetName: T_OPEN.iqn, CHAP_A: '5' }))), 0x0200);
    const m = machine();
    m.handle(...req({ csg: 0, nsg: 1, transit: false }, { ...ID, TargetName: T_OPEN.iqn, AuthMethod: 'None' }));
    assert.equal(status(m.handle(...req({ csg: 0, nsg: 1 }, { CHAP_A: '5' }))), 0x0200);
  });

  it('discovery session: no TargetName needed; discovery CHAP enforced when configured', () => {
    const r = machine().handle(...req({}, { InitiatorName: ID.InitiatorName, SessionType: 'Discovery' }));
    assert.equal(r.outcome, 'complete');
    assert.equal(r.result?.sessionType, 'Discovery');
    assert.equal(r.result?.target, null);
    assert.equal(keysOf(r).TargetPortalGroupTag, undefined);
    const d = machine({ discovery: { user: 'disc', secret: 'discsecret12' } });
    assert.equal(status(d.handle(...req({}, { InitiatorName: ID.InitiatorName, SessionType: 'Discovery' }))), 0x0201);
  });

  it('non-zero TSIH naming no session → 0x020a; naming a live session → accepted', () => {
    assert.equal(status(machine().handle(...req({ tsih: 9 }, { ...ID, TargetName: T_OPEN.iqn }))), 0x020a);
    const r = machine({ sessions: [9] }).handle(...req({ tsih: 9 }, { ...ID, TargetName: T_OPEN.iqn }));
    assert.equal(r.outcome, 'complete');
    assert.equal(r.result?.requestedTsih, 9);
  });

  it('invalid stage transitions are initiator errors (0x0200)', () => {
    assert.equal(status(machine().handle(...req({ csg: 3, nsg: 3 }, { ...ID, TargetName: T_OPEN.iqn }))), 0x0200);
    assert.equal(status(machine().handle(...req({ csg: 1, nsg: 2 }, { ...ID, TargetName: T_OPEN.iqn }))), 0x0200);
    assert.equal(status(machine().handle(...req({ csg: 1, nsg: 0 }, { ...ID, TargetName: T_OPEN.iqn }))), 0x0200);
    assert.equal(status(machine().handle(...req({ continue: true, transit: true }, { ...ID, TargetName: T_OPEN.iqn }))), 0x0200);
    const m = machine();
    m.handle(...req({ transit: false }, { ...ID, TargetName: T_OPEN.iqn }));
    assert.equal(status(m.handle(...req({ csg: 0, nsg: 1 }, {}))), 0x0200, 'going back to the security stage');
  });

  it('ISID or CID changing in the middle of a login → 0x0200', () => {
    const m = machine();
    m.handle(...req({ transit: false }, { ...ID, TargetName: T_OPEN.iqn }));
    assert.equal(status(m.handle(...req({ isid: '400001370001' }, {}))), 0x0200);
  });

  it('a key sent twice in one request, or garbage text, is an initiator error', () => {
    const data = Buffer.from(`InitiatorName=${ID.InitiatorName}\0TargetName=${T_OPEN.iqn}\0MaxBurstLength=4096\0MaxBurstLength=8192\0`);
    const [r] = req({}, {});
    assert.equal(status(machine().handle({ ...r, dataSegmentLength: data.length }, data)), 0x0200);
    assert.equal(status(machine().handle(r, Buffer.from('garbage-without-equals\0'))), 0x0200);
  });

  it('gathers login text continued with the C bit (§11.12.2) and answers partial PDUs empty', () => {
    const m = machine();
    const full = encodeText([
      { key: 'InitiatorName', value: ID.InitiatorName },
      { key: 'TargetName', value: T_OPEN.iqn },
    ]);
    const [base] = req({}, {});
    const r1 = m.handle({ ...base, transit: false, continue: true, dataSegmentLength: 10 }, full.subarray(0, 10));
    assert.equal(status(r1), 0);
    assert.equal(r1.data.length, 0);
    assert.equal(r1.outcome, 'continue');
    const r2 = m.handle({ ...base, dataSegmentLength: full.length - 10 }, full.subarray(10));
    assert.equal(r2.outcome, 'complete');
  });
});
