// The kernel's SCSI and iSCSI objects through sysfs: iSCSI sessions (target, portal, iface, state, SCSI
// host), a scan of one LUN only (the session's host/channel/target + the LUN: with node.session.scan=manual
// the kernel scans nothing by itself, so no other LUN of the target appears), the devices at a LUN
// address with their WWID, and their deletion and rescan (Documentation/scsi/scsi-parameters, the
// scsi_host "scan" and scsi_device "delete"/"rescan" attributes), each write bounded (below).

import { HostError, hostError } from './errors.js';
import type { HostFs } from './host-fs.js';
import { describeFailure, type RunSpec } from './runner.js';
import type { Host } from './types.js';
import { wwidFromSysfs, wwidFromVpd83 } from './vpd.js';

const SESSION_CLASS = '/sys/class/iscsi_session';
const CONNECTION_CLASS = '/sys/class/iscsi_connection';
const DEVICE_CLASS = '/sys/class/scsi_device';

export interface IscsiSession {
  /** "session3" */
  readonly name: string;
  readonly targetIqn: string;
  /** "host:port" of the connection (persistent address: the one logged in to). */
  readonly portal: string;
  readonly iface: string;
  /** LOGGED_IN, FAILED, FREE (sysfs `state`). */
  readonly state: string;
  /** SCSI host number ("host5" -> 5). */
  readonly host: number;
  readonly channel: number;
  readonly target: number;
}

/** One SCSI device: H:C:T:L address, block device name, WWID read from VPD 0x83. */
export interface ScsiDevice {
  readonly address: string;
  readonly blockName: string | null;
  readonly wwid: string | null;
  /** sysfs `state`: running, offline, blocked, transport-offline. */
  readonly state: string;
}

async function attr(fs: HostFs, path: string): Promise<string> {
  return ((await fs.readText(path)) ?? '').trim();
}

function portalOf(address: string, port: string): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Every iSCSI session of the node. */
export async function listSessions(fs: HostFs): Promise<IscsiSession[]> {
  const out: IscsiSession[] = [];
  for (const name of await fs.readdir(SESSION_CLASS)) {
    const m = /^session(\d+)$/.exec(name);
    if (!m) continue;
    const dir = `${SESSION_CLASS}/${name}`;
    const link = (await fs.readlink(dir)) ?? '';
    const host = /\/host(\d+)\//.exec(link);
    if (!host) continue;
    const conn = `${CONNECTION_CLASS}/connection${m[1]!}:0`;
    const address = (await attr(fs, `${conn}/persistent_address`)) || (await attr(fs, `${conn}/address`));
    const port = (await attr(fs, `${conn}/persistent_port`)) || (await attr(fs, `${conn}/port`));
    // The session's SCSI target once scanned ("target5:0:0"); iscsi_tcp uses channel 0, target 0.
    let channel = 0;
    let target = 0;
    for (const e of await fs.readdir(`${dir}/device`)) {
      const t = /^target\d+:(\d+):(\d+)$/.exec(e);
      if (t) {
        channel = Number(t[1]);
        target = Number(t[2]);
      }
    }
    out.push({
      name,
      targetIqn: await attr(fs, `${dir}/targetname`),
      portal: portalOf(address, port),
      iface: (await attr(fs, `${dir}/ifacename`)) || 'default',
      state: await attr(fs, `${dir}/state`),
      host: Number(host[1]),
      channel,
      target,
    });
  }
  return out;
}

export function lunAddress(s: Pick<IscsiSession, 'host' | 'channel' | 'target'>, lun: number): string {
  return `${s.host}:${s.channel}:${s.target}:${lun}`;
}

