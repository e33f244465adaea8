// iSCSI PDU Basic Header Segment codec (RFC 7143 §11). One small pure function per opcode.
// Decoders take the BHS (48 bytes) plus the AHS bytes and never throw anything but IscsiProtocolError.
import { IscsiProtocolError, RejectReason } from './errors.js';

export const BHS_LENGTH = 48;
/** ITT/TTT value meaning "none" (RFC 7143 §11.18.2). */
export const RESERVED_TAG = 0xffffffff;
/** Largest DataSegmentLength representable (24 bits, RFC 7143 §11.2.1). */
export const MAX_DATA_SEGMENT_LENGTH = 0xffffff;

/** RFC 7143 §11.2.1.2 opcodes. */
export const Opcode = {
  NOP_OUT: 0x00,
  SCSI_COMMAND: 0x01,
  TASK_MGMT_REQUEST: 0x02,
  LOGIN_REQUEST: 0x03,
  TEXT_REQUEST: 0x04,
  SCSI_DATA_OUT: 0x05,
  LOGOUT_REQUEST: 0x06,
  SNACK_REQUEST: 0x10,
  NOP_IN: 0x20,
  SCSI_RESPONSE: 0x21,
  TASK_MGMT_RESPONSE: 0x22,
  LOGIN_RESPONSE: 0x23,
  TEXT_RESPONSE: 0x24,
  SCSI_DATA_IN: 0x25,
  LOGOUT_RESPONSE: 0x26,
  R2T: 0x31,
  ASYNC_MESSAGE: 0x32,
  REJECT: 0x3f,
} as const;
export type OpcodeValue = (typeof Opcode)[keyof typeof Opcode];

const INITIATOR_OPCODES: ReadonlySet<number> = new Set([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10]);
const TARGET_OPCODES: ReadonlySet<number> = new Set([0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x31, 0x32, 0x3f]);
export function isInitiatorOpcode(op: number): boolean {
  return INITIATOR_OPCODES.has(op);
}
export function isTargetOpcode(op: number): boolean {
  return TARGET_OPCODES.has(op);
}

/** RFC 7143 §11.2.1.1 AHS types. */
export const AhsType = { EXTENDED_CDB: 1, BIDI_READ_LENGTH: 2 } as const;

/** The fields every BHS has (RFC 7143 §11.2.1). */
export interface BhsPrefix {
  readonly opcode: number;
  readonly immediate: boolean;
  /** TotalAHSLength in 4-byte words. */
  readonly totalAhsLength: number;
  readonly dataSegmentLength: number;
}

/** Read opcode, I bit, TotalAHSLength and DataSegmentLength without decoding the rest (RFC 7143 §11.2.1). */
export function readBhsPrefix(buf: Buffer): BhsPrefix {
  if (buf.length < BHS_LENGTH) throw new IscsiProtocolError(`BHS shorter than 48 bytes (${buf.length})`, RejectReason.PROTOCOL_ERROR, true);
  return {
    opcode: buf[0]! & 0x3f,
    immediate: (buf[0]! & 0x40) !== 0,
    totalAhsLength: buf[4]!,
    dataSegmentLength: buf.readUIntBE(5, 3),
  };
}

/** Padding needed to reach a 4-byte boundary (RFC 7143 §11.1). */
export function pad4(n: number): number {
  return (4 - (n & 3)) & 3;
}

// ---------------------------------------------------------------- LUN (SAM-5 §4.7, RFC 7143 §11.2.1.3)

// Why the caches below: every BigInt operation allocates, and a command's LUN field went through about
// a dozen (read, decodeLun, write into its Data-In and status), ~2 % of a 4 KiB READ's instructions
// (callgrind). A session addresses one LUN or a few, so the last value decides almost always.

/** LUN fields whose bytes 2-7 are zero (every LUN we address), by bytes 0-1. */
const LUN_FIELDS = new Map<number, bigint>();
let lastDecodedField = -1n;
let lastDecodedLun = -1;
let lastEncodedField = 0n;
let lastEncodedHigh = 0;
let lastEncodedLow = 0;

/** The 8-byte LUN field at o, as a bigint (the usual forms without allocating). */
function readLunField(b: Buffer, o: number): bigint {
  if ((b[o + 2]! | b[o + 3]! | b[o + 4]! | b[o + 5]! | b[o + 6]! | b[o + 7]!) !== 0) return b.readBigUInt64BE(o);
  const k = (b[o]! << 8) | b[o + 1]!;
  let v = LUN_FIELDS.get(k);
  if (v === undefined) LUN_FIELDS.set(k, (v = BigInt(k) << 48n));
  return v;
}

