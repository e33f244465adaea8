// Pure CSI request logic: capacities, capabilities, parameters, node ids, tokens, redaction, and the
// HPACK pieces of the :authority rewriter (RFC 7541 examples).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { status } from '@grpc/grpc-js';
import { CsiError, toCsiError } from '../../src/csi/errors.js';
import {
  AuthorityRewriter,
  decodeHpackInt,
  encodeHpackInt,
  huffmanDecode,
  rewriteHeaderBlock,
  sanitizeAuthority,
} from '../../src/csi/authority.js';
import {
  CAPACITY_ALIGNMENT,
  capacityBounds,
  checkCapability,
  decodeToken,
  DEFAULT_VOLUME_BYTES,
  encodeToken,
  MIN_VOLUME_BYTES,
  paginate,
  parseNodeId,
  parseParameters,
  redact,
  toTimestamp,
  unsupportedReason,
  volumeSize,
} from '../../src/csi/validate.js';
import { VolumeError } from '../../src/volumes/types.js';
import { isValidPluginName, DEFAULT_PLUGIN_NAME } from '../../src/csi/identity.js';
import { defaultCsiEndpoint, parseEndpoint } from '../../src/csi/endpoint.js';
import { resolve } from 'node:path';

const MiB = 1024 * 1024;

function code(fn: () => unknown): number {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof CsiError, `expected CsiError, got ${String(err)}`);
    return err.code;
  }
  assert.fail('expected an error');
}

test('volumeSize rounds required_bytes up to the alignment and honours limit_bytes', () => {
  assert.equal(CAPACITY_ALIGNMENT, MiB);
  assert.equal(volumeSize(capacityBounds(null)), DEFAULT_VOLUME_BYTES);
  assert.equal(volumeSize(capacityBounds({ required_bytes: '1', limit_bytes: '0' })), MIN_VOLUME_BYTES);
  assert.equal(volumeSize(capacityBounds({ required_bytes: String(10 * MiB + 1), limit_bytes: '0' })), 11 * MiB);
  assert.equal(volumeSize(capacityBounds({ required_bytes: String(10 * MiB), limit_bytes: String(10 * MiB) })), 10 * MiB);
  // only a limit: the default size capped to the limit, rounded down
  assert.equal(volumeSize(capacityBounds({ required_bytes: '0', limit_bytes: String(5 * MiB + 7) })), 5 * MiB);
  assert.equal(
    code(() => volumeSize(capacityBounds({ required_bytes: '0', limit_bytes: '1000' }))),
    status.OUT_OF_RANGE,
  );
  // limit below the rounded size
  assert.equal(
    code(() => volumeSize(capacityBounds({ required_bytes: String(MiB + 1), limit_bytes: String(MiB + 100) }))),
    status.OUT_OF_RANGE,
  );
  assert.equal(
    code(() => capacityBounds({ required_bytes: '10', limit_bytes: '5' })),
    status.OUT_OF_RANGE,
  );
  assert.equal(
    code(() => capacityBounds({ required_bytes: '-1', limit_bytes: '0' })),
    status.INVALID_ARGUMENT,
  );
  assert.equal(
    code(() => volumeSize(capacityBounds({ required_bytes: String(2 ** 50), limit_bytes: '0' }))),
    status.OUT_OF_RANGE,
  );
  // from a source: at least the source's size
  assert.equal(volumeSize(capacityBounds(null), 3 * MiB), 3 * MiB);
  assert.equal(volumeSize(capacityBounds({ required_bytes: String(MiB), limit_bytes: '0' }), 3 * MiB), 3 * MiB);
  assert.equal(
    code(() => volumeSize(capacityBounds({ required_bytes: '0', limit_bytes: String(2 * MiB) }), 3 * MiB)),
    status.OUT_OF_RANGE,
  );
});

test('volumeSize: property — result aligned, >= required, <= limit when it succeeds', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 0, max: 2 ** 40 }), (req, lim) => {
      let size: number;
      try {
        size = volumeSize(capacityBounds({ required_bytes: String(req), limit_bytes: String(lim) }));
      } catch (err) {
        return err instanceof CsiError && err.code === status.OUT_OF_RANGE;
      }
      return size % CAPACITY_ALIGNMENT === 0 && size >= req && size >= MIN_VOLUME_BYTES && (lim === 0 || size <= lim);
    }),
  );
});

