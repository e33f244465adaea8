// Target registry and the access (ACL ∪ publications) rule.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { portalKey, volumeAccess, VolumeTargetRegistry } from '../../src/target/registry.js';
import type { ScsiTargetDevice } from '../../src/scsi/types.js';

test('volumeAccess: unmasked and empty = anyone; masked and empty = nobody; else allow ∪ publications', () => {
  assert.deepEqual(volumeAccess({ allow: [], masked: false, publications: {} }), { allow: null });
  assert.deepEqual(volumeAccess({ allow: [], masked: true, publications: {} }), { allow: [] });
  assert.deepEqual(volumeAccess({ allow: ['10.0.0.0/8'], masked: false, publications: {} }), { allow: ['10.0.0.0/8'] });
  assert.deepEqual(
    volumeAccess({ allow: ['iqn.2000-01.a:x'], masked: true, publications: { n1: 'iqn.2000-01.b:y', n2: 'iqn.2000-01.a:x' } }),
    { allow: ['iqn.2000-01.a:x', 'iqn.2000-01.b:y'] },
  );
  // An unmasked volume with only publications is restricted to them (publishing narrows, never widens).
  assert.deepEqual(volumeAccess({ allow: [], masked: false, publications: { n: 'iqn.2000-01.b:y' } }), { allow: ['iqn.2000-01.b:y'] });
});

test('portalKey brackets IPv6', () => {
  assert.equal(portalKey({ host: '127.0.0.1', port: 3260 }), '127.0.0.1:3260');
  assert.equal(portalKey({ host: '::1', port: 3260 }), '[::1]:3260');
});

test('VolumeTargetRegistry: set, find, list sorted, setAccess, remove, discovery CHAP', () => {
  // A device that must never be called here: the registry only stores it.
  const device: ScsiTargetDevice = {
    luns: () => [0],
    execute: () => Promise.reject(new Error('not used')),
    taskManagement: () => Promise.reject(new Error('not used')),
    nexusAdded: () => undefined,
    nexusRemoved: () => undefined,
  };
  const portals = [{ host: '127.0.0.1', port: 13320, tpgt: 1 }];
  const r = new VolumeTargetRegistry(portals, null);
  assert.deepEqual(r.portals(), portals);
  assert.equal(r.discoveryChap(), null);
  r.set({ iqn: 'iqn.2026-11.io.lunar:vol-b', portals: [], access: { allow: null }, chap: null, device });
  r.set({
    iqn: 'iqn.2026-11.io.lunar:vol-a',
    alias: 'a',
    portals: [],
    access: { allow: [] },
    chap: { user: 'u', secret: 's'.repeat(12) },
    device,
  });
  assert.deepEqual(
    r.listTargets().map((t) => t.iqn),
    ['iqn.2026-11.io.lunar:vol-a', 'iqn.2026-11.io.lunar:vol-b'],
  );
  assert.equal(r.findTarget('iqn.2026-11.io.lunar:vol-a')?.alias, 'a');
  assert.equal(r.findTarget('iqn.2026-11.io.lunar:vol-c'), undefined);
  r.setAccess('iqn.2026-11.io.lunar:vol-a', { allow: ['iqn.2000-01.x:y'] });
  assert.deepEqual(r.findTarget('iqn.2026-11.io.lunar:vol-a')?.access, { allow: ['iqn.2000-01.x:y'] });
  assert.equal(r.findTarget('iqn.2026-11.io.lunar:vol-a')?.chap?.user, 'u');
  assert.equal(r.remove('iqn.2026-11.io.lunar:vol-a'), true);
  assert.equal(r.remove('iqn.2026-11.io.lunar:vol-a'), false);
  assert.deepEqual(
    r.listTargets().map((t) => t.iqn),
    ['iqn.2026-11.io.lunar:vol-b'],
  );
  r.setDiscoveryChap({ user: 'd', secret: 'discoverysecret' });
  assert.equal(r.discoveryChap()?.user, 'd');
});