/** Write a LUN field (0 ≤ field < 2^64, else RangeError) at o. */
function writeLunField(b: Buffer, o: number, field: bigint): void {
  if (field !== lastEncodedField) {
    if (field < 0n || field > 0xffffffffffffffffn) throw new RangeError(`LUN field ${field} out of range`);
    lastEncodedHigh = Number(field >> 32n);
    lastEncodedLow = Number(field & 0xffffffffn);
    lastEncodedField = field;
  }
  w32(b, o, lastEncodedHigh);
  w32(b, o + 4, lastEncodedLow);
}

/** 8-byte LUN field → LUN number (peripheral and flat addressing); -1 for formats we do not address. */
export function decodeLun(raw: bigint): number {
  if (raw === lastDecodedField) return lastDecodedLun;
  const lun = decodeLunField(raw);
  lastDecodedField = raw;
  lastDecodedLun = lun;
  return lun;
}

function decodeLunField(raw: bigint): number {
  const b0 = Number((raw >> 56n) & 0xffn);
  const b1 = Number((raw >> 48n) & 0xffn);
  const rest = raw & 0xffffffffffffn;
  if (rest !== 0n) return -1;
  const method = b0 >> 6;
  if (method === 0) return (b0 & 0x3f) === 0 ? b1 : -1; // peripheral device addressing, bus 0
  if (method === 1) return ((b0 & 0x3f) << 8) | b1; // flat space addressing
  return -1;
}

/** LUN number → 8-byte LUN field: peripheral addressing below 256, flat above (SAM-5 §4.7.7, §4.7.8). */
export function encodeLun(lun: number): bigint {
  if (lun < 0 || lun > 0x3fff) throw new RangeError(`LUN ${lun} out of range`);
  if (lun < 256) return BigInt(lun) << 48n;
  return BigInt(0x4000 | lun) << 48n;
}

// ---------------------------------------------------------------- PDU types

interface Common {
  /** Data segment length in bytes (before padding). */
  dataSegmentLength: number;
}

