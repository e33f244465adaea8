// Rewriting of the HTTP/2 :authority pseudo-header on CSI connections.
//
// Why: kubelet before Kubernetes 1.26 (kubernetes PR #112597) and older CSI sidecars dial
// "unix:///path/csi.sock" with gRPC-Go, which sends the socket path ("/var/lib/kubelet/.../csi.sock") as
// :authority. nghttp2 inside Node's http2 server — under @grpc/grpc-js — validates :authority against
// RFC 3986 and resets such streams with PROTOCOL_ERROR (nodejs/node#32326, grpc/grpc-node#258), so those
// callers could never reach a Node CSI plugin. democratic-csi ships a Go reverse proxy for this; Lunar
// instead accepts the socket itself and feeds each connection to grpc-js through a connection injector
// after this rewriter, which replaces every byte of an :authority value that nghttp2 would refuse by '_'.
//
// Why hand-written: no maintained HPACK package is among Lunar's dependencies, and only a small part of
// HPACK is needed. The rewrite keeps the value's length in octets, so the HPACK dynamic table of the
// server's decoder holds entries of exactly the sizes the client's encoder assumes (RFC 7541 §4.1): the
// tables stay in step without re-encoding anything but the rewritten literal. Server -> client bytes are
// not touched. Frames other than HEADERS/CONTINUATION pass through as received.

import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';

// RFC 9113 §3.4: the client connection preface.
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME_HEADER = 9;
const TYPE_HEADERS = 0x1;
const TYPE_PUSH_PROMISE = 0x5;
const TYPE_CONTINUATION = 0x9;
const FLAG_END_STREAM = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
// RFC 9113 §4.2: every peer accepts frames of 2^14 octets.
const MAX_FRAME_PAYLOAD = 16384;
// Refuse to buffer header blocks beyond this (grpc-js' default max metadata size is 8 KiB).
const MAX_HEADER_BLOCK = 1024 * 1024;

// ---- HPACK primitives (RFC 7541) -----------------------------------------------------------------

/** RFC 7541 §5.1 integer with an N-bit prefix; null when the buffer ends first or the value is absurd. */
export function decodeHpackInt(buf: Buffer, pos: number, prefixBits: number): { value: number; next: number } | null {
  if (pos >= buf.length) return null;
  const max = (1 << prefixBits) - 1;
  let value = (buf[pos] as number) & max;
  let p = pos + 1;
  if (value < max) return { value, next: p };
  let m = 0;
  for (;;) {
    if (p >= buf.length || m > 28) return null;
    const b = buf[p++] as number;
    value += (b & 0x7f) * 2 ** m;
    m += 7;
    if ((b & 0x80) === 0) return { value, next: p };
  }
}

