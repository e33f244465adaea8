// The one operation code table. Each entry carries every property of its command — CDB usage data,
// handler, unit attention and reservation behaviour — and everything else is derived from it: dispatch
// (lu.ts), REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35), the reservation checks (pr.ts) and the
// answers for a LUN without a logical unit (device.ts), so none of them can disagree.
import { decodeRsoc, serviceActionOf } from './cdb.js';
import type { CommandContext, CommandHandler, LogicalUnitView } from './handler.js';
import { dataIn } from './respond.js';
import * as sbc from './sbc.js';
import { invalidFieldInCdb } from './sense.js';
import * as spc from './spc.js';
import * as xcopy from './xcopy.js';
import { IoKind, type ScsiCommand, type ScsiResponse } from './types.js';

/**
 * How a command from an I_T nexus that is not a reservation holder fares under a persistent reservation
 * (SPC-4 §5.13.1 Table 55 for SPC commands, SBC-3 §4.17 Table 13 for SBC commands):
 * - 'allowed': allowed under every reservation type;
 * - 'read': reads the medium or device state — allowed under Write Exclusive, conflicts under Exclusive
 *   Access (and their registrants-only / all-registrants forms, for an unregistered I_T nexus);
 * - 'write': modifies the medium or device state — conflicts under both;
 * - 'own': PERSISTENT RESERVE IN/OUT, RESERVE, RELEASE, which apply their own rules (pr.ts).
 * A registered I_T nexus under a registrants-only or all-registrants type is allowed everything (Table 55).
 */
export type ReservationClass = 'allowed' | 'read' | 'write' | 'own';

export interface CommandDescriptor {
  readonly opcode: number;
  /** Service action for opcodes that have them (byte 1 bits 4..0). */
  readonly serviceAction?: number;
  /** Name from SPC-4 / SBC-3. */
  readonly name: string;
  /** SPC-4 §6.35.3 CDB USAGE DATA: byte 0 = opcode, then a bit mask of the bits the device server evaluates. */
  readonly cdbUsage: readonly number[];
  readonly handler: CommandHandler;
  /** Table 55 / Table 13 class; a function of the CDB where the tables split one command by its fields. */
  readonly reservation: ReservationClass | ((cdb: Buffer) => ReservationClass);
  /** Allowed from another I_T nexus while an SPC-2 RESERVE is held (SPC-2 §5.5.1 Table 10). */
  readonly allowedUnderReserve?: boolean;
  /** Not blocked by, and does not consume, a pending unit attention (SPC-4 §5.14). */
  readonly unitAttentionExempt?: boolean;
  /**
   * The answer for a LUN that has no logical unit, for the commands that have one (SPC-4 §6.6.2 INQUIRY
   * with PERIPHERAL QUALIFIER 011b, §6.39 REQUEST SENSE, §6.33 REPORT LUNS); every other command gets
   * LOGICAL UNIT NOT SUPPORTED.
   */
  readonly withoutLogicalUnit?: (cmd: ScsiCommand, luns: readonly number[]) => ScsiResponse;
  /** Modifies the medium (maps store errors to write errors). */
  readonly writes?: boolean;
  /** Offered only when true for the LU (e.g. UNMAP on thin provisioned LUs). */
  readonly available?: (lu: LogicalUnitView) => boolean;
  /** Recommended command timeout, seconds (SPC-4 §6.35.4). */
  readonly timeout?: number;
  /** What the command does to the data, for the LU's statistics (per-LU metrics); absent: IoKind.Other. */
  readonly io?: IoKind;
}

const thin = (lu: LogicalUnitView): boolean => lu.thinProvisioned;

// Usage masks: control byte 0x00 (no NACA/LINK support).
const RW10 = [0xfa, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x00];
const RW12 = [0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00];
const RW16 = [0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00];
const V10 = [0xf6, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x00];
const V12 = [0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00];
const V16 = [0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00];
const SC10 = [0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x00];
const SC16 = [0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00];
const SAI16 = (sa: number): number[] => [sa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00];
const MI = (sa: number, b2 = 0x00): number[] => [sa, b2, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00];
const PRIN = (sa: number): number[] => [sa, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00];