/** RFC 7143 §11.18 NOP-Out. */
export interface NopOut extends Common {
  opcode: 0x00;
  immediate: boolean;
  lun: bigint;
  initiatorTaskTag: number;
  targetTransferTag: number;
  cmdSN: number;
  expStatSN: number;
}
/** RFC 7143 §11.3 SCSI Command. */
export interface ScsiCommandPdu extends Common {
  opcode: 0x01;
  immediate: boolean;
  final: boolean;
  read: boolean;
  write: boolean;
  /** ATTR (3 bits, §11.3.1.1). */
  attr: number;
  lun: bigint;
  initiatorTaskTag: number;
  expectedDataTransferLength: number;
  cmdSN: number;
  expStatSN: number;
  /** The full CDB: BHS bytes 32-47 plus the extended-CDB AHS, when present. */
  cdb: Buffer;
  /** ExpectedBidirectionalReadDataLength from the AHS (§11.3.5), when present. */
  bidiReadLength: number | null;
}
/** RFC 7143 §11.5 Task Management Function Request. */
export interface TaskMgmtRequest extends Common {
  opcode: 0x02;
  immediate: boolean;
  function: number;
  lun: bigint;
  initiatorTaskTag: number;
  referencedTaskTag: number;
  cmdSN: number;
  expStatSN: number;
  refCmdSN: number;
  expDataSN: number;
}
/** RFC 7143 §11.12 Login Request. */
export interface LoginRequest extends Common {
  opcode: 0x03;
  transit: boolean;
  continue: boolean;
  csg: number;
  nsg: number;
  versionMax: number;
  versionMin: number;
  /** ISID, 6 bytes as 12 lower-case hex digits. */
  isid: string;
  tsih: number;
  initiatorTaskTag: number;
  cid: number;
  cmdSN: number;
  expStatSN: number;
}
/** RFC 7143 §11.10 Text Request. */
export interface TextRequest extends Common {
  opcode: 0x04;
  immediate: boolean;
  final: boolean;
  continue: boolean;
  lun: bigint;
  initiatorTaskTag: number;
  targetTransferTag: number;
  cmdSN: number;
  expStatSN: number;
}
/** RFC 7143 §11.7 SCSI Data-Out. */
export interface DataOut extends Common {
  opcode: 0x05;
  final: boolean;
  lun: bigint;
  initiatorTaskTag: number;
  targetTransferTag: number;
  expStatSN: number;
  dataSN: number;
  bufferOffset: number;
}
/** RFC 7143 §11.14 Logout Request. */
export interface LogoutRequest extends Common {
  opcode: 0x06;
  immediate: boolean;
  reasonCode: number;
  initiatorTaskTag: number;
  cid: number;
  cmdSN: number;
  expStatSN: number;
}
/** RFC 7143 §11.16 SNACK Request. */
export interface SnackRequest extends Common {
  opcode: 0x10;
  type: number;
  lun: bigint;
  initiatorTaskTag: number;
  targetTransferTag: number;
  expStatSN: number;
  begRun: number;
  runLength: number;
}
/** RFC 7143 §11.19 NOP-In. */
export interface NopIn extends Common {
  opcode: 0x20;
  lun: bigint;
  initiatorTaskTag: number;
  targetTransferTag: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
}
/** RFC 7143 §11.4 SCSI Response. */
export interface ScsiResponsePdu extends Common {
  opcode: 0x21;
  bidiOverflow: boolean;
  bidiUnderflow: boolean;
  overflow: boolean;
  underflow: boolean;
  response: number;
  status: number;
  initiatorTaskTag: number;
  snackTag: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  expDataSN: number;
  bidiReadResidualCount: number;
  residualCount: number;
}
/** RFC 7143 §11.6 Task Management Function Response. */
export interface TaskMgmtResponse extends Common {
  opcode: 0x22;
  response: number;
  initiatorTaskTag: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
}
/** RFC 7143 §11.13 Login Response. */
export interface LoginResponse extends Common {
  opcode: 0x23;
  transit: boolean;
  continue: boolean;
  csg: number;
  nsg: number;
  versionMax: number;
  versionActive: number;
  isid: string;
  tsih: number;
  initiatorTaskTag: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  statusClass: number;
  statusDetail: number;
}
/** RFC 7143 §11.11 Text Response. */
export interface TextResponse extends Common {
  opcode: 0x24;
  final: boolean;
  continue: boolean;
  lun: bigint;
  initiatorTaskTag: number;
  targetTransferTag: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
}
/** RFC 7143 §11.7 SCSI Data-In. */
export interface DataIn extends Common {
  opcode: 0x25;
  final: boolean;
  acknowledge: boolean;
  overflow: boolean;
  underflow: boolean;
  statusPresent: boolean;
  status: number;
  lun: bigint;
  initiatorTaskTag: number;
  targetTransferTag: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  dataSN: number;
  bufferOffset: number;
  residualCount: number;
}
/** RFC 7143 §11.15 Logout Response. */
export interface LogoutResponse extends Common {
  opcode: 0x26;
  response: number;
  initiatorTaskTag: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  time2Wait: number;
  time2Retain: number;
}
/** RFC 7143 §11.8 Ready To Transfer. */
export interface R2T extends Common {
  opcode: 0x31;
  lun: bigint;
  initiatorTaskTag: number;
  targetTransferTag: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  r2tSN: number;
  bufferOffset: number;
  desiredDataTransferLength: number;
}
/** RFC 7143 §11.9 Asynchronous Message. */
export interface AsyncMessage extends Common {
  opcode: 0x32;
  lun: bigint;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  asyncEvent: number;
  asyncVCode: number;
  parameter1: number;
  parameter2: number;
  parameter3: number;
}
/** RFC 7143 §11.17 Reject. */
export interface Reject extends Common {
  opcode: 0x3f;
  reason: number;
  statSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  dataSN: number;
}

export type InitiatorPdu = NopOut | ScsiCommandPdu | TaskMgmtRequest | LoginRequest | TextRequest | DataOut | LogoutRequest | SnackRequest;
export type TargetPdu =
  NopIn | ScsiResponsePdu | TaskMgmtResponse | LoginResponse | TextResponse | DataIn | LogoutResponse | R2T | AsyncMessage | Reject;
export type Pdu = InitiatorPdu | TargetPdu;

// ---------------------------------------------------------------- helpers

function u32(b: Buffer, o: number): number {
  return b.readUInt32BE(o);
}
function isidHex(b: Buffer): string {
  return b.toString('hex', 8, 14);
}
function writeIsid(b: Buffer, isid: string): void {
  if (!/^[0-9a-f]{12}$/i.test(isid)) throw new RangeError(`ISID must be 12 hex digits: ${isid}`);
  b.write(isid, 8, 6, 'hex');
}
function header(opcode: number, immediate: boolean, flags: number, ahsWords: number, dsl: number): Buffer {
  if (dsl < 0 || dsl > MAX_DATA_SEGMENT_LENGTH) throw new RangeError(`DataSegmentLength ${dsl} out of range`);
  // allocUnsafe takes small buffers from Node's shared pool (no new ArrayBuffer per PDU); zero it ourselves.
  const b = Buffer.allocUnsafe(BHS_LENGTH + ahsWords * 4).fill(0);
  b[0] = (immediate ? 0x40 : 0) | opcode;
  b[1] = flags;
  b[4] = ahsWords;
  b.writeUIntBE(dsl, 5, 3);
  return b;
}

