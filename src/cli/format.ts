// How the `lunar` command prints: aligned tables, JSON, the description of a volume, paths as typed.

import { relative } from 'node:path';
import { naaWwid } from '../util/ids.js';
import { targetAddress } from '../util/portal.js';
import { formatSize } from '../util/size.js';
import type { Volume } from '../volumes/types.js';

/** A directory as the user would type it (relative when under the working directory) for messages. */
export function shownDir(dir: string): string {
  const rel = relative(process.cwd(), dir);
  return rel === '' ? '.' : rel.startsWith('..') ? dir : rel;
}

/** Pretty-printed JSON and a newline. */
export function jsonText(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}

/** Widest name a table shows in full (a CSI volume name, "pvc-" and a UUID, is 40); `--wide` shows all. */
export const NAME_COLUMN_WIDTH = 40;

/** text cut to at most width characters, the last one an ellipsis when it was longer. */
export function ellipsis(text: string, width: number): string {
  const chars = Array.from(text);
  return chars.length <= width ? text : chars.slice(0, width - 1).join('') + '…';
}

/** A name cell of a table: cut to NAME_COLUMN_WIDTH unless wide. */
export function nameCell(name: string, wide: boolean): string {
  return wide ? name : ellipsis(name, NAME_COLUMN_WIDTH);
}

/** Columns padded to their widest cell, two spaces apart; the first row is the header. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths = (rows[0] ?? []).map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c] ?? 0))).join('  ')).join('\n') + '\n';
}

/** A list as JSON, else the empty message, else a table: header and one row per item. */
export function listText<T>(
  json: boolean,
  items: readonly T[],
  empty: string,
  header: readonly string[],
  row: (item: T) => string[],
): string {
  if (json) return jsonText(items);
  if (items.length === 0) return empty;
  return table([header, ...items.map(row)]);
}

/** The portals of a volume as initiators reach them: "host:port,tpgt ...". */
export function volumePortals(v: Volume): string {
  return v.portals.map((p) => targetAddress(p)).join(' ');
}

/** `lunar volume show` / `create` text: what an initiator needs to find and log in to the volume. */
export function describeVolume(v: Volume): string {
  const lines = [
    `volume ${v.name} (${v.id})`,
    `  size:      ${formatSize(v.sizeBytes)} (${v.sizeBytes} bytes), ${v.thin ? 'thin' : 'thick'}`,
    `  target:    ${v.iqn}`,
    `  lun:       ${v.lun}`,
    `  portals:   ${volumePortals(v)}`,
    `  wwid:      ${naaWwid(v.naa)}`,
    `  serial:    ${v.serial}`,
  ];
  if (v.chap) {
    lines.push(`  chap:      user ${v.chap.user} secret ${v.chap.secret}`);
    if (v.chap.mutualUser) lines.push(`  mutual:    user ${v.chap.mutualUser} secret ${v.chap.mutualSecret ?? ''}`);
  } else lines.push('  chap:      none');
  const allowed = [...v.allow, ...Object.entries(v.publications).map(([n, i]) => `${i} (node ${n})`)];
  lines.push(`  access:    ${allowed.length > 0 ? allowed.join(', ') : v.masked ? 'nobody (masked)' : 'any initiator'}`);
  if (v.source) lines.push(`  source:    ${v.source.kind} ${v.source.id}`);
  return lines.join('\n') + '\n';
}
