// What the tests do inside a guest with open-iscsi and multipath-tools: iface binding, SendTargets
// discovery, login/logout, waiting for the multipath map, reading VPD 0x83 from sysfs, and the
// write/probe/verify workloads. Each function is one guest script; the host parses its output.

import type { Guest } from './harness.js';
import { sleep } from './harness.js';
import type { BedVolume, ChapPair } from './targets.js';

/** Shell-quote a value for the guest's bash. */
export const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** Creates ifaces p0/p1 bound to the guest NICs n0/n1 (iface.net_ifacename = SO_BINDTODEVICE). */
export async function setupIfaces(g: Guest): Promise<void> {
  const lines = [...g.nicNames].map(([id, dev], i) => {
    const iface = `p${i}`;
    return `iscsiadm -m iface -I ${iface} >/dev/null 2>&1 || iscsiadm -m iface -I ${iface} -o new >/dev/null
iscsiadm -m iface -I ${iface} -o update -n iface.net_ifacename -v ${dev} >/dev/null  # ${id}`;
  });
  await g.sh(`modprobe -a iscsi_tcp dm_multipath dm_round_robin
systemctl is-active -q multipathd || systemctl start multipathd
${lines.join('\n')}`);
}

export interface DiscoveryRecord {
  readonly portal: string; // "198.18.0.1:23260"
  readonly tpgt: number;
  readonly iqn: string;
}

/** SendTargets on `portal` through iface `iface`; returns what the target advertised. */
export async function discover(g: Guest, portal: string, iface: string): Promise<DiscoveryRecord[]> {
  const out = await g.sh(`iscsiadm -m discovery -t sendtargets -p ${portal} -I ${iface}`, 60);
  const recs: DiscoveryRecord[] = [];
  for (const line of out.trim().split('\n')) {
    const m = /^(\S+):(\d+),(\d+)\s+(\S+)$/.exec(line.trim());
    if (m) recs.push({ portal: `${m[1]}:${m[2]}`, tpgt: Number(m[3]), iqn: m[4]! });
  }
  return recs;
}

/** Sets CHAP (and mutual CHAP) on the node record of (iqn, portal, iface). */
export async function setChap(
  g: Guest,
  iqn: string,
  portal: string,
  iface: string,
  chap: ChapPair | null,
  mutual?: ChapPair,
): Promise<void> {
  const u = (k: string, v: string): string => `iscsiadm -m node -T ${q(iqn)} -p ${portal} -I ${iface} -o update -n ${k} -v ${q(v)}`;
  const cmds = [u('node.session.auth.authmethod', chap ? 'CHAP' : 'None')];
  if (chap) cmds.push(u('node.session.auth.username', chap.user), u('node.session.auth.password', chap.secret));
  if (mutual) cmds.push(u('node.session.auth.username_in', mutual.user), u('node.session.auth.password_in', mutual.secret));
  await g.sh(cmds.join('\n'));
}

/** Logs in to (iqn, portal, iface); resolves with iscsiadm's result (code 0 = logged in). */
export function login(g: Guest, iqn: string, portal: string, iface: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return g.exec(`iscsiadm -m node -T ${q(iqn)} -p ${portal} -I ${iface} --login`, 90);
}

/**
 * Tears a volume down the way a node plugin must: flush its multipath map while the paths still exist,
 * then log out. A map left without paths queues I/O (no_path_retry), and whoever opens it next — udev's
 * blkid — hangs for up to no_path_retry × polling interval; so each map is switched to fail_if_no_path
 * first, and maps that still lost all their paths are flushed the same way afterwards.
 */
export async function logout(g: Guest, iqn: string): Promise<void> {
  await g.sh(
    `devs=$(iscsiadm -m session -P 3 2>/dev/null | awk -v t=${q(iqn)} '/^Target: /{on=($2==t)} on && /Attached scsi disk/{print $4}')
maps=$(for d in $devs; do multipathd show paths raw format '%d %m' 2>/dev/null | awk -v d="$d" '$1==d && substr($2,1,1) != "[" {print $2}'; done | sort -u)
for m in $maps; do
  dmsetup message "$m" 0 fail_if_no_path || true
  for i in $(seq 20); do multipath -f "$m" >/dev/null 2>&1 && break; sleep 0.5; done
done
iscsiadm -m node -T ${q(iqn)} --logout >/dev/null 2>&1 || true`,
    90,
  );
  await flushEmptyMaps(g);
}

