// NodeGetVolumeStats: capacity and inodes of a mounted volume (statfs), the size of a block volume (CSI:
// a BYTES usage with its total), and the volume's condition: abnormal while any recorded path is down —
// its iSCSI session not LOGGED_IN or its SCSI device not running — naming each such path, and while the
// device the volume is used through is unusable: the multipath map gone, or replaced by another dm device
// than the one staged, or left with no path device in the running state (the single device, without
// multipath, gone or not running); normal again once all are back.

import { statfs } from 'node:fs/promises';
import { hostError } from '../host/errors.js';
import { findMap, type MultipathMap } from '../host/multipath.js';
import { blockSize, deviceAt, listSessions, lunAddress } from '../host/scsi-sysfs.js';
import type { HostFs } from '../host/host-fs.js';
import type { Host } from '../host/types.js';
import type { StagingRecord } from './staging-record.js';
import { hostFor, type NodeEnv } from './types.js';

export interface VolumeStats {
  readonly bytes: { total: number; available: number; used: number } | null;
  readonly inodes: { total: number; available: number; used: number } | null;
  readonly condition: { abnormal: boolean; message: string };
}

/** One recorded path of a staged volume: its name and, when down, what is wrong with it (naming it). */
export interface PathState {
  readonly path: string;
  readonly down: string | null;
}

/** The state of each recorded path of the volume, from sysfs. */
export async function pathStates(fs: HostFs, r: StagingRecord): Promise<PathState[]> {
  const sessions = (await listSessions(fs)).filter((s) => s.targetIqn === r.targetIqn);
  const out: PathState[] = [];
  for (const p of r.pairs) {
    const s = sessions.find((x) => x.portal === p.portal && x.iface === p.iface);
    const path = `path ${p.portal} via iface ${p.iface}`;
    if (!s) {
      out.push({ path, down: `${path}: no session` });
      continue;
    }
    const d = await deviceAt(fs, lunAddress(s, r.lun));
    let down: string | null = null;
    if (s.state !== 'LOGGED_IN')
      down = `${path} (${s.name}${d?.blockName ? `, ${d.blockName}` : ''}): session ${s.state || 'state unknown'}`;
    else if (!d) down = `${path} (${s.name}): no SCSI device at LUN ${r.lun}`;
    else if (d.state !== 'running') down = `${path} (${s.name}, ${d.blockName ?? d.address}): device ${d.state}`;
    out.push({ path, down });
  }
  return out;
}

/** The condition of the volume's paths from sysfs. */
export async function pathCondition(fs: HostFs, r: StagingRecord): Promise<{ abnormal: boolean; message: string }> {
  return conditionOf(r, await pathStates(fs, r));
}

function conditionOf(r: StagingRecord, states: readonly PathState[], device: string | null = null): { abnormal: boolean; message: string } {
  const down = states.flatMap((p) => (p.down === null ? [] : [p.down]));
  const paths = down.length > 0 ? `${down.length} of ${r.pairs.length} path(s) down: ${down.join('; ')}` : null;
  if (device !== null) return { abnormal: true, message: paths ? `${device}; ${paths}` : device };
  if (paths) return { abnormal: true, message: paths };
  return { abnormal: false, message: `all ${r.pairs.length} path(s) up` };
}

/** The block device the staged volume is used through, and what is wrong with it (null = usable). */
async function deviceState(h: Host, r: StagingRecord): Promise<{ kernel: string | null; problem: string | null }> {
  if (!r.map) {
    const d = r.singleDevice;
    if (!d) return { kernel: null, problem: 'no device recorded for the volume' };
    if (!(await h.fs.exists(`/sys/block/${d}`))) return { kernel: null, problem: `device ${d} is gone` };
    const state = ((await h.fs.readText(`/sys/block/${d}/device/state`)) ?? '').trim();
    return { kernel: d, problem: state && state !== 'running' ? `device ${d} is ${state}` : null };
  }
  const m: MultipathMap | null = await findMap(h, r.wwid);
  if (!m) return { kernel: null, problem: `multipath map ${r.map.name} (${r.map.kernelName}) of WWID ${r.wwid} is gone` };
  if (m.kernelName !== r.map.kernelName) {
    return {
      kernel: m.kernelName,
      problem: `multipath map of WWID ${r.wwid} is now ${m.kernelName}, not the ${r.map.kernelName} the volume was staged on (unstage and stage it again)`,
    };
  }
  let running = 0;
  for (const s of m.slaves) if (((await h.fs.readText(`/sys/block/${s}/device/state`)) ?? '').trim() === 'running') running++;
  if (running === 0) {
    return {
      kernel: m.kernelName,
      problem: `multipath map ${m.name} (${m.kernelName}) has no active path (${m.slaves.length} path device(s), none running)`,
    };
  }
  return { kernel: m.kernelName, problem: null };
}

export async function volumeStats(env: NodeEnv, volumeId: string, volumePath: string, deadline: number): Promise<VolumeStats> {
  const h = hostFor(env, deadline);
  const r = await env.records.load(volumeId);
  if (r?.phase !== 'staged') throw hostError('not-found', `volume ${volumeId} is not staged on this node`);
  if (!(await env.localFs.exists(volumePath))) throw hostError('not-found', `volume path ${volumePath} does not exist`);
  const states = await pathStates(h.fs, r);
  await env.paths?.observe(r, states);
  const device = await deviceState(h, r);
  const condition = conditionOf(r, states, device.problem);
  if (r.accessType === 'block') {
    // A block volume has no free space to report: BYTES with the device's size as total (CSI VolumeUsage).
    const size = device.kernel ? await blockSize(h.fs, device.kernel) : null;
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