test('capabilities: structure and what Lunar supports', () => {
  const mount = (mode: string, fs_type = ''): unknown => ({
    mount: { fs_type, mount_flags: [], volume_mount_group: '' },
    access_mode: { mode },
    access_type: 'mount',
  });
  const block = (mode: string): unknown => ({ block: {}, access_mode: { mode }, access_type: 'block' });
  const chk = (c: unknown) => checkCapability(c as Parameters<typeof checkCapability>[0], 'cap');
  assert.equal(
    code(() => chk(null)),
    status.INVALID_ARGUMENT,
  );
  assert.equal(
    code(() => chk({ mount: { fs_type: '' }, access_mode: null })),
    status.INVALID_ARGUMENT,
  );
  assert.equal(
    code(() => chk({ access_mode: { mode: 'SINGLE_NODE_WRITER' } })),
    status.INVALID_ARGUMENT,
  );
  assert.equal(
    code(() => chk(block('UNKNOWN'))),
    status.INVALID_ARGUMENT,
  );
  for (const mode of [
    'SINGLE_NODE_WRITER',
    'SINGLE_NODE_READER_ONLY',
    'SINGLE_NODE_SINGLE_WRITER',
    'SINGLE_NODE_MULTI_WRITER',
    'MULTI_NODE_READER_ONLY',
  ]) {
    assert.equal(unsupportedReason(chk(mount(mode)), 'cap'), null, mode);
    assert.equal(unsupportedReason(chk(block(mode)), 'cap'), null, mode);
  }
  assert.equal(unsupportedReason(chk(block('MULTI_NODE_MULTI_WRITER')), 'cap'), null);
  const why = unsupportedReason(chk(mount('MULTI_NODE_MULTI_WRITER')), 'cap');
  assert.match(why ?? '', /block/i);
  assert.match(why ?? '', /filesystem/);
  assert.notEqual(unsupportedReason(chk(mount('SINGLE_NODE_WRITER', 'zfs')), 'cap'), null);
  assert.equal(unsupportedReason(chk(mount('SINGLE_NODE_WRITER', 'xfs')), 'cap'), null);
});

test('parameters: Lunar keys, sidecar keys ignored, unknown keys named', () => {
  const p = parseParameters({
    fsType: 'xfs',
    chap: 'mutual',
    thin: 'false',
    portals: '127.0.0.1:3260, [::1]:3261',
    'csi.storage.k8s.io/pvc/name': 'data',
  });
  assert.equal(p.fsType, 'xfs');
  assert.equal(p.chap, 'mutual');
  assert.equal(p.thin, false);
  assert.deepEqual(p.portals, ['127.0.0.1:3260', '[::1]:3261']);
  assert.deepEqual(p.stored, { fsType: 'xfs', chap: 'mutual', thin: 'false', portals: '127.0.0.1:3260,[::1]:3261' });
  const d = parseParameters({});
  assert.equal(d.thin, true);
  assert.equal(d.chap, 'none');
  try {
    parseParameters({ fstype: 'ext4', colour: 'blue' });
    assert.fail('unknown keys accepted');
  } catch (err) {
    assert.ok(err instanceof CsiError);
    assert.equal(err.code, status.INVALID_ARGUMENT);
    assert.match(err.message, /"fstype"/);
    assert.match(err.message, /"colour"/);
  }
  assert.equal(
    code(() => parseParameters({ chap: 'yes' })),
    status.INVALID_ARGUMENT,
  );
  assert.equal(
    code(() => parseParameters({ thin: 'True' })),
    status.INVALID_ARGUMENT,
  );
  assert.equal(
    code(() => parseParameters({ portals: 'nohostport' })),
    status.INVALID_ARGUMENT,
  );
  assert.equal(
    code(() => parseParameters({ portals: '1.2.3.4:70000' })),
    status.INVALID_ARGUMENT,
  );
  assert.equal(
    code(() => parseParameters({ fsType: 'ntfs' })),
    status.INVALID_ARGUMENT,
  );
});