/** RFC 7541 §5.1 integer encoding; the first byte carries `firstBits` above the prefix. */
export function encodeHpackInt(value: number, prefixBits: number, firstBits: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([firstBits | value]);
  const out = [firstBits | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

// RFC 7541 Appendix B: code lengths of symbols 0..255 (EOS, symbol 256, has 30 bits). The code is
// canonical (codes assigned in order of length, then symbol), so the lengths define it completely.
const HUFFMAN_LENGTHS: readonly number[] = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10,
  12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
  7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7,
  7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22,
  23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22,
  23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20,
  24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/** Per code length: code -> symbol. */
const HUFFMAN_DECODE: ReadonlyMap<number, ReadonlyMap<number, number>> = (() => {
  const symbols = HUFFMAN_LENGTHS.map((len, sym) => ({ len, sym })).sort((a, b) => a.len - b.len || a.sym - b.sym);
  const table = new Map<number, Map<number, number>>();
  let code = 0;
  let prevLen = symbols[0]?.len ?? 0;
  for (const { len, sym } of symbols) {
    code <<= len - prevLen;
    prevLen = len;
    let byLen = table.get(len);
    if (!byLen) table.set(len, (byLen = new Map<number, number>()));
    byLen.set(code, sym);
    code += 1;
  }
  return table;
})();

/** RFC 7541 §5.2 Huffman-coded string -> bytes; null when malformed (EOS inside, bad padding). */
export function huffmanDecode(data: Buffer): Buffer | null {
  const out: number[] = [];
  let code = 0;
  let len = 0;
  for (const byte of data) {
    for (let bit = 7; bit >= 0; bit--) {
      code = code * 2 + ((byte >> bit) & 1);
      len += 1;
      const sym = HUFFMAN_DECODE.get(len)?.get(code);
      if (sym !== undefined) {
        if (sym === 256) return null;
        out.push(sym);
        code = 0;
        len = 0;
      } else if (len >= 30) {
        return null;
      }
    }
  }
  // Padding: fewer than 8 bits, all ones (the most significant bits of EOS).
  if (len > 7 || code !== 2 ** len - 1) return null;
  return Buffer.from(out);
}

// nghttp2's check for :authority (RFC 3986 authority): unreserved, pct-encoded, sub-delims, ':', '@',
// '[' and ']'. Everything else becomes '_'.
function authorityByteOk(b: number): boolean {
  return (
    (b >= 0x30 && b <= 0x39) ||
    (b >= 0x41 && b <= 0x5a) ||
    (b >= 0x61 && b <= 0x7a) ||
    "-._~%!$&'()*+,;=:@[]".includes(String.fromCharCode(b))
  );
}

/** Same length, every byte nghttp2 would refuse replaced by '_'; null when nothing needs replacing. */
export function sanitizeAuthority(value: Buffer): Buffer | null {
  let out: Buffer | null = null;
  for (let i = 0; i < value.length; i++) {
    if (!authorityByteOk(value[i] as number)) {
      if (!out) out = Buffer.from(value);
      out[i] = 0x5f;
    }
  }
  return out;
}

interface StringLiteral {
  readonly bytes: Buffer;
  readonly next: number;
}

function readStringLiteral(block: Buffer, pos: number): StringLiteral | null {
  if (pos >= block.length) return null;
  const huffman = ((block[pos] as number) & 0x80) !== 0;
  const len = decodeHpackInt(block, pos, 7);
  if (!len || len.next + len.value > block.length) return null;
  const raw = block.subarray(len.next, len.next + len.value);
  const bytes = huffman ? huffmanDecode(raw) : raw;
  return bytes ? { bytes, next: len.next + len.value } : null;
}

const AUTHORITY = Buffer.from(':authority');

/**
 * Rewrites :authority literals of one header block (RFC 7541 §6). Returns null when nothing changed or
 * the block cannot be parsed (it is then passed on as received and the server answers as it would).
 */
export function rewriteHeaderBlock(block: Buffer): Buffer | null {
  const parts: Buffer[] = [];
  let changed = false;
  let pos = 0;
  let copied = 0;
  while (pos < block.length) {
    const b = block[pos] as number;
    if (b & 0x80) {
      // §6.1 indexed header field
      const idx = decodeHpackInt(block, pos, 7);
      if (!idx) return null;
      pos = idx.next;
      continue;
    }
    if ((b & 0xe0) === 0x20) {
      // §6.3 dynamic table size update
      const size = decodeHpackInt(block, pos, 5);
      if (!size) return null;
      pos = size.next;
      continue;
    }
    // §6.2.1 (01xxxxxx, 6-bit index), §6.2.2 (0000xxxx) and §6.2.3 (0001xxxx, 4-bit index) literals
    const prefix = (b & 0xc0) === 0x40 ? 6 : 4;
    const nameIdx = decodeHpackInt(block, pos, prefix);
    if (!nameIdx) return null;
    let isAuthority = nameIdx.value === 1; // static table entry 1 is :authority
    let valuePos = nameIdx.next;
    if (nameIdx.value === 0) {
      const name = readStringLiteral(block, nameIdx.next);
      if (!name) return null;
      isAuthority = name.bytes.equals(AUTHORITY);
      valuePos = name.next;
    }
    const value = readStringLiteral(block, valuePos);
    if (!value) return null;
    const fixed = isAuthority ? sanitizeAuthority(value.bytes) : null;
    if (fixed) {
      parts.push(block.subarray(copied, valuePos), encodeHpackInt(fixed.length, 7, 0x00), fixed);
      copied = value.next;
      changed = true;
    }
    pos = value.next;
  }
  if (!changed) return null;
  parts.push(block.subarray(copied));
  return Buffer.concat(parts);
}

function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const h = Buffer.alloc(FRAME_HEADER);
  h.writeUIntBE(length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId & 0x7fffffff, 5);
  return h;
}

interface PendingBlock {
  readonly type: number;
  readonly streamId: number;
  readonly flags: number;
  /** Bytes that precede the fragment in the first frame's payload (priority fields, promised id). */
  readonly lead: Buffer;
  readonly fragments: Buffer[];
  /** The frames as received, forwarded unchanged when the block needs no rewrite. */
  readonly raw: Buffer[];
  size: number;
}

/** Client -> server byte stream filter: HTTP/2 frames in, HTTP/2 frames out, :authority rewritten. */
export class AuthorityRewriter {
  private buf: Buffer = Buffer.alloc(0);
  private prefaceDone = false;
  private pending: PendingBlock | null = null;
  private passthrough = false;

  /** Feeds received bytes; returns the bytes to deliver to the server now. */
  push(chunk: Buffer): Buffer[] {
    if (this.passthrough) return [chunk];
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Buffer[] = [];
    if (!this.prefaceDone) {
      const n = Math.min(this.buf.length, PREFACE.length);
      if (!this.buf.subarray(0, n).equals(PREFACE.subarray(0, n))) {
        // Not HTTP/2 with prior knowledge: let the server reject it.
        this.passthrough = true;
        out.push(this.buf);
        this.buf = Buffer.alloc(0);
        return out;
      }
      if (this.buf.length < PREFACE.length) return out;
      out.push(this.buf.subarray(0, PREFACE.length));
      this.buf = this.buf.subarray(PREFACE.length);
      this.prefaceDone = true;
    }
    while (this.buf.length >= FRAME_HEADER) {
      const length = this.buf.readUIntBE(0, 3);
      if (this.buf.length < FRAME_HEADER + length) break;
      const frame = this.buf.subarray(0, FRAME_HEADER + length);
      this.buf = this.buf.subarray(FRAME_HEADER + length);
      out.push(...this.frame(frame));
    }
    return out;
  }

  private frame(frame: Buffer): Buffer[] {
    const type = frame[3] as number;
    const flags = frame[4] as number;
    const streamId = frame.readUInt32BE(5) & 0x7fffffff;
    const payload = frame.subarray(FRAME_HEADER);
    if (this.pending) {
      if (type !== TYPE_CONTINUATION || streamId !== this.pending.streamId) {
        // Protocol error by the client; forward everything and let the server close the connection.
        const raw = this.pending.raw;
        this.pending = null;
        return [...raw, frame];
      }
      this.pending.fragments.push(payload);
      this.pending.raw.push(frame);
      this.pending.size += payload.length;
      if (this.pending.size > MAX_HEADER_BLOCK) {
        const raw = this.pending.raw;
        this.pending = null;
        this.passthrough = true;
        return raw;
      }
      return flags & FLAG_END_HEADERS ? this.finish() : [];
    }
    if (type !== TYPE_HEADERS && type !== TYPE_PUSH_PROMISE) return [frame];
    let off = 0;
    let pad = 0;
    if (flags & FLAG_PADDED) {
      pad = payload[0] ?? 0;
      off = 1;
    }
    const leadLen = type === TYPE_HEADERS ? (flags & FLAG_PRIORITY ? 5 : 0) : 4;
    if (off + leadLen + pad > payload.length) return [frame];
    const lead = payload.subarray(off, off + leadLen);
    const fragment = payload.subarray(off + leadLen, payload.length - pad);
    this.pending = {
      type,
      streamId,
      flags: flags & (FLAG_END_STREAM | FLAG_PRIORITY),
      lead,
      fragments: [fragment],
      raw: [frame],
      size: fragment.length,
    };
    return flags & FLAG_END_HEADERS ? this.finish() : [];
  }

  private finish(): Buffer[] {
    const p = this.pending as PendingBlock;
    this.pending = null;
    const rewritten = rewriteHeaderBlock(p.fragments.length === 1 ? (p.fragments[0] as Buffer) : Buffer.concat(p.fragments));
    if (!rewritten) return p.raw;
    const out: Buffer[] = [];
    let rest = rewritten;
    let first = true;
    while (first || rest.length > 0) {
      const room = MAX_FRAME_PAYLOAD - (first ? p.lead.length : 0);
      const piece = rest.subarray(0, room);
      rest = rest.subarray(piece.length);
      const last = rest.length === 0;
      if (first) {
        const flags = p.flags | (last ? FLAG_END_HEADERS : 0);
        out.push(frameHeader(p.lead.length + piece.length, p.type, flags, p.streamId), p.lead, piece);
      } else {
        out.push(frameHeader(piece.length, TYPE_CONTINUATION, last ? FLAG_END_HEADERS : 0, p.streamId), piece);
      }
      first = false;
    }
    return out;
  }
}

/**
 * Wraps an accepted socket into a duplex whose readable side is the socket's bytes with :authority
 * rewritten and whose writable side writes to the socket, for grpc-js' connection injector.
 */
export function rewritingDuplex(socket: Socket): Duplex {
  const rewriter = new AuthorityRewriter();
  const duplex = new Duplex({
    allowHalfOpen: false,
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      socket.write(chunk, cb);
    },
    final(cb) {
      socket.end(cb);
    },
    destroy(err, cb) {
      socket.destroy(err ?? undefined);
      cb(err);
    },
  });
  socket.on('data', (chunk: Buffer) => {
    let more = true;
    for (const b of rewriter.push(chunk)) more = duplex.push(b) && more;
    if (!more) socket.pause();
  });
  socket.on('end', () => duplex.push(null));
  socket.on('error', (err) => duplex.destroy(err));
  socket.on('close', () => duplex.destroy());
  return duplex;
}