/** Flushes every multipath map that has no path left (see logout()). */
export async function flushEmptyMaps(g: Guest): Promise<void> {
  await g.sh(
    `empty() { multipathd show maps raw format '%n %N' 2>/dev/null | awk '$2==0{print $1}'; }
for m in $(empty); do dmsetup message "$m" 0 fail_if_no_path || true; done
udevadm settle --timeout=20 || true
for m in $(empty); do
  dmsetup message "$m" 0 fail_if_no_path || true
  for i in $(seq 20); do multipath -f "$m" >/dev/null 2>&1 && break; sleep 0.5; done
done`,
    90,
  );
}

export interface SessionPath {
  readonly iqn: string;
  readonly iface: string;
  readonly portal: string;
  readonly dev: string; // sdX
  readonly state: string; // iSCSI session state
}

/** Every (target, iface, attached disk) of the guest's sessions. */
export async function sessionPaths(g: Guest): Promise<SessionPath[]> {
  const out = await g.sh(
    `iscsiadm -m session -P 3 2>/dev/null | awk '/^Target: /{t=$2} /Current Portal:/{p=$3} /Iface Name:/{i=$3} /iSCSI Session State:/{s=$4} /Attached scsi disk/{print t, i, p, $4, s}' || true`,
  );
  return out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [iqn, iface, portal, dev, state] = l.split(/\s+/) as [string, string, string, string, string];
      return { iqn, iface, portal: portal.replace(/,\d+$/, ''), dev, state };
    });
}

export interface MapPath {
  readonly dev: string;
  readonly dmState: string; // active | failed
  readonly checker: string; // ready | faulty | ghost ...
}

export interface MapState {
  readonly name: string;
  readonly wwid: string;
  readonly paths: MapPath[];
}

/** multipathd's view of the map holding `wwid` (undefined when there is none). */
export async function mapState(g: Guest, wwid: string): Promise<MapState | undefined> {
  const out = await g.sh(`multipathd show maps raw format '%w %n' 2>/dev/null | awk '$1=="${wwid}"{print "M", $2}'
multipathd show paths raw format '%w %d %t %T' 2>/dev/null | awk '$1=="${wwid}"{print "P", $2, $3, $4}'`);
  let name: string | undefined;
  const paths: MapPath[] = [];
  for (const l of out.trim().split('\n')) {
    const f = l.trim().split(/\s+/);
    if (f[0] === 'M') name = f[1];
    if (f[0] === 'P') paths.push({ dev: f[1]!, dmState: f[2]!, checker: f[3]! });
  }
  return name ? { name, wwid, paths } : undefined;
}

/** Polls until `pred` holds for the map (or throws with the last state after timeoutMs). */
export async function waitMap(g: Guest, wwid: string, pred: (m: MapState) => boolean, timeoutMs: number, what: string): Promise<MapState> {
  const deadline = Date.now() + timeoutMs;
  let last: MapState | undefined;
  for (;;) {
    last = await mapState(g, wwid);
    if (last && pred(last)) return last;
    if (Date.now() > deadline) {
      const diag = await g.exec('multipathd show paths; multipathd show maps; iscsiadm -m session; dmesg | tail -30', 30);
      throw new Error(`${what}: not reached after ${timeoutMs} ms; last ${JSON.stringify(last)}\n${diag.stdout}${diag.stderr}`);
    }
    await sleep(250);
  }
}

export const allActive =
  (n: number) =>
  (m: MapState): boolean =>
    m.paths.length === n && m.paths.every((p) => p.dmState === 'active' && p.checker === 'ready');

/**
 * WWID the way Linux derives it from VPD 0x83 (SPC-4 §7.8.6): "3" + the logical unit's NAA designator,
 * read from sysfs. With several NAA designators, the kernel/udev prefer the 16-byte IEEE Registered
 * Extended (6h) one, then the longer/higher NAA type — so do we.
 */
export async function vpdWwid(g: Guest, dev: string): Promise<string> {
  const hex = (await g.sh(`od -An -tx1 -v /sys/block/${dev}/device/vpd_pg83 | tr -d ' \\n'`)).trim();
  const b = Buffer.from(hex, 'hex');
  if (b.length < 4 || b[1] !== 0x83) throw new Error(`${dev}: VPD page 0x83 not returned (${hex.slice(0, 40)})`);
  const end = Math.min(b.length, 4 + b.readUInt16BE(2));
  const naas: Buffer[] = [];
  for (let off = 4; off + 4 <= end;) {
    const assoc = (b[off + 1]! >> 4) & 3;
    const type = b[off + 1]! & 0xf;
    const len = b[off + 3]!;
    if (type === 3 && assoc === 0) naas.push(b.subarray(off + 4, off + 4 + len));
    off += 4 + len;
  }
  naas.sort((x, y) => y.length - x.length || (y[0]! >> 4) - (x[0]! >> 4));
  if (!naas[0]) throw new Error(`${dev}: no NAA logical-unit designator in VPD 0x83 (${hex})`);
  return `3${naas[0].toString('hex')}`;
}

