// Test doubles for the node plugin's host seam (src/host/types.ts): an in-memory host tree (HostFs) and a
// runner that records every command and answers from a small simulated node — iscsiadm's records and
// sessions, the sysfs SCSI objects a LUN scan creates, dm-multipath maps, blkid, mkfs and the mount table.
// They exist so that each node step's commands (argv) and decisions are checked without a kernel; the
// same steps run against the real kernel initiator in the guest tests (test/guest).

import { pino } from 'pino';
import { DEFAULT_MULTIPATH_TIMERS } from '../../src/host/multipath.js';
import { SYSFS_GONE, SYSFS_WRITER } from '../../src/host/scsi-sysfs.js';
import { DEFAULT_TIMEOUTS } from '../../src/host/types.js';
import { stagingRecords } from '../../src/node/staging-record.js';
import { DEFAULT_SESSION_TIMERS, type NodeConfig, type NodeEnv } from '../../src/node/types.js';
import type { HostFs } from '../../src/host/host-fs.js';
import type { HostRunner, RunResult, RunSpec } from '../../src/host/runner.js';

export class FakeFs implements HostFs {
  readonly files = new Map<string, string | Buffer>();
  readonly links = new Map<string, string>();
  readonly dirs = new Set<string>();
  onWrite: (path: string, data: string) => void = () => undefined;
  readFailures = new Map<string, Error>();

