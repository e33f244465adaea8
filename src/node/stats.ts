// NodeGetVolumeStats: capacity and inodes of a mounted volume (statfs), the size of a block volume, and
// the volume's condition: abnormal while any recorded path is down — its iSCSI session not LOGGED_IN or
// its SCSI device not running — naming each such path; normal again once all are back.

import { statfs } from 'node:fs/promises';
import { hostError } from '../host/errors.js';
import { findMap } from '../host/multipath.js';
import { blockSize, deviceAt, listSessions, lunAddress } from '../host/scsi-sysfs.js';
import type { HostFs } from '../host/host-fs.js';
import type { StagingRecord } from './staging-record.js';
import { hostFor, type NodeEnv } from './types.js';

export interface VolumeStats {
  readonly bytes: { total: number; available: number; used: number } | null;
  readonly inodes: { total: number; available: number; used: number } | null;
  readonly condition: { abnormal: boolean; message: string };
}

/** The condition of the volume's paths from sysfs. */
export async function pathCondition(fs: HostFs, r: StagingRecord): Promise<{ abnormal: boolean; message: string }> {
  const sessions = (await listSessions(fs)).filter((s) => s.targetIqn === r.targetIqn);
  const down: string[] = [];
  for (const p of r.pairs) {
    const s = sessions.find((x) => x.portal === p.portal && x.iface === p.iface);
    const name = `path ${p.portal} via iface ${p.iface}`;
    if (!s) {
      down.push(`${name}: no session`);
      continue;
    }
    const d = await deviceAt(fs, lunAddress(s, r.lun));
    if (s.state !== 'LOGGED_IN')
      down.push(`${name} (${s.name}${d?.blockName ? `, ${d.blockName}` : ''}): session ${s.state || 'state unknown'}`);
    else if (!d) down.push(`${name} (${s.name}): no SCSI device at LUN ${r.lun}`);
    else if (d.state !== 'running') down.push(`${name} (${s.name}, ${d.blockName ?? d.address}): device ${d.state}`);
  }
  if (down.length > 0) return { abnormal: true, message: `${down.length} of ${r.pairs.length} path(s) down: ${down.join('; ')}` };
  return { abnormal: false, message: `all ${r.pairs.length} path(s) up` };
}

export async function volumeStats(env: NodeEnv, volumeId: string, volumePath: string, deadline: number): Promise<VolumeStats> {
  const h = hostFor(env, deadline);
  const r = await env.records.load(volumeId);
  if (r?.phase !== 'staged') throw hostError('not-found', `volume ${volumeId} is not staged on this node`);
  if (!(await env.localFs.exists(volumePath))) throw hostError('not-found', `volume path ${volumePath} does not exist`);
  const condition = await pathCondition(h.fs, r);
  if (r.accessType === 'block') {
    const kernel = r.map ? ((await findMap(h, r.wwid))?.kernelName ?? null) : r.singleDevice;
    const size = kernel ? await blockSize(h.fs, kernel) : null;
    return { bytes: size === null ? null : { total: size, available: 0, used: 0 }, inodes: null, condition };
  }
  const s = await statfs(volumePath);
  const total = s.blocks * s.bsize;
  const available = s.bavail * s.bsize;
  return {
    bytes: { total, available, used: total - s.bfree * s.bsize },
    inodes: { total: s.files, available: s.ffree, used: s.files - s.ffree },
    condition,
  };
}
