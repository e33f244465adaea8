// SPC-4 §6.4 EXTENDED COPY (LID1) and §6.18.4 RECEIVE COPY RESULTS / OPERATING PARAMETERS: copy offload
// (VMware "full copy", QEMU copy_range) between the logical units of ONE target device. Copies are never
// allowed to reach a LU outside the device the command arrived on: naming another volume's NAA must not
// read or write it (the hole LIO had as CVE-2020-28374).
// Supported: identification CSCD descriptors (E4h) with an NAA designator, block->block segments (02h).
import { readU64, u16, u32 } from './cdb.js';
import type { CommandContext, LogicalUnitView } from './handler.js';
import { dataIn, good, parameterList } from './respond.js';
import {
  Asc,
  ScsiError,
  SenseKey,
  invalidFieldInCdb,
  invalidFieldInParameterList,
  ioErrorToScsi,
  parameterListLengthError,
  writeProtected,
} from './sense.js';
import { canWriteZeroes } from '../storage/types.js';
import type { ScsiResponse } from './types.js';
import { AbortedError, type AbortFlag } from './gate.js';

/** What RECEIVE COPY RESULTS reports and EXTENDED COPY enforces. */
export const XCOPY_LIMITS = {
  maxCscdDescriptors: 4,
  maxSegmentDescriptors: 16,
  maxDescriptorListLength: 1024,
  /** Bytes per segment (the NUMBER OF BLOCKS field is 16 bits anyway). */
  maxSegmentLength: 64 * 1024 * 1024,
} as const;

const HEADER_LENGTH = 16;
const CSCD_LENGTH = 32;
const CSCD_IDENTIFICATION = 0xe4;
const SEGMENT_BLOCK_TO_BLOCK = 0x02;
const SEGMENT_BLOCK_TO_BLOCK_LENGTH = 0x18; // DESCRIPTOR LENGTH: 28 - 4
const COPY_CHUNK = 1 << 20;

interface Segment {
  readonly src: number;
  readonly dst: number;
  readonly blocks: number;
  readonly srcLba: number;
  readonly dstLba: number;
}

function copyAborted(sense = Asc.NO_ADDITIONAL_SENSE_INFORMATION): ScsiError {
  return new ScsiError(SenseKey.COPY_ABORTED, sense);
}

/** SPC-4 §6.4.5.4 identification CSCD descriptor: the LU with that NAA designator in this device, or null. */
function resolveCscd(p: Buffer, off: number, units: readonly LogicalUnitView[]): LogicalUnitView | null {
  // LU ID TYPE / LU IDENTIFIER / PERIPHERAL DEVICE TYPE are not used: the designator alone names the LU
  // (libiscsi 1.19 expects success with a reserved LU ID TYPE). NUL: a null device, never reachable.
  const nul = (p[off + 1]! & 0x20) !== 0;
  if (nul) return null;
  const association = (p[off + 5]! >> 4) & 3;
  const type = p[off + 5]! & 0x0f;
  const length = p[off + 7]!;
  if (association !== 0 || type !== 3 || length !== 16) return null;
  const naa = p.toString('hex', off + 8, off + 24);
  const unit = units.find((u) => u.identity.naa.toLowerCase() === naa) ?? null;
  const blockLength = (p[off + 29]! << 16) | (p[off + 30]! << 8) | p[off + 31]!;
  if (unit && blockLength !== 0 && blockLength !== unit.blockSize) throw invalidFieldInParameterList(off + 29);
  return unit;
}

function parseSegments(p: Buffer, start: number, length: number): Segment[] {
  const out: Segment[] = [];
  const end = start + length;
  for (let off = start; off < end;) {
    if (off + 4 > end) throw parameterListLengthError();
    const type = p[off]!;
    if (type !== SEGMENT_BLOCK_TO_BLOCK) {
      throw new ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE, { field: { cdb: false, byte: off } });
    }
    const dlen = u16(p, off + 2);
    if (dlen !== SEGMENT_BLOCK_TO_BLOCK_LENGTH) throw invalidFieldInParameterList(off + 2);
    if (off + 4 + dlen > end) throw parameterListLengthError();
    if (out.length === XCOPY_LIMITS.maxSegmentDescriptors) {
      throw new ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.TOO_MANY_SEGMENT_DESCRIPTORS);
    }
    out.push({
      src: u16(p, off + 4),
      dst: u16(p, off + 6),
      blocks: u16(p, off + 10),
      srcLba: readU64(p, off + 12),
      dstLba: readU64(p, off + 20),
    });
    off += 4 + dlen;
  }
  return out;
}

