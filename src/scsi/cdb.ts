// CDB field decoders (SPC-4 §4.2, SBC-3 §5). Pure functions; callers validate ranges.
import { invalidFieldInCdb } from './sense.js';

/** SPC-4 §4.2.5.1: CDB length from the operation code's group (bits 7..5). 0 = vendor/unknown group. */
export function cdbLengthOf(opcode: number): number {
  switch (opcode >> 5) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return 0;
  }
}

/** 64-bit big-endian field as a number; values above 2^53 come back inexact but still far beyond any LBA. */
export function readU64(cdb: Buffer, off: number): number {
  return Number(cdb.readBigUInt64BE(off));
}

/** SERVICE ACTION field (byte 1 bits 4..0) of 0x9E, 0xA3, 0xA4, 0x5E, 0x5F. */
export function serviceActionOf(cdb: Buffer): number {
  return cdb[1]! & 0x1f;
}

/** A block-addressed command's LBA range and flags (the 6/10/12/16-byte READ, WRITE, VERIFY... CDBs of SBC-3 §5). */
export interface BlockCdb {
  readonly lba: number;
  /** TRANSFER LENGTH / VERIFICATION LENGTH / NUMBER OF LOGICAL BLOCKS. */
  readonly blocks: number;
  /** byte 1 bits 7..5: RDPROTECT / WRPROTECT / VRPROTECT / ORPROTECT. */
  readonly protect: number;
  readonly dpo: boolean;
  readonly fua: boolean;
  /** VERIFY / WRITE AND VERIFY: BYTCHK (byte 1 bits 2..1, SBC-4). */
  readonly bytchk: number;
}

/** SBC-3 §5.8 READ(6) / §5.32 WRITE(6): 21-bit LBA, TRANSFER LENGTH 0 means 256 blocks. */
export function decodeRw6(cdb: Buffer): BlockCdb {
  const lba = ((cdb[1]! & 0x1f) << 16) | (cdb[2]! << 8) | cdb[3]!;
  return { lba, blocks: cdb[4] === 0 ? 256 : cdb[4]!, protect: 0, dpo: false, fua: false, bytchk: 0 };
}

function flags(cdb: Buffer): Pick<BlockCdb, 'protect' | 'dpo' | 'fua' | 'bytchk'> {
  const b1 = cdb[1]!;
  return { protect: b1 >> 5, dpo: (b1 & 0x10) !== 0, fua: (b1 & 0x08) !== 0, bytchk: (b1 >> 1) & 3 };
}

/** 10-byte block CDB: LBA bytes 2..5, length bytes 7..8 (READ/WRITE/VERIFY/WRITE AND VERIFY/SYNC CACHE/PRE-FETCH/WRITE SAME(10)). */
export function decodeBlock10(cdb: Buffer): BlockCdb {
  return { lba: cdb.readUInt32BE(2), blocks: cdb.readUInt16BE(7), ...flags(cdb) };
}

/** 12-byte block CDB: LBA bytes 2..5, length bytes 6..9. */
export function decodeBlock12(cdb: Buffer): BlockCdb {
  return { lba: cdb.readUInt32BE(2), blocks: cdb.readUInt32BE(6), ...flags(cdb) };
}

/** 16-byte block CDB: LBA bytes 2..9, length bytes 10..13. */
export function decodeBlock16(cdb: Buffer): BlockCdb {
  return { lba: readU64(cdb, 2), blocks: cdb.readUInt32BE(10), ...flags(cdb) };
}

/** Block CDB by its length (6, 10, 12 or 16 bytes). */
export function decodeBlock(cdb: Buffer): BlockCdb {
  switch (cdbLengthOf(cdb[0]!)) {
    case 6:
      return decodeRw6(cdb);
    case 10:
      return decodeBlock10(cdb);
    case 12:
      return decodeBlock12(cdb);
    default:
      return decodeBlock16(cdb);
  }
}

/** SBC-3 §5.2 COMPARE AND WRITE: LBA bytes 2..9, NUMBER OF LOGICAL BLOCKS byte 13. */
export function decodeCompareAndWrite(cdb: Buffer): BlockCdb {
  return { lba: readU64(cdb, 2), blocks: cdb[13]!, ...flags(cdb) };
}

/** SBC-3 §5.44/§5.45 WRITE SAME(10)/(16) byte 1 bits. */
export interface WriteSameFlags {
  readonly anchor: boolean;
  readonly unmap: boolean;
  /** NDOB (WRITE SAME(16) only): no Data-Out buffer, the block is zeroes. */
  readonly ndob: boolean;
}

