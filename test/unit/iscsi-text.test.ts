import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { IscsiTextError } from '../../src/iscsi/errors.js';
import { encodeText, parseText, splitText, TextAssembler, MAX_TEXT_LENGTH } from '../../src/iscsi/text.js';

describe('iSCSI text keys (RFC 7143 §6)', () => {
  it('parses key=value pairs separated by NUL, keeping order and empty values', () => {
    const b = Buffer.from('InitiatorName=iqn.1994-05.com.redhat:x\0SessionType=Normal\0TargetAlias=\0\0\0');
    assert.deepEqual(parseText(b), [
      { key: 'InitiatorName', value: 'iqn.1994-05.com.redhat:x' },
      { key: 'SessionType', value: 'Normal' },
      { key: 'TargetAlias', value: '' },
    ]);
  });

  it('keeps "=" inside values', () => {
    assert.deepEqual(parseText(Buffer.from('CHAP_C=0b AAA==\0')), [{ key: 'CHAP_C', value: '0b AAA==' }]);
  });

  it('rejects pairs without "=", empty keys, bad key characters and over-long keys/values', () => {
    assert.throws(() => parseText(Buffer.from('novalue\0')), IscsiTextError);
    assert.throws(() => parseText(Buffer.from('=x\0')), IscsiTextError);
    assert.throws(() => parseText(Buffer.from('bad key=x\0')), IscsiTextError);
    assert.throws(() => parseText(Buffer.from(`${'K'.repeat(64)}=x\0`)), IscsiTextError);
    assert.throws(() => parseText(Buffer.from(`HeaderDigest=${'x'.repeat(256)}\0`)), IscsiTextError);
    // Binary CHAP values may be long (§12.1.3).
    assert.equal(parseText(Buffer.from(`CHAP_C=0x${'ab'.repeat(1024)}\0`))[0]!.value.length, 2050);
  });

  it('encode/parse round-trip (property)', () => {
    const key = fc.stringMatching(/^[A-Za-z][A-Za-z0-9.\-+@_]{0,62}$/);
    const value = fc.stringMatching(/^[A-Za-z0-9,.:=\- ]{0,200}$/);
    fc.assert(
      fc.property(fc.array(fc.record({ key, value }), { maxLength: 20 }), (pairs) => {
        assert.deepEqual(
          parseText(encodeText(pairs)),
          pairs.map((p) => ({ ...p })),
        );
      }),
    );
  });

  it('random bytes never throw anything but IscsiTextError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (a) => {
        try {
          parseText(Buffer.from(a));
        } catch (e) {
          assert.ok(e instanceof IscsiTextError);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('gathers text continued over PDUs with the C bit (§6.2), even split inside a pair', () => {
    const asm = new TextAssembler();
    assert.equal(asm.push(Buffer.from('SendTar'), true), null);
    assert.ok(asm.pending);
    const all = asm.push(Buffer.from('gets=All\0'), false);
    assert.deepEqual(parseText(all!), [{ key: 'SendTargets', value: 'All' }]);
    assert.equal(asm.pending, false);
  });

  it('bounds a multi-PDU text exchange', () => {
    const asm = new TextAssembler();
    const chunk = Buffer.alloc(8192, 0x41);
    assert.throws(() => {
      for (let i = 0; i <= MAX_TEXT_LENGTH / 8192; i++) asm.push(chunk, true);
    }, IscsiTextError);
  });

  it('splits long responses into chunks of at most the peer MaxRecvDataSegmentLength', () => {
    const t = Buffer.alloc(10000, 1);
    const parts = splitText(t, 4096);
    assert.deepEqual(
      parts.map((p) => p.length),
      [4096, 4096, 1808],
    );
    assert.deepEqual(Buffer.concat(parts), t);
    assert.equal(splitText(Buffer.alloc(10), 4096).length, 1);
  });
});
