// SBC-3 block commands on a BackingStore: READ/WRITE, WRITE AND VERIFY, VERIFY, SYNCHRONIZE CACHE,
// PRE-FETCH, UNMAP, WRITE SAME, COMPARE AND WRITE, ORWRITE, GET LBA STATUS, READ CAPACITY.
import { decodeBlock, decodeCompareAndWrite, decodeWriteSameFlags, readU64, u16, u32, type BlockCdb } from './cdb.js';
import { AbortedError, type AbortFlag } from './gate.js';
import type { CommandContext, LogicalUnitView } from './handler.js';
import { GOOD, dataIn, good, parameterList } from './respond.js';
import {
  ioErrorToScsi,
  invalidFieldInCdb,
  invalidFieldInParameterList,
  lbaOutOfRange,
  miscompare,
  parameterListLengthError,
  writeProtected,
} from './sense.js';
import { ScsiStatus, type ScsiResponse } from './types.js';
import { canWriteZeroes } from '../storage/types.js';
import { blockLimits, physicalBlockExponent } from './vpd.js';

export { physicalBlockExponent };

/** SBC-3 §4.5: LBA range check (LOGICAL BLOCK ADDRESS OUT OF RANGE). */
export function checkRange(lu: LogicalUnitView, lba: number, blocks: number): void {
  if (lba > lu.blocks || lba + blocks > lu.blocks) throw lbaOutOfRange();
}

function checkNotAborted(signal: AbortFlag): void {
  if (signal.aborted) throw new AbortedError();
}

/** Reject protection information (we format without it: SBC-3 §4.22, PROTECT=0). */
function checkNoProtection(c: BlockCdb): void {
  if (c.protect !== 0) throw invalidFieldInCdb(1, 7);
}

async function storeRead(lu: LogicalUnitView, buf: Buffer, offset: number): Promise<void> {
  try {
    await lu.store.read(buf, offset);
  } catch (e) {
    throw ioErrorToScsi(e, false);
  }
}

