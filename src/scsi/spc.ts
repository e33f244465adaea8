// SPC-4 primary commands: TEST UNIT READY, INQUIRY, REQUEST SENSE, REPORT LUNS, MODE SENSE/SELECT,
// START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, MAINTENANCE IN (RTPG, REPORT SUPPORTED TMFs),
// and the reservation commands (delegated to the ReservationManager of src/scsi/pr.ts).
import { encodeReportTargetPortGroups } from './alua.js';
import { decodeInquiry, decodeModeSelect, decodeModeSense, encodeLun, u32 } from './cdb.js';
import { encodeNoLunInquiry, encodeStandardInquiry } from './inquiry.js';
import type { CommandContext } from './handler.js';
import { encodeModeSense, parseModeSelect, type ModeSenseParams } from './mode.js';
import { GOOD, dataIn, good } from './respond.js';
import { Asc, SenseKey, checkCondition, encodeFixedSense, invalidFieldInCdb } from './sense.js';
import type { ScsiCommand, ScsiResponse } from './types.js';
import { encodeVpdPage } from './vpd.js';

/** SPC-4 §6.37 TEST UNIT READY: the medium is always ready. */
export function testUnitReady(): ScsiResponse {
  return GOOD;
}

/** SPC-4 §6.6 INQUIRY (standard data or a VPD page). */
export function inquiry(ctx: CommandContext): ScsiResponse {
  const { cmd, lu } = ctx;
  const c = decodeInquiry(cmd.cdb);
  if (!c.evpd) {
    if (c.pageCode !== 0) throw invalidFieldInCdb(2);
    const data = encodeStandardInquiry({ identity: lu.identity, multiPort: ctx.device.targetPorts.length > 1 });
    return dataIn(cmd, data, c.allocationLength);
  }
  const page = encodeVpdPage(c.pageCode, {
    identity: lu.identity,
    blockSize: lu.blockSize,
    thinProvisioned: lu.thinProvisioned,
    nexus: cmd.nexus,
  });
  if (!page) throw invalidFieldInCdb(2);
  return dataIn(cmd, page, c.allocationLength);
}

/** INQUIRY to a LUN without a logical unit (SPC-4 §6.6.2: peripheral qualifier 011b). */
export function inquiryNoLun(cmd: ScsiCommand): ScsiResponse {
  const c = decodeInquiry(cmd.cdb);
  if (c.evpd || c.pageCode !== 0) return checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED);
  return dataIn(cmd, encodeNoLunInquiry(), c.allocationLength);
}

/** SPC-4 §6.39 REQUEST SENSE: the pending unit attention (cleared), or NO SENSE. Fixed format only. */
export function requestSense(ctx: CommandContext): ScsiResponse {
  const { cmd, lu } = ctx;
  if (cmd.cdb[1]! & 0x01) throw invalidFieldInCdb(1, 0); // DESC=1: descriptor format not supported
  const ua = lu.takeUnitAttention(cmd.nexus.key);
  const sense = ua
    ? encodeFixedSense(SenseKey.UNIT_ATTENTION, ua)
    : encodeFixedSense(SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE_INFORMATION);
  return dataIn(cmd, sense, cmd.cdb[4]!);
}

/** REQUEST SENSE to a LUN without a logical unit: GOOD with LOGICAL UNIT NOT SUPPORTED data (SPC-4 §6.39). */
export function requestSenseNoLun(cmd: ScsiCommand): ScsiResponse {
  return dataIn(cmd, encodeFixedSense(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED), cmd.cdb[4]!);
}

/** SPC-4 §6.33 REPORT LUNS. Works on any LUN, present or not. */
export function reportLuns(cmd: ScsiCommand, luns: readonly number[]): ScsiResponse {
  const select = cmd.cdb[2]!;
  const alloc = u32(cmd.cdb, 6);
  if (alloc < 16) throw invalidFieldInCdb(6);
  let list: readonly number[];
  switch (select) {
    case 0x00: // all logical units except well-known ones
    case 0x02: // all logical units
    case 0x11: // administrative LUN 0 and its conglomerate... we have no conglomerates: report all
      list = luns;
      break;
    case 0x01: // well-known logical units only: none
    case 0x10: // administrative logical units only: none
      list = [];
      break;
    case 0x12: // subsidiary logical units of the addressed administrative LU: none
      list = [];
      break;
    default:
      throw invalidFieldInCdb(2);
  }
  const data = Buffer.alloc(8 + 8 * list.length);
  data.writeUInt32BE(8 * list.length, 0);
  list.forEach((lun, i) => encodeLun(lun, data, 8 + 8 * i));
  return dataIn(cmd, data, alloc);
}