export function decodeWriteSameFlags(cdb: Buffer): WriteSameFlags {
  const b1 = cdb[1]!;
  return { anchor: (b1 & 0x10) !== 0, unmap: (b1 & 0x08) !== 0, ndob: cdb[0] === 0x93 && (b1 & 0x01) !== 0 };
}

/** ALLOCATION LENGTH / PARAMETER LIST LENGTH by its position. */
export function u16(cdb: Buffer, off: number): number {
  return cdb.readUInt16BE(off);
}
export function u32(cdb: Buffer, off: number): number {
  return cdb.readUInt32BE(off);
}

/** SPC-4 §6.6.1 INQUIRY CDB. */
export interface InquiryCdb {
  readonly evpd: boolean;
  readonly pageCode: number;
  readonly allocationLength: number;
}

export function decodeInquiry(cdb: Buffer): InquiryCdb {
  if (cdb[1]! & 0x02) throw invalidFieldInCdb(1, 1); // obsolete CMDDT
  return { evpd: (cdb[1]! & 0x01) !== 0, pageCode: cdb[2]!, allocationLength: cdb.readUInt16BE(3) };
}

/** SPC-4 §6.11 / §6.12 MODE SENSE(6)/(10) CDB. */
export interface ModeSenseCdb {
  readonly dbd: boolean;
  readonly llbaa: boolean;
  /** PC: 0 current, 1 changeable, 2 default, 3 saved. */
  readonly pc: number;
  readonly pageCode: number;
  readonly subpageCode: number;
  readonly allocationLength: number;
  readonly ten: boolean;
}

/**
 * MODE SENSE and MODE SELECT come as 6- and 10-byte CDBs (the operation code's group, SPC-4 §4.2.5.1):
 * the length field (ALLOCATION LENGTH / PARAMETER LIST LENGTH) is byte 4 of the 6-byte form and bytes 7..8
 * of the 10-byte form (SPC-4 §6.9-§6.12).
 */
function modeCdbForm(cdb: Buffer): { readonly ten: boolean; readonly length: number } {
  const ten = cdbLengthOf(cdb[0]!) === 10;
  return { ten, length: ten ? cdb.readUInt16BE(7) : cdb[4]! };
}

export function decodeModeSense(cdb: Buffer): ModeSenseCdb {
  const { ten, length } = modeCdbForm(cdb);
  const b1 = cdb[1]!;
  // LLBAA exists in the 10-byte form only.
  return {
    dbd: (b1 & 0x08) !== 0,
    llbaa: ten && (b1 & 0x10) !== 0,
    pc: cdb[2]! >> 6,
    pageCode: cdb[2]! & 0x3f,
    subpageCode: cdb[3]!,
    allocationLength: length,
    ten,
  };
}

/** SPC-4 §6.9 / §6.10 MODE SELECT(6)/(10) CDB. */
export interface ModeSelectCdb {
  readonly pf: boolean;
  readonly sp: boolean;
  readonly parameterListLength: number;
  readonly ten: boolean;
}

export function decodeModeSelect(cdb: Buffer): ModeSelectCdb {
  const { ten, length } = modeCdbForm(cdb);
  return { pf: (cdb[1]! & 0x10) !== 0, sp: (cdb[1]! & 0x01) !== 0, parameterListLength: length, ten };
}

/** SPC-4 §6.35 REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN, SA 0Ch). */
export interface RsocCdb {
  readonly rctd: boolean;
  readonly reportingOptions: number;
  readonly opcode: number;
  readonly serviceAction: number;
  readonly allocationLength: number;
}

export function decodeRsoc(cdb: Buffer): RsocCdb {
  return {
    rctd: (cdb[2]! & 0x80) !== 0,
    reportingOptions: cdb[2]! & 0x07,
    opcode: cdb[3]!,
    serviceAction: cdb.readUInt16BE(4),
    allocationLength: cdb.readUInt32BE(6),
  };
}

/** SAM-5 §4.7: single-level LUN encoding (peripheral < 256, flat space up to 16383). */
export function encodeLun(lun: number, out: Buffer, off: number): void {
  out.fill(0, off, off + 8);
  if (lun < 256) {
    out[off + 1] = lun;
  } else {
    out[off] = 0x40 | ((lun >> 8) & 0x3f);
    out[off + 1] = lun & 0xff;
  }
}