type Extra = Partial<Omit<CommandDescriptor, 'opcode' | 'serviceAction' | 'name' | 'cdbUsage' | 'handler' | 'reservation'>>;

/** What a table entry gives after its operation code (and service action). */
type EntryArgs = [
  name: string,
  usage: readonly number[],
  handler: CommandHandler,
  reservation: CommandDescriptor['reservation'],
  extra?: Extra,
];

function cmd(opcode: number, ...[name, usage, handler, reservation, extra = {}]: EntryArgs): CommandDescriptor {
  return { opcode, name, cdbUsage: [opcode, ...usage], handler, reservation, ...extra };
}

/** An operation code with a SERVICE ACTION field (SPC-4 §4.2.5.1): one entry per service action. */
function sa(opcode: number, serviceAction: number, ...args: EntryArgs): CommandDescriptor {
  return { ...cmd(opcode, ...args), serviceAction };
}

const W = { writes: true, io: IoKind.Write } as const;
const R = { io: IoKind.Read } as const;
const FLUSH = { io: IoKind.Flush } as const;

/** SBC-3 Table 13: START STOP UNIT with START=1 and POWER CONDITION=0 is allowed; any other form conflicts. */
const startStopUnitClass = (cdb: Buffer): ReservationClass => (((cdb[4] ?? 0) & 0xf1) === 0x01 ? 'allowed' : 'write');
/** SPC-4 Table 55: PREVENT ALLOW MEDIUM REMOVAL with PREVENT=00b is allowed; preventing removal conflicts. */
const preventAllowClass = (cdb: Buffer): ReservationClass => (((cdb[4] ?? 0) & 0x03) === 0 ? 'allowed' : 'write');

