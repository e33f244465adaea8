// Volume and snapshot records for the state store's tests: record n has the id, name and NAA derived
// from n, so tests can compare ids without keeping the records.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SnapshotRecord, VolumeRecord } from '../../src/volumes/state.js';

/** A 1 MiB thin, masked volume record `v<n>` (id vol-<n as 16 hex digits>). */
export function volumeRecord(n: number, parameters: Record<string, string> = {}): VolumeRecord {
  const id = `vol-${n.toString(16).padStart(16, '0')}`;
  return {
    id,
    name: `v${n}`,
    sizeBytes: 1048576,
    createdSizeBytes: 1048576,
    thin: true,
    naa: '6024c4e0' + n.toString(16).padStart(24, '0'),
    serial: id.slice(4),
    chap: null,
    allow: [],
    masked: true,
    portals: null,
    publications: {},
    parameters,
    createdAt: '2026-11-01T00:00:00.000Z',
    reservations: {},
  };
}

/** A 1 MiB snapshot record `s<n>` of `sourceVolumeId`. */
export function snapshotRecord(n: number, sourceVolumeId: string, name = `s${n}`): SnapshotRecord {
  return {
    id: `snap-${n.toString(16).padStart(16, '0')}`,
    name,
    sourceVolumeId,
    sizeBytes: 1048576,
    createdAt: '2026-11-01T00:00:00.000Z',
  };
}

/** Runs fn in a fresh temporary directory, removed afterwards (after `cleanup`, e.g. undoing chattr +i). */
export async function withTempDir(prefix: string, fn: (d: string) => Promise<void>, cleanup?: (d: string) => Promise<void>): Promise<void> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  try {
    await fn(d);
  } finally {
    await cleanup?.(d);
    await rm(d, { recursive: true, force: true });
  }
}
