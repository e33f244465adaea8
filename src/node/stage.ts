// NodeStageVolume: attach (attach.ts), then for a filesystem volume probe → mkfs only when positively
// empty → mount → grow; for a block volume nothing is mounted, the device is recorded. The staging record
// is written before the first login and after every step that changes what unstage must undo.
// Idempotent: a staged volume is checked (the mount at the staging path is still on the volume's map)
// and answered OK; a staged mount whose device is gone is unmounted and the volume attached and mounted
// again — never a mount stacked on a stale one. The same volume staged elsewhere or with another
// capability is ALREADY_EXISTS.

import { hostError } from '../host/errors.js';
import type { PvcRef } from '../kube/types.js';
import { formatDecision, FORMATTABLE, growFilesystem, mkfs } from '../host/filesystem.js';
import { mount, mountAt, parseMountinfo, unmount } from '../host/mount.js';
import { findMap, listedWwids } from '../host/multipath.js';
import { blockSize } from '../host/scsi-sysfs.js';
import type { Host } from '../host/types.js';
import { attach } from './attach.js';
import { majorMinor, mountedFrom } from './device.js';
import type { VolumeTarget } from './publish-context.js';
import type { StagingRecord } from './staging-record.js';
import { hostFor, type NodeEnv } from './types.js';
import { StepTimes } from '../util/steps.js';

export interface StageRequest {
  readonly volumeId: string;
  readonly stagingPath: string;
  readonly accessType: 'mount' | 'block';
  /** mount: ext4 or xfs. */
  readonly fsType: string;
  readonly mountFlags: readonly string[];
  readonly target: VolumeTarget;
  /** The PVC (from volume_context), for Events; null when the volume was not provisioned for one. */
  readonly pvc?: PvcRef | null;
}

/** Mount options: the StorageClass's, plus nouuid for xfs (a clone or restored snapshot has its source's UUID). */
export function mountOptions(fsType: string, flags: readonly string[]): string[] {
  const opts = [...flags];
  if (fsType === 'xfs' && !opts.includes('nouuid')) opts.push('nouuid');
  return opts;
}

function sameStage(r: StagingRecord, q: StageRequest): string | null {
  if (r.stagingPath !== q.stagingPath) return `staged at ${r.stagingPath}, not ${q.stagingPath}`;
  if (r.accessType !== q.accessType) return `staged as a ${r.accessType} volume, not ${q.accessType}`;
  if (r.accessType === 'mount' && r.fsType !== q.fsType) return `staged with ${r.fsType}, not ${q.fsType}`;
  if (r.wwid !== q.target.wwid || r.targetIqn !== q.target.iqn)
    return `staged from ${r.targetIqn} (WWID ${r.wwid}), not ${q.target.iqn} (WWID ${q.target.wwid})`;
  return null;
}

/** The staged volume is still whole: map (or single device) present and, for mount, mounted from it. */
async function stillStaged(env: NodeEnv, h: Host, r: StagingRecord): Promise<'ok' | 'stale-mount' | 'gone'> {
  const kernel = r.map ? (await findMap(h, r.wwid))?.kernelName : r.singleDevice;
  const dev = kernel ? await majorMinor(h.fs, kernel) : null;
  if (r.accessType === 'block') return dev ? 'ok' : 'gone';
  const m = mountAt(parseMountinfo(await env.readMountinfo()), r.stagingPath);
  if (m && mountedFrom(m, dev)) return 'ok';
  return m ? 'stale-mount' : 'gone';
}

async function mountFilesystem(
  env: NodeEnv,
  h: Host,
  q: StageRequest,
  devicePath: string,
  kernelName: string,
  steps: StepTimes,
): Promise<void> {
  const dev = await majorMinor(h.fs, kernelName);
  const existing = mountAt(parseMountinfo(await env.readMountinfo()), q.stagingPath);
  if (existing && mountedFrom(existing, dev)) return; // mounted by an earlier try of this stage
  if (existing) {
    env.log.warn(
      { volumeId: q.volumeId, stagingPath: q.stagingPath, source: existing.source },
      'staging path mounted from another device: unmounting it first',
    );
    await unmount(h, q.stagingPath);
  }
  const size = await blockSize(h.fs, kernelName);
  if (size === null || size === 0) throw hostError('failed', `${devicePath} has no size; not probing it`);
  const decision = await steps.time('probe', () => formatDecision(h, devicePath, size));
  if (decision.format) {
    env.log.info({ volumeId: q.volumeId, device: devicePath, fsType: q.fsType }, 'device positively empty: formatting');
    await steps.time('mkfs', () => mkfs(h, q.fsType, devicePath));
    if (q.pvc) void env.events?.record(q.pvc, 'VolumeFormatted', `volume ${q.volumeId} was empty: made a new ${q.fsType} filesystem on it`);
  } else if (decision.existing !== q.fsType) {
    const why = `${devicePath} already holds ${decision.existing}, not ${q.fsType}: it is neither formatted nor mounted (was the volume used with another fsType or as a block volume?)`;
    // Events are never awaited on the answer's path (docs/csi.md "Events on the PVC").
    if (q.pvc) {
      void env.events?.record(
        q.pvc,
        'VolumeHoldsData',
        `volume ${q.volumeId} already holds ${decision.existing}; Lunar refused to format it as ${q.fsType}. Use a StorageClass with fsType ${decision.existing}, or a block volume, to reach the data`,
      );
    }
    throw hostError('precondition', why);
  }
  await env.localFs.mkdir(q.stagingPath);
  await steps.time('mount', () => mount(h, devicePath, q.stagingPath, q.fsType, mountOptions(q.fsType, q.mountFlags)));
  // A filesystem mkfs has just made fills the device already; an existing one may be smaller (expanded volume).
  if (!decision.format) await steps.time('grow', () => growFilesystem(h, q.fsType, devicePath, q.stagingPath));
}

