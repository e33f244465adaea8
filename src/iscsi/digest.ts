// HeaderDigest / DataDigest CRC32C (RFC 7143 §13.1, Appendix B.4 test vectors), native via @node-rs/crc32.
// The digest travels least-significant byte first (RFC 7143 §11.1 / B.4: 32 zero bytes → aa 36 91 8a).
import { crc32c } from '@node-rs/crc32';

export const DIGEST_LENGTH = 4;

/** CRC32C over several pieces, as if concatenated (padding included by the caller). */
export function crc32cOf(pieces: readonly Uint8Array[]): number {
  let crc = 0;
  for (const p of pieces) crc = crc32c(p, crc);
  return crc >>> 0;
}

/** Continue a running CRC32C. */
export function crc32cUpdate(crc: number, piece: Uint8Array): number {
  return crc32c(piece, crc) >>> 0;
}

/** The 4 digest bytes for a CRC value. */
export function digestBytes(crc: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(crc >>> 0, 0);
  return b;
}

/** Read a digest from the wire. */
export function readDigest(buf: Uint8Array, offset: number): number {
  return (buf[offset]! | (buf[offset + 1]! << 8) | (buf[offset + 2]! << 16) | (buf[offset + 3]! << 24)) >>> 0;
}
