import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ScsiTargetDevice } from '../../src/scsi/types.js';
import type { Portal, TargetEntry, TargetRegistry } from '../../src/target/types.js';
import { formatTargetAddress, sendTargets } from '../../src/iscsi/discovery.js';

const device: ScsiTargetDevice = {
  luns: () => [0],
  execute: () => Promise.reject(new Error('unused')),
  taskManagement: () => Promise.reject(new Error('unused')),
  nexusAdded: () => undefined,
  nexusRemoved: () => undefined,
};
const P1: Portal = { host: '0.0.0.0', port: 3260, tpgt: 1 };
const P2: Portal = { host: 'fd00::5', port: 3261, tpgt: 2 };
const P3: Portal = { host: '10.0.0.1', port: 3260, tpgt: 3, advertise: 'storage.example.com' };
const targets: TargetEntry[] = [
  { iqn: 'iqn.a:all', portals: [], access: { allow: null }, chap: null, device },
  { iqn: 'iqn.a:two', portals: [P2, P3], access: { allow: null }, chap: null, device },
  { iqn: 'iqn.a:node1', portals: [], access: { allow: ['iqn.n:1'] }, chap: null, device },
  { iqn: 'iqn.a:net', portals: [], access: { allow: ['192.168.0.0/16'] }, chap: null, device },
  { iqn: 'iqn.a:none', portals: [], access: { allow: [] }, chap: null, device },
];
const registry: TargetRegistry = {
  findTarget: (i) => targets.find((t) => t.iqn === i),
  listTargets: () => targets,
  portals: () => [P1, P2],
  discoveryChap: () => null,
};
const q = { initiatorName: 'iqn.n:2', remoteAddress: '10.1.1.1', localAddress: '10.1.1.2', value: 'All', sessionTarget: null };

describe('SendTargets (RFC 7143 §13.3)', () => {
  it('formats TargetAddress with brackets for IPv6, the local address for wildcard binds, and advertise names', () => {
    assert.equal(formatTargetAddress(P1, '::ffff:10.1.1.2'), '10.1.1.2:3260,1');
    assert.equal(formatTargetAddress(P2, '10.1.1.2'), '[fd00::5]:3261,2');
    assert.equal(formatTargetAddress(P3, '10.1.1.2'), 'storage.example.com:3260,3');
    assert.equal(formatTargetAddress({ host: '::', port: 3260, tpgt: 1 }, 'fd00::9'), '[fd00::9]:3260,1');
  });

  it('SendTargets=All: visible targets only, each followed by its portals (target portals or all)', () => {
    assert.deepEqual(sendTargets(registry, q), [
      { key: 'TargetName', value: 'iqn.a:all' },
      { key: 'TargetAddress', value: '10.1.1.2:3260,1' },
      { key: 'TargetAddress', value: '[fd00::5]:3261,2' },
      { key: 'TargetName', value: 'iqn.a:two' },
      { key: 'TargetAddress', value: '[fd00::5]:3261,2' },
      { key: 'TargetAddress', value: 'storage.example.com:3260,3' },
    ]);
  });

  it('ACLs by IQN and CIDR decide visibility; unlisted initiators see nothing', () => {
    const n1 = sendTargets(registry, { ...q, initiatorName: 'iqn.n:1' })
      .filter((p) => p.key === 'TargetName')
      .map((p) => p.value);
    assert.deepEqual(n1, ['iqn.a:all', 'iqn.a:two', 'iqn.a:node1']);
    const net = sendTargets(registry, { ...q, remoteAddress: '192.168.4.4' })
      .filter((p) => p.key === 'TargetName')
      .map((p) => p.value);
    assert.deepEqual(net, ['iqn.a:all', 'iqn.a:two', 'iqn.a:net']);
    const onlyAcl: TargetRegistry = { ...registry, listTargets: () => targets.slice(2) };
    assert.deepEqual(sendTargets(onlyAcl, q), []);
  });

  it('SendTargets=<iqn> reports that target if visible; normal sessions only see their own target', () => {
    assert.deepEqual(sendTargets(registry, { ...q, value: 'iqn.a:node1' }), []);
    assert.equal(sendTargets(registry, { ...q, value: 'iqn.a:two' })[0]?.value, 'iqn.a:two');
    assert.deepEqual(sendTargets(registry, { ...q, value: 'iqn.a:missing' }), []);
    const own = sendTargets(registry, { ...q, value: 'All', sessionTarget: 'iqn.a:two' });
    assert.deepEqual(
      own.filter((p) => p.key === 'TargetName').map((p) => p.value),
      ['iqn.a:two'],
    );
    assert.deepEqual(sendTargets(registry, { ...q, value: '', sessionTarget: 'iqn.a:all' })[0], { key: 'TargetName', value: 'iqn.a:all' });
  });
});
