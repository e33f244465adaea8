// The persistent state of one Lunar data directory: a single JSON file, <data-dir>/state.json, replaced
// atomically (src/util/atomic-file.ts) on every change. Layout (version 1):
//
//   {
//     "format": "lunar-state", "version": 1,
//     "server": { "id": "<uuid>", "createdAt": "<ISO 8601>" },
//     "volumes": { "<volume id>": VolumeRecord, ... },
//     "snapshots": { "<snapshot id>": SnapshotRecord, ... }
//   }
//
// A VolumeRecord keeps everything that must survive a restart: the NAA 6h identifier and serial (made
// once at creation), CHAP credentials, ACL, publications and the persistent-reservation state of each LU.
// Data files live next to it: <data-dir>/volumes/<id>.img and <data-dir>/snapshots/<id>.img.

import { randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { dirname, join } from 'node:path';
import type { PersistentReservationSnapshot } from '../scsi/types.js';
import type { ChapCredentials } from '../target/types.js';
import type { VolumeSource } from './types.js';
import { commitTempSync, fsyncDir, isTempName, writeFileAtomicSync, writeTempFile } from '../util/atomic-file.js';

export const STATE_FILE = 'state.json';
export const STATE_FORMAT = 'lunar-state';
export const STATE_VERSION = 1;

export interface VolumeRecord {
  id: string;
  name: string;
  sizeBytes: number;
  /** Size the volume was created with (idempotency of create after a resize). */
  createdSizeBytes: number;
  thin: boolean;
  naa: string;
  serial: string;
  chap: ChapCredentials | null;
  allow: string[];
  masked: boolean;
  /** Portal subset as "host:port" keys; null = every portal of the server. */
  portals: string[] | null;
  publications: Record<string, string>;
  source?: VolumeSource;
  parameters: Record<string, string>;
  createdAt: string;
  /** Persistent-reservation state per LUN ("0"). */
  reservations: Record<string, PersistentReservationSnapshot>;
}

export interface SnapshotRecord {
  id: string;
  name: string;
  sourceVolumeId: string;
  sizeBytes: number;
  createdAt: string;
}

export interface StateData {
  format: typeof STATE_FORMAT;
  version: number;
  server: { id: string; createdAt: string };
  volumes: Record<string, VolumeRecord>;
  snapshots: Record<string, SnapshotRecord>;
}

export class StateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateError';
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Structural check of a parsed state file; throws StateError saying what is wrong. */
export function validateState(raw: unknown, path: string): StateData {
  if (!isObject(raw) || raw.format !== STATE_FORMAT) {
    throw new StateError(`${path} is not a Lunar state file (missing "format": "${STATE_FORMAT}")`);
  }
  if (raw.version !== STATE_VERSION) {
    throw new StateError(`${path} has state version ${String(raw.version)}; this Lunar reads version ${STATE_VERSION}`);
  }
  if (!isObject(raw.server) || typeof raw.server.id !== 'string') throw new StateError(`${path}: "server.id" missing`);
  if (!isObject(raw.volumes) || !isObject(raw.snapshots)) throw new StateError(`${path}: "volumes"/"snapshots" missing`);
  for (const [id, v] of Object.entries(raw.volumes)) {
    if (!isObject(v) || v.id !== id || typeof v.name !== 'string' || typeof v.sizeBytes !== 'number' || typeof v.naa !== 'string') {
      throw new StateError(`${path}: volume record "${id}" is malformed`);
    }
  }
  for (const [id, s] of Object.entries(raw.snapshots)) {
    if (!isObject(s) || s.id !== id || typeof s.sourceVolumeId !== 'string' || typeof s.sizeBytes !== 'number') {
      throw new StateError(`${path}: snapshot record "${id}" is malformed`);
    }
  }
  return raw as unknown as StateData;
}

/**
 * The in-memory state plus its file. Mutate `data`, then await save(): saves are serialised and
 * coalesced (a save requested while one is writing writes the newest state once the first finishes).
 */
export class StateStore {
  private chain: Promise<void> = Promise.resolve();
  private version = 0;
  private savedVersion = 0;

  private constructor(
    readonly path: string,
    readonly data: StateData,
    /** true when no state file existed: data is new and not saved until save() is called. */
    readonly created: boolean,
  ) {}

  static async open(dataDir: string): Promise<StateStore> {
    await fsp.mkdir(dataDir, { recursive: true, mode: 0o700 });
    const path = join(dataDir, STATE_FILE);
    // Leftovers of an interrupted atomic write (never the live file).
    for (const name of await fsp.readdir(dataDir)) {
      if (isTempName(name) && name.includes(STATE_FILE)) await fsp.rm(join(dataDir, name), { force: true });
    }
    let text: string | null = null;
    try {
      text = await fsp.readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text === null) {
      const data: StateData = {
        format: STATE_FORMAT,
        version: STATE_VERSION,
        server: { id: randomUUID(), createdAt: new Date().toISOString() },
        volumes: {},
        snapshots: {},
      };
      // Not written yet: the caller saves once it has checked the data directory (a missing state file
      // next to existing volume files must stay missing, so that a later start refuses again).
      return new StateStore(path, data, true);
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new StateError(
        `${path} is not valid JSON (${(err as Error).message}); Lunar will not start over a damaged state file — restore it from a backup or move the data directory away`,
      );
    }
    return new StateStore(path, validateState(raw, path), false);
  }

  private serialise(): string {
    return JSON.stringify(this.data, null, 2) + '\n';
  }

  /** Persist the current in-memory state. */
  save(): Promise<void> {
    const wanted = ++this.version;
    const run = async (): Promise<void> => {
      if (this.savedVersion >= wanted) return;
      const v = this.version;
      const tmp = await writeTempFile(this.path, this.serialise());
      // A saveSync() may have written a newer state meanwhile; never rename an older one over it. The
      // check and the rename run on the main thread without a pause, as saveSync does.
      if (this.savedVersion >= v) {
        await fsp.rm(tmp, { force: true });
        return;
      }
      commitTempSync(tmp, this.path);
      this.savedVersion = v;
      await fsyncDir(dirname(this.path));
    };
    const p = this.chain.then(run, run);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /**
   * Persist now, synchronously: durable when this returns. For changes that must not be acknowledged
   * before they are on disk and that arrive in a synchronous callback (persistent reservations: the
   * PERSISTENT RESERVE OUT status follows the callback). Blocks the event loop for one small fsync.
   */
  saveSync(): void {
    const v = ++this.version;
    writeFileAtomicSync(this.path, this.serialise());
    this.savedVersion = Math.max(this.savedVersion, v);
  }
}
