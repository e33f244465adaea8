// Filesystems on a staged device: the one decision to format (never a device that carries anything),
// mkfs for ext4 and xfs, and growing a mounted filesystem to its device.
// The format rule: blkid -p finds no signature (blkid.ts) AND the first and last MiB of the device read
// back in full AND are all zeros. A new Lunar volume is a sparse file, so it reads as zeros; a device blkid
// cannot name but that holds data (a signature blkid does not know, a half-written mkfs) is refused, and
// so is one that cannot be read (an I/O error that made blkid see nothing). mkfs is run without -f/-F,
// so it refuses by itself a device where it finds a signature.

import { probe } from './blkid.js';
import { hostError } from './errors.js';
import { runOk } from './runner.js';
import type { Host } from './types.js';

export const FORMATTABLE: readonly string[] = ['ext4', 'xfs'];
const EDGE = 1024 * 1024;

export type FormatDecision = { readonly format: true } | { readonly format: false; readonly existing: string };

async function readsAsZeros(h: Host, device: string, sizeBytes: number): Promise<void> {
  const spots = sizeBytes > EDGE ? [0, sizeBytes - EDGE] : [0];
  for (const offset of spots) {
    const len = Math.min(EDGE, sizeBytes - offset);
    let buf: Buffer;
    try {
      buf = await h.fs.readBytes(device, offset, len);
    } catch (err) {
      throw hostError('failed', `reading ${device} at ${offset} failed, so it is not formatted: ${(err as Error).message}`);
    }
    if (buf.length !== len)
      throw hostError('failed', `short read of ${device} at ${offset} (${buf.length} of ${len} bytes): not formatted`);
    if (buf.some((b) => b !== 0)) {
      throw hostError(
        'precondition',
        `${device} holds data blkid does not recognise (non-zero bytes within ${offset}..${offset + len}); refusing to format it`,
      );
    }
  }
}

/** Whether device (its size known) may be formatted; throws when that cannot be known. */
export async function formatDecision(h: Host, device: string, sizeBytes: number): Promise<FormatDecision> {
  // Both reads at once (each is a few round trips to the target): the device is formatted only when
  // both say it is empty; a signature wins over what the zero check found, an error of either refuses.
  const [p, notZeros] = await Promise.all([
    probe(h, device),
    readsAsZeros(h, device, sizeBytes).then(
      () => null,
      (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
    ),
  ]);
  if (p.kind === 'signature') return { format: false, existing: p.what };
  if (notZeros !== null) throw notZeros;
  return { format: true };
}

/** mkfs argv for fsType (no discard: the new volume reads as zeros already and discard of a large LU is slow). */
export function mkfsCommand(fsType: string, device: string): { cmd: string; args: string[] } {
  switch (fsType) {
    case 'ext4':
      return { cmd: 'mkfs.ext4', args: ['-q', '-m', '0', '-E', 'nodiscard', device] };
    case 'xfs':
      return { cmd: 'mkfs.xfs', args: ['-q', '-K', device] };
    default:
      throw hostError('precondition', `Lunar formats ext4 and xfs only, not ${fsType}`);
  }
}

export async function mkfs(h: Host, fsType: string, device: string): Promise<void> {
  const c = mkfsCommand(fsType, device);
  await runOk(h.runner, { ...c, timeoutMs: h.timeouts.mkfs, deadline: h.deadline });
}

/** Grows the mounted filesystem to its device (a no-op when it fills it already). */
export async function growFilesystem(h: Host, fsType: string, device: string, mountPoint: string): Promise<void> {
  if (fsType === 'xfs') {
    await runOk(h.runner, { cmd: 'xfs_growfs', args: ['-d', mountPoint], timeoutMs: h.timeouts.mkfs, deadline: h.deadline });
  } else if (fsType === 'ext4' || fsType === 'ext3') {
    await runOk(h.runner, { cmd: 'resize2fs', args: [device], timeoutMs: h.timeouts.mkfs, deadline: h.deadline });
  } else {
    throw hostError('precondition', `growing ${fsType} is not supported (ext4, ext3, xfs)`);
  }
}
