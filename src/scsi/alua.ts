// Asymmetric logical unit access: REPORT TARGET PORT GROUPS parameter data (SPC-4 §6.36).
//
// Lunar exposes every portal group of a target as a relative target port of one target port group
// (id 1) that is always active/optimized: implicit ALUA with a single state, so dm-multipath's alua
// prioritizer (scsi_dh_alua) puts all paths into one group and uses them all.

/** Target port group identifier of the only group. */
export const TARGET_PORT_GROUP_ID = 1;

/** Asymmetric access states (SPC-4 §6.36 Table 292). */
export const AluaState = {
  ACTIVE_OPTIMIZED: 0x0,
  ACTIVE_NON_OPTIMIZED: 0x1,
  STANDBY: 0x2,
  UNAVAILABLE: 0x3,
  LBA_DEPENDENT: 0x4,
  OFFLINE: 0xe,
  TRANSITIONING: 0xf,
} as const;

/**
 * Target port group of a relative target port, for the VPD 0x83 TARGET PORT GROUP designator: every
 * port is in the one group REPORT TARGET PORT GROUPS describes. The two must agree, or scsi_dh_alua
 * cannot find the port's group.
 */
export const targetPortGroupOf: (relativeTargetPortId: number) => number = () => TARGET_PORT_GROUP_ID;

/** Seconds an implicit transition may take (extended header IMPLICIT TRANSITION TIME). No transition ever happens here. */
export const IMPLICIT_TRANSITION_TIME = 10;

/**
 * REPORT TARGET PORT GROUPS parameter data (SPC-4 §6.36.2): length-only header (format 000b) or
 * extended header (format 001b, `extended`), then one target port group descriptor listing every
 * relative target port, truncated to `allocationLength`.
 */
export function encodeReportTargetPortGroups(ports: readonly number[], extended: boolean, allocationLength: number): Buffer {
  const ids = [...new Set(ports.map((p) => p & 0xffff))].filter((p) => p !== 0).sort((a, b) => a - b);
  if (ids.length > 255) throw new RangeError('a target port group lists at most 255 target ports');
  const header = extended ? 8 : 4;
  const descriptor = 8 + 4 * ids.length;
  const b = Buffer.alloc(header + descriptor);
  // RETURN DATA LENGTH: bytes that follow the 4-byte field, in both header formats.
  b.writeUInt32BE(b.length - 4, 0);
  if (extended) {
    b[4] = 0x1 << 4; // FORMAT TYPE 001b
    b[5] = IMPLICIT_TRANSITION_TIME;
  }
  const d = header;
  b[d] = AluaState.ACTIVE_OPTIMIZED; // PREF=0, ASYMMETRIC ACCESS STATE
  b[d + 1] = 0x01; // T_SUP=0 O_SUP=0 LBD_SUP=0 U_SUP=0 S_SUP=0 AN_SUP=0 AO_SUP=1
  b.writeUInt16BE(TARGET_PORT_GROUP_ID, d + 2);
  b[d + 5] = 0x00; // STATUS CODE: no status available
  b[d + 7] = ids.length; // TARGET PORT COUNT
  ids.forEach((id, i) => b.writeUInt16BE(id, d + 8 + 4 * i + 2));
  const n = Math.max(0, Math.min(allocationLength, b.length));
  return n === b.length ? b : b.subarray(0, n);
}