  set(path: string, data: string | Buffer): void {
    this.files.set(path, data);
  }
  rmTree(prefix: string): void {
    for (const k of [...this.files.keys()]) if (k === prefix || k.startsWith(prefix + '/')) this.files.delete(k);
    for (const k of [...this.links.keys()]) if (k === prefix || k.startsWith(prefix + '/')) this.links.delete(k);
    for (const k of [...this.dirs]) if (k === prefix || k.startsWith(prefix + '/')) this.dirs.delete(k);
  }
  private all(): string[] {
    return [...this.files.keys(), ...this.links.keys(), ...this.dirs];
  }
  readText(path: string): Promise<string | null> {
    const v = this.files.get(path);
    return Promise.resolve(v === undefined ? null : v.toString());
  }
  /** A write to an existing file (a sysfs attribute), as the sysfs write command does it; false when it is missing. */
  writeExisting(path: string, data: string): boolean {
    if (!this.files.has(path)) return false;
    this.onWrite(path, data);
    return true;
  }
  writeAtomic(path: string, data: string): Promise<void> {
    this.files.set(path, data);
    this.onWrite(path, data);
    return Promise.resolve();
  }
  readdir(path: string): Promise<string[]> {
    const names = new Set<string>();
    for (const k of this.all()) if (k.startsWith(path + '/')) names.add(k.slice(path.length + 1).split('/')[0]!);
    return Promise.resolve([...names].sort());
  }
  readlink(path: string): Promise<string | null> {
    return Promise.resolve(this.links.get(path) ?? null);
  }
  readBytes(path: string, offset: number, length: number): Promise<Buffer> {
    const f = this.readFailures.get(path);
    if (f) return Promise.reject(f);
    const v = this.files.get(path);
    if (v === undefined) return Promise.reject(Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' }));
    const b = Buffer.isBuffer(v) ? v : Buffer.from(v);
    return Promise.resolve(b.subarray(offset, offset + length));
  }
  exists(path: string): Promise<boolean> {
    return Promise.resolve(this.all().some((k) => k === path || k.startsWith(path + '/')));
  }
  mkdir(path: string): Promise<void> {
    this.dirs.add(path);
    return Promise.resolve();
  }
  createFile(path: string): Promise<void> {
    if (!this.files.has(path)) this.files.set(path, '');
    return Promise.resolve();
  }
  remove(path: string): Promise<void> {
    this.files.delete(path);
    this.dirs.delete(path);
    return Promise.resolve();
  }
}

export type Handler = (spec: RunSpec) => RunResult | Promise<RunResult | undefined> | undefined;

/** Records every command; the first handler that answers decides its result (else exit 0, no output). */
export class FakeRunner implements HostRunner {
  readonly calls: RunSpec[] = [];
  readonly handlers: Handler[] = [];
  async run(spec: RunSpec): Promise<RunResult> {
    this.calls.push(spec);
    for (const h of this.handlers) {
      const r = await h(spec);
      if (r) return r;
    }
    return { code: 0, stdout: '', stderr: '' };
  }
  /** Command lines run, as "cmd arg arg". */
  lines(): string[] {
    return this.calls.map((c) => [c.cmd, ...c.args].join(' '));
  }
}

export const ok = (stdout = ''): RunResult => ({ code: 0, stdout, stderr: '' });
export const fail = (code: number, stderr: string): RunResult => ({ code, stdout: '', stderr });

/** A VPD page 0x83 carrying one NAA designator (LU association). */
export function vpd83(wwid: string): Buffer {
  const naa = Buffer.from(wwid.slice(1), 'hex');
  const desc = Buffer.concat([Buffer.from([0x01, 0x03, 0x00, naa.length]), naa]);
  const head = Buffer.from([0x00, 0x83, 0x00, desc.length]);
  return Buffer.concat([head, desc]);
}

export interface FakeLu {
  wwid: string;
  sizeBytes: number;
  /** What blkid -p reports: null = nothing (exit 2), or TYPE. */
  blkid: string | null;
  /** The device's first/last MiB (zeros by default). */
  data?: Buffer;
}

interface Session {
  n: number;
  iqn: string;
  portal: string;
  iface: string;
}

/**
 * A simulated node: iscsiadm, the kernel's sysfs objects, multipath, blkid/mkfs and mount, as far as the
 * node plugin's steps see them. `lus` maps "iqn/lun" to what the LUN holds; `staleAt` puts a device with
 * another WWID at an address until it is deleted.
 */
const WWIDS = '/etc/multipath/wwids';

export class FakeNode {
  readonly fs = new FakeFs();
  readonly runner = new FakeRunner();
  readonly lus = new Map<string, FakeLu>();
  readonly mounts: string[] = [];
  readonly nodeDb = '/etc/iscsi/nodes';
  /** "iqn/lun" -> WWID a stale device reports at that LUN the first `count` scans. */
  readonly stale = new Map<string, { wwid: string; count: number }>();
  /** Portals whose network is cut: discovery/login fail, logout still works. */
  readonly unreachable = new Set<string>();
  /** Exit code and stderr for umount of a path (busy). */
  readonly umountFailures = new Map<string, RunResult>();
  readonly ifaces = new Map<string, string>();
  targets: string[] = [];
  /** Discovery CHAP the target requires ("user:secret"), or null. */
  discoveryChap: { user: string; secret: string } | null = null;
  /** Portals SendTargets reports for every target (Lunar reports all of a target's portals); empty: the one asked. */
  targetPortals: string[] = [];
  private sessions: Session[] = [];
  private nextSession = 1;
  private nextDm = 0;
  private nextSd = 0;
  private majorSd = 8;

  constructor() {
    this.fs.set('/etc/iscsi/initiatorname.iscsi', '## comment\nInitiatorName=iqn.2024-01.io.e2e:guest\n');
    this.fs.onWrite = (path, data) => this.sysfsWrite(path, data);
    this.runner.handlers.push((s) => this.command(s));
  }

  sessionList(): readonly Session[] {
    return this.sessions;
  }

  mountinfo(): string {
    return this.mounts.join('\n') + '\n';
  }

  private recordDir(iqn: string, portal: string): string {
    const [host, port] = portal.split(':');
    return `${this.nodeDb}/${iqn}/${host!},${port!},1`;
  }