test('node ids: "<name>#<iqn>" or a bare initiator name', () => {
  assert.deepEqual(parseNodeId('worker-1#iqn.2004-10.com.ubuntu:01:1234abcd'), {
    nodeName: 'worker-1',
    initiatorName: 'iqn.2004-10.com.ubuntu:01:1234abcd',
  });
  assert.deepEqual(parseNodeId('iqn.1994-05.com.redhat:abc'), { initiatorName: 'iqn.1994-05.com.redhat:abc' });
  assert.deepEqual(parseNodeId('eui.0123456789abcdef'), { initiatorName: 'eui.0123456789abcdef' });
  for (const bad of [
    '',
    'worker-1',
    'worker-1#',
    '#iqn.2004-10.com.ubuntu:x',
    'n#IQN.2004-10.com.ubuntu:x',
    'n#iqn.2004-13.com.x',
    'bad name#iqn.2004-10.com.x:y',
  ]) {
    assert.equal(
      code(() => parseNodeId(bad)),
      status.INVALID_ARGUMENT,
      bad,
    );
  }
  assert.equal(
    code(() => parseNodeId(`n#iqn.2004-10.com.x:${'a'.repeat(300)}`)),
    status.INVALID_ARGUMENT,
  );
});

test('tokens: round trip; foreign or garbled tokens are ABORTED', () => {
  assert.equal(decodeToken('v', encodeToken('v', 'vol-123')), 'vol-123');
  for (const t of ['invalid-token', 's1.dm9s', 'v1.', 'v1.***', '1234'])
    assert.equal(
      code(() => decodeToken('v', t)),
      status.ABORTED,
      t,
    );
  fc.assert(fc.property(fc.string({ minLength: 1 }), (id) => decodeToken('s', encodeToken('s', id)) === id));
});

test('paginate: pages cover every item once, in id order, and survive deletion of the last entry', () => {
  const items = Array.from({ length: 7 }, (_, i) => ({ id: `id-${i}` })).reverse();
  const seen: string[] = [];
  let token = '';
  let pages = 0;
  do {
    const { page, nextToken } = paginate(items, (x) => x.id, 'v', 3, token);
    seen.push(...page.map((x) => x.id));
    token = nextToken;
    pages++;
  } while (token !== '');
  assert.equal(pages, 3);
  assert.deepEqual(seen, items.map((x) => x.id).sort());
  const first = paginate(items, (x) => x.id, 'v', 2, '');
  const rest = items.filter((x) => x.id !== 'id-1');
  assert.deepEqual(
    paginate(rest, (x) => x.id, 'v', 0, first.nextToken).page.map((x) => x.id),
    ['id-2', 'id-3', 'id-4', 'id-5', 'id-6'],
  );
  assert.equal(
    code(() => paginate(items, (x) => x.id, 'v', -1, '')),
    status.INVALID_ARGUMENT,
  );
});

test('redact removes secrets, mount flags and secret-looking keys at any depth', () => {
  const r = JSON.stringify(
    redact({
      name: 'pvc-1',
      secrets: { password: 'hunter2', token: 'abc' },
      volume_capabilities: [{ mount: { fs_type: 'ext4', mount_flags: ['user=x,pass=y'] } }],
      publish_context: { chapUser: 'u', chapSecret: 's3cr3t-value', mutualSecret: 'other-secret' },
    }),
  );
  for (const leaked of ['hunter2', 'abc"', 'pass=y', 's3cr3t-value', 'other-secret'])
    assert.ok(!r.includes(leaked), `${leaked} leaked: ${r}`);
  assert.ok(r.includes('pvc-1') && r.includes('ext4') && r.includes('"chapUser":"u"'));
});

