// src/util/portal.ts: portal specifications (the command line, LUNAR_PORTALS) and the one formatter of
// portal addresses.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { hostPort, parsePortal, parsePortals, portalAddress, portalKey, targetAddress } from '../../src/util/portal.js';

test('parsePortal: forms', () => {
  assert.deepEqual(parsePortal('127.0.0.1:13320', 1), { host: '127.0.0.1', port: 13320, tpgt: 1 });
  assert.deepEqual(parsePortal('127.0.0.1', 2), { host: '127.0.0.1', port: 3260, tpgt: 2 });
  assert.deepEqual(parsePortal('[::1]:3261', 1), { host: '::1', port: 3261, tpgt: 1 });
  assert.deepEqual(parsePortal('0.0.0.0:3260=192.0.2.10', 1), { host: '0.0.0.0', port: 3260, tpgt: 1, advertise: '192.0.2.10' });
  assert.deepEqual(parsePortal('[::]:3260=[2001:db8::1]', 1), { host: '::', port: 3260, tpgt: 1, advertise: '2001:db8::1' });
  assert.deepEqual(parsePortal('storage.example:3260', 1), { host: 'storage.example', port: 3260, tpgt: 1 });
  assert.deepEqual(
    parsePortals(['a:1', 'b:2']).map((p) => p.tpgt),
    [1, 2],
  );
});

test('parsePortal: errors', () => {
  assert.throws(() => parsePortal('::1:3260', 1), /IPv6 addresses in brackets/);
  assert.throws(() => parsePortal('127.0.0.1:0', 1), /port must be 1-65535/);
  assert.throws(() => parsePortal('127.0.0.1:99999', 1), /port must be 1-65535/);
  assert.throws(() => parsePortal('127.0.0.1:x', 1), /port must be/);
  assert.throws(() => parsePortal('[::1', 1), /missing "]"/);
  assert.throws(() => parsePortal(':3260', 1), /empty address/);
  assert.throws(() => parsePortal('a b:1', 1), /not an address/);
  fc.assert(
    fc.property(fc.string(), (s) => {
      try {
        const p = parsePortal(s, 1);
        assert.ok(p.port >= 1 && p.port <= 65535 && p.host.length > 0);
      } catch (err) {
        assert.ok(err instanceof Error && /^invalid portal/.test(err.message));
      }
    }),
  );
});

test('portal formatting: IPv6 in brackets, bind address vs advertised address, portal group tag', () => {
  assert.equal(hostPort('127.0.0.1', 3260), '127.0.0.1:3260');
  assert.equal(hostPort('::1', 3260), '[::1]:3260');
  assert.equal(hostPort('[::1]', 3260), '[::1]:3260');
  assert.equal(hostPort('storage.example', 3261), 'storage.example:3261');
  const nat = { host: '0.0.0.0', port: 3260, tpgt: 2, advertise: '2001:db8::1' };
  assert.equal(portalKey(nat), '0.0.0.0:3260');
  assert.equal(portalAddress(nat), '[2001:db8::1]:3260');
  assert.equal(targetAddress(nat), '[2001:db8::1]:3260,2');
  assert.equal(targetAddress(nat, nat.host), '0.0.0.0:3260,2');
  const plain = { host: '::', port: 3262, tpgt: 1 };
  assert.equal(portalKey(plain), '[::]:3262');
  assert.equal(portalAddress(plain), '[::]:3262');
  assert.equal(targetAddress(plain, 'fd00::9'), '[fd00::9]:3262,1');
});

test('portal formatting round-trips through parsePortal', () => {
  const host = fc.oneof(
    fc.ipV4(),
    fc.ipV6(),
    fc.domain().filter((d) => /^[A-Za-z0-9.-]+$/.test(d)),
  );
  fc.assert(
    fc.property(host, fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 1, max: 65535 }), (h, port, tpgt) => {
      const p = parsePortal(portalKey({ host: h, port }), tpgt);
      assert.deepEqual(p, { host: h, port, tpgt });
      assert.equal(portalKey(p), hostPort(h, port));
    }),
  );
});