function modeParams(ctx: CommandContext): ModeSenseParams {
  const { lu } = ctx;
  return { blocks: lu.blocks, blockSize: lu.blockSize, writeProtected: lu.writeProtected, state: lu.mode };
}

/** SPC-4 §6.11/§6.12 MODE SENSE(6)/(10). */
export function modeSense(ctx: CommandContext): ScsiResponse {
  const { cmd } = ctx;
  const data = encodeModeSense(cmd.cdb, modeParams(ctx));
  return dataIn(cmd, data, decodeModeSense(cmd.cdb).allocationLength);
}

/** SPC-4 §6.9/§6.10 MODE SELECT(6)/(10); a change raises MODE PARAMETERS CHANGED for the other nexuses. */
export function modeSelect(ctx: CommandContext): ScsiResponse {
  const { cmd, lu } = ctx;
  const next = parseModeSelect(cmd.cdb, cmd.dataOut, modeParams(ctx));
  const changed = next.wce !== lu.mode.wce || next.swp !== lu.mode.swp;
  lu.mode = next;
  if (changed) {
    lu.queueUnitAttentionAll(Asc.MODE_PARAMETERS_CHANGED, cmd.nexus.key);
    lu.log.info({ lun: lu.lun, wce: next.wce, swp: next.swp, initiator: cmd.nexus.initiatorPortName }, 'mode parameters changed');
  }
  return good(decodeModeSelect(cmd.cdb).parameterListLength);
}

/** SBC-3 §5.25 START STOP UNIT: nothing to spin; power conditions are accepted and ignored. */
export function startStopUnit(ctx: CommandContext): ScsiResponse {
  const b4 = ctx.cmd.cdb[4]!;
  const powerCondition = b4 >> 4;
  // SBC-3 Table 79: 0h START_VALID, 1h ACTIVE, 2h IDLE, 3h STANDBY, 7h LU_CONTROL, Ah/Bh FORCE_*.
  if (![0x0, 0x1, 0x2, 0x3, 0x7, 0xa, 0xb].includes(powerCondition)) throw invalidFieldInCdb(4, 7);
  return GOOD;
}

/** SPC-4 §6.13 PREVENT ALLOW MEDIUM REMOVAL: the medium is not removable (RMB=0); accepted. */
export function preventAllowMediumRemoval(): ScsiResponse {
  return GOOD;
}

/** SPC-4 §6.34 REPORT TARGET PORT GROUPS (MAINTENANCE IN, SA 0Ah), encoded by src/scsi/alua.ts. */
export function reportTargetPortGroups(ctx: CommandContext): ScsiResponse {
  const { cmd, device } = ctx;
  const format = cmd.cdb[1]! >> 5; // PARAMETER DATA FORMAT: 000b length-only, 001b extended
  if (format > 1) throw invalidFieldInCdb(1, 7);
  const alloc = u32(cmd.cdb, 6);
  const data = encodeReportTargetPortGroups(device.targetPorts, format === 1, alloc);
  return dataIn(cmd, data, alloc);
}

/** SPC-4 §6.36 REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (MAINTENANCE IN, SA 0Dh). */
export function reportSupportedTaskManagementFunctions(ctx: CommandContext): ScsiResponse {
  const { cmd } = ctx;
  const alloc = u32(cmd.cdb, 6);
  if (alloc < 4) throw invalidFieldInCdb(6);
  const repd = (cmd.cdb[2]! & 0x80) !== 0;
  const data = Buffer.alloc(repd ? 16 : 4);
  // ATS, ATSS, CTSS, LURS, TRS (ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LU RESET, TARGET RESET); no CLEAR ACA.
  data[0] = 0x80 | 0x40 | 0x10 | 0x08 | 0x02;
  data[1] = 0x01; // ITNRS: I_T NEXUS RESET (iSCSI session reinstatement)
  if (repd) data[3] = 0x0c; // ADDITIONAL DATA LENGTH
  return dataIn(cmd, data, alloc);
}

/** Reservation commands: straight to the reservation manager (src/scsi/pr.ts). */
export function persistentReserveIn(ctx: CommandContext): ScsiResponse {
  return ctx.lu.reservations.persistentReserveIn(ctx.cmd.nexus, ctx.cmd.cdb);
}
export function persistentReserveOut(ctx: CommandContext): Promise<ScsiResponse> {
  return ctx.lu.reservations.persistentReserveOut(ctx.cmd.nexus, ctx.cmd.cdb, ctx.cmd.dataOut, ctx.signal);
}
export function reserve(ctx: CommandContext): Promise<ScsiResponse> {
  return ctx.lu.reservations.reserve(ctx.cmd.nexus, ctx.cmd.cdb);
}
export function release(ctx: CommandContext): Promise<ScsiResponse> {
  return ctx.lu.reservations.release(ctx.cmd.nexus, ctx.cmd.cdb);
}
