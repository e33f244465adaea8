// The in-memory side of a state store, shared by every backend: the committed records with their name
// indexes (MemoryState), and a transaction's draft (Draft) that records changes over a reader without
// touching it. A store makes a Draft, runs the caller's function on it, persists draft.changes(), and
// only then applies them to its MemoryState: until the write is durable nobody sees them.

import type { PersistentReservationSnapshot } from '../scsi/types.js';
import {
  StateError,
  type ServerRecord,
  type SnapshotRecord,
  type StateChange,
  type StateData,
  type StateReader,
  type StateTransaction,
  type VolumeRecord,
} from './state.js';

function byId(a: { readonly id: string }, b: { readonly id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

/** Records of one kind: by id (insertion order kept), by name, and a sorted list made on demand. */
class Table<R extends { readonly id: string; readonly name: string }> {
  private sorted: readonly R[] | null = null;

  constructor(
    private readonly byId: Map<string, R> = new Map<string, R>(),
    private readonly byName: Map<string, string> = new Map<string, string>(),
  ) {}

  get(id: string): R | undefined {
    return this.byId.get(id);
  }

  getByName(name: string): R | undefined {
    const id = this.byName.get(name);
    return id === undefined ? undefined : this.byId.get(id);
  }

  list(): readonly R[] {
    this.sorted ??= [...this.byId.values()].sort(byId);
    return this.sorted;
  }

  entries(): IterableIterator<[string, R]> {
    return this.byId.entries();
  }

  set(id: string, rec: R | null): void {
    const old = this.byId.get(id);
    if (old && this.byName.get(old.name) === id) this.byName.delete(old.name);
    if (rec) {
      this.byId.set(id, deepFreeze(rec));
      this.byName.set(rec.name, id);
    } else {
      this.byId.delete(id);
    }
    this.sorted = null;
  }

  clone(): Table<R> {
    return new Table(new Map(this.byId), new Map(this.byName));
  }
}

/** Reads answered by another reader, the one current() returns. */
export abstract class DelegatingReader implements StateReader {
  protected abstract current(): StateReader;

  get server(): ServerRecord {
    return this.current().server;
  }
  volume(id: string): VolumeRecord | undefined {
    return this.current().volume(id);
  }
  volumeByName(name: string): VolumeRecord | undefined {
    return this.current().volumeByName(name);
  }
  volumes(): readonly VolumeRecord[] {
    return this.current().volumes();
  }
  snapshot(id: string): SnapshotRecord | undefined {
    return this.current().snapshot(id);
  }
  snapshotByName(name: string): SnapshotRecord | undefined {
    return this.current().snapshotByName(name);
  }
  snapshots(): readonly SnapshotRecord[] {
    return this.current().snapshots();
  }
}

/** The committed state: cheap reads, and changes applied in place or to a copy. */
export class MemoryState implements StateReader {
  private constructor(
    readonly server: ServerRecord,
    private readonly vols: Table<VolumeRecord>,
    private readonly snaps: Table<SnapshotRecord>,
  ) {}

  /** From validated data (every id is its record's id, names unique per kind). */
  static fromData(data: StateData): MemoryState {
    const m = new MemoryState(deepFreeze({ ...data.server }), new Table(), new Table());
    for (const rec of Object.values(data.volumes)) m.vols.set(rec.id, rec);
    for (const rec of Object.values(data.snapshots)) m.snaps.set(rec.id, rec);
    return m;
  }

  volume(id: string): VolumeRecord | undefined {
    return this.vols.get(id);
  }

  volumeByName(name: string): VolumeRecord | undefined {
    return this.vols.getByName(name);
  }

  volumes(): readonly VolumeRecord[] {
    return this.vols.list();
  }

  snapshot(id: string): SnapshotRecord | undefined {
    return this.snaps.get(id);
  }

  snapshotByName(name: string): SnapshotRecord | undefined {
    return this.snaps.getByName(name);
  }

  snapshots(): readonly SnapshotRecord[] {
    return this.snaps.list();
  }

  /** Apply changes in order, in place. */
  apply(changes: readonly StateChange[]): void {
    for (const c of changes) {
      if (c.kind === 'volume') this.vols.set(c.id, c.record);
      else this.snaps.set(c.id, c.record);
    }
  }

  /** A copy with changes applied; this state is unchanged. */
  with(changes: readonly StateChange[]): MemoryState {
    const m = new MemoryState(this.server, this.vols.clone(), this.snaps.clone());
    m.apply(changes);
    return m;
  }

  /** Every record, in the order they were first recorded. */
  toData(): StateData {
    return {
      server: this.server,
      volumes: Object.fromEntries(this.vols.entries()),
      snapshots: Object.fromEntries(this.snaps.entries()),
    };
  }
}

/**
 * The changes of one transaction over a base reader (the committed state, or an earlier draft of the
 * same group commit). Reads see the base plus these changes; the base is never modified.
 */
export class Draft extends DelegatingReader implements StateTransaction {
  private readonly vols = new Map<string, VolumeRecord | null>();
  private readonly snaps = new Map<string, SnapshotRecord | null>();
  private sealed = false;
  /** The base plus this draft's changes, readable after the draft is sealed: the base of the next
   * transaction of a group commit. */
  readonly view: StateReader;

  constructor(base: StateReader) {
    super();
    this.view = new Overlay(base, this.vols, this.snaps);
  }

  /** true when the transaction changed something. */
  get changed(): boolean {
    return this.vols.size > 0 || this.snaps.size > 0;
  }

  /** Ends the transaction: later calls on it throw. */
  seal(): void {
    this.sealed = true;
  }

  changes(): StateChange[] {
    return [
      ...[...this.vols].map(([id, record]): StateChange => ({ kind: 'volume', id, record })),
      ...[...this.snaps].map(([id, record]): StateChange => ({ kind: 'snapshot', id, record })),
    ];
  }

  protected current(): StateReader {
    this.check();
    return this.view;
  }

  // ---- mutations ------------------------------------------------------------------------------

  addVolume(rec: VolumeRecord): void {
    if (this.volume(rec.id)) throw new StateError(`volume ${rec.id} is already recorded`);
    const other = this.volumeByName(rec.name);
    if (other) throw new StateError(`volume name "${rec.name}" is already taken by ${other.id}`);
    this.vols.set(rec.id, copyVolume(rec));
  }

  removeVolume(id: string): void {
    this.existingVolume(id);
    this.vols.set(id, null);
  }

  setVolumeSize(id: string, sizeBytes: number): void {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new StateError(`volume size ${sizeBytes} is not a positive integer`);
    this.vols.set(id, { ...this.existingVolume(id), sizeBytes });
  }

  setPublication(id: string, nodeId: string, initiatorName: string | null): void {
    const rec = this.existingVolume(id);
    const others = Object.entries(rec.publications).filter(([n]) => n !== nodeId);
    // fromEntries: a node id such as "__proto__" stays an own key.
    const publications = Object.fromEntries(initiatorName === null ? others : [...others, [nodeId, initiatorName]]);
    this.vols.set(id, { ...rec, publications });
  }

  setReservations(id: string, lun: number, state: PersistentReservationSnapshot): void {
    if (!Number.isInteger(lun) || lun < 0) throw new StateError(`LUN ${lun} is not a non-negative integer`);
    const rec = this.existingVolume(id);
    this.vols.set(id, { ...rec, reservations: { ...rec.reservations, [String(lun)]: copyReservations(state) } });
  }

  addSnapshot(rec: SnapshotRecord): void {
    if (this.snapshot(rec.id)) throw new StateError(`snapshot ${rec.id} is already recorded`);
    const other = this.snapshotByName(rec.name);
    if (other) throw new StateError(`snapshot name "${rec.name}" is already taken by ${other.id}`);
    this.snaps.set(rec.id, { ...rec });
  }

  removeSnapshot(id: string): void {
    if (!this.snapshot(id)) throw new StateError(`snapshot ${id} is not recorded`);
    this.snaps.set(id, null);
  }

  private existingVolume(id: string): VolumeRecord {
    const rec = this.volume(id);
    if (!rec) throw new StateError(`volume ${id} is not recorded`);
    return rec;
  }

  private check(): void {
    if (this.sealed) throw new StateError('a transaction was used after it ended');
  }
}

/** A reader over base with a draft's changes on top. */
class Overlay implements StateReader {
  constructor(
    private readonly base: StateReader,
    private readonly vols: ReadonlyMap<string, VolumeRecord | null>,
    private readonly snaps: ReadonlyMap<string, SnapshotRecord | null>,
  ) {}

  get server(): ServerRecord {
    return this.base.server;
  }

  volume(id: string): VolumeRecord | undefined {
    return ownOr(this.vols, id, (x) => this.base.volume(x));
  }

  volumeByName(name: string): VolumeRecord | undefined {
    return ownByNameOr(this.vols, name, (x) => this.base.volumeByName(x));
  }

  volumes(): readonly VolumeRecord[] {
    return merged(this.base.volumes(), this.vols);
  }

  snapshot(id: string): SnapshotRecord | undefined {
    return ownOr(this.snaps, id, (x) => this.base.snapshot(x));
  }

  snapshotByName(name: string): SnapshotRecord | undefined {
    return ownByNameOr(this.snaps, name, (x) => this.base.snapshotByName(x));
  }

  snapshots(): readonly SnapshotRecord[] {
    return merged(this.base.snapshots(), this.snaps);
  }
}

/** The draft's record for id (undefined when it removed it), else the base's. */
function ownOr<R>(own: ReadonlyMap<string, R | null>, id: string, base: (id: string) => R | undefined): R | undefined {
  const r = own.get(id);
  return r !== undefined ? (r ?? undefined) : base(id);
}

/** The draft's record of that name, else the base's unless the draft replaced or removed it. */
function ownByNameOr<R extends { readonly id: string; readonly name: string }>(
  own: ReadonlyMap<string, R | null>,
  name: string,
  base: (name: string) => R | undefined,
): R | undefined {
  for (const r of own.values()) if (r?.name === name) return r;
  const b = base(name);
  return b && !own.has(b.id) ? b : undefined;
}

/** base (sorted by id) with a draft's additions, replacements and removals, sorted by id. */
function merged<R extends { readonly id: string }>(base: readonly R[], own: ReadonlyMap<string, R | null>): readonly R[] {
  if (own.size === 0) return base;
  const out = base.filter((r) => !own.has(r.id));
  for (const r of own.values()) if (r) out.push(r);
  return out.sort(byId);
}

/** The caller's record copied, so that a caller keeping its object cannot change the store's. */
function copyVolume(r: VolumeRecord): VolumeRecord {
  return {
    ...r,
    ...(r.chap ? { chap: { ...r.chap } } : {}),
    allow: [...r.allow],
    portals: r.portals === null ? null : [...r.portals],
    publications: { ...r.publications },
    ...(r.source ? { source: { ...r.source } } : {}),
    parameters: { ...r.parameters },
    reservations: Object.fromEntries(Object.entries(r.reservations).map(([lun, s]) => [lun, copyReservations(s)])),
  };
}

function copyReservations(s: PersistentReservationSnapshot): PersistentReservationSnapshot {
  return {
    generation: s.generation,
    registrations: s.registrations.map((r) => ({ ...r })),
    reservation: s.reservation ? { ...s.reservation } : null,
    aptpl: s.aptpl,
  };
}
