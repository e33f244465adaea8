// The contract between the volume manager and its state store: the records that must survive a restart,
// read from memory, and changed only by transactions.
//
// Rule: a transaction is a synchronous function over a StateTransaction. The store runs transactions
// one after another (each sees every earlier one); its promise resolves once the change is durable, and
// only then do readers see it. When it rejects, the in-memory state is exactly as before. How the state
// is kept on disk (one JSON file today, src/volumes/state-file.ts) is the store's business: nothing here
// names a file format, so another backend (a journal, SQLite) implements the same interface.
//
// A VolumeRecord keeps everything about a volume that must survive a restart: the NAA 6h identifier
// and serial (made once at creation), CHAP credentials, ACL, publications and the persistent-reservation
// state of each LU. Data files live in <data-dir>/volumes/<id>.img and <data-dir>/snapshots/<id>.img.

import type { PersistentReservationSnapshot } from '../scsi/types.js';
import type { ChapCredentials } from '../target/types.js';
import type { VolumeSource } from './types.js';

export interface VolumeRecord {
  readonly id: string;
  readonly name: string;
  readonly sizeBytes: number;
  /** Size the volume was created with (idempotency of create after a resize). */
  readonly createdSizeBytes: number;
  readonly thin: boolean;
  readonly naa: string;
  readonly serial: string;
  readonly chap: ChapCredentials | null;
  readonly allow: readonly string[];
  readonly masked: boolean;
  /** Portal subset as "host:port" keys; null = every portal of the server. */
  readonly portals: readonly string[] | null;
  /** CSI node id -> initiator IQN. */
  readonly publications: Readonly<Record<string, string>>;
  readonly source?: VolumeSource;
  readonly parameters: Readonly<Record<string, string>>;
  readonly createdAt: string;
  /** Persistent-reservation state per LUN ("0"). */
  readonly reservations: Readonly<Record<string, PersistentReservationSnapshot>>;
}

export interface SnapshotRecord {
  readonly id: string;
  readonly name: string;
  readonly sourceVolumeId: string;
  readonly sizeBytes: number;
  readonly createdAt: string;
}

/** Identity of the data directory, made once. */
export interface ServerRecord {
  readonly id: string;
  readonly createdAt: string;
}

/** Every record, as loaded or saved as a whole. */
export interface StateData {
  readonly server: ServerRecord;
  readonly volumes: Readonly<Record<string, VolumeRecord>>;
  readonly snapshots: Readonly<Record<string, SnapshotRecord>>;
}

/** One change a transaction made: the new record, or null when it was removed. Backends persist these. */
export type StateChange =
  | { readonly kind: 'volume'; readonly id: string; readonly record: VolumeRecord | null }
  | { readonly kind: 'snapshot'; readonly id: string; readonly record: SnapshotRecord | null };

/** Reads. On a store: the committed state; on a transaction: the committed state plus its own changes. */
export interface StateReader {
  readonly server: ServerRecord;
  volume(id: string): VolumeRecord | undefined;
  volumeByName(name: string): VolumeRecord | undefined;
  /** Sorted by id. */
  volumes(): readonly VolumeRecord[];
  snapshot(id: string): SnapshotRecord | undefined;
  snapshotByName(name: string): SnapshotRecord | undefined;
  /** Sorted by id. */
  snapshots(): readonly SnapshotRecord[];
}

/**
 * The typed mutations of one transaction. Each throws StateError when it does not apply (an unknown id,
 * a taken id or name), which fails the whole transaction.
 */
export interface StateTransaction extends StateReader {
  /** Record a new volume; its id and name must be free. */
  addVolume(rec: VolumeRecord): void;
  removeVolume(id: string): void;
  setVolumeSize(id: string, sizeBytes: number): void;
  /** Publish to nodeId (initiator IQN), or remove the node's publication with null. */
  setPublication(id: string, nodeId: string, initiatorName: string | null): void;
  /** Persistent-reservation state of one LUN of the volume. */
  setReservations(id: string, lun: number, state: PersistentReservationSnapshot): void;
  /** Record a new snapshot; its id and name must be free. */
  addSnapshot(rec: SnapshotRecord): void;
  removeSnapshot(id: string): void;
}

export interface StateStore extends StateReader {
  /** Where the state lives (a path), for messages. */
  readonly location: string;
  /** true when no state existed at open: nothing is written until initialise() or the first change. */
  readonly created: boolean;
  /** Make the state of a newly created store durable (no-op when it was loaded or is already written). */
  initialise(): Promise<void>;
  /**
   * Run fn as one transaction and resolve with its result once its changes are durable and visible.
   * fn must be synchronous and must not keep the transaction. When fn throws or the write fails, the
   * promise rejects with that error and the in-memory state is as before. Transactions run in call
   * order; a store may write several queued ones together (group commit), and then they fail together.
   */
  update<T>(fn: (tx: StateTransaction) => T): Promise<T>;
  /** Wait for queued transactions; afterwards update() rejects. */
  close(): Promise<void>;
}

export class StateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateError';
  }
}
