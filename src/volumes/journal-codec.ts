// The framing of the state journal, <data-dir>/state.journal.<seq> (src/volumes/state-file.ts): a file
// header, then records appended one after another, each one frame:
//
//   header  "LUNARJNL" (8 bytes) | format version u32 LE (1) | crc32c of the 12 bytes before, u32 LE
//   frame   payload length u32 LE | crc32c(length field) u32 LE | crc32c(payload) u32 LE | payload
//
// The length has its own checksum so that a damaged length is told apart from a record cut short: a
// frame whose header checks but whose payload runs past the end of the file is a torn tail (the process
// died during the write(2) of the last group commit, which was never acknowledged), as is a header cut
// short and a run of zero bytes from a frame boundary to the end (a file system that extended the file
// before the data reached it). decodeJournal returns the records before such a tail and where it starts,
// so that the store cuts it off. Anything else — a header or payload whose checksum fails with more
// data after it, a length of 0 — is damage: JournalDamage names the file and the byte offset, and the
// store refuses to start rather than drop acknowledged changes.
//
// CRC32C (Castagnoli) from @node-rs/crc32 (SSE4.2 / ARMv8 instructions); it detects every error of up
// to 3 bits and every burst up to 32 bits in records of the size written here.

import { crc32c } from '@node-rs/crc32';

const MAGIC = Buffer.from('LUNARJNL', 'latin1');
export const JOURNAL_VERSION = 1;
export const HEADER_BYTES = 16;
export const FRAME_HEADER_BYTES = 12;
/** Largest payload accepted: far above any group commit (a record is ~1 KiB per change). */
export const MAX_PAYLOAD_BYTES = 256 * 1024 * 1024;

/** The 16 bytes every journal starts with. */
export function journalHeader(): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(h, 0);
  h.writeUInt32LE(JOURNAL_VERSION, 8);
  h.writeUInt32LE(crc32c(h.subarray(0, 12)), 12);
  return h;
}

/** One frame around payload. */
export function encodeFrame(payload: Uint8Array): Buffer {
  if (payload.length === 0 || payload.length > MAX_PAYLOAD_BYTES) throw new RangeError(`journal payload of ${payload.length} bytes`);
  const f = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  f.writeUInt32LE(payload.length, 0);
  f.writeUInt32LE(crc32c(f.subarray(0, 4)), 4);
  f.writeUInt32LE(crc32c(payload), 8);
  f.set(payload, FRAME_HEADER_BYTES);
  return f;
}

/** A journal's bytes: the header and these frames (what a store writes, in one piece for tests). */
export function encodeJournal(payloads: readonly Uint8Array[]): Buffer {
  return Buffer.concat([journalHeader(), ...payloads.map(encodeFrame)]);
}

/** Damage that is not a torn tail: the file and the byte offset of the frame (or header) at fault. */
export class JournalDamage extends Error {
  constructor(
    readonly file: string,
    readonly offset: number,
    readonly problem: string,
  ) {
    super(`${file}: damaged at byte ${offset}: ${problem}`);
    this.name = 'JournalDamage';
  }
}

export interface JournalRecord {
  /** Byte offset of the record's frame in the file. */
  readonly offset: number;
  readonly payload: Buffer;
}

export interface DecodedJournal {
  readonly records: JournalRecord[];
  /** End of the last whole record: where the next one is appended (the file is cut here when torn). */
  readonly end: number;
  /** Set when bytes after `end` are a torn tail (cut by the store), with what was found. */
  readonly torn: string | null;
}

function allZero(buf: Buffer, from: number): boolean {
  for (let i = from; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/**
 * Decode a whole journal file. A file shorter than the header whose bytes are a prefix of it (the
 * process died while creating it) decodes as empty and torn. Throws JournalDamage for anything else
 * that does not check.
 */
export function decodeJournal(buf: Buffer, file: string): DecodedJournal {
  const header = journalHeader();
  if (buf.length < HEADER_BYTES) {
    if (header.subarray(0, buf.length).equals(buf) || allZero(buf, 0)) {
      return { records: [], end: 0, torn: `header cut short (${buf.length} of ${HEADER_BYTES} bytes)` };
    }
    throw new JournalDamage(file, 0, 'not a Lunar state journal (bad header)');
  }
  if (!buf.subarray(0, 8).equals(MAGIC)) throw new JournalDamage(file, 0, 'not a Lunar state journal (no "LUNARJNL" header)');
  if (buf.readUInt32LE(12) !== crc32c(buf.subarray(0, 12))) throw new JournalDamage(file, 0, 'header checksum mismatch');
  const version = buf.readUInt32LE(8);
  if (version !== JOURNAL_VERSION) throw new JournalDamage(file, 8, `journal format ${version}; this Lunar reads ${JOURNAL_VERSION}`);
  const records: JournalRecord[] = [];
  let at = HEADER_BYTES;
  while (at < buf.length) {
    if (allZero(buf, at)) return { records, end: at, torn: `${buf.length - at} zero bytes` };
    if (buf.length - at < FRAME_HEADER_BYTES) {
      return { records, end: at, torn: `frame header cut short (${buf.length - at} of ${FRAME_HEADER_BYTES} bytes)` };
    }
    const len = buf.readUInt32LE(at);
    if (buf.readUInt32LE(at + 4) !== crc32c(buf.subarray(at, at + 4))) throw new JournalDamage(file, at, 'record length checksum mismatch');
    if (len === 0 || len > MAX_PAYLOAD_BYTES) throw new JournalDamage(file, at, `record length ${len} out of range`);
    const start = at + FRAME_HEADER_BYTES;
    if (start + len > buf.length) {
      return { records, end: at, torn: `record of ${len} bytes cut short (${buf.length - start} bytes present)` };
    }
    const payload = buf.subarray(start, start + len);
    if (buf.readUInt32LE(at + 8) !== crc32c(payload)) throw new JournalDamage(file, at, 'record checksum mismatch');
    records.push({ offset: at, payload });
    at = start + len;
  }
  return { records, end: at, torn: null };
}