/** Every command Lunar implements, by opcode then service action. */
export const COMMANDS: readonly CommandDescriptor[] = [
  cmd(0x00, 'TEST UNIT READY', [0x00, 0x00, 0x00, 0x00, 0x00], spc.testUnitReady, 'allowed'),
  cmd(0x03, 'REQUEST SENSE', [0x01, 0x00, 0x00, 0xff, 0x00], spc.requestSense, 'allowed', {
    unitAttentionExempt: true,
    allowedUnderReserve: true,
    withoutLogicalUnit: spc.requestSenseNoLun,
  }),
  cmd(0x08, 'READ(6)', [0x1f, 0xff, 0xff, 0xff, 0x00], sbc.read, 'read', R),
  cmd(0x0a, 'WRITE(6)', [0x1f, 0xff, 0xff, 0xff, 0x00], sbc.write, 'write', W),
  cmd(0x12, 'INQUIRY', [0x01, 0xff, 0xff, 0xff, 0x00], spc.inquiry, 'allowed', {
    unitAttentionExempt: true,
    allowedUnderReserve: true,
    withoutLogicalUnit: spc.inquiryNoLun,
  }),
  cmd(0x15, 'MODE SELECT(6)', [0x11, 0x00, 0x00, 0xff, 0x00], spc.modeSelect, 'write'),
  cmd(0x16, 'RESERVE(6)', [0x00, 0x00, 0x00, 0x00, 0x00], spc.reserve, 'own'),
  cmd(0x17, 'RELEASE(6)', [0x00, 0x00, 0x00, 0x00, 0x00], spc.release, 'own', { allowedUnderReserve: true }),
  cmd(0x1a, 'MODE SENSE(6)', [0x08, 0xff, 0xff, 0xff, 0x00], spc.modeSense, 'read'),
  cmd(0x1b, 'START STOP UNIT', [0x01, 0x00, 0x0f, 0xf7, 0x00], spc.startStopUnit, startStopUnitClass),
  cmd(0x1e, 'PREVENT ALLOW MEDIUM REMOVAL', [0x00, 0x00, 0x00, 0x03, 0x00], spc.preventAllowMediumRemoval, preventAllowClass),
  cmd(0x25, 'READ CAPACITY(10)', [0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x01, 0x00], sbc.readCapacity10, 'allowed'),
  cmd(0x28, 'READ(10)', RW10, sbc.read, 'read', R),
  cmd(0x2a, 'WRITE(10)', RW10, sbc.write, 'write', W),
  cmd(0x2e, 'WRITE AND VERIFY(10)', V10, sbc.write, 'write', W),
  cmd(0x2f, 'VERIFY(10)', V10, sbc.verify, 'read'),
  cmd(0x34, 'PRE-FETCH(10)', SC10, sbc.preFetch, 'read'),
  cmd(0x35, 'SYNCHRONIZE CACHE(10)', SC10, sbc.synchronizeCache, 'write', FLUSH),
  cmd(0x37, 'READ DEFECT DATA(10)', [0x00, 0x1f, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00], sbc.readDefectData, 'read'),
  cmd(0x41, 'WRITE SAME(10)', [0xf8, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x00], sbc.writeSame, 'write', W),
  cmd(0x42, 'UNMAP', [0x01, 0x00, 0x00, 0x00, 0x00, 0x1f, 0xff, 0xff, 0x00], sbc.unmap, 'write', {
    writes: true,
    io: IoKind.Unmap,
    available: thin,
  }),
  cmd(0x55, 'MODE SELECT(10)', [0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00], spc.modeSelect, 'write'),
  cmd(0x56, 'RESERVE(10)', [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], spc.reserve, 'own'),
  cmd(0x57, 'RELEASE(10)', [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], spc.release, 'own', { allowedUnderReserve: true }),
  cmd(0x5a, 'MODE SENSE(10)', [0x18, 0xff, 0xff, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00], spc.modeSense, 'read'),
  ...[0, 1, 2, 3].map((s) =>
    sa(
      0x5e,
      s,
      [
        'PERSISTENT RESERVE IN/READ KEYS',
        'PERSISTENT RESERVE IN/READ RESERVATION',
        'PERSISTENT RESERVE IN/REPORT CAPABILITIES',
        'PERSISTENT RESERVE IN/READ FULL STATUS',
      ][s]!,
      PRIN(s),
      spc.persistentReserveIn,
      'own',
    ),
  ),
  ...[0, 1, 2, 3, 4, 5, 6, 7].map((s) =>
    sa(
      0x5f,
      s,
      `PERSISTENT RESERVE OUT/${['REGISTER', 'RESERVE', 'RELEASE', 'CLEAR', 'PREEMPT', 'PREEMPT AND ABORT', 'REGISTER AND IGNORE EXISTING KEY', 'REGISTER AND MOVE'][s]}`,
      [s, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00],
      spc.persistentReserveOut,
      'own',
    ),
  ),
  sa(
    0x83,
    0x00,
    'EXTENDED COPY(LID1)',
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00],
    xcopy.extendedCopy,
    'write',
    { writes: true }, // its Data-Out is the parameter list, not data: counted as other
  ),
  sa(
    0x84,
    0x00,
    'RECEIVE COPY RESULTS/COPY STATUS',
    [0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00],
    xcopy.receiveCopyResultsCopyStatus,
    'read',
  ),
  sa(
    0x84,
    0x03,
    'RECEIVE COPY RESULTS/OPERATING PARAMETERS',
    [0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00],
    xcopy.receiveCopyResultsOperatingParameters,
    'read',
  ),
  cmd(0x88, 'READ(16)', RW16, sbc.read, 'read', R),
  cmd(
    0x89,
    'COMPARE AND WRITE',
    [0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0xff, 0x1f, 0x00],
    sbc.compareAndWrite,
    'write',
    W,
  ),
  cmd(0x8a, 'WRITE(16)', RW16, sbc.write, 'write', W),
  cmd(0x8b, 'ORWRITE(16)', RW16, sbc.orWrite, 'write', W),
  cmd(0x8e, 'WRITE AND VERIFY(16)', V16, sbc.write, 'write', W),
  cmd(0x8f, 'VERIFY(16)', V16, sbc.verify, 'read'),
  cmd(0x90, 'PRE-FETCH(16)', SC16, sbc.preFetch, 'read'),
  cmd(0x91, 'SYNCHRONIZE CACHE(16)', SC16, sbc.synchronizeCache, 'write', FLUSH),
  cmd(
    0x93,
    'WRITE SAME(16)',
    [0xf9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00],
    sbc.writeSame,
    'write',
    W,
  ),
  sa(0x9e, 0x10, 'READ CAPACITY(16)', SAI16(0x10), sbc.readCapacity16, 'allowed'),
  sa(0x9e, 0x12, 'GET LBA STATUS', SAI16(0x12), sbc.getLbaStatus, 'read', { available: thin }),
  cmd(
    0xa0,
    'REPORT LUNS',
    [0x00, 0xff, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00],
    (ctx) => spc.reportLuns(ctx.cmd, ctx.device.luns()),
    'allowed',
    { unitAttentionExempt: true, allowedUnderReserve: true, withoutLogicalUnit: spc.reportLuns },
  ),
  sa(0xa3, 0x0a, 'REPORT TARGET PORT GROUPS', MI(0xea), spc.reportTargetPortGroups, 'allowed', { allowedUnderReserve: true }),
  sa(
    0xa3,
    0x0c,
    'REPORT SUPPORTED OPERATION CODES',
    MI(0x0c, 0x87).map((v, i) => (i >= 2 && i <= 4 ? 0xff : v)),
    reportSupportedOperationCodes,
    'allowed',
  ),
  sa(0xa3, 0x0d, 'REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS', MI(0x0d, 0x80), spc.reportSupportedTaskManagementFunctions, 'allowed'),
  cmd(0xa8, 'READ(12)', RW12, sbc.read, 'read', R),
  cmd(0xaa, 'WRITE(12)', RW12, sbc.write, 'write', W),
  cmd(0xae, 'WRITE AND VERIFY(12)', V12, sbc.write, 'write', W),
  cmd(0xaf, 'VERIFY(12)', V12, sbc.verify, 'read'),
  cmd(0xb7, 'READ DEFECT DATA(12)', [0x1f, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00], sbc.readDefectData, 'read'),
];

