// Parsing and formatting of byte sizes for the CLI and the admin socket ("1GiB", "512MiB", "1G", "1048576").

const UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
  p: 1024 ** 5,
  pb: 1000 ** 5,
  pib: 1024 ** 5,
};

export class SizeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SizeError';
  }
}

const SIZE_RE = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/;

/**
 * Parse a size: a byte count ("1048576") or a number with a unit. Binary units: K, M, G, T, P (single
 * letter, as in `truncate`/`qemu-img`), KiB, MiB, GiB, TiB, PiB; decimal units: KB, MB, GB, TB, PB.
 * Case-insensitive. The result must be a whole number of bytes and a safe integer.
 */
export function parseSize(text: string): number {
  const m = SIZE_RE.exec(text);
  if (!m) {
    throw new SizeError(`invalid size "${text}": expected a number of bytes or a number with a unit, e.g. 1GiB, 512MiB, 10G, 1073741824`);
  }
  const unit = UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) {
    throw new SizeError(`invalid size "${text}": unknown unit "${m[2]}" (use B, K/KiB, M/MiB, G/GiB, T/TiB, P/PiB, or KB, MB, GB, TB, PB)`);
  }
  const value = Number(m[1]) * unit;
  if (!Number.isFinite(value) || value > Number.MAX_SAFE_INTEGER) {
    throw new SizeError(`invalid size "${text}": too large (at most ${Number.MAX_SAFE_INTEGER} bytes)`);
  }
  if (!Number.isInteger(value)) {
    throw new SizeError(`invalid size "${text}": not a whole number of bytes`);
  }
  return value;
}

/** Human-readable binary size: "1 GiB", "1.5 MiB", "512 B". */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const text = Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1).replace(/\.?0+$/, '');
  return `${text} ${units[i]}`;
}

/** Round up to a multiple of `alignment` (a power of two or any positive integer). */
export function alignUp(bytes: number, alignment: number): number {
  return Math.ceil(bytes / alignment) * alignment;
}