// ---------------------------------------------------------------- AHS (RFC 7143 §11.2.2)

interface ParsedAhs {
  extendedCdb: Buffer | null;
  bidiReadLength: number | null;
}

/** Walk the AHS list (RFC 7143 §11.2.2); every entry is 3 + AHSLength bytes, padded to 4. */
function parseAhs(buf: Buffer, totalAhsWords: number): ParsedAhs {
  const end = BHS_LENGTH + totalAhsWords * 4;
  if (buf.length < end) throw new IscsiProtocolError('AHS truncated', RejectReason.PROTOCOL_ERROR, true);
  const out: ParsedAhs = { extendedCdb: null, bidiReadLength: null };
  let o = BHS_LENGTH;
  while (o < end) {
    if (end - o < 4) throw new IscsiProtocolError('AHS entry truncated', RejectReason.INVALID_PDU_FIELD);
    const len = buf.readUInt16BE(o);
    const type = buf[o + 2]!;
    const size = 3 + len + pad4(3 + len);
    if (len === 0 || o + size > end)
      throw new IscsiProtocolError(`AHS length ${len} does not fit TotalAHSLength`, RejectReason.INVALID_PDU_FIELD);
    if (type === AhsType.EXTENDED_CDB) {
      if (out.extendedCdb) throw new IscsiProtocolError('two extended-CDB AHS', RejectReason.INVALID_PDU_FIELD);
      out.extendedCdb = buf.subarray(o + 4, o + 3 + len); // §11.3.4: one reserved byte, then CDB bytes 16..
    } else if (type === AhsType.BIDI_READ_LENGTH) {
      if (len !== 5) throw new IscsiProtocolError('bidirectional read AHS length must be 5', RejectReason.INVALID_PDU_FIELD);
      out.bidiReadLength = buf.readUInt32BE(o + 4);
    } else {
      throw new IscsiProtocolError(`unknown AHS type ${type}`, RejectReason.INVALID_PDU_FIELD);
    }
    o += size;
  }
  return out;
}