// sysfs writes run as a command through the runner, with its timeout and the request's deadline, not as
// a write of this process: the kernel does the SCSI commands of a scan, delete or rescan inside the
// write(2), and on a path whose target does not answer that write waits (state D) for the SCSI command
// timeout and the error handler, or longer. In this process such a write would hold one of libuv's four
// threadpool threads for as long, unkillable, and a few of them would stall every file operation of the
// plugin (staging records included); a worker thread would be stuck the same way. A child process is the
// least bad bound: the call answers at the timeout (the runner does not wait for a process the kernel
// holds), and the stuck write costs a process that ends when the kernel lets go. The data and the path are
// sh's positional parameters, never part of the script.
const WRITE_SCRIPT = 'test -e "$2" || exit 66; printf %s "$1" > "$2"';
/** $0 of the write script: names it in ps. */
export const SYSFS_WRITER = 'lunar-sysfs-write';
/** Exit code of the write script when the attribute does not exist (the object is gone). */
export const SYSFS_GONE = 66;

/** The runner spec of one sysfs attribute write (pure; tests check it). */
export function sysfsWriteSpec(h: Host, path: string, data: string): RunSpec {
  return {
    cmd: 'sh',
    args: ['-c', WRITE_SCRIPT, SYSFS_WRITER, data, h.commandPath(path)],
    timeoutMs: h.timeouts.sysfs,
    deadline: h.deadline,
  };
}

/** The error of a failed write, prefixed with what it was for (a timeout stays a timeout). */
const failedTo =
  (what: string) =>
  (err: unknown): never => {
    throw hostError(err instanceof HostError && err.kind === 'timeout' ? 'timeout' : 'failed', `${what}: ${(err as Error).message}`);
  };

/** Writes data to an existing sysfs attribute; 'gone' when it does not exist. */
export async function writeAttribute(h: Host, path: string, data: string): Promise<'written' | 'gone'> {
  const spec = sysfsWriteSpec(h, path, data);
  const r = await h.runner.run(spec);
  if (r.code === SYSFS_GONE) return 'gone';
  if (r.code !== 0) throw hostError('failed', describeFailure({ cmd: `write ${JSON.stringify(data)} to`, args: [path] }, r));
  return 'written';
}

/** Asks the kernel to scan exactly one LUN of the session's target. */
export async function scanLun(h: Host, s: IscsiSession, lun: number): Promise<void> {
  const what = `scan of LUN ${lun} on host${s.host} (${s.name})`;
  const r = await writeAttribute(h, `/sys/class/scsi_host/host${s.host}/scan`, `${s.channel} ${s.target} ${lun}`).catch(failedTo(what));
  if (r === 'gone') throw hostError('failed', `${what}: host${s.host} is gone (the session ended)`);
}

/** The device at address, or null when there is none. */
export async function deviceAt(fs: HostFs, address: string): Promise<ScsiDevice | null> {
  const dir = `${DEVICE_CLASS}/${address}/device`;
  if (!(await fs.exists(dir))) return null;
  const blockName = (await fs.readdir(`${dir}/block`))[0] ?? null;
  let wwid: string | null = null;
  if (await fs.exists(`${dir}/vpd_pg83`)) wwid = wwidFromVpd83(await fs.readBytes(`${dir}/vpd_pg83`, 0, 4096));
  if (wwid === null) {
    const text = await fs.readText(`${dir}/wwid`);
    if (text !== null) wwid = wwidFromSysfs(text);
  }
  return { address, blockName, wwid, state: await attr(fs, `${dir}/state`) };
}

/** Removes the device from the kernel (after its I/O is flushed). A device already gone is fine. */
export async function deleteDevice(h: Host, address: string): Promise<void> {
  const path = `${DEVICE_CLASS}/${address}/device/delete`;
  if (!(await h.fs.exists(path))) return;
  await writeAttribute(h, path, '1').catch(failedTo(`deleting SCSI device ${address}`));
}

/** Re-reads the device's capacity (after the volume grew). */
export async function rescanDevice(h: Host, address: string): Promise<void> {
  const what = `rescanning SCSI device ${address}`;
  const r = await writeAttribute(h, `${DEVICE_CLASS}/${address}/device/rescan`, '1').catch(failedTo(what));
  if (r === 'gone') throw hostError('failed', `${what}: the device is gone`);
}

/** Size in bytes of a block device by its name ("sdb", "dm-3"); null when it is gone. */
export async function blockSize(fs: HostFs, name: string): Promise<number | null> {
  const t = await fs.readText(`/sys/block/${name}/size`);
  return t === null ? null : Number(t.trim()) * 512;
}
