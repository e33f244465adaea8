// The iSCSI half of NodeStageVolume, each step careful where peers lose data or time:
//  1. one iface per configured NIC (iface binding), or the default iface;
//  2. SendTargets discovery on every (portal, iface) pair, all at once but serialised per portal
//     (iscsiadm's discovery records of one portal are shared by every volume), checking that the portal
//     offers the target;
//  3. once every discovery has ended, node records with node.startup=manual (no login at boot for a
//     volume this node may no longer have) and node.session.scan=manual (the kernel scans nothing by
//     itself), the session timers, and CHAP, in one rewrite of each record file (node-record.ts: never
//     in argv, never in a global file);
//  4. one login per pair, all at once; a pair that fails is named, the volume stages when one path is up;
//  5. a scan of the volume's LUN only, on each session, and a wait for the device whose VPD 0x83 WWID is
//     the volume's: a device at that address with another WWID (a LUN reused after a stale device stayed
//     behind) is deleted and the LUN scanned again, and never used;
//  6. the multipath map of the WWID with every path, all of one size (multipath.ts).

import { hostError, HostError } from '../host/errors.js';
import { discover, ensureIface, login, newNodeRecord, type DiscoveredTarget } from '../host/iscsiadm.js';
import { addPath, addWwid, ensureDropIn, waitForMap, type MultipathMap } from '../host/multipath.js';
import { authValues, setRecordSettings, type ChapSettings } from '../host/node-record.js';
import { pollUntil } from '../host/poll.js';
import { runOk } from '../host/runner.js';
import { deleteDevice, deviceAt, listSessions, lunAddress, scanLun, type IscsiSession, type ScsiDevice } from '../host/scsi-sysfs.js';
import type { Host, PathPair } from '../host/types.js';
import { KeyedMutex } from '../util/mutex.js';
import { choosePairs, parseIpAddr, type IfaceInfo } from './pairs.js';
import type { VolumeTarget } from './publish-context.js';
import type { NodeEnv, SessionTimers } from './types.js';
import type { StepTimes } from '../util/steps.js';

/** Discovery per portal and iface creation are node-wide: one at a time per key. */
const nodeLocks = new KeyedMutex();

/** How often a stale device at the LUN's address is replaced before the stage gives up. */
const MAX_STALE_REPLACEMENTS = 2;

export interface Attached {
  readonly pairs: readonly PathPair[];
  readonly devices: readonly ScsiDevice[];
  readonly map: MultipathMap | null;
  /** The block device to use: /dev/dm-N, or /dev/sdX without multipath. */
  readonly devicePath: string;
  /** Its kernel name (dm-N, sdX). */
  readonly kernelName: string;
}

/** The ifaces of the configured NICs with their subnets. */
export async function ifacesOf(env: NodeEnv, h: Host): Promise<IfaceInfo[]> {
  if (env.config.nics.length === 0) return [{ iface: 'default', cidrs: [] }];
  const out: IfaceInfo[] = [];
  for (const nic of env.config.nics) {
    const iface = await nodeLocks.run('iface', () => ensureIface(h, nic));
    const r = await runOk(h.runner, {
      cmd: 'ip',
      args: ['-o', 'addr', 'show', 'dev', nic],
      timeoutMs: h.timeouts.iscsiadmLocal,
      deadline: h.deadline,
    });
    out.push({ iface, cidrs: parseIpAddr(r.stdout) });
  }
  return out;
}

/** SendTargets discovery of one pair (serialised per portal, node-wide); fails when the portal does not offer the target. */
async function discoverPair(h: Host, t: VolumeTarget, p: PathPair): Promise<DiscoveredTarget[]> {
  const found = await nodeLocks.run(`discovery:${p.portal}`, () => discover(h, p, t.discoveryChap));
  const offered = found.filter((d) => d.iqn === t.iqn);
  if (offered.length === 0) {
    throw hostError(
      'precondition',
      `portal ${p.portal} (iface ${p.iface}) does not offer target ${t.iqn} in SendTargets (${found.length} other target(s)): is the volume published to this node (ControllerPublishVolume with this node's initiator name)?`,
    );
  }
  return offered;
}