/** Opcodes that carry a service action in byte 1. */
const HAS_SERVICE_ACTION = new Set(COMMANDS.filter((c) => c.serviceAction !== undefined).map((c) => c.opcode));

const BY_KEY = new Map<number, CommandDescriptor>(COMMANDS.map((c) => [c.opcode * 256 + (c.serviceAction ?? 0), c]));

/** The table entry for a CDB's opcode (and service action), whatever a LU offers; undefined when not listed. */
export function commandFor(cdb: Buffer): CommandDescriptor | undefined {
  const opcode = cdb[0];
  if (opcode === undefined) return undefined;
  return BY_KEY.get(opcode * 256 + (HAS_SERVICE_ACTION.has(opcode) ? serviceActionOf(cdb) : 0));
}

/** The statistics kind of a CDB (IoKind.Other for commands outside the table). */
export function ioKindOf(cdb: Buffer): IoKind {
  return commandFor(cdb)?.io ?? IoKind.Other;
}

/** The descriptor for a CDB on this LU; 'invalid-service-action' for a known opcode with an unknown SA. */
export function lookupCommand(cdb: Buffer, lu: LogicalUnitView): CommandDescriptor | 'invalid-service-action' | undefined {
  const d = commandFor(cdb);
  const hasSa = HAS_SERVICE_ACTION.has(cdb[0]!);
  if (!d) return hasSa ? 'invalid-service-action' : undefined;
  if (d.available && !d.available(lu)) return hasSa ? 'invalid-service-action' : undefined;
  return d;
}

/**
 * The Table 55 / Table 13 class of a CDB, from its table entry. A CDB that is not in the table is treated
 * as modifying ('write'); the LU refuses such a CDB (INVALID COMMAND OPERATION CODE or INVALID FIELD IN
 * CDB) before it checks reservations, so that answer only reaches direct callers of the reservation check.
 */
