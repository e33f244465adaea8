// Bounds on what a CSI caller's input can make Lunar send or log: every error message (the gRPC status
// details travel in an HTTP/2 trailer, grpc-message, percent-encoded; a status larger than the peer's
// header-list limit is never delivered and the client's channel stalls) and every value a log line carries
// (request fields, parameters, ids). unary-call.ts, the one place calls are answered and logged, applies
// them to every call; validate.ts lists unknown keys through keyList().

/** Longest error message sent (characters); percent-encoded it stays far below grpc's 8 KiB header limits. */
export const MAX_MESSAGE_CHARS = 1024;
/** Longest string in a logged value (characters). */
export const MAX_LOGGED_STRING = 256;
/** Most entries of one logged object or array; the rest is summarised. */
export const MAX_LOGGED_ENTRIES = 32;
/** Deepest nesting of a logged value. */
const MAX_LOGGED_DEPTH = 6;
/** Keys a message names before "and N more". */
export const MAX_LISTED_KEYS = 5;

/** s cut to max characters, saying how many were left out. */
export function boundedString(s: string, max: number): string {
  if (s.length <= max) return s;
  const note = ` … (${s.length - max} more characters)`;
  return s.slice(0, Math.max(0, max - note.length)) + note;
}

/** An error message as it may be sent and logged. */
export function boundedMessage(message: string): string {
  return boundedString(message, MAX_MESSAGE_CHARS);
}

/** `"a", "b", "c" and 9997 more`: the first few keys, each cut short, and how many were left out. */
export function keyList(keys: readonly string[], max = MAX_LISTED_KEYS): string {
  const shown = keys.slice(0, max).map((k) => JSON.stringify(boundedString(k, 64)));
  const more = keys.length - shown.length;
  return more > 0 ? `${shown.join(', ')} and ${more} more` : shown.join(', ');
}

/** A copy of value safe to put in a log line: strings, objects, arrays and nesting bounded. */
export function boundedValue(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return boundedString(value, MAX_LOGGED_STRING);
  if (value === null || typeof value !== 'object') return value;
  if (depth >= MAX_LOGGED_DEPTH) return '[nested too deep]';
  if (Buffer.isBuffer(value)) return `[${value.length} bytes]`;
  if (Array.isArray(value)) {
    const out: unknown[] = value.slice(0, MAX_LOGGED_ENTRIES).map((v) => boundedValue(v, depth + 1));
    if (value.length > MAX_LOGGED_ENTRIES) out.push(`… ${value.length - MAX_LOGGED_ENTRIES} more`);
    return out;
  }
  const entries = Object.entries(value as Record<string, unknown>);
  const out: Record<string, unknown> = {};
  for (const [k, v] of entries.slice(0, MAX_LOGGED_ENTRIES)) out[boundedString(k, MAX_LOGGED_STRING)] = boundedValue(v, depth + 1);
  if (entries.length > MAX_LOGGED_ENTRIES) out['…'] = `${entries.length - MAX_LOGGED_ENTRIES} more keys`;
  return out;
}
