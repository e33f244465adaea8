// Per-volume staging records: what NodeStageVolume attached (target, portals, LUN, WWID, the (portal,
// iface) pairs, SCSI device addresses, the multipath map, the filesystem) and where the volume is
// published, one JSON file per volume under <state-dir>/staged/, replaced atomically. The state dir is a
// hostPath in Kubernetes, so a restarted plugin unstages what an earlier one staged, and a stage that
// crashed half-way (phase "attaching") is cleaned or completed by the next call.

import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { removeDurable, writeFileAtomic } from '../util/atomic-file.js';
import type { PathPair } from '../host/types.js';
import type { PvcRef } from '../kube/types.js';

export interface Publication {
  readonly readonly: boolean;
  readonly accessType: 'mount' | 'block';
}

export interface StagingRecord {
  readonly version: 1;
  readonly volumeId: string;
  readonly stagingPath: string;
  /** attaching: written before the first login, so that unstage after a crash logs out what it can. */
  readonly phase: 'attaching' | 'staged';
  readonly targetIqn: string;
  readonly portals: readonly string[];
  readonly lun: number;
  readonly wwid: string;
  readonly pairs: readonly PathPair[];
  readonly accessType: 'mount' | 'block';
  /** mount: the filesystem; block: ''. */
  readonly fsType: string;
  readonly mountFlags: readonly string[];
  /** H:C:T:L of every path device found. */
  readonly devices: readonly string[];
  /** The multipath map, or null (single path, or not assembled yet). */
  readonly map: { readonly name: string; readonly kernelName: string } | null;
  /** The SCSI device used without multipath (--allow-single-path), or null. */
  readonly singleDevice: string | null;
  readonly publications: Readonly<Record<string, Publication>>;
  /**
   * The WWID was not in multipath's wwids file before the first login of this stage, so the entry is
   * Lunar's (its `multipath -a`, or multipathd's own under find_multipaths greedy/yes): unstage removes it.
   * Absent = no.
   */
  readonly wwidAdded?: boolean;
  /**
   * Other WWIDs seen at the LUN's address on this volume's sessions (a wrong or stale LU) that were not
   * in the wwids file before the first login: multipathd may have listed them; unstage removes them.
   */
  readonly foreignWwids?: readonly string[];
  /** The PVC the volume was provisioned for (volume_context pvcName/pvcNamespace): where path Events go. */
  readonly pvc?: PvcRef | null;
  readonly updatedAt: string;
}

export interface StagingRecords {
  load(volumeId: string): Promise<StagingRecord | null>;
  save(record: StagingRecord): Promise<void>;
  remove(volumeId: string): Promise<void>;
  list(): Promise<StagingRecord[]>;
}

/** File name of a volume's record: the id with anything outside [A-Za-z0-9_-] percent-encoded (no "..", no "/"). */
export function recordFileName(volumeId: string): string {
  return volumeId.replace(/[^A-Za-z0-9_-]/g, (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')) + '.json';
}

function check(r: unknown, file: string): StagingRecord {
  const o = r as Partial<StagingRecord> | null;
  if (!o || o.version !== 1 || typeof o.volumeId !== 'string' || typeof o.targetIqn !== 'string' || !Array.isArray(o.pairs)) {
    throw new Error(`staging record ${file} is not a Lunar staging record (version 1)`);
  }
  return o as StagingRecord;
}

export function stagingRecords(stateDir: string): StagingRecords {
  const dir = join(stateDir, 'staged');
  const fileOf = (id: string): string => join(dir, recordFileName(id));
  return {
    async load(volumeId) {
      let text: string;
      try {
        text = await fsp.readFile(fileOf(volumeId), 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw err;
      }
      return check(JSON.parse(text), fileOf(volumeId));
    },
    async save(record) {
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
      await writeFileAtomic(fileOf(record.volumeId), JSON.stringify({ ...record, updatedAt: new Date().toISOString() }, null, 2) + '\n');
    },
    async remove(volumeId) {
      await removeDurable(fileOf(volumeId)).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      });
    },
    async list() {
      let names: string[];
      try {
        names = await fsp.readdir(dir);
      } catch {
        return [];
      }
      const out: StagingRecord[] = [];
      for (const n of names.filter((x) => x.endsWith('.json') && !x.startsWith('.'))) {
        out.push(check(JSON.parse(await fsp.readFile(join(dir, n), 'utf8')), n));
      }
      return out;
    },
  };
}