  private arg(args: readonly string[], flag: string): string {
    const i = args.indexOf(flag);
    return i >= 0 ? (args[i + 1] ?? '') : '';
  }

  private command(s: RunSpec): RunResult | undefined {
    const a = s.args;
    switch (s.cmd) {
      case 'iscsiadm':
        return this.iscsiadm(a);
      case 'ip':
        return ok(`2: ${a[4]!}    inet 10.0.${a[4] === 'eth1' ? 3 : 2}.15/24 brd 10.0.2.255 scope global ${a[4]!}\n`);
      case 'multipathd':
        if (a[0] === 'add' && a[1] === 'path') return this.addPath(a[2]!);
        return ok('ok\n');
      case 'multipath':
        if (a[0] === '-f') return this.flushMap(a[1]!);
        if (a[0] === '-a') return this.addWwidOf(a[1]!);
        if (a[0] === '-w') return this.removeWwidLine(a[1]!);
        return ok();
      case 'blkid':
        return this.blkid(a[3]!);
      case 'mkfs.ext4':
      case 'mkfs.xfs':
        return this.mkfs(s.cmd.slice(5), a[a.length - 1]!);
      case 'mount':
        return this.mount(a);
      case 'umount':
        return this.umount(a[0]!);
      case 'sh':
        // scsi-sysfs.ts's attribute write: sh -c SCRIPT lunar-sysfs-write DATA PATH
        if (a[2] === SYSFS_WRITER) return this.fs.writeExisting(a[4]!, a[3]!) ? ok() : fail(SYSFS_GONE, '');
        return fail(127, `sh: unexpected script ${a[1] ?? ''}`);
      default:
        return ok();
    }
  }

  private iscsiadm(a: readonly string[]): RunResult {
    const mode = this.arg(a, '-m');
    const iface = this.arg(a, '-I') || 'default';
    if (mode === 'iface') {
      if (a.length === 2) return ok([...this.ifaces].map(([n, nic]) => `${n} tcp,<empty>,<empty>,${nic},<empty>`).join('\n'));
      if (a.includes('new')) this.ifaces.set(iface, '<empty>');
      if (a.includes('update')) this.ifaces.set(iface, this.arg(a, '-v'));
      return ok();
    }
    const portal = this.arg(a, '-p');
    if (mode === 'discoverydb') {
      const [host, port] = portal.split(':');
      const file = `/etc/iscsi/send_targets/${host!},${port!}/st_config`;
      if (!a.includes('--discover')) {
        if (this.arg(a, '-o') !== 'new') return fail(7, 'iscsiadm: unexpected discoverydb op');
        this.fs.set(
          file,
          `discovery.startup = manual\ndiscovery.type = sendtargets\ndiscovery.sendtargets.address = ${host!}\ndiscovery.sendtargets.port = ${port!}\ndiscovery.sendtargets.auth.authmethod = None\n`,
        );
        return ok(`New discovery record for [${host!},${port!}] added.\n`);
      }
      // --discover reads the record's auth keys, as iscsiadm does.
      const rec = this.fs.files.get(file)?.toString() ?? '';
      const key = (k: string): string => new RegExp(`^discovery\\.sendtargets\\.auth\\.${k} = (.*)$`, 'm').exec(rec)?.[1] ?? '';
      this.discoveryLogins.push({ authmethod: key('authmethod'), user: key('username'), secret: key('password') });
      if (
        this.discoveryChap &&
        (key('authmethod') !== 'CHAP' || key('username') !== this.discoveryChap.user || key('password') !== this.discoveryChap.secret)
      )
        return fail(24, 'iscsiadm: Login failed to authorize due to authentication failure');
      return this.sendTargets(portal, iface);
    }
    if (mode === 'discovery') {
      // The legacy mode logs in with iscsid.conf's defaults: no CHAP here.
      if (this.discoveryChap) return fail(24, 'iscsiadm: Login failed to authorize due to authentication failure');
      return this.sendTargets(portal, iface);
    }
    return this.nodeCommand(a, portal, iface);
  }

