// native/lunar_native.c fixes glibc's mmap threshold at 128 KiB when loaded (mallopt M_MMAP_THRESHOLD, which
// also turns off glibc's dynamic threshold), unless the environment already sets one.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { loadNative } from '../../src/storage/native.js';

const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;
const nativeUrl = new URL('../../src/storage/native.js', import.meta.url).href;

/** The environment without any malloc setting of the operator's. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  if (!('MALLOC_MMAP_THRESHOLD_' in extra)) delete env['MALLOC_MMAP_THRESHOLD_'];
  delete env['GLIBC_TUNABLES'];
  return env;
}

/**
 * A child Node that (with the addon loaded or not) frees a few 1 MiB buffers, which raises glibc's dynamic
 * threshold above 1 MiB, then holds 32 more: how much its brk heap grew (KiB), and mmapThreshold().
 */
function probe(loadAddon: boolean, extraEnv: Record<string, string> = {}): { grewKiB: number; threshold: number } {
  const script = `
    import { readFileSync } from 'node:fs';
    const threshold = ${loadAddon} ? (await import(${JSON.stringify(nativeUrl)})).loadNative().mmapThreshold() : -1;
    const heapKiB = () => {
      const m = /^([0-9a-f]+)-([0-9a-f]+) .*\\[heap\\]$/m.exec(readFileSync('/proc/self/maps', 'utf8'));
      return m ? (parseInt(m[2], 16) - parseInt(m[1], 16)) / 1024 : 0;
    };
    for (let i = 0; i < 4; i++) {
      Buffer.allocUnsafeSlow(1 << 20).fill(1);
      globalThis.gc();
      await new Promise((r) => setTimeout(r, 20));
    }
    const before = heapKiB();
    const held = [];
    for (let i = 0; i < 32; i++) held.push(Buffer.allocUnsafeSlow(1 << 20).fill(1));
    console.log(JSON.stringify({ grewKiB: heapKiB() - before, threshold, held: held.length }));
  `;
  const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], {
    env: cleanEnv(extraEnv),
    encoding: 'utf8',
  });
  return JSON.parse(out) as { grewKiB: number; threshold: number };
}

describe('native addon: glibc mmap threshold', { skip: glibc === undefined ? 'not glibc' : false }, () => {
  it('reports the 128 KiB threshold it set in this process, or 0 when the environment chose one', () => {
    const envChose =
      process.env['MALLOC_MMAP_THRESHOLD_'] !== undefined || (process.env['GLIBC_TUNABLES'] ?? '').includes('glibc.malloc.mmap_threshold');
    assert.equal(loadNative().mmapThreshold(), envChose ? 0 : 128 * 1024);
  });

  it('keeps 1 MiB buffers out of the brk heap after large frees (glibc by default puts them there)', () => {
    const without = probe(false);
    assert.ok(without.grewKiB >= 16 * 1024, `glibc's dynamic threshold: heap grew ${without.grewKiB} KiB`);
    const withAddon = probe(true);
    assert.equal(withAddon.threshold, 128 * 1024);
    assert.ok(withAddon.grewKiB < 4 * 1024, `with the addon: heap grew ${withAddon.grewKiB} KiB`);
  });

  it("leaves the operator's MALLOC_MMAP_THRESHOLD_ alone", () => {
    // 4 MiB: 1 MiB buffers come from the brk heap, as the operator asked.
    const r = probe(true, { MALLOC_MMAP_THRESHOLD_: String(4 << 20) });
    assert.equal(r.threshold, 0);
    assert.ok(r.grewKiB >= 16 * 1024, `with MALLOC_MMAP_THRESHOLD_=4 MiB: heap grew ${r.grewKiB} KiB`);
  });
});
