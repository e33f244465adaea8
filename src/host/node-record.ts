// CHAP credentials on an open-iscsi node record without a command line. `iscsiadm -o update -n
// node.session.auth.password -v SECRET` would show the secret to every user of the node (ps, /proc/*/cmdline),
// and iscsiadm reads no values from stdin or the environment; so the record file that `iscsiadm -o new`
// (or discovery) created is rewritten here, atomically (temporary file, fsync, rename) and mode 0600, with
// the auth keys set. iscsiadm reads that file at --login and hands the values to iscsid over its socket:
// no secret is ever in an argv. The record is per (target, portal, iface), so two volumes never edit the
// same file, and unstage deletes it (iscsiadm -o delete) with the secrets in it.
// Layout (open-iscsi idbm): <nodes>/<target iqn>/<addr>,<port>,<tpgt>/<iface>; <nodes> is /etc/iscsi/nodes
// (Debian, Ubuntu) or /var/lib/iscsi/nodes (RHEL, Fedora, upstream default).

import { hostError } from './errors.js';
import type { HostFs } from './host-fs.js';
import type { PathPair } from './types.js';

export const NODE_DB_DIRS: readonly string[] = ['/etc/iscsi/nodes', '/var/lib/iscsi/nodes'];

export interface ChapSettings {
  readonly user: string;
  readonly secret: string;
  /** Mutual CHAP: the target's credentials the initiator checks. */
  readonly mutualUser?: string;
  readonly mutualSecret?: string;
}

/** "10.0.0.5:3260" / "[fd00::5]:3260" -> ["10.0.0.5", "3260"]. */
export function splitPortal(portal: string): [string, string] {
  const i = portal.lastIndexOf(':');
  const host = portal.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return [host, portal.slice(i + 1)];
}

/** The record file of (iqn, portal, iface), or null when there is none. */
export async function findRecordFile(fs: HostFs, iqn: string, p: PathPair): Promise<string | null> {
  const [host, port] = splitPortal(p.portal);
  for (const db of NODE_DB_DIRS) {
    const dir = `${db}/${iqn}`;
    for (const entry of await fs.readdir(dir)) {
      if (!entry.startsWith(`${host},${port},`)) continue;
      const file = `${dir}/${entry}/${p.iface}`;
      if ((await fs.readText(file)) !== null) return file;
    }
  }
  return null;
}

/** The auth keys for settings (null = no CHAP). */
export function authValues(chap: ChapSettings | null): Record<string, string> {
  if (!chap) {
    return {
      'node.session.auth.authmethod': 'None',
      'node.session.auth.username': '',
      'node.session.auth.password': '',
      'node.session.auth.username_in': '',
      'node.session.auth.password_in': '',
    };
  }
  return {
    'node.session.auth.authmethod': 'CHAP',
    'node.session.auth.username': chap.user,
    'node.session.auth.password': chap.secret,
    'node.session.auth.username_in': chap.mutualUser ?? '',
    'node.session.auth.password_in': chap.mutualSecret ?? '',
  };
}

/**
 * The record text with each key set (its line replaced, or added before "# END RECORD"); an empty value
 * removes the key. Values with line breaks or surrounding blanks are refused (idbm trims them, a line
 * break would add a key).
 */
