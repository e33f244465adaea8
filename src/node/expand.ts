// NodeExpandVolume: every path device re-reads its capacity (sysfs rescan), multipathd resizes the map,
// then the filesystem grows online (resize2fs / xfs_growfs). Block volumes stop after the map.

import { hostError } from '../host/errors.js';
import { growFilesystem } from '../host/filesystem.js';
import { findMap, resizeMap } from '../host/multipath.js';
import { pollUntil } from '../host/poll.js';
import { blockSize, deviceAt, rescanDevice } from '../host/scsi-sysfs.js';
import { hostFor, type NodeEnv } from './types.js';

/** Grows the volume; resolves with the device's size in bytes. */
export async function expandVolume(
  env: NodeEnv,
  volumeId: string,
  volumePath: string,
  requiredBytes: number,
  deadline: number,
): Promise<number> {
  const h = hostFor(env, deadline);
  const r = await env.records.load(volumeId);
  if (r?.phase !== 'staged') throw hostError('not-found', `volume ${volumeId} is not staged on this node`);
  const paths: string[] = [];
  for (const address of r.devices) {
    const d = await deviceAt(h.fs, address);
    if (!d?.blockName) continue;
    await rescanDevice(h, address);
    paths.push(d.blockName);
  }
  let kernel = r.singleDevice;
  if (r.map) {
    const map = await findMap(h, r.wwid);
    if (!map) throw hostError('failed', `multipath map ${r.map.name} of volume ${volumeId} is gone`);
    // Every path must show the new size before the map is resized to it.
    await pollUntil(
      async () => {
        const sizes = await Promise.all(paths.map((p) => blockSize(h.fs, p)));
        return sizes.every((s) => s !== null && s >= requiredBytes && s === sizes[0]) ? true : undefined;
      },
      { timeoutMs: h.timeouts.mapWait, deadline, intervalMs: 200, what: `paths ${paths.join(', ')} at ${requiredBytes} bytes` },
    );
    await resizeMap(h, map.name);
    kernel = map.kernelName;
  }
  if (!kernel) throw hostError('failed', `volume ${volumeId} has no device recorded`);
  const size = (await blockSize(h.fs, kernel)) ?? 0;
  if (requiredBytes > 0 && size < requiredBytes) {
    throw hostError('failed', `device /dev/${kernel} has ${size} bytes after the rescan, less than the ${requiredBytes} asked`);
  }
  if (r.accessType === 'mount') await growFilesystem(h, r.fsType, `/dev/${kernel}`, volumePath);
  return size;
}