/**
 * Writer: 32 MiB files of fresh random data, each written with O_DIRECT + fsync and its sha256 recorded,
 * until at least `minMiB` are written AND the host created /run/<tag>.stop (or `maxFiles`). Exit 0 only
 * when every write succeeded. Prints "<files> <MiB>".
 */
export function writerScript(dir: string, tag: string, minMiB: number, maxFiles: number): string {
  return `mkdir -p ${dir}; rm -f /run/${tag}.stop; : > /run/${tag}.sums; i=0; mib=0
while :; do
  head -c 32M /dev/urandom > /run/${tag}.chunk
  s=$(sha256sum < /run/${tag}.chunk | cut -c1-64)
  if ! dd if=/run/${tag}.chunk of=${dir}/f$i bs=1M oflag=direct conv=fsync status=none; then echo "WRITE-ERROR f$i" >&2; exit 1; fi
  echo "$s  ${dir}/f$i" >> /run/${tag}.sums; i=$((i+1)); mib=$((mib+32)); echo $i > /run/${tag}.count
  if [ $mib -ge ${minMiB} ] && [ -e /run/${tag}.stop ]; then break; fi
  if [ $i -ge ${maxFiles} ]; then break; fi
done
rm -f /run/${tag}.chunk
echo "$i $mib"`;
}

/**
 * Latency probe: one long-lived process (the host's Node, copied into the guest) overwrites 4 KiB of one
 * file with O_DSYNC every 10 ms and logs "start end" (unix seconds) or "ERR start" per write, until
 * /run/<tag>.stop exists. One process, not a dd per write: under TCG a process spawn costs ~150 ms, which
 * would hide every pause shorter than that (a shell+dd probe measured a 150 ms median here).
 */
export function probeScript(file: string, tag: string): string {
  const js = `import { appendFileSync, constants, existsSync, openSync, writeSync } from 'node:fs';
const [file, tag] = process.argv.slice(2);
const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_DSYNC, 0o644);
const buf = Buffer.alloc(4096, 0x5a);
const nap = new Int32Array(new SharedArrayBuffer(4));
const now = () => (performance.timeOrigin + performance.now()) / 1000;
writeSync(fd, buf, 0, buf.length, 0);
while (!existsSync('/run/' + tag + '.stop')) {
  const t0 = now();
  let ok = true;
  try { writeSync(fd, buf, 0, buf.length, 0); } catch { ok = false; }
  const t1 = now();
  appendFileSync('/run/' + tag + '.log', ok ? t0.toFixed(6) + ' ' + t1.toFixed(6) + '\\n' : 'ERR ' + t0.toFixed(6) + '\\n');
  Atomics.wait(nap, 0, 0, 10);
}
`;
  return `rm -f /run/${tag}.stop /run/${tag}.log
echo ${Buffer.from(js).toString('base64')} | base64 -d > /run/${tag}.mjs
exec /usr/local/bin/node /run/${tag}.mjs ${file} ${tag}`;
}

export interface ProbeStats {
  readonly writes: number;
  readonly errors: number;
  /** Longest single 4 KiB O_DSYNC write, ms. */
  readonly maxMs: number;
  /** When the longest write started (unix ms). */
  readonly maxAt: number;
  readonly medianMs: number;
}

const usec = (s: string): number => {
  const [a, b = '0'] = s.split('.');
  return Number(a) * 1e6 + Number(b.padEnd(6, '0').slice(0, 6));
};

export async function probeStats(g: Guest, tag: string): Promise<ProbeStats> {
  const log = await g.sh(`cat /run/${tag}.log`);
  let errors = 0;
  let maxUs = 0;
  let maxAt = 0;
  const lat: number[] = [];
  for (const l of log.trim().split('\n')) {
    const [a, b] = l.split(' ');
    if (a === 'ERR') errors++;
    else if (a && b) {
      const d = usec(b) - usec(a);
      lat.push(d);
      if (d > maxUs) {
        maxUs = d;
        maxAt = usec(a) / 1000;
      }
    }
  }
  lat.sort((x, y) => x - y);
  return { writes: lat.length, errors, maxMs: maxUs / 1000, maxAt, medianMs: (lat[Math.floor(lat.length / 2)] ?? 0) / 1000 };
}