/** The settings of every node record Lunar logs in with (pure; tests check them). */
export function recordSettings(s: SessionTimers, chap: ChapSettings | null): Record<string, string> {
  return {
    'node.startup': 'manual',
    'node.session.scan': 'manual',
    'node.session.timeo.replacement_timeout': String(s.replacementTimeout),
    'node.conn[0].timeo.noop_out_interval': String(s.noopOutInterval),
    'node.conn[0].timeo.noop_out_timeout': String(s.noopOutTimeout),
    'node.conn[0].timeo.login_timeout': String(s.loginTimeout),
    'node.session.initial_login_retry_max': '2',
    ...authValues(chap),
  };
}

/**
 * The node record of one pair with Lunar's settings. Run after every discovery of the volume has ended,
 * so that no discovery of this stage writes the record while it is rewritten here.
 */
async function prepareRecord(env: NodeEnv, h: Host, t: VolumeTarget, p: PathPair, offered: readonly DiscoveredTarget[]): Promise<void> {
  // Behind NAT the target advertises an address the node does not dial: make the record of the portal dialled.
  if (!offered.some((d) => d.portal === p.portal)) await newNodeRecord(h, t.iqn, p);
  await setRecordSettings(h.fs, t.iqn, p, recordSettings(env.config.session, t.chap));
}

function sessionOf(sessions: readonly IscsiSession[], iqn: string, p: PathPair): IscsiSession | undefined {
  const mine = sessions.filter((s) => s.targetIqn === iqn && s.iface === p.iface);
  return mine.find((s) => s.portal === p.portal) ?? (mine.length === 1 ? mine[0] : undefined);
}

/**
 * Scans the LUN on the session and waits for its device with the volume's WWID (stale devices replaced).
 * onForeign hears every other WWID seen at the address before the device is deleted.
 */
export async function waitForDevice(
  env: NodeEnv,
  h: Host,
  s: IscsiSession,
  t: VolumeTarget,
  onForeign: (wwid: string) => Promise<void>,
  intervalMs = 100,
): Promise<ScsiDevice> {
  const address = lunAddress(s, t.lun);
  let replaced = 0;
  let lastScan = Date.now();
  let last = 'no device yet';
  await scanLun(h, s, t.lun);
  return pollUntil(
    async () => {
      const d = await deviceAt(h.fs, address);
      if (!d) {
        if (Date.now() - lastScan > 2000) {
          lastScan = Date.now();
          await scanLun(h, s, t.lun);
        }
        return undefined;
      }
      if (d.wwid === null || d.blockName === null) {
        last = `device ${address} without ${d.wwid === null ? 'WWID' : 'block device'} yet`;
        return undefined;
      }
      if (d.wwid !== t.wwid) {
        // A stale LUN: another LU answered at this address before (a reused LUN). Never use it.
        await onForeign(d.wwid);
        if (replaced >= MAX_STALE_REPLACEMENTS) {
          throw hostError(
            'precondition',
            `device ${address} (${d.blockName}) reports WWID ${d.wwid}, not the volume's ${t.wwid}, after ${replaced} rescans; refusing to use it`,
          );
        }
        env.log.warn(
          { address, found: d.wwid, expected: t.wwid, device: d.blockName },
          'stale SCSI device at the LUN address: deleting it and rescanning',
        );
        await deleteDevice(h, address);
        replaced++;
        lastScan = Date.now();
        await scanLun(h, s, t.lun);
        return undefined;
      }
      return d;
    },
    {
      timeoutMs: h.timeouts.deviceWait,
      deadline: h.deadline,
      intervalMs,
      // The device usually shows up within tens of ms of the scan's return (bench/node-stage.ts).
      firstIntervalMs: Math.min(10, intervalMs),
      what: `SCSI device of LUN ${t.lun} (WWID ${t.wwid}) on ${s.name}`,
    },
    () => last,
  );
}

