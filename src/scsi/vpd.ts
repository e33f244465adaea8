// Vital product data pages (SPC-4 §7.8, SBC-3 §6.5).
import { targetPortGroupOf } from './alua.js';
import { putAscii } from './inquiry.js';
import type { ITNexus, LogicalUnitIdentity } from './types.js';

export const VpdPage = {
  SUPPORTED_VPD_PAGES: 0x00,
  UNIT_SERIAL_NUMBER: 0x80,
  DEVICE_IDENTIFICATION: 0x83,
  BLOCK_LIMITS: 0xb0,
  BLOCK_DEVICE_CHARACTERISTICS: 0xb1,
  LOGICAL_BLOCK_PROVISIONING: 0xb2,
} as const;

/** SBC-3 §6.5.3 Block Limits, in logical blocks (derived from the block size). */
export interface BlockLimits {
  readonly maxTransferLength: number;
  readonly optimalTransferLength: number;
  readonly maxUnmapLbaCount: number;
  readonly maxUnmapDescriptorCount: number;
  readonly optimalUnmapGranularity: number;
  readonly maxWriteSameLength: number;
  readonly maxCompareAndWriteLength: number;
}

const MiB = 1 << 20;

export function blockLimits(blockSize: number): BlockLimits {
  return {
    // Bounds the one buffer a READ allocates; large enough for libiscsi's 65536-block transfers at 512 B.
    maxTransferLength: (64 * MiB) / blockSize,
    optimalTransferLength: MiB / blockSize,
    maxUnmapLbaCount: (512 * MiB) / blockSize, // libiscsi: "not insanely big" (<= 1M blocks)
    maxUnmapDescriptorCount: 256,
    // File systems punch holes in 4 KiB blocks: smaller requests only zero.
    optimalUnmapGranularity: Math.max(1, 4096 / blockSize),
    // 0 = no limit: zero blocks are fallocate()d, only other patterns are written.
    maxWriteSameLength: 0,
    maxCompareAndWriteLength: 1,
  };
}

export interface VpdContext {
  readonly identity: LogicalUnitIdentity;
  readonly blockSize: number;
  readonly thinProvisioned: boolean;
  readonly nexus: ITNexus;
}

/** The pages this LU reports, ascending (B2 only when thin provisioned). */
export function supportedVpdPages(thin: boolean): number[] {
  const pages: number[] = [
    VpdPage.SUPPORTED_VPD_PAGES,
    VpdPage.UNIT_SERIAL_NUMBER,
    VpdPage.DEVICE_IDENTIFICATION,
    VpdPage.BLOCK_LIMITS,
    VpdPage.BLOCK_DEVICE_CHARACTERISTICS,
  ];
  if (thin) pages.push(VpdPage.LOGICAL_BLOCK_PROVISIONING);
  return pages;
}

function page(code: number, body: Buffer): Buffer {
  const b = Buffer.alloc(4 + body.length);
  b[0] = 0x00; // peripheral qualifier 000b, direct access
  b[1] = code;
  b.writeUInt16BE(body.length, 2);
  body.copy(b, 4);
  return b;
}

/** SPC-4 §7.8.16: Supported VPD Pages. */
export function encodeSupportedVpdPages(thin: boolean): Buffer {
  return page(VpdPage.SUPPORTED_VPD_PAGES, Buffer.from(supportedVpdPages(thin)));
}

/** SPC-4 §7.8.18: Unit Serial Number. */
export function encodeUnitSerialNumber(identity: LogicalUnitIdentity): Buffer {
  const serial = Buffer.from(identity.serial.replace(/[^\x20-\x7e]/g, ' '), 'latin1');
  return page(VpdPage.UNIT_SERIAL_NUMBER, serial);
}

/** SPC-4 §7.8.6.1 Table 459: one designation descriptor. */
function designator(opts: { codeSet: number; piv: boolean; association: number; type: number; value: Buffer }): Buffer {
  const b = Buffer.alloc(4 + opts.value.length);
  // PROTOCOL IDENTIFIER 5h (iSCSI) is meaningful only when PIV=1.
  b[0] = ((opts.piv ? 0x5 : 0) << 4) | opts.codeSet;
  b[1] = (opts.piv ? 0x80 : 0) | (opts.association << 4) | opts.type;
  b[3] = opts.value.length;
  opts.value.copy(b, 4);
  return b;
}

const CODE_SET_BINARY = 1;
const CODE_SET_ASCII = 2;
const CODE_SET_UTF8 = 3;
const ASSOC_LU = 0;
const ASSOC_TARGET_PORT = 1;
const TYPE_T10_VENDOR_ID = 1;
const TYPE_NAA = 3;
const TYPE_RELATIVE_TARGET_PORT = 4;
const TYPE_TARGET_PORT_GROUP = 5;
const TYPE_SCSI_NAME_STRING = 8;