test('VolumeError codes map to gRPC codes', () => {
  const cases: [ConstructorParameters<typeof VolumeError>[0], number][] = [
    ['invalid-argument', status.INVALID_ARGUMENT],
    ['not-found', status.NOT_FOUND],
    ['already-exists', status.ALREADY_EXISTS],
    ['out-of-range', status.OUT_OF_RANGE],
    ['resource-exhausted', status.RESOURCE_EXHAUSTED],
    ['busy', status.ABORTED],
    ['failed-precondition', status.FAILED_PRECONDITION],
    ['internal', status.INTERNAL],
  ];
  for (const [c, s] of cases) {
    const e = toCsiError(new VolumeError(c, 'why'));
    assert.equal(e.code, s, c);
    assert.equal(e.message, 'why');
  }
  assert.equal(toCsiError(new Error('boom')).code, status.INTERNAL);
  assert.equal(toCsiError(Object.assign(new Error('full'), { code: 'ENOSPC' })).code, status.RESOURCE_EXHAUSTED);
});

test('plugin name and timestamps', () => {
  assert.ok(isValidPluginName(DEFAULT_PLUGIN_NAME));
  assert.ok(!isValidPluginName('-bad.name'));
  assert.ok(!isValidPluginName('a'.repeat(64)));
  assert.ok(!isValidPluginName('has_underscore'));
  assert.deepEqual(toTimestamp('2026-01-02T03:04:05.678Z'), { seconds: String(Date.UTC(2026, 0, 2, 3, 4, 5) / 1000), nanos: 678_000_000 });
});

// ---- HPACK (RFC 7541) ---------------------------------------------------------------------------

test('HPACK integers: RFC 7541 C.1 examples and round trips', () => {
  assert.deepEqual(decodeHpackInt(Buffer.from([0x0a]), 0, 5), { value: 10, next: 1 }); // C.1.1
  assert.deepEqual(decodeHpackInt(Buffer.from([0x1f, 0x9a, 0x0a]), 0, 5), { value: 1337, next: 3 }); // C.1.2
  assert.deepEqual(decodeHpackInt(Buffer.from([0x2a]), 0, 8), { value: 42, next: 1 }); // C.1.3
  assert.equal(decodeHpackInt(Buffer.from([0x1f, 0x9a]), 0, 5), null);
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: 1, max: 8 }), (v, n) => {
      const enc = encodeHpackInt(v, n, 0);
      return decodeHpackInt(enc, 0, n)?.value === v;
    }),
  );
});

test('Huffman decoding: RFC 7541 C.4 examples; malformed padding refused', () => {
  assert.equal(huffmanDecode(Buffer.from('f1e3c2e5f23a6ba0ab90f4ff', 'hex'))?.toString(), 'www.example.com');
  assert.equal(huffmanDecode(Buffer.from('a8eb10649cbf', 'hex'))?.toString(), 'no-cache');
  assert.equal(huffmanDecode(Buffer.from('25a849e95ba97d7f', 'hex'))?.toString(), 'custom-key');
  assert.equal(huffmanDecode(Buffer.from('25a849e95bb8e8b4bf', 'hex'))?.toString(), 'custom-value');
  assert.equal(huffmanDecode(Buffer.from('f1e3c2e5f23a6ba0ab90f4fe', 'hex')), null); // padding not all ones
  assert.equal(huffmanDecode(Buffer.from('ffffffff', 'hex')), null); // EOS
});

test('sanitizeAuthority keeps the length and replaces what nghttp2 refuses', () => {
  assert.equal(sanitizeAuthority(Buffer.from('localhost')), null);
  assert.equal(sanitizeAuthority(Buffer.from('[::1]:50051')), null);
  assert.equal(sanitizeAuthority(Buffer.from('/var/lib/kubelet/plugins/x/csi.sock'))?.toString(), '_var_lib_kubelet_plugins_x_csi.sock');
});