/** AHS bytes for a SCSI Command (extended CDB §11.3.4, bidi read length §11.3.5). */
function encodeCommandAhs(cdb: Buffer, bidi: number | null): Buffer {
  const parts: Buffer[] = [];
  if (cdb.length > 16) {
    const len = cdb.length - 16 + 1;
    const a = Buffer.alloc(3 + len + pad4(3 + len));
    a.writeUInt16BE(len, 0);
    a[2] = AhsType.EXTENDED_CDB;
    cdb.copy(a, 4, 16);
    parts.push(a);
  }
  if (bidi !== null) {
    const a = Buffer.alloc(8);
    a.writeUInt16BE(5, 0);
    a[2] = AhsType.BIDI_READ_LENGTH;
    a.writeUInt32BE(bidi >>> 0, 4);
    parts.push(a);
  }
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------- decode

/**
 * Decode a BHS (+ AHS) into a PDU (RFC 7143 §11). `buf` holds exactly or at least 48 + 4*TotalAHSLength
 * bytes. Throws IscsiProtocolError for anything malformed; never anything else.
 */
export function decodePdu(buf: Buffer): Pdu {
  const p = readBhsPrefix(buf);
  try {
    return decodeKnown(buf, p);
  } catch (e) {
    if (e instanceof IscsiProtocolError) throw e;
    throw new IscsiProtocolError(`malformed PDU: ${(e as Error).message}`, RejectReason.INVALID_PDU_FIELD);
  }
}

function noAhs(p: BhsPrefix, name: string): void {
  if (p.totalAhsLength !== 0) throw new IscsiProtocolError(`${name} carries no AHS`, RejectReason.INVALID_PDU_FIELD);
}

/**
 * StatSN, ExpCmdSN, MaxCmdSN (bytes 24-35) of a target PDU, and LUN, ITT, TTT (bytes 8-23): read by
 * the target-PDU decoders only (the initiator side of tests and tools); the decoders of what the
 * target receives keep every field inline.
 */
function readStatusSeq(b: Buffer): { statSN: number; expCmdSN: number; maxCmdSN: number } {
  return { statSN: u32(b, 24), expCmdSN: u32(b, 28), maxCmdSN: u32(b, 32) };
}

function readLunTags(b: Buffer): { lun: bigint; initiatorTaskTag: number; targetTransferTag: number } {
  return { lun: readLunField(b, 8), initiatorTaskTag: u32(b, 16), targetTransferTag: u32(b, 20) };
}

function decodeKnown(b: Buffer, p: BhsPrefix): Pdu {
  const dsl = p.dataSegmentLength;
  const f = b[1]!;
  switch (p.opcode) {
    case Opcode.NOP_OUT: // §11.18
      noAhs(p, 'NOP-Out');
      if ((f & 0x80) === 0) throw new IscsiProtocolError('NOP-Out without F bit', RejectReason.INVALID_PDU_FIELD);
      return {
        opcode: 0x00,
        immediate: p.immediate,
        dataSegmentLength: dsl,
        lun: readLunField(b, 8),
        initiatorTaskTag: u32(b, 16),
        targetTransferTag: u32(b, 20),
        cmdSN: u32(b, 24),
        expStatSN: u32(b, 28),
      };
    case Opcode.SCSI_COMMAND: {
      // §11.3
      const ahs = parseAhs(b, p.totalAhsLength);
      const base = b.subarray(32, 48);
      const cdb = ahs.extendedCdb ? Buffer.concat([base, ahs.extendedCdb]) : Buffer.from(base);
      return {
        opcode: 0x01,
        immediate: p.immediate,
        dataSegmentLength: dsl,
        final: (f & 0x80) !== 0,
        read: (f & 0x40) !== 0,
        write: (f & 0x20) !== 0,
        attr: f & 0x07,
        lun: readLunField(b, 8),
        initiatorTaskTag: u32(b, 16),
        expectedDataTransferLength: u32(b, 20),
        cmdSN: u32(b, 24),
        expStatSN: u32(b, 28),
        cdb,
        bidiReadLength: ahs.bidiReadLength,
      };
    }
    case Opcode.TASK_MGMT_REQUEST: // §11.5
      noAhs(p, 'Task Management Request');
      if ((f & 0x80) === 0) throw new IscsiProtocolError('TMF request without F bit', RejectReason.INVALID_PDU_FIELD);
      return {
        opcode: 0x02,
        immediate: p.immediate,
        dataSegmentLength: dsl,
        function: f & 0x7f,
        lun: readLunField(b, 8),
        initiatorTaskTag: u32(b, 16),
        referencedTaskTag: u32(b, 20),
        cmdSN: u32(b, 24),
        expStatSN: u32(b, 28),
        refCmdSN: u32(b, 32),
        expDataSN: u32(b, 36),
      };
    case Opcode.LOGIN_REQUEST: // §11.12
      noAhs(p, 'Login Request');
      return {
        opcode: 0x03,
        dataSegmentLength: dsl,
        transit: (f & 0x80) !== 0,
        continue: (f & 0x40) !== 0,
        csg: (f >> 2) & 3,
        nsg: f & 3,
        versionMax: b[2]!,
        versionMin: b[3]!,
        isid: isidHex(b),
        tsih: b.readUInt16BE(14),
        initiatorTaskTag: u32(b, 16),
        cid: b.readUInt16BE(20),
        cmdSN: u32(b, 24),
        expStatSN: u32(b, 28),
      };
    case Opcode.TEXT_REQUEST: // §11.10
      noAhs(p, 'Text Request');
      return {
        opcode: 0x04,
        immediate: p.immediate,
        dataSegmentLength: dsl,
        final: (f & 0x80) !== 0,
        continue: (f & 0x40) !== 0,
        lun: readLunField(b, 8),
        initiatorTaskTag: u32(b, 16),
        targetTransferTag: u32(b, 20),
        cmdSN: u32(b, 24),
        expStatSN: u32(b, 28),
      };
    case Opcode.SCSI_DATA_OUT: // §11.7
      noAhs(p, 'Data-Out');
      return {
        opcode: 0x05,
        dataSegmentLength: dsl,
        final: (f & 0x80) !== 0,
        lun: readLunField(b, 8),
        initiatorTaskTag: u32(b, 16),
        targetTransferTag: u32(b, 20),
        expStatSN: u32(b, 28),
        dataSN: u32(b, 36),
        bufferOffset: u32(b, 40),
      };
    case Opcode.LOGOUT_REQUEST: // §11.14
      noAhs(p, 'Logout Request');
      if ((f & 0x80) === 0) throw new IscsiProtocolError('Logout without F bit', RejectReason.INVALID_PDU_FIELD);
      return {
        opcode: 0x06,
        immediate: p.immediate,
        dataSegmentLength: dsl,
        reasonCode: f & 0x7f,
        initiatorTaskTag: u32(b, 16),
        cid: b.readUInt16BE(20),
        cmdSN: u32(b, 24),
        expStatSN: u32(b, 28),
      };
    case Opcode.SNACK_REQUEST: // §11.16
      noAhs(p, 'SNACK');
      return {
        opcode: 0x10,
        dataSegmentLength: dsl,
        type: f & 0x0f,
        lun: readLunField(b, 8),
        initiatorTaskTag: u32(b, 16),
        targetTransferTag: u32(b, 20),
        expStatSN: u32(b, 28),
        begRun: u32(b, 40),
        runLength: u32(b, 44),
      };
    case Opcode.NOP_IN: // §11.19
      return {
        opcode: 0x20,
        dataSegmentLength: dsl,
        ...readLunTags(b),
        ...readStatusSeq(b),
      };
    case Opcode.SCSI_RESPONSE: // §11.4
      return {
        opcode: 0x21,
        dataSegmentLength: dsl,
        bidiOverflow: (f & 0x10) !== 0,
        bidiUnderflow: (f & 0x08) !== 0,
        overflow: (f & 0x04) !== 0,
        underflow: (f & 0x02) !== 0,
        response: b[2]!,
        status: b[3]!,
        initiatorTaskTag: u32(b, 16),
        snackTag: u32(b, 20),
        ...readStatusSeq(b),
        expDataSN: u32(b, 36),
        bidiReadResidualCount: u32(b, 40),
        residualCount: u32(b, 44),
      };
    case Opcode.TASK_MGMT_RESPONSE: // §11.6
      return {
        opcode: 0x22,
        dataSegmentLength: dsl,
        response: b[2]!,
        initiatorTaskTag: u32(b, 16),
        ...readStatusSeq(b),
      };
    case Opcode.LOGIN_RESPONSE: // §11.13
      return {
        opcode: 0x23,
        dataSegmentLength: dsl,
        transit: (f & 0x80) !== 0,
        continue: (f & 0x40) !== 0,
        csg: (f >> 2) & 3,
        nsg: f & 3,
        versionMax: b[2]!,
        versionActive: b[3]!,
        isid: isidHex(b),
        tsih: b.readUInt16BE(14),
        initiatorTaskTag: u32(b, 16),
        ...readStatusSeq(b),
        statusClass: b[36]!,
        statusDetail: b[37]!,
      };
    case Opcode.TEXT_RESPONSE: // §11.11
      return {
        opcode: 0x24,
        dataSegmentLength: dsl,
        final: (f & 0x80) !== 0,
        continue: (f & 0x40) !== 0,
        ...readLunTags(b),
        ...readStatusSeq(b),
      };
    case Opcode.SCSI_DATA_IN: // §11.7
      return {
        opcode: 0x25,
        dataSegmentLength: dsl,
        final: (f & 0x80) !== 0,
        acknowledge: (f & 0x40) !== 0,
        overflow: (f & 0x04) !== 0,
        underflow: (f & 0x02) !== 0,
        statusPresent: (f & 0x01) !== 0,
        status: b[3]!,
        ...readLunTags(b),
        ...readStatusSeq(b),
        dataSN: u32(b, 36),
        bufferOffset: u32(b, 40),
        residualCount: u32(b, 44),
      };
    case Opcode.LOGOUT_RESPONSE: // §11.15
      return {
        opcode: 0x26,
        dataSegmentLength: dsl,
        response: b[2]!,
        initiatorTaskTag: u32(b, 16),
        ...readStatusSeq(b),
        time2Wait: b.readUInt16BE(40),
        time2Retain: b.readUInt16BE(42),
      };
    case Opcode.R2T: // §11.8
      return {
        opcode: 0x31,
        dataSegmentLength: dsl,
        ...readLunTags(b),
        ...readStatusSeq(b),
        r2tSN: u32(b, 36),
        bufferOffset: u32(b, 40),
        desiredDataTransferLength: u32(b, 44),
      };
    case Opcode.ASYNC_MESSAGE: // §11.9
      return {
        opcode: 0x32,
        dataSegmentLength: dsl,
        lun: readLunField(b, 8),
        ...readStatusSeq(b),
        asyncEvent: b[36]!,
        asyncVCode: b[37]!,
        parameter1: b.readUInt16BE(38),
        parameter2: b.readUInt16BE(40),
        parameter3: b.readUInt16BE(42),
      };
    case Opcode.REJECT: // §11.17
      return {
        opcode: 0x3f,
        dataSegmentLength: dsl,
        reason: b[2]!,
        ...readStatusSeq(b),
        dataSN: u32(b, 36),
      };
    default:
      throw new IscsiProtocolError(`unknown opcode 0x${p.opcode.toString(16)}`, RejectReason.COMMAND_NOT_SUPPORTED);
  }
}

// ---------------------------------------------------------------- encode

function w32(b: Buffer, o: number, v: number): void {
  b.writeUInt32BE(v >>> 0, o);
}

/** StatSN, ExpCmdSN, MaxCmdSN at bytes 24-35 of every target PDU that carries them (§11.4 ff.). */
function writeStatusSeq(b: Buffer, pdu: { readonly statSN: number; readonly expCmdSN: number; readonly maxCmdSN: number }): void {
  w32(b, 24, pdu.statSN);
  w32(b, 28, pdu.expCmdSN);
  w32(b, 32, pdu.maxCmdSN);
}

/** CmdSN and ExpStatSN at bytes 24-31 of initiator requests (§11.3 ff.). */
function writeCommandSeq(b: Buffer, pdu: { readonly cmdSN: number; readonly expStatSN: number }): void {
  w32(b, 24, pdu.cmdSN);
  w32(b, 28, pdu.expStatSN);
}

/** LUN, Initiator Task Tag and Target Transfer Tag at bytes 8-23 (§11.7, §11.8, §11.10 ff.). */
function writeLunTags(
  b: Buffer,
  pdu: { readonly lun: bigint; readonly initiatorTaskTag: number; readonly targetTransferTag: number },
): void {
  writeLunField(b, 8, pdu.lun);
  w32(b, 16, pdu.initiatorTaskTag);
  w32(b, 20, pdu.targetTransferTag);
}

/** Encode a PDU's BHS (+ AHS) (RFC 7143 §11). The data segment is sent separately. */
export function encodePdu(pdu: Pdu): Buffer {
  const dsl = pdu.dataSegmentLength;
  switch (pdu.opcode) {
    case 0x00: {
      // §11.18
      const b = header(0x00, pdu.immediate, 0x80, 0, dsl);
      writeLunTags(b, pdu);
      writeCommandSeq(b, pdu);
      return b;
    }
    case 0x01: {
      // §11.3
      if (pdu.cdb.length < 16) throw new RangeError('CDB field is 16 bytes minimum');
      const ahs = encodeCommandAhs(pdu.cdb, pdu.bidiReadLength);
      const flags = (pdu.final ? 0x80 : 0) | (pdu.read ? 0x40 : 0) | (pdu.write ? 0x20 : 0) | (pdu.attr & 7);
      const b = header(0x01, pdu.immediate, flags, ahs.length / 4, dsl);
      writeLunField(b, 8, pdu.lun);
      w32(b, 16, pdu.initiatorTaskTag);
      w32(b, 20, pdu.expectedDataTransferLength);
      writeCommandSeq(b, pdu);
      pdu.cdb.copy(b, 32, 0, 16);
      ahs.copy(b, BHS_LENGTH);
      return b;
    }
    case 0x02: {
      // §11.5
      const b = header(0x02, pdu.immediate, 0x80 | (pdu.function & 0x7f), 0, dsl);
      writeLunField(b, 8, pdu.lun);
      w32(b, 16, pdu.initiatorTaskTag);
      w32(b, 20, pdu.referencedTaskTag);
      writeCommandSeq(b, pdu);
      w32(b, 32, pdu.refCmdSN);
      w32(b, 36, pdu.expDataSN);
      return b;
    }
    case 0x03: {
      // §11.12 (the I bit is always 1 on a Login Request)
      const b = header(0x03, true, (pdu.transit ? 0x80 : 0) | (pdu.continue ? 0x40 : 0) | ((pdu.csg & 3) << 2) | (pdu.nsg & 3), 0, dsl);
      b[2] = pdu.versionMax;
      b[3] = pdu.versionMin;
      writeIsid(b, pdu.isid);
      b.writeUInt16BE(pdu.tsih, 14);
      w32(b, 16, pdu.initiatorTaskTag);
      b.writeUInt16BE(pdu.cid, 20);
      writeCommandSeq(b, pdu);
      return b;
    }
    case 0x04: {
      // §11.10
      const b = header(0x04, pdu.immediate, (pdu.final ? 0x80 : 0) | (pdu.continue ? 0x40 : 0), 0, dsl);
      writeLunTags(b, pdu);
      writeCommandSeq(b, pdu);
      return b;
    }
    case 0x05: {
      // §11.7
      const b = header(0x05, false, pdu.final ? 0x80 : 0, 0, dsl);
      writeLunTags(b, pdu);
      w32(b, 28, pdu.expStatSN);
      w32(b, 36, pdu.dataSN);
      w32(b, 40, pdu.bufferOffset);
      return b;
    }
    case 0x06: {
      // §11.14
      const b = header(0x06, pdu.immediate, 0x80 | (pdu.reasonCode & 0x7f), 0, dsl);
      w32(b, 16, pdu.initiatorTaskTag);
      b.writeUInt16BE(pdu.cid, 20);
      writeCommandSeq(b, pdu);
      return b;
    }
    case 0x10: {
      // §11.16
      const b = header(0x10, false, 0x80 | (pdu.type & 0x0f), 0, dsl);
      writeLunTags(b, pdu);
      w32(b, 28, pdu.expStatSN);
      w32(b, 40, pdu.begRun);
      w32(b, 44, pdu.runLength);
      return b;
    }
    case 0x20: {
      // §11.19
      const b = header(0x20, false, 0x80, 0, dsl);
      writeLunTags(b, pdu);
      writeStatusSeq(b, pdu);
      return b;
    }
    case 0x21: {
      // §11.4
      const flags =
        0x80 | (pdu.bidiOverflow ? 0x10 : 0) | (pdu.bidiUnderflow ? 0x08 : 0) | (pdu.overflow ? 0x04 : 0) | (pdu.underflow ? 0x02 : 0);
      const b = header(0x21, false, flags, 0, dsl);
      b[2] = pdu.response;
      b[3] = pdu.status;
      w32(b, 16, pdu.initiatorTaskTag);
      w32(b, 20, pdu.snackTag);
      writeStatusSeq(b, pdu);
      w32(b, 36, pdu.expDataSN);
      w32(b, 40, pdu.bidiReadResidualCount);
      w32(b, 44, pdu.residualCount);
      return b;
    }
    case 0x22: {
      // §11.6
      const b = header(0x22, false, 0x80, 0, dsl);
      b[2] = pdu.response;
      w32(b, 16, pdu.initiatorTaskTag);
      writeStatusSeq(b, pdu);
      return b;
    }
    case 0x23: {
      // §11.13
      const b = header(0x23, false, (pdu.transit ? 0x80 : 0) | (pdu.continue ? 0x40 : 0) | ((pdu.csg & 3) << 2) | (pdu.nsg & 3), 0, dsl);
      b[2] = pdu.versionMax;
      b[3] = pdu.versionActive;
      writeIsid(b, pdu.isid);
      b.writeUInt16BE(pdu.tsih, 14);
      w32(b, 16, pdu.initiatorTaskTag);
      writeStatusSeq(b, pdu);
      b[36] = pdu.statusClass;
      b[37] = pdu.statusDetail;
      return b;
    }
    case 0x24: {
      // §11.11
      const b = header(0x24, false, (pdu.final ? 0x80 : 0) | (pdu.continue ? 0x40 : 0), 0, dsl);
      writeLunTags(b, pdu);
      writeStatusSeq(b, pdu);
      return b;
    }
    case 0x25: {
      // §11.7
      const flags =
        (pdu.final ? 0x80 : 0) |
        (pdu.acknowledge ? 0x40 : 0) |
        (pdu.overflow ? 0x04 : 0) |
        (pdu.underflow ? 0x02 : 0) |
        (pdu.statusPresent ? 0x01 : 0);
      const b = header(0x25, false, flags, 0, dsl);
      b[3] = pdu.status;
      writeLunTags(b, pdu);
      writeStatusSeq(b, pdu);
      w32(b, 36, pdu.dataSN);
      w32(b, 40, pdu.bufferOffset);
      w32(b, 44, pdu.residualCount);
      return b;
    }
    case 0x26: {
      // §11.15
      const b = header(0x26, false, 0x80, 0, dsl);
      b[2] = pdu.response;
      w32(b, 16, pdu.initiatorTaskTag);
      writeStatusSeq(b, pdu);
      b.writeUInt16BE(pdu.time2Wait, 40);
      b.writeUInt16BE(pdu.time2Retain, 42);
      return b;
    }
    case 0x31: {
      // §11.8
      const b = header(0x31, false, 0x80, 0, dsl);
      writeLunTags(b, pdu);
      writeStatusSeq(b, pdu);
      w32(b, 36, pdu.r2tSN);
      w32(b, 40, pdu.bufferOffset);
      w32(b, 44, pdu.desiredDataTransferLength);
      return b;
    }
    case 0x32: {
      // §11.9 (ITT is reserved as 0xffffffff)
      const b = header(0x32, false, 0x80, 0, dsl);
      writeLunField(b, 8, pdu.lun);
      w32(b, 16, RESERVED_TAG);
      writeStatusSeq(b, pdu);
      b[36] = pdu.asyncEvent;
      b[37] = pdu.asyncVCode;
      b.writeUInt16BE(pdu.parameter1, 38);
      b.writeUInt16BE(pdu.parameter2, 40);
      b.writeUInt16BE(pdu.parameter3, 42);
      return b;
    }
    case 0x3f: {
      // §11.17 (ITT is reserved as 0xffffffff)
      const b = header(0x3f, false, 0x80, 0, dsl);
      b[2] = pdu.reason;
      w32(b, 16, RESERVED_TAG);
      writeStatusSeq(b, pdu);
      w32(b, 36, pdu.dataSN);
      return b;
    }
  }
}
