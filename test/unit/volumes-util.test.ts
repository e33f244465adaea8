// Pure helpers behind volumes and the CLI: sizes, ids/NAA, ACL entries, the keyed mutex.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { alignUp, formatSize, parseSize, SizeError } from '../../src/util/size.js';
import {
  isCidr,
  isIscsiName,
  isLunarNaa6,
  LUNAR_COMPANY_ID,
  newChapSecret,
  newNaa6,
  newVolumeId,
  normaliseAclEntry,
  targetIqn,
} from '../../src/util/ids.js';
import { KeyedMutex } from '../../src/util/mutex.js';

function parseSizeLoose(text: string): number {
  const [num, unit] = text.split(' ');
  return Number(num) * parseSize(`1${unit}`);
}

test('parseSize: units', () => {
  assert.equal(parseSize('1048576'), 1048576);
  assert.equal(parseSize('1GiB'), 1024 ** 3);
  assert.equal(parseSize('1G'), 1024 ** 3);
  assert.equal(parseSize('1g'), 1024 ** 3);
  assert.equal(parseSize('512MiB'), 512 * 1024 ** 2);
  assert.equal(parseSize('1GB'), 1e9);
  assert.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3);
  assert.equal(parseSize(' 2 TiB '), 2 * 1024 ** 4);
  assert.equal(parseSize('0'), 0);
  assert.equal(parseSize('7B'), 7);
});

test('parseSize: errors say what is wrong', () => {
  assert.throws(() => parseSize(''), /invalid size "": expected a number/);
  assert.throws(() => parseSize('-1G'), SizeError);
  assert.throws(() => parseSize('1 GiBs'), /unknown unit "GiBs"/);
  assert.throws(() => parseSize('1.3B'), /not a whole number of bytes/);
  assert.throws(() => parseSize('99999999PiB'), /too large/);
  assert.throws(() => parseSize('0x10'), SizeError);
  assert.throws(() => parseSize('1e9'), SizeError);
});

test('parseSize: property — n<unit> is n times the unit, formatSize reads back within 1 %', () => {
  const units: Array<[string, number]> = [
    ['', 1],
    ['K', 1024],
    ['KiB', 1024],
    ['M', 1024 ** 2],
    ['MiB', 1024 ** 2],
    ['G', 1024 ** 3],
    ['GiB', 1024 ** 3],
    ['KB', 1000],
    ['MB', 1e6],
  ];
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 1_000_000 }), fc.constantFrom(...units), (n, [u, m]) => {
      assert.equal(parseSize(`${n}${u}`), n * m);
      // formatSize rounds to at most 2 decimals: reading it back lands within 1 %.
      const back = n * m === 0 ? 0 : Math.abs(parseSizeLoose(formatSize(n * m)) - n * m) / (n * m);
      assert.ok(back < 0.01, `${n}${u} -> ${formatSize(n * m)}`);
    }),
  );
  fc.assert(
    fc.property(fc.string(), (s) => {
      try {
        const v = parseSize(s);
        assert.ok(Number.isSafeInteger(v) && v >= 0);
      } catch (err) {
        assert.ok(err instanceof SizeError);
      }
    }),
  );
});

test('formatSize and alignUp', () => {
  assert.equal(formatSize(1024 ** 3), '1 GiB');
  assert.equal(formatSize(1536 * 1024), '1.5 MiB');
  assert.equal(formatSize(100), '100 B');
  assert.equal(alignUp(1, 1 << 20), 1 << 20);
  assert.equal(alignUp(1 << 20, 1 << 20), 1 << 20);
  assert.equal(alignUp((1 << 20) + 1, 1 << 20), 2 << 20);
});

test('NAA 6h designators: format, company id, randomness', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const n = newNaa6();
    assert.match(n, /^6[0-9a-f]{31}$/);
    assert.ok(isLunarNaa6(n));
    assert.equal(n.slice(1, 7), LUNAR_COMPANY_ID.toString(16).padStart(6, '0'));
    seen.add(n);
  }
  assert.equal(seen.size, 1000);
  // The company id is in the IEEE 802c AAI quadrant: X (local) bit set, Y=Z=0 → low nibble of octet 0 is 0b0010.
  assert.equal((LUNAR_COMPANY_ID >> 16) & 0x0f, 0b0010);
  assert.ok(!isLunarNaa6('5' + newNaa6().slice(1)));
  assert.ok(!isLunarNaa6('60'));
});

test('volume ids, IQNs and CHAP secrets', () => {
  const id = newVolumeId();
  assert.match(id, /^vol-[0-9a-f]{16}$/);
  assert.equal(targetIqn(id), `iqn.2026-11.io.lunar:${id}`);
  assert.ok(isIscsiName(targetIqn(id)));
  const s = newChapSecret();
  assert.equal(s.length, 16);
  assert.match(s, /^[A-Za-z0-9]+$/);
  assert.notEqual(newChapSecret(), s);
});

test('iSCSI names and CIDRs', () => {
  for (const good of [
    'iqn.1993-08.org.debian:01:abcdef',
    'iqn.2026-11.io.lunar:vol-1',
    'iqn.2005-03.org.open-iscsi',
    'eui.0123456789ABCDEF',
    'naa.52004567BA64678D',
  ]) {
    assert.ok(isIscsiName(good), good);
  }
  for (const bad of [
    '',
    'iqn.93-08.org:x',
    'iqn.1993-13.org:x',
    'iqn.1993-08.Org:x',
    'eui.123',
    'foo',
    'iqn.1993-08.org:a b',
    `iqn.1993-08.org:${'x'.repeat(220)}`,
  ]) {
    assert.ok(!isIscsiName(bad), bad);
  }
  assert.ok(isCidr('10.0.0.0/8'));
  assert.ok(isCidr('::1/128'));
  assert.ok(!isCidr('10.0.0.0/33'));
  assert.ok(!isCidr('10.0.0.0'));
  assert.ok(!isCidr('foo/8'));
  assert.deepEqual(normaliseAclEntry('127.0.0.1'), { ok: true, value: '127.0.0.1/32' });
  assert.deepEqual(normaliseAclEntry('::1'), { ok: true, value: '::1/128' });
  assert.deepEqual(normaliseAclEntry('iqn.1993-08.org.debian:01:ab'), { ok: true, value: 'iqn.1993-08.org.debian:01:ab' });
  const bad = normaliseAclEntry('bogus');
  assert.equal(bad.ok, false);
  assert.match(!bad.ok ? bad.error : '', /invalid ACL entry "bogus"/);
});

test('KeyedMutex: serialises per key, tryRun reports busy', async () => {
  const m = new KeyedMutex();
  const order: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const a = m.run('k', async () => {
    order.push('a-start');
    await gate;
    order.push('a-end');
    return 1;
  });
  const busy = await m.tryRun('k', () => Promise.resolve(2));
  assert.deepEqual(busy, { ran: false });
  const other = await m.tryRun('other', () => Promise.resolve(3));
  assert.deepEqual(other, { ran: true, value: 3 });
  const b = m.run('k', () => {
    order.push('b');
    return Promise.resolve(4);
  });
  release();
  assert.equal(await a, 1);
  assert.equal(await b, 4);
  assert.deepEqual(order, ['a-start', 'a-end', 'b']);
  assert.equal(m.isLocked('k'), false);
  // A failing holder releases the key.
  await assert.rejects(
    m.run('k', async () => Promise.reject(new Error('x'))),
    /x/,
  );
  assert.deepEqual(await m.tryRun('k', () => Promise.resolve(5)), { ran: true, value: 5 });
});
