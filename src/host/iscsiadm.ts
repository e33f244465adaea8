// open-iscsi's iscsiadm, one function per use: ifaces bound to NICs, SendTargets discovery (with CHAP
// through the discovery record, see node-record.ts), node records
// (startup and scan manual, session timers), login and logout per (portal, iface), record deletion.
// Every call goes through the host runner with a timeout and the request's deadline. CHAP secrets are
// never passed here: `iscsiadm -o update -n ...password -v SECRET` would put them in argv, which every
// user on the node can read with ps; node-record.ts writes them into the record file instead.
// Exit codes: open-iscsi include/iscsi_err.h.

import { hostError, type HostErrorKind } from './errors.js';
import { setDiscoveryAuth, type ChapSettings } from './node-record.js';
import { retryWhile } from './poll.js';
import { describeFailure, type RunResult, type RunSpec } from './runner.js';
import type { Host, PathPair } from './types.js';
import { KeyedMutex } from '../util/mutex.js';

/** iscsi_err.h codes Lunar tells apart. */
export const ISCSI_ERR = {
  SESS_NOT_FOUND: 2,
  TRANS: 4,
  IDBM: 6,
  LOGIN: 5,
  TRANS_TIMEOUT: 8,
  PDU_TIMEOUT: 11,
  SESS_EXISTS: 15,
  ISCSID_COMM: 18,
  FATAL_LOGIN: 19,
  ISCSID_NOTCONN: 20,
  NO_OBJS_FOUND: 21,
  LOGIN_AUTH_FAILED: 24,
} as const;

/** What a failed iscsiadm exit code means for the CO (errors.ts kinds). */
export function iscsiadmErrorKind(code: number): HostErrorKind {
  switch (code) {
    case ISCSI_ERR.TRANS:
    case ISCSI_ERR.LOGIN:
    case ISCSI_ERR.TRANS_TIMEOUT:
    case ISCSI_ERR.PDU_TIMEOUT:
    case ISCSI_ERR.ISCSID_COMM:
    case ISCSI_ERR.ISCSID_NOTCONN:
      return 'unavailable';
    case ISCSI_ERR.FATAL_LOGIN:
    case ISCSI_ERR.LOGIN_AUTH_FAILED:
      return 'precondition';
    default:
      return 'failed';
  }
}

const HINT: Readonly<Record<number, string>> = {
  [ISCSI_ERR.ISCSID_NOTCONN]: ' — iscsid is not running on the node (systemctl enable --now iscsid.socket)',
  [ISCSI_ERR.LOGIN_AUTH_FAILED]: ' — the target refused the CHAP credentials',
  [ISCSI_ERR.FATAL_LOGIN]: ' — the target refused this initiator (is the volume published to this node?)',
};

function iscsiadmSpec(h: Host, args: string[], network: boolean): RunSpec {
  return { cmd: 'iscsiadm', args, timeoutMs: network ? h.timeouts.iscsiadmNetwork : h.timeouts.iscsiadmLocal, deadline: h.deadline };
}

/** r when its exit code is one of okCodes, else the HostError of that code. */
function checked(spec: RunSpec, r: RunResult, okCodes: readonly number[]): RunResult {
  if (!okCodes.includes(r.code)) throw hostError(iscsiadmErrorKind(r.code), describeFailure(spec, r) + (HINT[r.code] ?? ''));
  return r;
}

async function iscsiadm(h: Host, args: string[], network: boolean, okCodes: readonly number[] = [0]): Promise<RunResult> {
  const spec = iscsiadmSpec(h, args, network);
  return checked(spec, await h.runner.run(spec), okCodes);
}

const nodeArgs = (iqn: string, p: PathPair): string[] => ['-m', 'node', '-T', iqn, '-p', p.portal, '-I', p.iface];

// ---- ifaces --------------------------------------------------------------------------------------

/** `iscsiadm -m iface` lines "name transport,hwaddress,ipaddress,net_ifacename,initiatorname" -> name -> NIC. */
export function parseIfaces(out: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of out.split('\n')) {
    const [name, fields] = line.trim().split(/\s+/);
    if (!name || !fields) continue;
    const netif = fields.split(',')[3] ?? '<empty>';
    m.set(name, netif);
  }
  return m;
}

/** The iface name Lunar uses for a NIC. */
export function ifaceName(nic: string): string {
  return `lunar-${nic}`;
}

/** An iface bound to nic (iface.net_ifacename), created or corrected when needed. */
export async function ensureIface(h: Host, nic: string): Promise<string> {
  const name = ifaceName(nic);
  const list = parseIfaces((await iscsiadm(h, ['-m', 'iface'], false, [0, ISCSI_ERR.NO_OBJS_FOUND])).stdout);
  const bound = list.get(name);
  if (bound === nic) return name;
  if (bound === undefined) await iscsiadm(h, ['-m', 'iface', '-I', name, '-o', 'new'], false);
  await iscsiadm(h, ['-m', 'iface', '-I', name, '-o', 'update', '-n', 'iface.net_ifacename', '-v', nic], false);
  return name;
}

// ---- discovery -----------------------------------------------------------------------------------

export interface DiscoveredTarget {
  /** "host:port" as the target advertised it. */
  readonly portal: string;
  readonly tpgt: number;
  readonly iqn: string;
}