export function reservationClass(cdb: Buffer): ReservationClass {
  const d = commandFor(cdb);
  if (!d) return 'write';
  return typeof d.reservation === 'function' ? d.reservation(cdb) : d.reservation;
}

/** May another I_T nexus send this CDB while an SPC-2 RESERVE is held (SPC-2 §5.5.1 Table 10)? */
export function allowedUnderReserve(cdb: Buffer): boolean {
  return commandFor(cdb)?.allowedUnderReserve === true;
}

/** Commands supported by this LU (REPORT SUPPORTED OPERATION CODES "all"). */
export function supportedCommands(lu: LogicalUnitView): CommandDescriptor[] {
  return COMMANDS.filter((c) => !c.available || c.available(lu));
}

/** Recommended command timeout reported for commands without their own (initiators abort after it). */
export const DEFAULT_TIMEOUT_SECONDS = 30;

/** SPC-4 §6.35.4 command timeouts descriptor (12 bytes). */
function timeoutsDescriptor(d: CommandDescriptor): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(0x0a, 0); // DESCRIPTOR LENGTH
  b.writeUInt32BE(0, 4); // NOMINAL COMMAND PROCESSING TIMEOUT: not specified
  b.writeUInt32BE(d.timeout ?? DEFAULT_TIMEOUT_SECONDS, 8); // RECOMMENDED COMMAND TIMEOUT
  return b;
}

/** SPC-4 §6.35 REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN, SA 0Ch). */
export function reportSupportedOperationCodes(ctx: CommandContext): ScsiResponse {
  const { cmd: c, lu } = ctx;
  const r = decodeRsoc(c.cdb);
  let data: Buffer;
  switch (r.reportingOptions) {
    case 0: {
      // all_commands parameter data: 8-byte descriptors (+12 with RCTD)
      const list = supportedCommands(lu);
      const size = r.rctd ? 20 : 8;
      data = Buffer.alloc(4 + size * list.length);
      data.writeUInt32BE(size * list.length, 0);
      list.forEach((d, i) => {
        const off = 4 + size * i;
        data[off] = d.opcode;
        data.writeUInt16BE(d.serviceAction ?? 0, off + 2);
        data[off + 5] = (r.rctd ? 0x02 : 0) | (d.serviceAction !== undefined ? 0x01 : 0); // CTDP, SERVACTV
        data.writeUInt16BE(d.cdbUsage.length, off + 6);
        if (r.rctd) timeoutsDescriptor(d).copy(data, off + 8);
      });
      break;
    }
    case 1:
    case 2:
    case 3: {
      const hasSa = HAS_SERVICE_ACTION.has(r.opcode);
      // Option 1: opcode without service actions; option 2: opcode + service action; 3: either.
      if (r.reportingOptions === 1 && hasSa) throw invalidFieldInCdb(2);
      if (r.reportingOptions === 2 && !hasSa) throw invalidFieldInCdb(2);
      const want = hasSa ? r.serviceAction : 0;
      if (hasSa && r.reportingOptions !== 1 && r.serviceAction > 0x1f) throw invalidFieldInCdb(4);
      const d = supportedCommands(lu).find((x) => x.opcode === r.opcode && (x.serviceAction ?? 0) === want);
      if (!d) {
        data = Buffer.alloc(4);
        data[1] = 0x01; // SUPPORT 001b: not supported
        break;
      }
      const usage = Buffer.from(d.cdbUsage);
      data = Buffer.alloc(4 + usage.length + (r.rctd ? 12 : 0));
      data[1] = (r.rctd ? 0x80 : 0) | 0x03; // CTDP, SUPPORT 011b: supported in conformance with a standard
      data.writeUInt16BE(usage.length, 2);
      usage.copy(data, 4);
      if (r.rctd) timeoutsDescriptor(d).copy(data, 4 + usage.length);
      break;
    }
    default:
      throw invalidFieldInCdb(2, 2);
  }
  return dataIn(c, data, r.allocationLength);
}