/** SPC-4 §6.4 EXTENDED COPY(LID1): validate everything, then copy the segments in order. */
export async function extendedCopy(ctx: CommandContext): Promise<ScsiResponse> {
  const { cmd, device } = ctx;
  const listLength = u32(cmd.cdb, 10);
  if (listLength === 0) return good(0);
  const p = parameterList(cmd, listLength);
  if (p.length < HEADER_LENGTH) throw parameterListLengthError();
  const cscdLength = u16(p, 2);
  const segmentLength = u32(p, 8);
  const inlineLength = u32(p, 12);
  if (cscdLength + segmentLength > XCOPY_LIMITS.maxDescriptorListLength) throw parameterListLengthError();
  if (HEADER_LENGTH + cscdLength + segmentLength + inlineLength > p.length) throw parameterListLengthError();
  if (inlineLength !== 0) throw invalidFieldInParameterList(12); // no inline data segments
  if (cscdLength % CSCD_LENGTH !== 0) throw invalidFieldInParameterList(2);
  const cscdCount = cscdLength / CSCD_LENGTH;
  if (cscdCount > XCOPY_LIMITS.maxCscdDescriptors) throw new ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.TOO_MANY_TARGET_DESCRIPTORS);
  const units = device.logicalUnits();
  const targets: (LogicalUnitView | null)[] = [];
  for (let i = 0; i < cscdCount; i++) {
    const off = HEADER_LENGTH + CSCD_LENGTH * i;
    if (p[off] !== CSCD_IDENTIFICATION) {
      throw new ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE, { field: { cdb: false, byte: off } });
    }
    targets.push(resolveCscd(p, off, units));
  }
  const segments = parseSegments(p, HEADER_LENGTH + cscdLength, segmentLength);
  for (const s of segments) {
    const src = targets[s.src];
    const dst = targets[s.dst];
    if (!src || !dst) throw copyAborted(Asc.COPY_TARGET_DEVICE_NOT_REACHABLE);
    if (src.blockSize !== dst.blockSize) throw copyAborted();
    if (s.srcLba + s.blocks > src.blocks || s.dstLba + s.blocks > dst.blocks) throw copyAborted();
    if (s.blocks * src.blockSize > XCOPY_LIMITS.maxSegmentLength) throw copyAborted();
    if (dst.writeProtected && s.blocks > 0) throw writeProtected();
  }
  let bytes = 0;
  for (const s of segments) {
    if (s.blocks === 0) continue;
    await copySegment(targets[s.src]!, targets[s.dst]!, s, ctx.signal);
    bytes += s.blocks * targets[s.src]!.blockSize;
  }
  // LIST ID USAGE 00b/10b: the list identifier stays valid for RECEIVE COPY RESULTS on this I_T nexus.
  const listIdUsage = (p[1]! >> 3) & 3;
  if (listIdUsage !== 3) ctx.lu.rememberCopyResult(cmd.nexus.key, p[0]!, { segments: segments.length, bytes });
  return good(listLength);
}

/** SPC-4 §6.18.2 RECEIVE COPY RESULTS, COPY STATUS (service action 00h) of a completed LID1 copy. */
export function receiveCopyResultsCopyStatus(ctx: CommandContext): ScsiResponse {
  const { cmd, lu } = ctx;
  const listId = cmd.cdb[2]!;
  const r = lu.copyResult(cmd.nexus.key, listId);
  if (!r) throw invalidFieldInCdb(2);
  const data = Buffer.alloc(12);
  data.writeUInt32BE(8, 0); // AVAILABLE DATA
  data[4] = 0x01; // HDD=0, COPY MANAGER STATUS: operation completed without errors
  data.writeUInt16BE(Math.min(r.segments, 0xffff), 5); // SEGMENTS PROCESSED
  data[7] = 0xf1; // TRANSFER COUNT UNITS: kibibytes
  data.writeUInt32BE(Math.min(Math.floor(r.bytes / 1024), 0xffffffff), 8);
  return dataIn(cmd, data, u32(cmd.cdb, 10));
}