  /** What each discoverydb --discover logged in with (the record's auth keys at that moment). */
  readonly discoveryLogins: { authmethod: string; user: string; secret: string }[] = [];

  private sendTargets(portal: string, iface: string): RunResult {
    if (this.unreachable.has(portal)) return fail(8, 'iscsiadm: connection login retries (reopen_max) 5 exceeded');
    const reported = this.targetPortals.length > 0 ? this.targetPortals : [portal];
    for (const iqn of this.targets)
      for (const at of reported) {
        const dir = this.recordDir(iqn, at);
        if (!this.fs.files.has(`${dir}/${iface}`))
          this.fs.set(`${dir}/${iface}`, `# BEGIN RECORD 2.1.8\nnode.name = ${iqn}\nnode.session.auth.authmethod = None\n# END RECORD\n`);
      }
    return ok(this.targets.flatMap((iqn) => reported.map((at) => `${at},1 ${iqn}`)).join('\n') + '\n');
  }

  private nodeCommand(a: readonly string[], portal: string, iface: string): RunResult {
    const iqn = this.arg(a, '-T');
    const file = `${this.recordDir(iqn, portal)}/${iface}`;
    if (a.includes('--login')) {
      if (this.unreachable.has(portal)) return fail(8, 'iscsiadm: Could not login: connection timed out');
      if (!this.fs.files.has(file)) return fail(21, 'iscsiadm: No records found');
      if (this.sessions.some((x) => x.iqn === iqn && x.portal === portal && x.iface === iface)) return fail(15, 'session exists');
      this.login(iqn, portal, iface);
      return ok();
    }
    if (a.includes('--logout')) {
      const i = this.sessions.findIndex((x) => x.iqn === iqn && x.portal === portal && x.iface === iface);
      if (i < 0) return fail(21, 'iscsiadm: No matching sessions found');
      this.logoutSession(this.sessions[i]!);
      this.sessions.splice(i, 1);
      return ok();
    }
    if (a.includes('-o') && this.arg(a, '-o') === 'delete' && !a.includes('-p')) {
      // Without -p/-I: every record of the target.
      const mine = [...this.fs.files.keys()].filter((f) => f.startsWith(`${this.nodeDb}/${iqn}/`));
      if (mine.length === 0) return fail(21, 'iscsiadm: No records found');
      for (const f of mine) this.fs.files.delete(f);
      return ok();
    }
    if (a.includes('-o') && this.arg(a, '-o') === 'delete') {
      if (!this.fs.files.has(file)) return fail(21, 'iscsiadm: No records found');
      this.fs.files.delete(file);
      return ok();
    }
    if (this.arg(a, '-o') === 'new') {
      this.fs.set(file, `# BEGIN RECORD 2.1.8\nnode.name = ${iqn}\n# END RECORD\n`);
      return ok();
    }
    if (this.arg(a, '-o') === 'update') {
      if (!this.fs.files.has(file)) return fail(21, 'iscsiadm: No records found');
      return ok();
    }
    return ok();
  }

  private login(iqn: string, portal: string, iface: string): void {
    const n = this.nextSession++;
    const host = n + 1;
    this.sessions.push({ n, iqn, portal, iface });
    const dir = `/sys/class/iscsi_session/session${n}`;
    this.fs.links.set(dir, `../../devices/platform/host${host}/session${n}/iscsi_session/session${n}`);
    this.fs.set(`${dir}/targetname`, `${iqn}\n`);
    this.fs.set(`${dir}/ifacename`, `${iface}\n`);
    this.fs.set(`${dir}/state`, 'LOGGED_IN\n');
    const [addr, port] = portal.split(':');
    this.fs.set(`/sys/class/iscsi_connection/connection${n}:0/persistent_address`, `${addr!}\n`);
    this.fs.set(`/sys/class/iscsi_connection/connection${n}:0/persistent_port`, `${port!}\n`);
    this.fs.set(`/sys/class/scsi_host/host${host}/scan`, '');
  }

