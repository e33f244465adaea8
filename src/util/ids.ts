// Identifiers: volume/snapshot ids, target IQNs, NAA 6h LU designators, CHAP secrets, ACL entry checks.

import { randomBytes, randomInt } from 'node:crypto';
import { isIP } from 'node:net';

/** Every Lunar target IQN starts with this; the volume id follows the colon. */
export const TARGET_IQN_PREFIX = 'iqn.2026-11.io.lunar';

export function targetIqn(volumeId: string): string {
  return `${TARGET_IQN_PREFIX}:${volumeId}`;
}

/** Volume ids: "vol-" + 16 lower-case hex digits (64 random bits). Valid in an IQN and a file name. */
export function newVolumeId(): string {
  return `vol-${randomBytes(8).toString('hex')}`;
}

export function newSnapshotId(): string {
  return `snap-${randomBytes(8).toString('hex')}`;
}

/** "vol-" or "snap-" and 16 hex digits: the ids newVolumeId and newSnapshotId make (lower case). */
export const ID_PATTERN = '(?:vol|snap)-[0-9a-f]{16}';
const ID_RE = new RegExp(`^${ID_PATTERN}$`);
/** The same form in any letter case: what a name must not look like (a reference is looked up as an id first). */
const ID_FORM_RE = new RegExp(`^${ID_PATTERN}$`, 'i');

export function isLunarId(id: string): boolean {
  return ID_RE.test(id);
}

/** Whether text has the form of a Lunar id in any letter case. */
export function hasIdForm(text: string): boolean {
  return ID_FORM_RE.test(text);
}

/**
 * IEEE company id used in Lunar's NAA 6h designators (SPC-4 §7.8.6.6.4).
 *
 * Lunar has no IEEE registration, so it must not borrow someone's OUI. 0x024C4E ("\x02LN") lies in the
 * Administratively Assigned Identifier (AAI) quadrant of the IEEE 802c Structured Local Address Plan:
 * the first octet has the X (local) bit set and the Y and Z bits clear (low nibble 0b0010). IEEE-assigned
 * OUIs have X = 0 and IEEE CIDs have low nibble 0b1010, so this value can never equal an identifier of a
 * registered vendor. Uniqueness between LUs, including LUs of different Lunar installations, comes from
 * the 100 random bits that follow.
 */
export const LUNAR_COMPANY_ID = 0x024c4e;

/**
 * A new NAA IEEE Registered Extended designator as 32 hex digits: NAA = 6h (4 bits), company id
 * (24 bits), vendor specific identifier (36 bits) and extension (64 bits), the last 100 bits random.
 */
export function newNaa6(): string {
  const rnd = randomBytes(13); // 104 bits; 100 used
  const b = Buffer.alloc(16);
  // byte 0: 6h | company id bits 23..20
  b[0] = 0x60 | ((LUNAR_COMPANY_ID >> 20) & 0x0f);
  b[1] = (LUNAR_COMPANY_ID >> 12) & 0xff;
  b[2] = (LUNAR_COMPANY_ID >> 4) & 0xff;
  // byte 3: company id bits 3..0 | first 4 random bits
  b[3] = ((LUNAR_COMPANY_ID & 0x0f) << 4) | (rnd[0]! & 0x0f);
  rnd.copy(b, 4, 1, 13);
  return b.toString('hex');
}

/**
 * The Linux WWID of a logical unit with this NAA designator: udev's scsi_id and dm-multipath name a device
 * by the designator type (3h = NAA in the designation descriptor, SPC-4 §7.8.6.1) followed by the designator in hex.
 */
export function naaWwid(naa: string): string {
  return `3${naa}`;
}

/** Checks that an NAA string is a 6h designator carrying Lunar's company id. */
export function isLunarNaa6(naa: string): boolean {
  if (!/^[0-9a-f]{32}$/.test(naa)) return false;
  const b = Buffer.from(naa, 'hex');
  const cid = ((b[0]! & 0x0f) << 20) | (b[1]! << 12) | (b[2]! << 4) | (b[3]! >> 4);
  return b[0]! >> 4 === 6 && cid === LUNAR_COMPANY_ID;
}

const SECRET_ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789';

/**
 * A random CHAP secret: 16 characters from a 57-symbol alphabet (~93 bits). 16 characters is also the
 * maximum some initiators (Microsoft) accept, and above the 12 that RFC 7143 §12.1.3 implies (96 bits
 * recommended for secrets that are not random; ours are).
 */
export function newChapSecret(): string {
  let s = '';
  for (let i = 0; i < 16; i++) s += SECRET_ALPHABET[randomInt(SECRET_ALPHABET.length)]!;
  return s;
}

// RFC 3720/7143 §4.2.7.4 iSCSI names (after stringprep, which we do not implement: we accept only the
// lower-case ASCII subset, which is what every initiator generates).
const IQN_RE = /^iqn\.\d{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[\x21-\x7e]+)?$/;
const EUI_RE = /^eui\.[0-9A-Fa-f]{16}$/;
const NAA_RE = /^naa\.([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})$/;

/** true for a syntactically valid iSCSI name (iqn., eui. or naa. form), ≤ 223 bytes. */
export function isIscsiName(name: string): boolean {
  if (name.length === 0 || Buffer.byteLength(name) > 223) return false;
  return IQN_RE.test(name) || EUI_RE.test(name) || NAA_RE.test(name);
}

/** true for an IPv4 or IPv6 CIDR ("10.0.0.0/8", "::1/128"). A bare address is not a CIDR. */
export function isCidr(text: string): boolean {
  const slash = text.indexOf('/');
  if (slash < 0) return false;
  const addr = text.slice(0, slash);
  const bits = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bits)) return false;
  const family = isIP(addr);
  if (family === 0) return false;
  const n = Number(bits);
  return family === 4 ? n <= 32 : n <= 128;
}

/**
 * Normalise one ACL entry: iSCSI names are returned as given (names compare exactly), a bare IP address
 * becomes a host CIDR (/32 or /128). Returns an error message for anything else.
 */
export function normaliseAclEntry(entry: string): { ok: true; value: string } | { ok: false; error: string } {
  const e = entry.trim();
  if (isIscsiName(e)) return { ok: true, value: e };
  if (isCidr(e)) return { ok: true, value: e };
  const fam = isIP(e);
  if (fam === 4) return { ok: true, value: `${e}/32` };
  if (fam === 6) return { ok: true, value: `${e}/128` };
  return {
    ok: false,
    error: `invalid ACL entry "${entry}": expected an initiator name (iqn.YYYY-MM.domain:..., eui.<16 hex>) or an IP address/CIDR (10.0.0.0/8, ::1/128)`,
  };
}

/** CHAP name/secret checks (RFC 7143 §12.1.3, §6.1: values are text, no NUL; we also refuse whitespace). */
export function chapValueProblem(what: string, value: string, minLength: number): string | null {
  if (value.length < minLength) return `${what} must be at least ${minLength} characters`;
  if (value.length > 255) return `${what} must be at most 255 characters`;
  if (!/^[\x21-\x7e]+$/.test(value)) return `${what} may only contain printable ASCII without spaces`;
  return null;
}
