// What a device holds, by low-level probing (`blkid -p`: reads the device itself, never udev's cache,
// which may be empty or stale — the cause of peers' re-formatted volumes). The answer is a signature, or
// "none found"; anything else is an error, and an error never leads to a format.
// blkid exit codes (util-linux misc-utils/blkid.c): 0 found, 2 nothing found — but also a device it could
// not open —, 4 usage or other error, 8 ambivalent (several signatures). So "none" is only exit 2 with
// nothing on stdout or stderr, and filesystem.ts still reads the device before it formats.

import { hostError } from './errors.js';
import { describeFailure, type RunSpec } from './runner.js';
import type { Host } from './types.js';

export type ProbeResult =
  { readonly kind: 'none' } | { readonly kind: 'signature'; readonly what: string; readonly values: Readonly<Record<string, string>> };

/** `-o export` output KEY=value lines. */
export function parseExport(out: string): Record<string, string> {
  const v: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) v[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return v;
}

export async function probe(h: Host, device: string): Promise<ProbeResult> {
  const s: RunSpec = { cmd: 'blkid', args: ['-p', '-o', 'export', device], timeoutMs: h.timeouts.device, deadline: h.deadline };
  const r = await h.runner.run(s);
  if (r.code === 0) {
    const values = parseExport(r.stdout);
    const what =
      values.TYPE ?? (values.PTTYPE ? `${values.PTTYPE} partition table` : (values.USAGE ?? (r.stdout.trim() || 'an unnamed signature')));
    return { kind: 'signature', what, values };
  }
  if (r.code === 8) return { kind: 'signature', what: 'several signatures (ambivalent probe)', values: {} };
  if (r.code === 2 && r.stdout.trim() === '' && r.stderr.trim() === '') return { kind: 'none' };
  throw hostError('failed', `probing ${device} failed, so it is not formatted: ${describeFailure(s, r)}`);
}
