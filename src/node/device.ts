// Small reads about a staged volume's block device shared by the node operations.

import type { HostFs } from '../host/host-fs.js';
import type { MountEntry } from '../host/mount.js';

/** "major:minor" of a block device by kernel name (/sys/block/<name>/dev), or null when it is gone. */
export async function majorMinor(fs: HostFs, kernelName: string): Promise<string | null> {
  const t = await fs.readText(`/sys/block/${kernelName}/dev`);
  return t === null ? null : t.trim();
}

/** true when the mount's filesystem lives on the device (major:minor). */
export function mountedFrom(m: MountEntry, dev: string | null): boolean {
  return dev !== null && m.device === dev;
}