/** Guest wall clock in unix ms (to line probe timestamps up with host events). */
export async function guestNowMs(g: Guest): Promise<number> {
  return usec((await g.sh('echo $EPOCHREALTIME')).trim()) / 1000;
}

/** Remounts (so reads come from the LU, not the page cache) and checks every recorded sha256. */
export async function verifySums(g: Guest, dev: string, mnt: string, tag: string): Promise<string> {
  return g.sh(
    `umount ${mnt}; mount ${dev} ${mnt}; sha256sum --quiet -c /run/${tag}.sums && echo "verified $(wc -l < /run/${tag}.sums) files"`,
    300,
  );
}

/** Kernel log lines about path failure/recovery and I/O errors since `marker` was logged. */
export async function kernelEvents(g: Guest, marker: string): Promise<string[]> {
  const out = await g.sh(
    `dmesg | sed -n '/${marker}/,$p' | grep -E 'Failing path|Reinstating path|ping timeout|recovery timed out|I/O error|queue_if_no_path|detected capacity|connection[0-9]+:0|session[0-9]+:|rejecting I/O|error|XFS' || true`,
  );
  return out.trim().split('\n').filter(Boolean);
}

export async function markKernelLog(g: Guest, marker: string): Promise<void> {
  await g.sh(`echo ${marker} > /dev/kmsg`);
}

/** Discovery on both portals (each through its own iface), login on both, wait for a 2-path map. */
export async function connectBothPaths(
  g: Guest,
  vol: BedVolume,
  portals: readonly string[],
  timing?: (step: string, ms: number) => void,
): Promise<{ discovered: DiscoveryRecord[][]; map: MapState; paths: SessionPath[] }> {
  const t = (step: string, t0: number): void => timing?.(step, Date.now() - t0);
  let t0 = Date.now();
  const discovered: DiscoveryRecord[][] = [];
  for (let i = 0; i < portals.length; i++) discovered.push(await discover(g, portals[i]!, `p${i}`));
  t(`discovery (SendTargets x${portals.length})`, t0);
  t0 = Date.now();
  const tLogin = t0;
  for (let i = 0; i < portals.length; i++) {
    const r = await login(g, vol.iqn, portals[i]!, `p${i}`);
    if (r.code !== 0) throw new Error(`login to ${vol.iqn} at ${portals[i]} via p${i} failed (${r.code}): ${r.stderr || r.stdout}`);
  }
  t(`login (${portals.length} sessions)`, t0);
  let paths: SessionPath[] = [];
  for (const deadline = Date.now() + 60_000; ;) {
    paths = (await sessionPaths(g)).filter((p) => p.iqn === vol.iqn);
    if (paths.length >= portals.length) break;
    if (Date.now() > deadline) throw new Error(`only ${paths.length} SCSI disks for ${vol.iqn}: ${JSON.stringify(paths)}`);
    await sleep(250);
  }
  t('login start -> SCSI disks', tLogin);
  const wwid = vol.wwid ?? (await vpdWwid(g, paths[0]!.dev));
  const map = await waitMap(g, wwid, allActive(portals.length), 90_000, `map ${wwid} with ${portals.length} active paths`);
  t('login start -> map with all paths active', tLogin);
  return { discovered, map, paths };
}

/** Kernel log lines (monotonic seconds + text) from the line holding `marker` on. */
export async function dmesgFrom(g: Guest, marker: string): Promise<{ t: number; msg: string }[]> {
  const out = await g.sh(`dmesg | sed -n '/${marker}/,$p'`);
  return out
    .split('\n')
    .map((l) => /^\[\s*(\d+\.\d+)\]\s?(.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ t: Number(m[1]), msg: m[2]! }));
}

/** Seconds from the kernel-log line holding `from` to the first later line matching `to`; undefined if none. */
export function kernelDelay(lines: readonly { t: number; msg: string }[], from: string, to: RegExp): number | undefined {
  const i = lines.findIndex((l) => l.msg.includes(from));
  if (i < 0) return undefined;
  const j = lines.findIndex((l, k) => k > i && to.test(l.msg));
  return j < 0 ? undefined : lines[j]!.t - lines[i]!.t;
}