test('rewriteHeaderBlock rewrites literal :authority values only', () => {
  const path = Buffer.from('/csi/csi.sock');
  // literal with incremental indexing, name = static index 1 (:authority), raw value
  const lit = Buffer.concat([Buffer.from([0x41]), encodeHpackInt(path.length, 7, 0), path]);
  // indexed :method POST (3), then the literal, then literal without indexing of a new name
  const other = Buffer.concat([Buffer.from([0x00, 0x03]), Buffer.from('abc'), Buffer.from([0x01]), Buffer.from('/')]);
  const block = Buffer.concat([Buffer.from([0x83]), lit, other]);
  const out = rewriteHeaderBlock(block);
  assert.ok(out);
  assert.deepEqual(out, Buffer.concat([Buffer.from([0x83, 0x41, path.length]), Buffer.from('_csi_csi.sock'), other]));
  // Huffman-coded value (RFC 7541 C.4.1 www.example.com): valid, untouched
  const huff = Buffer.concat([Buffer.from([0x41, 0x8c]), Buffer.from('f1e3c2e5f23a6ba0ab90f4ff', 'hex')]);
  assert.equal(rewriteHeaderBlock(huff), null);
  // truncated block: passed through
  assert.equal(rewriteHeaderBlock(Buffer.from([0x41, 0x05, 0x2f])), null);
});

test('AuthorityRewriter: preface and frames pass; a HEADERS block split over CONTINUATION is rewritten', () => {
  const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
  const frame = (type: number, flags: number, sid: number, payload: Buffer): Buffer => {
    const h = Buffer.alloc(9);
    h.writeUIntBE(payload.length, 0, 3);
    h[3] = type;
    h[4] = flags;
    h.writeUInt32BE(sid, 5);
    return Buffer.concat([h, payload]);
  };
  const settings = frame(0x4, 0, 0, Buffer.alloc(0));
  const path = Buffer.from('/tmp/x.sock');
  const block = Buffer.concat([Buffer.from([0x83, 0x41, path.length]), path]);
  const headers = frame(0x1, 0x1, 1, block.subarray(0, 4)); // END_STREAM, no END_HEADERS
  const cont = frame(0x9, 0x4, 1, block.subarray(4));
  const data = frame(0x0, 0x1, 3, Buffer.from('payload'));
  const input = Buffer.concat([preface, settings, headers, cont, data]);
  // feed byte by byte: framing must not depend on chunk boundaries
  const rw = new AuthorityRewriter();
  const out = Buffer.concat([...input].flatMap((b) => rw.push(Buffer.from([b]))));
  const expectedBlock = Buffer.concat([Buffer.from([0x83, 0x41, path.length]), Buffer.from('_tmp_x.sock')]);
  assert.deepEqual(out, Buffer.concat([preface, settings, frame(0x1, 0x1 | 0x4, 1, expectedBlock), data]));
  // nothing to rewrite: bytes unchanged
  const rw2 = new AuthorityRewriter();
  const clean = Buffer.concat([preface, settings, frame(0x1, 0x5, 1, Buffer.from([0x83, 0x41, 0x09, ...Buffer.from('localhost')])), data]);
  assert.deepEqual(Buffer.concat(rw2.push(clean)), clean);
});

test('CSI endpoints: unix:///abs, unix:rel, tcp://host:port; others refused', () => {
  assert.deepEqual(parseEndpoint('unix:///var/lib/kubelet/plugins/iscsi.lunar.dev/csi.sock'), {
    kind: 'unix',
    path: '/var/lib/kubelet/plugins/iscsi.lunar.dev/csi.sock',
  });
  assert.deepEqual(parseEndpoint('unix:/csi/csi.sock'), { kind: 'unix', path: '/csi/csi.sock' });
  assert.deepEqual(parseEndpoint('unix:run/csi.sock'), { kind: 'unix', path: resolve('run/csi.sock') });
  assert.deepEqual(parseEndpoint('tcp://127.0.0.1:10000'), { kind: 'tcp', host: '127.0.0.1', port: 10000 });
  assert.deepEqual(parseEndpoint('tcp://[::1]:10000'), { kind: 'tcp', host: '::1', port: 10000 });
  assert.equal(defaultCsiEndpoint('/var/lib/lunar'), 'unix:///var/lib/lunar/csi.sock');
  assert.deepEqual(parseEndpoint(defaultCsiEndpoint('data')), { kind: 'unix', path: resolve('data/csi.sock') });
  for (const bad of ['unix://relative.sock', 'unix:', '/csi/csi.sock', 'tcp://host', 'tcp://h:99999', 'http://h:1']) {
    assert.throws(() => parseEndpoint(bad), Error, bad);
  }
});