async function copySegment(src: LogicalUnitView, dst: LogicalUnitView, s: Segment, signal: AbortFlag): Promise<void> {
  const bs = src.blockSize;
  const total = s.blocks * bs;
  const srcOff = s.srcLba * bs;
  const dstOff = s.dstLba * bs;
  const overlap = src === dst && srcOff < dstOff + total && dstOff < srcOff + total;
  await dst.gate.run(false, signal, async () => {
    try {
      if (overlap) {
        await copyBytes(src, dst, srcOff, dstOff, total, dstOff > srcOff, signal);
        return;
      }
      // Sparse-aware: holes of the source become holes (thin) or zeroes (thick) at the destination.
      for (const e of await src.store.allocationMap(srcOff, total)) {
        const at = dstOff + (e.offset - srcOff);
        if (e.mapped) await copyBytes(src, dst, e.offset, at, e.length, false, signal);
        else await zeroBytes(dst, at, e.length);
      }
    } catch (e) {
      if (e instanceof ScsiError || e instanceof AbortedError) throw e;
      throw ioErrorToScsi(e, true);
    }
  });
}

async function copyBytes(
  src: LogicalUnitView,
  dst: LogicalUnitView,
  from: number,
  to: number,
  length: number,
  backward: boolean,
  signal: AbortFlag,
): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(length, COPY_CHUNK));
  for (let done = 0; done < length;) {
    if (signal.aborted) throw new AbortedError();
    const n = Math.min(buf.length, length - done);
    const rel = backward ? length - done - n : done;
    const chunk = n === buf.length ? buf : buf.subarray(0, n);
    await src.store.read(chunk, from + rel);
    await dst.store.write(chunk, to + rel, !dst.mode.wce);
    done += n;
  }
}

async function zeroBytes(dst: LogicalUnitView, at: number, length: number): Promise<void> {
  if (dst.thinProvisioned) {
    await dst.store.deallocate(at, length);
    if (!dst.mode.wce) await dst.store.flush();
  } else if (canWriteZeroes(dst.store)) await dst.store.writeZeroes(at, length, !dst.mode.wce);
  else {
    const zero = Buffer.alloc(Math.min(length, COPY_CHUNK));
    for (let done = 0; done < length; done += zero.length) {
      const n = Math.min(zero.length, length - done);
      await dst.store.write(n === zero.length ? zero : zero.subarray(0, n), at + done, !dst.mode.wce);
    }
  }
}

/** SPC-4 §6.18.4 RECEIVE COPY RESULTS, OPERATING PARAMETERS (service action 03h). */
export function receiveCopyResultsOperatingParameters(ctx: CommandContext): ScsiResponse {
  const { cmd } = ctx;
  const codes = [SEGMENT_BLOCK_TO_BLOCK, CSCD_IDENTIFICATION];
  const data = Buffer.alloc(44 + codes.length);
  data.writeUInt32BE(data.length - 4, 0); // AVAILABLE DATA
  data[4] = 0x01; // SNLID: lists with LIST ID USAGE 11b are supported (nothing is held)
  data.writeUInt16BE(XCOPY_LIMITS.maxCscdDescriptors, 8);
  data.writeUInt16BE(XCOPY_LIMITS.maxSegmentDescriptors, 10);
  data.writeUInt32BE(XCOPY_LIMITS.maxDescriptorListLength, 12);
  data.writeUInt32BE(XCOPY_LIMITS.maxSegmentLength, 16);
  data.writeUInt32BE(0, 20); // MAXIMUM INLINE DATA LENGTH
  data.writeUInt32BE(0, 24); // HELD DATA LIMIT
  data.writeUInt32BE(0, 28); // MAXIMUM STREAM DEVICE TRANSFER SIZE
  data.writeUInt16BE(1, 34); // TOTAL CONCURRENT COPIES
  data[36] = 1; // MAXIMUM CONCURRENT COPIES
  data[37] = 9; // DATA SEGMENT GRANULARITY (log2): 512 bytes
  data[43] = codes.length;
  codes.forEach((c, i) => (data[44 + i] = c));
  return dataIn(cmd, data, u32(cmd.cdb, 10));
}