export function setRecordValues(text: string, values: Readonly<Record<string, string>>): string {
  for (const [k, v] of Object.entries(values)) {
    if (/[\r\n]/.test(v) || v.trim() !== v) throw hostError('precondition', `value of ${k} has a line break or surrounding blanks`);
  }
  const done = new Set<string>();
  const out: string[] = [];
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const addMissing = (): void => {
    for (const [k, v] of Object.entries(values)) if (!done.has(k) && v !== '') out.push(`${k} = ${v}`);
    for (const k of Object.keys(values)) done.add(k);
  };
  for (const line of lines) {
    const m = /^\s*([^=#\s]+)\s*=/.exec(line);
    const key = m?.[1];
    if (key !== undefined && Object.hasOwn(values, key)) {
      if (!done.has(key) && values[key] !== '') out.push(`${key} = ${values[key]!}`);
      done.add(key);
      continue;
    }
    if (/^#\s*END RECORD/.test(line)) addMissing();
    out.push(line);
  }
  addMissing();
  return out.join('\n') + '\n';
}

// ---- the SendTargets discovery record ------------------------------------------------------------
// Discovery CHAP the same way: `iscsiadm -m discoverydb -t st -p P -o new` makes the portal's discovery
// record (<db>/send_targets/<addr>,<port>/st_config), this writes the discovery.sendtargets.auth.* keys
// into it, `iscsiadm -m discoverydb … --discover` reads them (the legacy `-m discovery` mode reads only
// iscsid.conf's defaults), and the keys are written out again right after the discovery. The record is
// per portal, shared by every volume behind it: the caller holds the portal's discovery lock throughout.

export const SEND_TARGETS_DIRS: readonly string[] = ['/etc/iscsi/send_targets', '/var/lib/iscsi/send_targets'];

/** The discovery record file of the portal, or null when there is none. */
export async function findDiscoveryRecordFile(fs: HostFs, portal: string): Promise<string | null> {
  const [host, port] = splitPortal(portal);
  for (const db of SEND_TARGETS_DIRS) {
    const file = `${db}/${host},${port}/st_config`;
    if ((await fs.readText(file)) !== null) return file;
  }
  return null;
}

/** The discovery auth keys for settings (null = none: the secrets removed). */
export function discoveryAuthValues(chap: ChapSettings | null): Record<string, string> {
  return {
    'discovery.sendtargets.auth.authmethod': chap ? 'CHAP' : 'None',
    'discovery.sendtargets.auth.username': chap?.user ?? '',
    'discovery.sendtargets.auth.password': chap?.secret ?? '',
    'discovery.sendtargets.auth.username_in': chap?.mutualUser ?? '',
    'discovery.sendtargets.auth.password_in': chap?.mutualSecret ?? '',
  };
}

/** Writes the discovery CHAP settings (or none) into the portal's discovery record. */
export async function setDiscoveryAuth(fs: HostFs, portal: string, chap: ChapSettings | null): Promise<void> {
  const file = await findDiscoveryRecordFile(fs, portal);
  if (file === null) {
    if (!chap) return; // nothing to clear
    throw hostError('failed', `no discovery record of ${portal} under ${SEND_TARGETS_DIRS.join(' or ')}`);
  }
  const text = (await fs.readText(file)) ?? '';
  await fs.writeAtomic(file, setRecordValues(text, discoveryAuthValues(chap)), 0o600);
}

/**
 * Writes settings into the node record of (iqn, portal, iface) in one atomic rewrite of its file (what
 * `iscsiadm -o update` does one key per process). The CHAP keys go this way because argv is readable by
 * every user; the other keys (startup, scan, timers) go with them because each iscsiadm process costs
 * 0.1–0.3 s on a slow node (bench/node-stage.ts, TCG guest: 7 updates × 2 paths were 2.4 s of a stage).
 * Values must be what iscsiadm itself would write (setRecordValues refuses line breaks).
 */
export async function setRecordSettings(fs: HostFs, iqn: string, p: PathPair, settings: Readonly<Record<string, string>>): Promise<void> {
  const file = await findRecordFile(fs, iqn, p);
  if (file === null) {
    throw hostError('failed', `no node record of ${iqn} at ${p.portal} iface ${p.iface} under ${NODE_DB_DIRS.join(' or ')}`);
  }
  const text = (await fs.readText(file)) ?? '';
  await fs.writeAtomic(file, setRecordValues(text, settings), 0o600);
}

/** Writes the CHAP settings (or none) into the node record of (iqn, portal, iface). */
export async function setRecordAuth(fs: HostFs, iqn: string, p: PathPair, chap: ChapSettings | null): Promise<void> {
  await setRecordSettings(fs, iqn, p, authValues(chap));
}
