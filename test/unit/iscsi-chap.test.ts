import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChapAuthenticator, chapMd5, decodeBinary, encodeHex } from '../../src/iscsi/chap.js';
import { LoginFailure } from '../../src/iscsi/errors.js';
import type { TextPair } from '../../src/iscsi/text.js';

// Vectors computed independently with Python's hashlib: md5(bytes([id]) + secret + challenge).
const VECTORS = [
  {
    id: 1,
    secret: 'secret123456',
    challenge: Buffer.from(Array.from({ length: 16 }, (_, i) => i)),
    md5: 'f2f17d483c1fcd4646f3c472cdf69b37',
  },
  { id: 0xab, secret: 'tsecret123456', challenge: Buffer.alloc(16, 0xff), md5: 'b8695a5d029fe69d8fb6c849b7da9339' },
  { id: 0, secret: 'Password', challenge: Buffer.from('0123456789abcdef', 'hex'), md5: '46cec30dd9b1f8d5e8ceff5ee43f52e1' },
];

const get = (pairs: TextPair[], k: string): string => pairs.find((p) => p.key === k)?.value ?? '';
const isAuthFailure = (e: unknown): boolean => e instanceof LoginFailure && e.statusClass === 2 && e.statusDetail === 1;

/** Deterministic "random" source: id 7, challenge 0x10 0x11 ... */
const fixedRandom = (n: number): Buffer => (n === 1 ? Buffer.from([7]) : Buffer.from(Array.from({ length: n }, (_, i) => 0x10 + i)));
const CREDS = { user: 'alice', secret: 'alicesecret12', mutualUser: 'tgt', mutualSecret: 'targetsecret12' };

describe('CHAP (RFC 7143 §12.1.3, RFC 1994)', () => {
  it('computes MD5 responses matching independently computed vectors', () => {
    for (const v of VECTORS) assert.equal(chapMd5(v.id, v.secret, v.challenge).toString('hex'), v.md5);
  });

  it('decodes hex and base64 binary values (§5.1) and refuses malformed ones', () => {
    assert.deepEqual(decodeBinary('0x0102ff'), Buffer.from([1, 2, 255]));
    assert.deepEqual(decodeBinary('0X102'), Buffer.from([1, 2]));
    assert.deepEqual(decodeBinary('0bAQL/'), Buffer.from([1, 2, 255]));
    for (const bad of ['', '0x', '0xzz', '1234', '0b!!!!', '0bAQL']) assert.equal(decodeBinary(bad), null, bad);
    assert.equal(encodeHex(Buffer.from([0, 0xab])), '0x00ab');
  });

  it('one-way CHAP: issues a ≥16-byte challenge and accepts the right response (hex or base64)', () => {
    for (const enc of ['hex', 'base64'] as const) {
      const a = new ChapAuthenticator({ user: 'alice', secret: 'alicesecret12' });
      const offer = a.step([{ key: 'CHAP_A', value: '7,5' }]);
      assert.equal(get(offer, 'CHAP_A'), '5');
      const id = Number(get(offer, 'CHAP_I'));
      const challenge = decodeBinary(get(offer, 'CHAP_C'))!;
      assert.ok(challenge.length >= 16);
      const r = chapMd5(id, 'alicesecret12', challenge);
      const value = enc === 'hex' ? encodeHex(r) : `0b${r.toString('base64')}`;
      assert.deepEqual(
        a.step([
          { key: 'CHAP_N', value: 'alice' },
          { key: 'CHAP_R', value },
        ]),
        [],
      );
      assert.ok(a.finished);
    }
  });

  it('challenges are random per login', () => {
    const c1 = get(new ChapAuthenticator(CREDS).step([{ key: 'CHAP_A', value: '5' }]), 'CHAP_C');
    const c2 = get(new ChapAuthenticator(CREDS).step([{ key: 'CHAP_A', value: '5' }]), 'CHAP_C');
    assert.notEqual(c1, c2);
  });

  it('refuses a wrong secret, a wrong user, a missing response and algorithms other than MD5', () => {
    const offer = (a: ChapAuthenticator): { id: number; c: Buffer } => {
      const o = a.step([{ key: 'CHAP_A', value: '5' }]);
      return { id: Number(get(o, 'CHAP_I')), c: decodeBinary(get(o, 'CHAP_C'))! };
    };
    let a = new ChapAuthenticator(CREDS);
    let o = offer(a);
    assert.throws(
      () =>
        a.step([
          { key: 'CHAP_N', value: 'alice' },
          { key: 'CHAP_R', value: encodeHex(chapMd5(o.id, 'wrong', o.c)) },
        ]),
      isAuthFailure,
    );
    a = new ChapAuthenticator(CREDS);
    o = offer(a);
    assert.throws(
      () =>
        a.step([
          { key: 'CHAP_N', value: 'mallory' },
          { key: 'CHAP_R', value: encodeHex(chapMd5(o.id, CREDS.secret, o.c)) },
        ]),
      isAuthFailure,
    );
    a = new ChapAuthenticator(CREDS);
    offer(a);
    assert.throws(() => a.step([{ key: 'CHAP_N', value: 'alice' }]), isAuthFailure);
    assert.throws(() => new ChapAuthenticator(CREDS).step([{ key: 'CHAP_A', value: '6,7' }]), isAuthFailure);
  });

  it('mutual CHAP: answers the initiator challenge with the target secret', () => {
    const a = new ChapAuthenticator(CREDS, fixedRandom);
    const o = a.step([{ key: 'CHAP_A', value: '5' }]);
    assert.equal(get(o, 'CHAP_I'), '7');
    assert.equal(get(o, 'CHAP_C'), '0x101112131415161718191a1b1c1d1e1f');
    const r = chapMd5(7, CREDS.secret, decodeBinary(get(o, 'CHAP_C'))!);
    const mine = Buffer.alloc(16, 0xff);
    const answer = a.step([
      { key: 'CHAP_N', value: 'alice' },
      { key: 'CHAP_R', value: encodeHex(r) },
      { key: 'CHAP_I', value: '171' },
      { key: 'CHAP_C', value: encodeHex(mine) },
    ]);
    assert.equal(get(answer, 'CHAP_N'), 'tgt');
    // Computed with Python hashlib: md5(bytes([0xab]) + b'targetsecret12' + b'\\xff' * 16).
    assert.equal(get(answer, 'CHAP_R'), '0x60d4ae3a9c8d1dfb08e252f6a41f0bcf');
  });

  it('mutual CHAP: refuses a reflected challenge and mutual requests without target credentials', () => {
    const a = new ChapAuthenticator(CREDS, fixedRandom);
    const o = a.step([{ key: 'CHAP_A', value: '5' }]);
    const c = decodeBinary(get(o, 'CHAP_C'))!;
    const r = encodeHex(chapMd5(7, CREDS.secret, c));
    assert.throws(
      () =>
        a.step([
          { key: 'CHAP_N', value: 'alice' },
          { key: 'CHAP_R', value: r },
          { key: 'CHAP_I', value: '7' },
          { key: 'CHAP_C', value: get(o, 'CHAP_C') },
        ]),
      isAuthFailure,
    );
    const b = new ChapAuthenticator({ user: 'alice', secret: CREDS.secret }, fixedRandom);
    b.step([{ key: 'CHAP_A', value: '5' }]);
    assert.throws(
      () =>
        b.step([
          { key: 'CHAP_N', value: 'alice' },
          { key: 'CHAP_R', value: r },
          { key: 'CHAP_I', value: '1' },
          { key: 'CHAP_C', value: '0x00112233445566778899aabbccddeeff' },
        ]),
      isAuthFailure,
    );
  });
});