  private hostOf(n: number): number {
    return n + 1;
  }

  private logoutSession(s: Session): void {
    this.fs.rmTree(`/sys/class/iscsi_session/session${s.n}`);
    this.fs.rmTree(`/sys/class/iscsi_connection/connection${s.n}:0`);
    this.fs.rmTree(`/sys/class/scsi_host/host${this.hostOf(s.n)}`);
    for (const k of [...this.fs.files.keys()]) {
      const m = new RegExp(`^/sys/class/scsi_device/(${this.hostOf(s.n)}:0:0:\\d+)/device/block/(\\w+)$`).exec(k);
      if (m) this.removeDevice(m[1]!, m[2]!);
    }
  }

  /** Marks a session's state (FAILED during a cut). */
  setSessionState(portal: string, state: string): void {
    for (const s of this.sessions) if (s.portal === portal) this.fs.set(`/sys/class/iscsi_session/session${s.n}/state`, `${state}\n`);
  }

  /** Sets a SCSI device's state (transport-offline after a cut), as /sys/class/scsi_device and /sys/block show it. */
  setDeviceState(sd: string, state: string): void {
    for (const k of [...this.fs.files.keys()]) {
      const m = new RegExp(`^/sys/class/scsi_device/([\\d:]+)/device/block/${sd}$`).exec(k);
      if (m) this.fs.set(`/sys/class/scsi_device/${m[1]!}/device/state`, `${state}\n`);
    }
    this.fs.set(`/sys/block/${sd}/device/state`, `${state}\n`);
  }

  private removeDevice(address: string, sd: string): void {
    this.fs.rmTree(`/sys/class/scsi_device/${address}`);
    this.fs.rmTree(`/sys/block/${sd}`);
    this.fs.files.delete(`/dev/${sd}`);
  }

  private sysfsWrite(path: string, data: string): void {
    const scan = /^\/sys\/class\/scsi_host\/host(\d+)\/scan$/.exec(path);
    if (scan) {
      const host = Number(scan[1]);
      const s = this.sessions.find((x) => this.hostOf(x.n) === host)!;
      const lun = Number(data.split(' ')[2]);
      const lu = this.lus.get(`${s.iqn}/${lun}`);
      const address = `${host}:0:0:${lun}`;
      if (!lu || this.fs.files.has(`/sys/class/scsi_device/${address}/device/state`)) return;
      const st = this.stale.get(`${s.iqn}/${lun}`);
      let wwid = lu.wwid;
      if (st && st.count > 0) {
        st.count--;
        wwid = st.wwid;
      }
      const sd = `sd${String.fromCharCode(97 + this.nextSd++)}`;
      const dev = `/sys/class/scsi_device/${address}/device`;
      this.fs.set(`${dev}/vpd_pg83`, vpd83(wwid));
      this.fs.set(`${dev}/state`, 'running\n');
      this.fs.set(`${dev}/delete`, '');
      this.fs.set(`${dev}/rescan`, '');
      this.fs.set(`${dev}/block/${sd}`, '');
      this.fs.set(`/sys/block/${sd}/size`, `${lu.sizeBytes / 512}\n`);
      // /sys/block/sdX/device is the kernel's link to the SCSI device: its state, seen from both sides.
      this.fs.set(`/sys/block/${sd}/device/state`, 'running\n');
      this.fs.set(`/sys/block/${sd}/dev`, `${this.majorSd}:${this.nextSd * 16}\n`);
      return;
    }
    const del = /^\/sys\/class\/scsi_device\/([\d:]+)\/device\/delete$/.exec(path);
    if (del) {
      const sd = [...this.fs.files.keys()]
        .map((k) => new RegExp(`^/sys/class/scsi_device/${del[1]!}/device/block/(\\w+)$`).exec(k))
        .find((m) => m)?.[1];
      if (sd) this.removeDevice(del[1]!, sd);
    }
  }

