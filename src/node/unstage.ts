// NodeUnstageVolume from the staging record (so it works after a plugin restart): unmount (busy is an
// error), flush and remove the multipath map, remove the WWID from the wwids file when it was not listed
// before the stage, delete every SCSI device of the volume through sysfs, log out every session of the
// target on the recorded pairs, delete every node record of the target (discovery records all its portals
// on every iface, used or not), remove the wwids entries of wrong LUs the sessions showed, then the
// staging record.
// Every failure is returned to the CO, never swallowed, and the record stays so that the retry does
// what is left. Each command has its timeout and the request's deadline, so an unreachable target
// makes the call fail in bounded time, never retry forever; logout and record deletion work without the
// target (iscsid ends the session locally).

import { hostError, HostError } from '../host/errors.js';
import { deleteTargetRecords, logout } from '../host/iscsiadm.js';
import { mountAt, parseMountinfo, unmount } from '../host/mount.js';
import { disableQueueing, findMap, flushMap, removeWwid } from '../host/multipath.js';
import { runOk } from '../host/runner.js';
import { deleteDevice, deviceAt, listSessions, lunAddress } from '../host/scsi-sysfs.js';
import { hostFor, type NodeEnv } from './types.js';
import { StepTimes } from '../util/steps.js';

export async function unstageVolume(
  env: NodeEnv,
  volumeId: string,
  stagingPath: string,
  deadline: number,
  steps = new StepTimes(),
): Promise<void> {
  const h = hostFor(env, deadline);
  const r = await env.records.load(volumeId);
  const m = mountAt(parseMountinfo(await env.readMountinfo()), stagingPath);
  if (m) await steps.time('unmount', () => unmount(h, stagingPath));
  if (!r) {
    if (m) env.log.warn({ volumeId, stagingPath }, 'unstaged a mount without a staging record: no session to log out is known');
    return;
  }
  if (r.stagingPath !== stagingPath) {
    throw hostError('not-found', `volume ${volumeId} is staged at ${r.stagingPath}, not ${stagingPath}`);
  }
  const map = await findMap(h, r.wwid);
  if (map) {
    // With no_path_retry queue a map whose paths are all gone would queue the flush forever.
    if (env.config.multipath.noPathRetry === 'queue') await disableQueueing(h, map.name);
    await steps.time('flushMap', () => flushMap(h, map));
  }
  // The map is gone: the wwids entry Lunar added goes too (before the paths are deleted, so that no uevent
  // of theirs makes multipathd build the map again under find_multipaths strict).
  if (r.wwidAdded) await steps.time('removeWwid', () => removeWwid(h, r.wwid));

  // Every device of the volume's LUN on every session of its target, and the ones recorded.
  const sessions = (await listSessions(h.fs)).filter((s) => s.targetIqn === r.targetIqn);
  const addresses = new Set([...r.devices, ...sessions.map((s) => lunAddress(s, r.lun))]);
  // The devices one after another would each wait for their own SYNCHRONIZE CACHE and teardown: all at once.
  await steps.time('deleteDevices', () =>
    Promise.all(
      [...addresses].map(async (address) => {
        const d = await deviceAt(h.fs, address);
        if (!d) return;
        if (d.wwid !== null && d.wwid !== r.wwid) return; // another LU now answers there: not ours to delete
        if (d.blockName && !map) {
          await runOk(h.runner, {
            cmd: 'blockdev',
            args: ['--flushbufs', `/dev/${d.blockName}`],
            timeoutMs: h.timeouts.device,
            deadline: h.deadline,
          });
        }
        await deleteDevice(h, address);
      }),
    ),
  );

  const failures: string[] = [];
  const pairs = [...r.pairs];
  for (const s of sessions)
    if (!pairs.some((p) => p.portal === s.portal && p.iface === s.iface)) pairs.push({ portal: s.portal, iface: s.iface });
  // Every session at once, as the logins were; the records go after, all of the target in one call.
  const logouts = await steps.time('logout', () => Promise.allSettled(pairs.map((p) => logout(h, r.targetIqn, p))));
  logouts.forEach((o, i) => {
    if (o.status === 'fulfilled') return;
    if (!(o.reason instanceof HostError)) throw o.reason;
    const p = pairs[i]!;
    failures.push(`${p.portal} via ${p.iface}: ${o.reason.message}`);
  });
  if (failures.length > 0) {
    throw hostError(
      failures.length === pairs.length ? 'unavailable' : 'failed',
      `volume ${volumeId}: logout incomplete: ${failures.join('; ')}`,
    );
  }
  // Then every node record of the target: the pairs' own, and those discovery made for pairs this volume
  // never used (other portals, other ifaces).
  await steps.time('deleteTargetRecords', () => deleteTargetRecords(h, r.targetIqn));
  // WWIDs of wrong or stale LUs this stage's sessions showed, listed since (by multipathd under
  // find_multipaths greedy/yes): their paths went with the logout, so nothing lists them again.
  for (const w of r.foreignWwids ?? []) await removeWwid(h, w);
  await env.records.remove(volumeId);
}