/** SendTargets output lines "10.0.0.5:3260,1 iqn.…" ("[fd00::5]:3260,1 iqn.…" for IPv6). */
export function parseDiscovery(out: string): DiscoveredTarget[] {
  const found: DiscoveredTarget[] = [];
  for (const line of out.split('\n')) {
    const m = /^\s*(\S+):(\d+),(\d+)\s+(\S+)\s*$/.exec(line);
    if (!m) continue;
    found.push({ portal: `${m[1]!}:${m[2]!}`, tpgt: Number(m[3]), iqn: m[4]! });
  }
  return found;
}

/**
 * SendTargets discovery on one portal through one iface, adding records for new targets only (-o new:
 * the default op would also delete the records of targets this portal no longer reports — other
 * volumes' targets this initiator is not admitted to any more, with sessions in use).
 */
export async function discover(h: Host, p: PathPair, chap: ChapSettings | null = null): Promise<DiscoveredTarget[]> {
  if (chap) return discoverWithChap(h, p, chap);
  const r = await iscsiadm(h, ['-m', 'discovery', '-t', 'sendtargets', '-p', p.portal, '-I', p.iface, '-o', 'new'], true, [
    0,
    ISCSI_ERR.NO_OBJS_FOUND,
  ]);
  return parseDiscovery(r.stdout);
}

/**
 * Discovery that logs in with CHAP: the credentials go into the portal's discovery record file
 * (node-record.ts), never into argv, for the time of the discovery; then they are taken out again, also
 * when the discovery failed. The caller holds the portal's discovery lock (one record per portal).
 */
async function discoverWithChap(h: Host, p: PathPair, chap: ChapSettings): Promise<DiscoveredTarget[]> {
  const db = ['-m', 'discoverydb', '-t', 'sendtargets', '-p', p.portal];
  await iscsiadm(h, [...db, '-o', 'new'], false);
  await setDiscoveryAuth(h.fs, p.portal, chap);
  let found: DiscoveredTarget[];
  try {
    const r = await iscsiadm(h, [...db, '-I', p.iface, '-o', 'new', '--discover'], true, [0, ISCSI_ERR.NO_OBJS_FOUND]);
    found = parseDiscovery(r.stdout);
  } catch (err) {
    await setDiscoveryAuth(h.fs, p.portal, null);
    throw err;
  }
  // A failure to take the secret out again is the call's failure, never only a log line.
  await setDiscoveryAuth(h.fs, p.portal, null);
  return found;
}

// ---- node records --------------------------------------------------------------------------------

/** Creates the node record of (iqn, portal, iface) when discovery did not (the portal is reached through NAT). */
export async function newNodeRecord(h: Host, iqn: string, p: PathPair): Promise<void> {
  await iscsiadm(h, [...nodeArgs(iqn, p), '-o', 'new'], false);
}

const SECRET_KEY = /password|secret/i;

/** Sets one non-secret setting of a node record. */
export async function updateNodeRecord(h: Host, iqn: string, p: PathPair, key: string, value: string): Promise<void> {
  // A guard, not a check of input: no code path may put a secret on a command line.
  if (SECRET_KEY.test(key)) throw new Error(`refusing to pass ${key} through iscsiadm's argv; write it to the record file`);
  await iscsiadm(h, [...nodeArgs(iqn, p), '-o', 'update', '-n', key, '-v', value], false);
}

export async function login(h: Host, iqn: string, p: PathPair): Promise<void> {
  // 15: a session of this record exists already (a repeated stage, or a stage after a plugin crash).
  await iscsiadm(h, [...nodeArgs(iqn, p), '--login'], true, [0, ISCSI_ERR.SESS_EXISTS]);
}

export async function logout(h: Host, iqn: string, p: PathPair): Promise<void> {
  // 21: no session of this record (never logged in, or logged out already).
  await iscsiadm(h, [...nodeArgs(iqn, p), '--logout'], true, [0, ISCSI_ERR.NO_OBJS_FOUND, ISCSI_ERR.SESS_NOT_FOUND]);
}

/** Record deletions of this process, one at a time (deleteRecords). */
const deletions = new KeyedMutex();

/**
 * `-o delete` walks every record of the node database and every session in sysfs (to refuse deleting a
 * record in use), and fails with exit 6 (ISCSI_ERR_IDBM) when something vanishes under the walk: another
 * target's record directory deleted at that moment ("iface iter could not read dir
 * /etc/iscsi/nodes/<other iqn>/…"), a session another unstage is ending ("could not read session
 * targetname"), or with only "Could not execute operation on all records: encountered iSCSI database
 * failure". With 10 volumes unstaged in parallel (bench/node-stage.ts) 9 of 10 unstages failed so. So this
 * process deletes records one at a time, and exit 6 is tried again a few times for what it does not
 * serialise (a discovery, a logout): the delete is idempotent (none left is exit 21).
 */
async function deleteRecords(h: Host, args: string[], retryMs: number): Promise<void> {
  const spec = iscsiadmSpec(h, args, false);
  const { result } = await deletions.run('records', () =>
    retryWhile(
      () => h.runner.run(spec),
      (r) => r.code === ISCSI_ERR.IDBM,
      { attempts: 6, intervalMs: retryMs, deadline: h.deadline },
    ),
  );
  checked(spec, result, [0, ISCSI_ERR.NO_OBJS_FOUND]);
}

/**
 * Deletes every node record of the target, on every portal and iface: SendTargets on one portal records
 * all the portals the target reports (RFC 7143 §4.3, TargetAddress), and with iface binding each iface gets
 * its own copy, so records exist for pairs that were never logged in. Exit 21 (none left) is success.
 */
export async function deleteTargetRecords(h: Host, iqn: string, retryMs = 300): Promise<void> {
  await deleteRecords(h, ['-m', 'node', '-T', iqn, '-o', 'delete'], retryMs);
}