export async function stageVolume(env: NodeEnv, q: StageRequest, deadline: number, steps = new StepTimes()): Promise<void> {
  if (q.accessType === 'mount' && !FORMATTABLE.includes(q.fsType)) {
    throw hostError('precondition', `fs_type ${q.fsType} cannot be staged by Lunar (${FORMATTABLE.join(', ')})`);
  }
  const h = hostFor(env, deadline);
  const previous = await env.records.load(q.volumeId);
  if (previous?.phase === 'staged') {
    const differs = sameStage(previous, q);
    if (differs) throw hostError('conflict', `volume ${q.volumeId} is already ${differs}`);
    const state = await stillStaged(env, h, previous);
    if (state === 'ok') return;
    env.log.warn({ volumeId: q.volumeId, state }, 'staged volume lost its device or mount: attaching and mounting it again');
    if (state === 'stale-mount') await unmount(h, q.stagingPath);
  }
  const listedBefore = await listedWwids(h);
  let record: StagingRecord = {
    version: 1,
    volumeId: q.volumeId,
    stagingPath: q.stagingPath,
    phase: 'attaching',
    targetIqn: q.target.iqn,
    portals: q.target.portals,
    lun: q.target.lun,
    wwid: q.target.wwid,
    pairs: previous?.pairs ?? [],
    accessType: q.accessType,
    fsType: q.accessType === 'mount' ? q.fsType : '',
    mountFlags: q.mountFlags,
    devices: previous?.devices ?? [],
    map: previous?.map ?? null,
    singleDevice: previous?.singleDevice ?? null,
    publications: previous?.publications ?? {},
    // Decided before the first login and saved with the pairs (onPairs), before any path can appear:
    // multipathd under find_multipaths greedy/yes lists a WWID itself as its first path shows up, so a
    // check after the login races it. An earlier try that added the WWID finds it listed: keep knowing
    // it was Lunar's.
    ...(previous?.wwidAdded || !listedBefore.has(q.target.wwid) ? { wwidAdded: true } : {}),
    ...(previous?.foreignWwids ? { foreignWwids: previous.foreignWwids } : {}),
    ...(q.pvc ? { pvc: q.pvc } : {}),
    updatedAt: '',
  };
  const a = await attach(env, h, q.target, steps, {
    async onPairs(pairs) {
      // Keep pairs an earlier try recorded too: unstage must log those out as well.
      const all = [...record.pairs, ...pairs.filter((p) => !record.pairs.some((o) => o.portal === p.portal && o.iface === p.iface))];
      record = { ...record, pairs: all };
      await steps.time('record', () => env.records.save(record));
    },
    async onForeignWwid(wwid) {
      // Recorded before the device is deleted: a crash right after still leaves the entry to unstage.
      if (listedBefore.has(wwid) || record.foreignWwids?.includes(wwid)) return;
      record = { ...record, foreignWwids: [...(record.foreignWwids ?? []), wwid] };
      await env.records.save(record);
    },
  });
  record = {
    ...record,
    devices: [...new Set([...record.devices, ...a.devices.map((d) => d.address)])],
    map: a.map ? { name: a.map.name, kernelName: a.map.kernelName } : null,
    singleDevice: a.map ? null : a.kernelName,
  };
  await steps.time('record', () => env.records.save(record));
  if (q.accessType === 'mount') await mountFilesystem(env, h, q, a.devicePath, a.kernelName, steps);
  await steps.time('record', () => env.records.save({ ...record, phase: 'staged' }));
}