  private wwidOfSd(sd: string): string | null {
    for (const k of this.fs.files.keys()) {
      const m = /^\/sys\/class\/scsi_device\/([\d:]+)\/device\/block\/(\w+)$/.exec(k);
      if (m && m[2] === sd) {
        const page = this.fs.files.get(`/sys/class/scsi_device/${m[1]!}/device/vpd_pg83`) as Buffer;
        return '3' + page.subarray(8).toString('hex');
      }
    }
    return null;
  }

  private luOfWwid(wwid: string): FakeLu | undefined {
    return [...this.lus.values()].find((l) => l.wwid === wwid);
  }

  /** multipath -a /dev/sdX: the device's WWID into the wwids file. */
  private addWwidOf(dev: string): RunResult {
    const wwid = this.wwidOfSd(dev.replace(/^\/dev\//, ''));
    if (!wwid) return fail(1, `${dev}: no WWID`);
    const text = this.fs.files.get(WWIDS)?.toString() ?? '# Multipath wwids, Version : 1.0\n';
    if (!text.split('\n').includes(`/${wwid}/`)) this.fs.set(WWIDS, `${text}/${wwid}/\n`);
    return ok(`wwid '${wwid}' added\n`);
  }

  /** multipath -w WWID: its line out of the wwids file. */
  private removeWwidLine(wwid: string): RunResult {
    const text = this.fs.files.get(WWIDS)?.toString() ?? '';
    this.fs.set(
      WWIDS,
      text
        .split('\n')
        .filter((l) => l !== `/${wwid}/`)
        .join('\n'),
    );
    return ok(`wwid '${wwid}' removed\n`);
  }

  private addPath(sd: string): RunResult {
    const wwid = this.wwidOfSd(sd);
    if (!wwid) return fail(1, 'fail');
    let dm = [...this.fs.files.keys()]
      .map((k) => /^\/sys\/block\/(dm-\d+)\/dm\/uuid$/.exec(k))
      .find((m) => m && this.fs.files.get(m[0])?.toString().trim() === `mpath-${wwid}`)?.[1];
    if (!dm) {
      dm = `dm-${this.nextDm++}`;
      const lu = this.luOfWwid(wwid)!;
      this.fs.set(`/sys/block/${dm}/dm/uuid`, `mpath-${wwid}\n`);
      this.fs.set(`/sys/block/${dm}/dm/name`, `mpath${dm.slice(3)}\n`);
      this.fs.set(`/sys/block/${dm}/size`, `${lu.sizeBytes / 512}\n`);
      this.fs.set(`/sys/block/${dm}/dev`, `253:${dm.slice(3)}\n`);
      this.fs.set(`/dev/${dm}`, lu.data ?? Buffer.alloc(lu.sizeBytes));
    }
    this.fs.set(`/sys/block/${dm}/slaves/${sd}`, '');
    return ok('ok\n');
  }

  private dmByName(name: string): string | undefined {
    return [...this.fs.files.keys()]
      .map((k) => /^\/sys\/block\/(dm-\d+)\/dm\/name$/.exec(k))
      .find((m) => m && this.fs.files.get(m[0])?.toString().trim() === name)?.[1];
  }

  private flushMap(name: string): RunResult {
    const dm = this.dmByName(name);
    if (!dm) return fail(1, `${name}: map not found`);
    if (this.mounts.some((m) => m.includes(` 253:${dm.slice(3)} `))) return fail(1, `${name}: map in use`);
    this.fs.rmTree(`/sys/block/${dm}`);
    this.fs.files.delete(`/dev/${dm}`);
    return ok();
  }

  private luOfDev(dev: string): FakeLu | undefined {
    const dm = /^\/dev\/(dm-\d+)$/.exec(dev)?.[1];
    const uuid = dm ? this.fs.files.get(`/sys/block/${dm}/dm/uuid`)?.toString().trim() : undefined;
    return uuid ? this.luOfWwid(uuid.slice('mpath-'.length)) : undefined;
  }

  private blkid(dev: string): RunResult {
    const lu = this.luOfDev(dev);
    if (!lu) return fail(2, '');
    if (lu.blkid === null) return { code: 2, stdout: '', stderr: '' };
    if (lu.blkid.startsWith('PTTYPE=')) return ok(`DEVNAME=${dev}\n${lu.blkid}\n`);
    return ok(`DEVNAME=${dev}\nUUID=1234\nTYPE=${lu.blkid}\nUSAGE=filesystem\n`);
  }

  private mkfs(fs: string, dev: string): RunResult {
    const lu = this.luOfDev(dev);
    if (!lu) return fail(1, `${dev}: no such device`);
    if (lu.blkid !== null) return fail(1, `${dev} contains a ${lu.blkid} file system`);
    lu.blkid = fs;
    return ok();
  }

  private mount(a: readonly string[]): RunResult {
    const target = a[a.length - 1]!;
    const source = a[a.length - 2]!;
    const bind = a.includes('--bind');
    const ro = a.some((x) => x.split(',').includes('ro'));
    let dev = '0:99';
    let root = '/';
    let fsType = this.arg(a, '-t');
    const m = /^\/dev\/(dm-\d+)$/.exec(source);
    if (m && !bind) dev = `253:${m[1]!.slice(3)}`;
    if (bind) {
      const staged = this.mounts.find((l) => l.split(' ')[4] === source);
      if (staged) {
        dev = staged.split(' ')[2]!;
        fsType = staged.split(' - ')[1]!.split(' ')[0]!;
      } else {
        dev = '0:5';
        root = `/${source.split('/').pop()!}`;
        fsType = 'devtmpfs';
      }
    }
    const id = 100 + this.mounts.length;
    this.mounts.push(`${id} 1 ${dev} ${root} ${target} ${ro ? 'ro' : 'rw'},relatime shared:1 - ${fsType} ${source} rw`);
    return ok();
  }

  private umount(path: string): RunResult {
    const f = this.umountFailures.get(path);
    if (f) return f;
    for (let i = this.mounts.length - 1; i >= 0; i--) {
      if (this.mounts[i]!.split(' ')[4] === path) {
        this.mounts.splice(i, 1);
        return ok();
      }
    }
    return fail(32, `umount: ${path}: not mounted.`);
  }
}

// ---- a NodeEnv over a FakeNode -------------------------------------------------------------------

/** A node whose target iqn offers one 64 MiB LU (LUN 0) reporting wwid, blank (no signature). */
export function fakeNodeWith(iqn: string, wwid: string): FakeNode {
  const fake = new FakeNode();
  fake.targets = [iqn];
  fake.lus.set(`${iqn}/0`, { wwid, sizeBytes: 64 << 20, blkid: null });
  return fake;
}

export function nodeEnvFor(fake: FakeNode, stateDir: string, over: Partial<NodeConfig> = {}): NodeEnv {
  return {
    config: {
      nodeName: 'worker-1',
      nics: [],
      allowSinglePath: false,
      maxVolumes: 0,
      session: DEFAULT_SESSION_TIMERS,
      multipath: DEFAULT_MULTIPATH_TIMERS,
      // Short waits: the fake answers at once or never.
      timeouts: { ...DEFAULT_TIMEOUTS, deviceWait: 1500, mapWait: 1500 },
      ...over,
    },
    runner: fake.runner,
    hostFs: fake.fs,
    localFs: fake.fs,
    readMountinfo: () => Promise.resolve(fake.mountinfo()),
    records: stagingRecords(stateDir),
    log: pino({ level: 'silent' }),
  };
}