async function storeWrite(lu: LogicalUnitView, buf: Buffer, offset: number, fua: boolean): Promise<void> {
  try {
    // With the write cache disabled (WCE=0) every write is durable before completion.
    await lu.store.write(buf, offset, fua || !lu.mode.wce);
  } catch (e) {
    throw ioErrorToScsi(e, true);
  }
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  // Buffer.compare is native; find the offset only on mismatch.
  if (a.length === b.length && a.equals(b)) return -1;
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/**
 * SBC-3 §5.7-5.11 READ(6/10/12/16). One buffer of the transfer size, read straight into. A read the
 * store can serve at once (page-cache hit, BackingStore.readNow) completes synchronously: no promise and
 * no microtask turn between the socket's read callback and the Data-In (docs/benchmarks.md).
 */
export function read(ctx: CommandContext): ScsiResponse | Promise<ScsiResponse> {
  const { cmd, lu } = ctx;
  const c = decodeBlock(cmd.cdb);
  checkNoProtection(c);
  checkRange(lu, c.lba, c.blocks);
  if (c.blocks > blockLimits(lu.blockSize).maxTransferLength) throw invalidFieldInCdb(cmd.cdb.length === 6 ? 4 : 7);
  const total = c.blocks * lu.blockSize;
  const n = Math.min(total, cmd.expectedDataLength);
  if (n === 0) return good(total);
  const buf = cmd.dataIn ? cmd.dataIn.take(n) : Buffer.allocUnsafe(n);
  checkNotAborted(ctx.signal);
  const response: ScsiResponse = { status: ScsiStatus.GOOD, data: buf, sense: null, transferLength: total };
  const offset = c.lba * lu.blockSize;
  if (lu.store.readNow?.(buf, offset) === true) return response;
  return storeRead(lu, buf, offset).then(() => response);
}

/**
 * SBC-3 §5.31-5.35 WRITE(6/10/12/16) and §5.36-5.38 WRITE AND VERIFY: Data-Out written in place, no copy.
 * A write that needs no flush (no FUA, write cache enabled) and that the store can do at once
 * (BackingStore.writeNow) completes synchronously, inside the shared gate like every write; everything
 * else (FUA, WCE=0, a gate held for COMPARE AND WRITE / ORWRITE / a snapshot, a large write) waits as before.
 */
export function write(ctx: CommandContext): ScsiResponse | Promise<ScsiResponse> {
  const { cmd, lu } = ctx;
  const c = decodeBlock(cmd.cdb);
  if (lu.writeProtected) throw writeProtected();
  checkNoProtection(c);
  checkRange(lu, c.lba, c.blocks);
  if (c.blocks > blockLimits(lu.blockSize).maxTransferLength) throw invalidFieldInCdb(cmd.cdb.length === 6 ? 4 : 7);
  const total = c.blocks * lu.blockSize;
  // RFC 7143 §11.4.5: when the initiator sent less than the CDB asked (EDTL < TL) only that much is written.
  const data = parameterList(cmd, total);
  if (data.length === 0) return good(total);
  const offset = c.lba * lu.blockSize;
  if (!c.fua && lu.mode.wce && lu.store.writeNow && !ctx.signal.aborted) {
    const release = lu.gate.enterSharedNow();
    if (release) {
      let written = false;
      try {
        written = lu.store.writeNow(data, offset);
      } finally {
        release();
      }
      if (written) return good(total);
    }
  }
  return lu.gate
    .run(false, ctx.signal, async () => {
      checkNotAborted(ctx.signal);
      await storeWrite(lu, data, offset, c.fua);
    })
    .then(() => good(total));
}

/** SBC-3 §5.26-5.28 VERIFY(10/12/16): BYTCHK 00b medium check, 01b compare, 11b one block against each. */
export async function verify(ctx: CommandContext): Promise<ScsiResponse> {
  const { cmd, lu } = ctx;
  const c = decodeBlock(cmd.cdb);
  checkNoProtection(c);
  checkRange(lu, c.lba, c.blocks);
  if (c.bytchk === 2) throw invalidFieldInCdb(1, 2);
  if (c.bytchk === 0 || c.blocks === 0) return good(0);
  if (c.blocks > blockLimits(lu.blockSize).maxTransferLength) throw invalidFieldInCdb(7);
  const bs = lu.blockSize;
  const expected = c.bytchk === 3 ? bs : c.blocks * bs;
  const out = parameterList(cmd, expected);
  if (out.length < expected) throw parameterListLengthError();
  const medium = Buffer.allocUnsafe(c.blocks * bs);
  checkNotAborted(ctx.signal);
  await storeRead(lu, medium, c.lba * bs);
  if (c.bytchk === 1) {
    const at = firstDifference(out, medium);
    if (at >= 0) throw miscompare(at);
  } else {
    for (let i = 0; i < c.blocks; i++) {
      const at = firstDifference(out, medium.subarray(i * bs, (i + 1) * bs));
      if (at >= 0) throw miscompare(i * bs + at);
    }
  }
  return good(expected);
}

/** SBC-3 §5.22/5.23 SYNCHRONIZE CACHE(10/16): fdatasync (the whole file; IMMED is honoured by waiting anyway). */
export async function synchronizeCache(ctx: CommandContext): Promise<ScsiResponse> {
  const { cmd, lu } = ctx;
  const c = decodeBlock(cmd.cdb);
  checkRange(lu, c.lba, c.blocks);
  checkNotAborted(ctx.signal);
  try {
    await lu.store.flush();
  } catch (e) {
    throw ioErrorToScsi(e, true);
  }
  return GOOD;
}

/** SBC-3 §5.5/5.6 PRE-FETCH(10/16): the page cache does read-ahead; range-checked, GOOD. */
export function preFetch(ctx: CommandContext): ScsiResponse {
  const c = decodeBlock(ctx.cmd.cdb);
  checkRange(ctx.lu, c.lba, c.blocks);
  return GOOD;
}

interface UnmapDescriptor {
  readonly lba: number;
  readonly blocks: number;
}

/** SBC-3 §5.28 UNMAP parameter list: validated entirely before anything is deallocated. */
export function parseUnmapParameters(lu: LogicalUnitView, list: Buffer, listLength: number): UnmapDescriptor[] {
  if (listLength === 0) return [];
  if (listLength < 8 || list.length < 8) throw parameterListLengthError();
  const dataLength = u16(list, 0);
  const descLength = u16(list, 2);
  if (dataLength < 6 && dataLength !== 0) throw parameterListLengthError();
  const usable = Math.min(descLength, list.length - 8);
  const count = Math.floor(usable / 16);
  const limits = blockLimits(lu.blockSize);
  if (count > limits.maxUnmapDescriptorCount) throw invalidFieldInParameterList(2);
  const out: UnmapDescriptor[] = [];
  let total = 0;
  for (let i = 0; i < count; i++) {
    const off = 8 + 16 * i;
    const lba = readU64(list, off);
    const blocks = u32(list, off + 8);
    if (blocks > limits.maxUnmapLbaCount) throw invalidFieldInParameterList(off + 8);
    checkRange(lu, lba, blocks);
    total += blocks;
    if (blocks > 0) out.push({ lba, blocks });
  }
  if (total > limits.maxUnmapLbaCount) throw invalidFieldInParameterList(8);
  return out;
}

/** SBC-3 §5.28 UNMAP: punch holes (reads as zeroes afterwards: LBPRZ=1). */
export async function unmap(ctx: CommandContext): Promise<ScsiResponse> {
  const { cmd, lu } = ctx;
  if (cmd.cdb[1]! & 0x01) throw invalidFieldInCdb(1, 0); // ANCHOR: anchored state not supported
  if (lu.writeProtected) throw writeProtected();
  const listLength = u16(cmd.cdb, 7);
  const descriptors = parseUnmapParameters(lu, parameterList(cmd, listLength), listLength);
  const bs = lu.blockSize;
  await lu.gate.run(false, ctx.signal, async () => {
    try {
      for (const d of descriptors) {
        checkNotAborted(ctx.signal);
        await lu.store.deallocate(d.lba * bs, d.blocks * bs);
      }
      // Write cache disabled (WCE=0): the deallocation is durable before GOOD, like a write.
      if (!lu.mode.wce && descriptors.length > 0) await lu.store.flush();
    } catch (e) {
      if (e instanceof AbortedError) throw e;
      throw ioErrorToScsi(e, true);
    }
  });
  return good(listLength);
}

/** Largest buffer WRITE SAME fills with copies of the block per store write. */
const WRITE_SAME_CHUNK = 1 << 20;

/** SBC-3 §5.44/5.45 WRITE SAME(10/16) with UNMAP and NDOB. */
export async function writeSame(ctx: CommandContext): Promise<ScsiResponse> {
  const { cmd, lu } = ctx;
  const c = decodeBlock(cmd.cdb);
  const f = decodeWriteSameFlags(cmd.cdb);
  if (lu.writeProtected) throw writeProtected();
  checkNoProtection(c);
  if (f.anchor) throw invalidFieldInCdb(1, 4);
  // Fully provisioned LUs (LBPME=0, no LBPWS/LBPWS10) do not offer WRITE SAME with UNMAP.
  if (f.unmap && !lu.thinProvisioned) throw invalidFieldInCdb(1, 3);
  const sixteen = cmd.cdb[0] === 0x93;
  checkRange(lu, c.lba, c.blocks);
  // WSNZ=0 (VPD B0h): NUMBER OF LOGICAL BLOCKS 0 means through the last LBA (SBC-3 §5.44).
  const blocks = c.blocks === 0 ? lu.blocks - c.lba : c.blocks;
  const maxWs = blockLimits(lu.blockSize).maxWriteSameLength;
  if (maxWs !== 0 && blocks > maxWs) throw invalidFieldInCdb(sixteen ? 10 : 7);
  if (blocks === 0) return good(f.ndob ? 0 : lu.blockSize);
  const bs = lu.blockSize;
  let block: Buffer;
  if (f.ndob) {
    block = Buffer.alloc(bs);
  } else {
    // The Data-Out buffer is exactly one logical block.
    const out = cmd.dataOut;
    if (!out || out.length !== bs || cmd.expectedDataLength !== bs) throw invalidFieldInCdb(sixteen ? 10 : 7);
    block = out;
  }
  const zero = f.ndob || block.every((b) => b === 0);
  const offset = c.lba * bs;
  const length = blocks * bs;
  const store = lu.store;
  await lu.gate.run(false, ctx.signal, async () => {
    checkNotAborted(ctx.signal);
    if ((f.unmap && lu.thinProvisioned) || (zero && canWriteZeroes(store))) {
      try {
        // UNMAP=1 on a thin LU: deallocate, whatever the block holds; afterwards the blocks read as
        // zeroes (LBPRZ=1). This is what LIO and tgt do and what libiscsi's WriteSame*.Unmap* expect.
        // UNMAP=0: allocate zeroed blocks without transferring zeroes (FALLOC_FL_ZERO_RANGE). The space
        // is reserved; ext4/XFS keep such extents "unwritten", which GET LBA STATUS (SEEK_DATA) then
        // reports as deallocated: indistinguishable for the initiator since LBPRZ=1.
        if (f.unmap && lu.thinProvisioned) {
          await store.deallocate(offset, length);
          if (!lu.mode.wce) await store.flush();
        } else if (canWriteZeroes(store)) {
          await store.writeZeroes(offset, length, !lu.mode.wce);
        }
      } catch (e) {
        throw ioErrorToScsi(e, true);
      }
      return;
    }
    const chunkBlocks = Math.max(1, Math.min(blocks, Math.floor(WRITE_SAME_CHUNK / bs)));
    const chunk = zero ? Buffer.alloc(chunkBlocks * bs) : Buffer.allocUnsafe(chunkBlocks * bs);
    if (!zero) for (let i = 0; i < chunkBlocks; i++) block.copy(chunk, i * bs, 0, bs);
    for (let done = 0; done < blocks;) {
      checkNotAborted(ctx.signal);
      const n = Math.min(chunkBlocks, blocks - done);
      await storeWrite(lu, n === chunkBlocks ? chunk : chunk.subarray(0, n * bs), offset + done * bs, false);
      done += n;
    }
  });
  return good(f.ndob ? 0 : bs);
}

/** SBC-3 §5.2 COMPARE AND WRITE: compare then write, atomic against every other write to the LU. */
export async function compareAndWrite(ctx: CommandContext): Promise<ScsiResponse> {
  const { cmd, lu } = ctx;
  const c = decodeCompareAndWrite(cmd.cdb);
  if (lu.writeProtected) throw writeProtected();
  checkNoProtection(c);
  checkRange(lu, c.lba, c.blocks);
  const bs = lu.blockSize;
  const half = c.blocks * bs;
  const out = cmd.dataOut;
  if (c.blocks === 0) {
    // SBC-3 §5.2: zero blocks is not an error, but then there must be no Data-Out either.
    if (cmd.expectedDataLength !== 0 || (out && out.length > 0)) throw invalidFieldInCdb(13);
    return GOOD;
  }
  if (c.blocks > blockLimits(lu.blockSize).maxCompareAndWriteLength) throw invalidFieldInCdb(13);
  // The Data-Out buffer is exactly the verify data followed by the write data.
  if (!out || out.length !== 2 * half || cmd.expectedDataLength !== 2 * half) throw invalidFieldInCdb(13);
  const offset = c.lba * bs;
  await lu.gate.run(true, ctx.signal, async () => {
    checkNotAborted(ctx.signal);
    const current = Buffer.allocUnsafe(half);
    await storeRead(lu, current, offset);
    const at = firstDifference(out.subarray(0, half), current);
    if (at >= 0) throw miscompare(at);
    checkNotAborted(ctx.signal);
    await storeWrite(lu, out.subarray(half), offset, c.fua);
  });
  return good(2 * half);
}

/** SBC-3 §5.25 ORWRITE(16): medium |= Data-Out, atomic against other writes. */
export async function orWrite(ctx: CommandContext): Promise<ScsiResponse> {
  const { cmd, lu } = ctx;
  const c = decodeBlock(cmd.cdb);
  if (lu.writeProtected) throw writeProtected();
  checkNoProtection(c);
  checkRange(lu, c.lba, c.blocks);
  if (c.blocks > blockLimits(lu.blockSize).maxTransferLength) throw invalidFieldInCdb(10);
  const total = c.blocks * lu.blockSize;
  const data = parameterList(cmd, total);
  if (data.length === 0) return good(total);
  const offset = c.lba * lu.blockSize;
  await lu.gate.run(true, ctx.signal, async () => {
    checkNotAborted(ctx.signal);
    const merged = Buffer.allocUnsafe(data.length);
    await storeRead(lu, merged, offset);
    for (let i = 0; i < merged.length; i++) merged[i] = merged[i]! | data[i]!;
    await storeWrite(lu, merged, offset, c.fua);
  });
  return good(total);
}

/** SBC-3 §5.16 READ CAPACITY(10). */
export function readCapacity10(ctx: CommandContext): ScsiResponse {
  const { cmd, lu } = ctx;
  const pmi = (cmd.cdb[8]! & 0x01) !== 0;
  if (!pmi && u32(cmd.cdb, 2) !== 0) throw invalidFieldInCdb(2);
  const data = Buffer.alloc(8);
  data.writeUInt32BE(Math.min(lu.blocks - 1, 0xffffffff) >>> 0, 0);
  data.writeUInt32BE(lu.blockSize, 4);
  return dataIn(cmd, data, 8);
}

/** SBC-3 §5.17 READ CAPACITY(16) (SERVICE ACTION IN(16), SA 10h): LBPME/LBPRZ when thin provisioned. */
export function readCapacity16(ctx: CommandContext): ScsiResponse {
  const { cmd, lu } = ctx;
  const alloc = u32(cmd.cdb, 10);
  const data = Buffer.alloc(32);
  data.writeBigUInt64BE(BigInt(Math.max(0, lu.blocks - 1)), 0);
  data.writeUInt32BE(lu.blockSize, 8);
  // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: the file system underneath allocates (and punches) 4 KiB.
  // (libiscsi 1.19's GetLBAStatus.UnmapSingle then asks for LBA i+1 but expects a descriptor at i+8:
  // a test bug; the first descriptor here is always at the requested LBA, as SBC-3 §5.4 requires.)
  data[13] = physicalBlockExponent(lu.blockSize);
  if (lu.thinProvisioned) data[14] = 0x80 | 0x40; // LBPME, LBPRZ
  return dataIn(cmd, data, alloc);
}

/** Provisioning status of a block range (SBC-3 §5.4.3 Table 36): 0 mapped, 1 deallocated. */
interface LbaStatus {
  lba: number;
  blocks: number;
  deallocated: boolean;
}

/** Turn a byte-level allocation map into block extents: a block is deallocated only if it is all hole. */
export function blockStatus(
  extents: ReadonlyArray<{ offset: number; length: number; mapped: boolean }>,
  lba: number,
  blocks: number,
  bs: number,
): LbaStatus[] {
  const out: LbaStatus[] = [];
  const push = (start: number, end: number, deallocated: boolean): void => {
    if (end <= start) return;
    const last = out[out.length - 1];
    if (last && last.deallocated === deallocated && last.lba + last.blocks === start) last.blocks += end - start;
    else out.push({ lba: start, blocks: end - start, deallocated });
  };
  let cursor = lba;
  const end = lba + blocks;
  for (const e of extents) {
    if (e.mapped) continue;
    const hs = Math.max(lba, Math.ceil(e.offset / bs));
    const he = Math.min(end, Math.floor((e.offset + e.length) / bs));
    if (he <= hs) continue;
    push(cursor, hs, false);
    push(hs, he, true);
    cursor = he;
  }
  push(cursor, end, false);
  return out;
}

/** How far GET LBA STATUS looks ahead in one command. */
const GET_LBA_STATUS_SPAN_BYTES = 64 * 1024 * 1024 * 1024;

/** SBC-3 §5.4 GET LBA STATUS (SERVICE ACTION IN(16), SA 12h): the first descriptor starts at the requested LBA. */
export async function getLbaStatus(ctx: CommandContext): Promise<ScsiResponse> {
  const { cmd, lu } = ctx;
  const lba = readU64(cmd.cdb, 2);
  const alloc = u32(cmd.cdb, 10);
  if (lba >= lu.blocks) throw lbaOutOfRange();
  if (alloc === 0) return good(0);
  const bs = lu.blockSize;
  const maxDescriptors = Math.max(1, Math.floor((alloc - 8) / 16));
  const blocks = Math.min(lu.blocks - lba, Math.floor(GET_LBA_STATUS_SPAN_BYTES / bs));
  let statuses: LbaStatus[];
  try {
    statuses = blockStatus(await lu.store.allocationMap(lba * bs, blocks * bs), lba, blocks, bs);
  } catch (e) {
    throw ioErrorToScsi(e, false);
  }
  statuses = statuses.slice(0, maxDescriptors);
  const data = Buffer.alloc(8 + 16 * statuses.length);
  data.writeUInt32BE(4 + 16 * statuses.length, 0); // PARAMETER DATA LENGTH
  statuses.forEach((s, i) => {
    const off = 8 + 16 * i;
    data.writeBigUInt64BE(BigInt(s.lba), off);
    data.writeUInt32BE(Math.min(s.blocks, 0xffffffff), off + 8);
    data[off + 12] = s.deallocated ? 0x01 : 0x00;
  });
  return dataIn(cmd, data, alloc);
}

/**
 * SBC-3 §5.18/§5.19 READ DEFECT DATA(10)/(12): a file has no grown or primary defects; the header
 * echoes the requested list format with PLISTV/GLISTV as asked and a zero DEFECT LIST LENGTH.
 */
export function readDefectData(ctx: CommandContext): ScsiResponse {
  const { cmd } = ctx;
  const twelve = cmd.cdb[0] === 0xb7;
  const flags = cmd.cdb[twelve ? 1 : 2]! & 0x1f; // REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT
  const alloc = twelve ? u32(cmd.cdb, 6) : u16(cmd.cdb, 7);
  const data = Buffer.alloc(twelve ? 8 : 4);
  data[1] = flags;
  return dataIn(cmd, data, alloc);
}
