// Text keys (RFC 7143 §6, §6.1): key=value pairs, each ended by a NUL, in Login/Text data segments.
import { IscsiTextError } from './errors.js';

/** §6.1: key names up to 63 bytes. */
export const MAX_KEY_LENGTH = 63;
/** §6.1: simple values up to 255 bytes unless the key says otherwise; CHAP binary values are longer. */
export const MAX_VALUE_LENGTH = 255;
/** Binary/large values (CHAP_C/CHAP_R §12.1.3, up to 1024 bytes hex-encoded + prefix): generous bound. */
export const MAX_LONG_VALUE_LENGTH = 8192;
/** Upper bound on a whole text exchange gathered over several PDUs (C bit), to bound memory. */
export const MAX_TEXT_LENGTH = 65536;

const LONG_VALUE_KEYS: ReadonlySet<string> = new Set(['CHAP_C', 'CHAP_R', 'CHAP_N', 'SendTargets', 'TargetAddress']);

/** One key=value pair in order of appearance. */
export interface TextPair {
  readonly key: string;
  readonly value: string;
}

const KEY_RE = /^[A-Za-z0-9.\-+@_]+$/;

/** Parse a complete text segment (§6.1). Throws IscsiTextError on a malformed pair. */
export function parseText(data: Buffer): TextPair[] {
  const out: TextPair[] = [];
  let start = 0;
  // Trailing padding NULs (or an empty segment) are allowed.
  while (start < data.length) {
    let end = data.indexOf(0, start);
    if (end === -1) end = data.length; // tolerate a missing terminator on the last pair
    if (end === start) {
      start++;
      continue;
    }
    const s = data.toString('utf8', start, end);
    const eq = s.indexOf('=');
    if (eq <= 0) throw new IscsiTextError(`text pair without key=value: ${JSON.stringify(s.slice(0, 80))}`);
    const key = s.slice(0, eq);
    const value = s.slice(eq + 1);
    if (key.length > MAX_KEY_LENGTH || !KEY_RE.test(key)) throw new IscsiTextError(`invalid key name ${JSON.stringify(key.slice(0, 80))}`);
    const limit = LONG_VALUE_KEYS.has(key) ? MAX_LONG_VALUE_LENGTH : MAX_VALUE_LENGTH;
    if (Buffer.byteLength(value) > limit) throw new IscsiTextError(`value of ${key} longer than ${limit} bytes`);
    out.push({ key, value });
    start = end + 1;
  }
  return out;
}

/** Encode pairs as key=value\0... (§6.1). */
export function encodeText(pairs: Iterable<TextPair>): Buffer {
  let s = '';
  for (const p of pairs) s += `${p.key}=${p.value}\0`;
  return Buffer.from(s, 'utf8');
}

/**
 * Gathers a text exchange spread over several PDUs with the C (continue) bit (§6.2, §11.10.2).
 * Returns the whole segment once a PDU arrives without C.
 */
export class TextAssembler {
  private parts: Buffer[] = [];
  private length = 0;

  /** Add one PDU's data; returns the full text when `more` is false, else null. */
  push(data: Buffer, more: boolean): Buffer | null {
    this.length += data.length;
    if (this.length > MAX_TEXT_LENGTH) {
      this.reset();
      throw new IscsiTextError(`text exchange longer than ${MAX_TEXT_LENGTH} bytes`);
    }
    if (data.length > 0) this.parts.push(Buffer.from(data));
    if (more) return null;
    const all = Buffer.concat(this.parts);
    this.reset();
    return all;
  }

  get pending(): boolean {
    return this.parts.length > 0;
  }

  reset(): void {
    this.parts = [];
    this.length = 0;
  }
}

/** Split a response text into chunks of at most `max` bytes (§6.2: continued with C and F bits). */
export function splitText(text: Buffer, max: number): Buffer[] {
  if (text.length <= max) return [text];
  const out: Buffer[] = [];
  for (let o = 0; o < text.length; o += max) out.push(text.subarray(o, Math.min(text.length, o + max)));
  return out;
}
