// The WWID of a SCSI logical unit from its Device Identification VPD page (SPC-4 §7.8.6, page 0x83), in
// the form udev's scsi_id and dm-multipath use: the designator type as one hex digit, then the designator
// ("3" + hex for NAA, "2" + hex for EUI-64, "1"/"8" + text for T10 vendor id / SCSI name string). Only
// designators associated with the logical unit (ASSOCIATION 00b) count; NAA is preferred, as scsi_id does.
// Pure: scsi-sysfs.ts reads the page from /sys/.../vpd_pg83.

const TYPE_T10 = 1;
const TYPE_EUI64 = 2;
const TYPE_NAA = 3;
const TYPE_SCSI_NAME = 8;

/** Preference order of designator types for the WWID. */
const PREFERENCE = [TYPE_NAA, TYPE_EUI64, TYPE_T10, TYPE_SCSI_NAME];

/** The WWID the page carries, or null when it has no logical-unit designator Lunar understands. */
export function wwidFromVpd83(page: Uint8Array): string | null {
  if (page.length < 4 || page[1] !== 0x83) return null;
  const end = Math.min(page.length, 4 + ((page[2]! << 8) | page[3]!));
  const found = new Map<number, string>();
  for (let off = 4; off + 4 <= end;) {
    const codeSet = page[off]! & 0x0f;
    const association = (page[off + 1]! >> 4) & 0x03;
    const type = page[off + 1]! & 0x0f;
    const len = page[off + 3]!;
    const body = page.subarray(off + 4, Math.min(end, off + 4 + len));
    off += 4 + len;
    if (association !== 0 || body.length !== len || found.has(type)) continue;
    if (type === TYPE_NAA || type === TYPE_EUI64) {
      found.set(type, `${type}${Buffer.from(body).toString('hex')}`);
    } else if ((type === TYPE_T10 || type === TYPE_SCSI_NAME) && (codeSet === 2 || codeSet === 3)) {
      found.set(type, `${type}${Buffer.from(body).toString('latin1').replace(/\0+$/, '').trim()}`);
    }
  }
  for (const t of PREFERENCE) {
    const w = found.get(t);
    if (w !== undefined) return w;
  }
  return null;
}

/** The kernel's sysfs `wwid` attribute ("naa.6001405…", "eui.…", "t10.…") in the same form, or null. */
export function wwidFromSysfs(text: string): string | null {
  const t = text.trim();
  const m = /^(naa|eui|t10)\.(.+)$/.exec(t);
  if (!m) return null;
  const prefix = m[1] === 'naa' ? '3' : m[1] === 'eui' ? '2' : '1';
  return prefix + (m[1] === 't10' ? m[2]! : m[2]!.toLowerCase());
}