/** What attach tells its caller before it changes the node, so that the staging record knows it first. */
export interface AttachHooks {
  /** The pairs about to be logged in. */
  onPairs(pairs: PathPair[]): Promise<void>;
  /**
   * A device at the LUN's address reports another WWID than the volume's. Under find_multipaths
   * greedy/yes multipathd may list that WWID in the wwids file on its own as the path appears.
   */
  onForeignWwid(wwid: string): Promise<void>;
}

/** Logs in on every pair and finds the volume's devices and map. */
export async function attach(env: NodeEnv, h: Host, t: VolumeTarget, steps: StepTimes, hooks: AttachHooks): Promise<Attached> {
  // Before any login: multipathd applies Lunar's device settings to the paths as they appear.
  await steps.time('dropIn', () => ensureDropIn(h, env.config.multipath));
  const pairs = choosePairs(t.portals, await steps.time('ifaces', () => ifacesOf(env, h)));
  // Recorded before the first login: an unstage after a crash from here on logs these out.
  await hooks.onPairs(pairs);
  const failures: string[] = [];
  const seen = { allRefused: true }; // every failed pair was refused by the target (not a network problem)
  const failed = (p: PathPair, err: unknown): void => {
    if (!(err instanceof HostError) || err.kind === 'timeout') throw err;
    if (err.kind !== 'precondition') seen.allRefused = false;
    failures.push(`${p.portal} via ${p.iface}: ${err.message}`);
  };
  // Discovery on every pair at once (pairs of one portal wait for each other), then the records.
  const discovered = await steps.time('discovery', () => Promise.allSettled(pairs.map((p) => discoverPair(h, t, p))));
  const found = pairs.flatMap((p, i) => {
    const r = discovered[i]!;
    if (r.status === 'rejected') failed(p, r.reason);
    return r.status === 'fulfilled' ? [{ p, offered: r.value }] : [];
  });
  const prepared = await steps.time('nodeRecord', () => Promise.allSettled(found.map((f) => prepareRecord(env, h, t, f.p, f.offered))));
  const ready = found.flatMap((f, i) => {
    const r = prepared[i]!;
    if (r.status === 'rejected') failed(f.p, r.reason);
    return r.status === 'fulfilled' ? [f.p] : [];
  });
  const logins = await steps.time('login', () => Promise.allSettled(ready.map((p) => login(h, t.iqn, p))));
  const loggedIn = ready.filter((p, i) => {
    const r = logins[i]!;
    if (r.status === 'rejected') failed(p, r.reason);
    return r.status === 'fulfilled';
  });
  if (loggedIn.length === 0) {
    throw hostError(seen.allRefused ? 'precondition' : 'unavailable', `no path to ${t.iqn} logged in: ${failures.join('; ')}`);
  }
  if (failures.length > 0) env.log.warn({ targetIqn: t.iqn, failures }, 'some paths did not log in; staging on the others');

  const sessions = await listSessions(h.fs);
  const mine = loggedIn.map((p) => {
    const s = sessionOf(sessions, t.iqn, p);
    if (!s)
      throw hostError('failed', `logged in to ${t.iqn} at ${p.portal} via ${p.iface}, but no such session in /sys/class/iscsi_session`);
    return s;
  });
  const devices = await steps.time('device', () =>
    Promise.all(mine.map((s) => waitForDevice(env, h, s, t, (w) => hooks.onForeignWwid(w)))),
  );
  const names = devices.map((d) => d.blockName!);

  if (env.config.allowSinglePath && devices.length === 1) {
    return { pairs, devices, map: null, devicePath: `/dev/${names[0]!}`, kernelName: names[0]! };
  }
  await steps.time('multipathAdd', async () => {
    // Every device has the volume's WWID (waitForDevice checked it): one `multipath -a` lists it.
    await addWwid(h, names[0]!);
    await Promise.all(names.map((n) => addPath(h, n)));
  });
  const map = await steps.time('map', () => waitForMap(h, t.wwid, names));
  return { pairs, devices, map, devicePath: `/dev/${map.kernelName}`, kernelName: map.kernelName };
}