/** SPC-4 §7.8.6: Device Identification. */
export function encodeDeviceIdentification(ctx: VpdContext): Buffer {
  const naa = Buffer.from(ctx.identity.naa, 'hex');
  if (naa.length !== 16 || naa[0]! >> 4 !== 0x6) {
    throw new Error(`identity.naa must be 32 hex digits of an NAA 6h designator, got "${ctx.identity.naa}"`);
  }
  const t10 = Buffer.alloc(8 + Buffer.byteLength(ctx.identity.serial, 'latin1'));
  putAscii(t10, 0, 8, ctx.identity.vendor);
  t10.write(ctx.identity.serial, 8, 'latin1');
  const rtp = Buffer.alloc(4);
  rtp.writeUInt16BE(ctx.nexus.relativeTargetPortId & 0xffff, 2);
  const tpg = Buffer.alloc(4);
  tpg.writeUInt16BE(targetPortGroupOf(ctx.nexus.relativeTargetPortId) & 0xffff, 2);
  // SCSI name string: null-terminated, padded to a multiple of 4 (SPC-4 §7.8.6.11).
  const nameLen = Buffer.byteLength(ctx.nexus.targetPortName, 'utf8') + 1;
  const name = Buffer.alloc(Math.min(252, (nameLen + 3) & ~3));
  name.write(ctx.nexus.targetPortName, 0, name.length - 1, 'utf8');
  const body = Buffer.concat([
    designator({ codeSet: CODE_SET_BINARY, piv: false, association: ASSOC_LU, type: TYPE_NAA, value: naa }),
    designator({ codeSet: CODE_SET_ASCII, piv: false, association: ASSOC_LU, type: TYPE_T10_VENDOR_ID, value: t10 }),
    designator({ codeSet: CODE_SET_BINARY, piv: true, association: ASSOC_TARGET_PORT, type: TYPE_RELATIVE_TARGET_PORT, value: rtp }),
    designator({ codeSet: CODE_SET_BINARY, piv: true, association: ASSOC_TARGET_PORT, type: TYPE_TARGET_PORT_GROUP, value: tpg }),
    designator({ codeSet: CODE_SET_UTF8, piv: true, association: ASSOC_TARGET_PORT, type: TYPE_SCSI_NAME_STRING, value: name }),
  ]);
  return page(VpdPage.DEVICE_IDENTIFICATION, body);
}

/** log2(logical blocks per 4 KiB physical block): 3 for 512-byte blocks, 0 for 4096. */
export function physicalBlockExponent(blockSize: number): number {
  return Math.max(0, Math.round(Math.log2(4096 / blockSize)));
}

/** SBC-3 §6.5.3: Block Limits (page length 3Ch). */
export function encodeBlockLimits(blockSize: number, thin: boolean): Buffer {
  const l = blockLimits(blockSize);
  const b = Buffer.alloc(0x3c);
  // offsets below are page offsets minus the 4-byte header
  b[0] = 0x00; // WSNZ=0: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 runs through the last LBA
  b[1] = l.maxCompareAndWriteLength;
  // OPTIMAL TRANSFER LENGTH GRANULARITY: one physical block, so Linux's io_min agrees with READ CAPACITY(16)
  b.writeUInt16BE(1 << physicalBlockExponent(blockSize), 2);
  b.writeUInt32BE(l.maxTransferLength, 4);
  b.writeUInt32BE(l.optimalTransferLength, 8);
  b.writeUInt32BE(l.maxTransferLength, 12); // MAXIMUM PREFETCH LENGTH
  if (thin) {
    b.writeUInt32BE(l.maxUnmapLbaCount, 16);
    b.writeUInt32BE(l.maxUnmapDescriptorCount, 20);
    b.writeUInt32BE(l.optimalUnmapGranularity, 24);
    b.writeUInt32BE(0x80000000, 28); // UGAVALID=1, alignment 0
  }
  b.writeBigUInt64BE(BigInt(l.maxWriteSameLength), 32);
  return page(VpdPage.BLOCK_LIMITS, b);
}

/** SBC-3 §6.5.2: Block Device Characteristics: non-rotating medium. */
export function encodeBlockDeviceCharacteristics(): Buffer {
  const b = Buffer.alloc(0x3c);
  b.writeUInt16BE(0x0001, 0); // MEDIUM ROTATION RATE: non-rotating
  return page(VpdPage.BLOCK_DEVICE_CHARACTERISTICS, b);
}

/** SBC-3 §6.5.4: Logical Block Provisioning: LBPU, LBPWS, LBPWS10, LBPRZ, thin. */
export function encodeLogicalBlockProvisioning(): Buffer {
  const b = Buffer.alloc(4);
  b[0] = 0; // THRESHOLD EXPONENT: no thresholds
  b[1] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU, LBPWS, LBPWS10, LBPRZ=001b
  b[2] = 0x02; // PROVISIONING TYPE: thin
  return page(VpdPage.LOGICAL_BLOCK_PROVISIONING, b);
}

/** A VPD page by code, or null when not supported. */
export function encodeVpdPage(code: number, ctx: VpdContext): Buffer | null {
  switch (code) {
    case VpdPage.SUPPORTED_VPD_PAGES:
      return encodeSupportedVpdPages(ctx.thinProvisioned);
    case VpdPage.UNIT_SERIAL_NUMBER:
      return encodeUnitSerialNumber(ctx.identity);
    case VpdPage.DEVICE_IDENTIFICATION:
      return encodeDeviceIdentification(ctx);
    case VpdPage.BLOCK_LIMITS:
      return encodeBlockLimits(ctx.blockSize, ctx.thinProvisioned);
    case VpdPage.BLOCK_DEVICE_CHARACTERISTICS:
      return encodeBlockDeviceCharacteristics();
    case VpdPage.LOGICAL_BLOCK_PROVISIONING:
      return ctx.thinProvisioned ? encodeLogicalBlockProvisioning() : null;
    default:
      return null;
  }
}
