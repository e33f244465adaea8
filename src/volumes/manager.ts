// VolumeService over a data directory: sparse files served as LUN 0 of one iSCSI target per volume,
// their records in a transactional state store (state.ts), specs checked in spec.ts, files reconciled
// with the state at startup in reconcile.ts (files without a record are kept aside, orphans.ts).
//
// Crash safety (kill -9 at any instant leaves no half-made volume and no orphan file after restart):
// - create/clone/snapshot: the data file is written as <dir>/.tmp-<id>.img, fsynced, renamed to
//   <dir>/<id>.img (+ fsync of the directory), and only then recorded. The call returns after the
//   record is durable.
// - delete: the record is removed first, then the file is unlinked.
// - resize: the file grows first, then the record.
// Each state change is one transaction: it is durable and visible, or it failed and nothing changed.

import { promises as fsp, type Stats } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { componentLogger } from '../log.js';
import { createTargetDevice, type TargetDevice } from '../scsi/device.js';
import type { CommandObserver, PersistentReservationSnapshot } from '../scsi/types.js';
import { openFileStore } from '../storage/file-store.js';
import { copySparse, fsyncFile, growFile, preallocate, tryReflink } from '../storage/file-ops.js';
import type { BackingStore } from '../storage/types.js';
import { portalKey, volumeAccess, type VolumeTargetRegistry } from '../target/registry.js';
import type { Portal, SessionInfo } from '../target/types.js';
import { removeDurable, renameDurable, TMP_PREFIX } from '../util/atomic-file.js';
import { isIscsiName, newNaa6, newSnapshotId, newVolumeId, targetIqn } from '../util/ids.js';
import { KeyedMutex } from '../util/mutex.js';
import { formatSize } from '../util/size.js';
import { LUNAR_VERSION } from '../util/version.js';
import { adoptOrphan, listOrphans, ORPHANS_DIR, type AdoptContext } from './orphans.js';
import { reconcile } from './reconcile.js';
import { SpaceConditions } from './space-condition.js';
import { checkNewSize, checkSize, makeChap, nameProblem, normaliseSpec, specDifferences } from './spec.js';
import { openStateStore } from './state-file.js';
import type { SnapshotRecord, StateStore, VolumeRecord } from './state.js';
import {
  SNAPSHOTS_DIR,
  VOLUMES_DIR,
  VolumeError,
  notRecordedError,
  type AdoptSpec,
  type Orphan,
  type SessionControl,
  type Snapshot,
  type Volume,
  type VolumeCondition,
  type VolumeService,
  type VolumeSource,
  type VolumeSpec,
} from './types.js';
import { errMessage } from '../util/errors.js';

export interface VolumeManagerOptions {
  dataDir: string;
  /** The server's portals (tpgt = relative target port id). */
  portals: readonly Portal[];
  registry: VolumeTargetRegistry;
  /** The iSCSI transport's sessions: listed per volume, ended on delete and unpublish. */
  sessions: SessionControl;
  /** Per-LU statistics (src/metrics): one observer per open volume, forgotten when the volume is deleted. */
  stats?: VolumeStats;
  logger?: Logger;
}

/** Where each volume's LU reports its commands. */
export interface VolumeStats {
  lu(volumeId: string): CommandObserver;
  removeLu(volumeId: string): void;
  /** A command of the volume's LU failed for want of space (ENOSPC). */
  spaceAllocationFailed?(volumeId: string): void;
}

/** A live volume: its store and SCSI device. */
interface OpenVolume {
  store: BackingStore;
  device: TargetDevice;
  /** The file served: device and inode when it was opened (a file put in its place later is another). */
  file: { dev: number; ino: number } | null;
}

/** Is the file a volume serves still the one at its path (not deleted and put back, not replaced)? */
function servesFile(ov: OpenVolume, file: Stats | Error): boolean {
  return file instanceof Error || !ov.file || (file.dev === ov.file.dev && file.ino === ov.file.ino);
}

function freezeVolume(v: Volume): Volume {
  Object.freeze(v.portals);
  Object.freeze(v.allow);
  Object.freeze(v.publications);
  Object.freeze(v.parameters);
  if (v.chap) Object.freeze(v.chap);
  if (v.source) Object.freeze(v.source);
  return Object.freeze(v);
}

export class VolumeManager implements VolumeService {
  private readonly log: Logger;
  private readonly locks = new KeyedMutex();
  private readonly open = new Map<string, OpenVolume>();
  /** Volumes recorded in state but not served, with the reason. */
  private readonly broken = new Map<string, string>();
  private readonly volumesDir: string;
  private readonly snapshotsDir: string;
  private readonly orphansDir: string;
  private closed = false;
  /** Writes that failed for want of space: log lines, condition (space-condition.ts). */
  private readonly space: SpaceConditions;

  private constructor(
    private readonly opts: VolumeManagerOptions,
    private readonly state: StateStore,
  ) {
    this.log = opts.logger ?? componentLogger('volumes');
    this.volumesDir = join(opts.dataDir, VOLUMES_DIR);
    this.snapshotsDir = join(opts.dataDir, SNAPSHOTS_DIR);
    this.orphansDir = join(opts.dataDir, ORPHANS_DIR);
    this.space = new SpaceConditions({
      log: this.log,
      dataDir: opts.dataDir,
      availableBytes: async () => (await this.capacity()).availableBytes,
    });
  }

  /** Load (or create) the data directory's state, reconcile files with it and open every volume. */
  static async open(opts: VolumeManagerOptions): Promise<VolumeManager> {
    const state = await openStateStore(opts.dataDir);
    const m = new VolumeManager(opts, state);
    await fsp.mkdir(m.volumesDir, { recursive: true, mode: 0o700 });
    await fsp.mkdir(m.snapshotsDir, { recursive: true, mode: 0o700 });
    const broken = await reconcile({
      state,
      volumesDir: m.volumesDir,
      snapshotsDir: m.snapshotsDir,
      orphansDir: m.orphansDir,
      volumePath: (id) => m.volumePath(id),
      log: m.log,
    });
    for (const [id, problem] of broken) m.broken.set(id, problem);
    await state.initialise();
    for (const rec of state.volumes()) {
      if (m.broken.has(rec.id)) continue;
      try {
        await m.openVolume(rec);
      } catch (err) {
        m.broken.set(rec.id, `cannot open ${m.volumePath(rec.id)}: ${errMessage(err)}`);
        m.log.error({ volumeId: rec.id, err: errMessage(err) }, 'volume not served');
      }
    }
    return m;
  }

  /** Identity of this data directory (made once). */
  serverId(): string {
    return this.state.server.id;
  }

  volumePath(id: string): string {
    return join(this.volumesDir, `${id}.img`);
  }

  snapshotPath(id: string): string {
    return join(this.snapshotsDir, `${id}.img`);
  }

  // ---------------------------------------------------------------------------------------------------
  // serving

  private portalsOf(rec: VolumeRecord): Portal[] {
    const all = this.opts.portals;
    if (rec.portals === null) return [...all];
    const wanted = new Set(rec.portals);
    const sub = all.filter((p) => wanted.has(portalKey(p)));
    // A subset that no longer matches the server's portals (server restarted with others): offer all.
    return sub.length > 0 ? sub : [...all];
  }

  private async openVolume(rec: VolumeRecord): Promise<void> {
    if (rec.portals !== null && !this.opts.portals.some((p) => rec.portals?.includes(portalKey(p)))) {
      this.log.warn(
        { volumeId: rec.id, portals: rec.portals },
        "none of the volume's portals is served any more; offering it on every portal",
      );
    }
    const store = await openFileStore(this.volumePath(rec.id));
    let device: TargetDevice;
    try {
      const portals = this.portalsOf(rec);
      const prState = rec.reservations['0'];
      device = createTargetDevice({
        luns: new Map([
          [
            0,
            {
              identity: {
                naa: rec.naa,
                serial: rec.serial,
                vendor: 'LUNAR',
                product: 'VOLUME',
                revision: LUNAR_VERSION.replace(/\./g, '').slice(0, 4), // "0.1.0" -> "010": the field holds 4 characters
              },
              store,
              thinProvisioned: rec.thin,
              ...(prState ? { prState } : {}),
              onPrChange: (s: PersistentReservationSnapshot) => this.persistReservations(rec.id, 0, s),
              ...(this.opts.stats ? { observer: this.opts.stats.lu(rec.id) } : {}),
              space: {
                spaceAllocationFailed: () => {
                  this.space.failed(rec.id);
                  this.opts.stats?.spaceAllocationFailed?.(rec.id);
                },
              },
            },
          ],
        ]),
        targetPorts: portals.map((p) => p.tpgt),
      });
    } catch (err) {
      await store.close().catch(() => undefined);
      throw err;
    }
    const st = await fsp.stat(this.volumePath(rec.id)).catch(() => null);
    this.open.set(rec.id, { store, device, file: st ? { dev: st.dev, ino: st.ino } : null });
    this.registerTarget(rec, device);
  }

  private registerTarget(rec: VolumeRecord, device: TargetDevice): void {
    this.opts.registry.set({
      iqn: targetIqn(rec.id),
      alias: rec.name,
      portals: rec.portals === null ? [] : this.portalsOf(rec),
      access: volumeAccess(rec),
      chap: rec.chap,
      device,
    });
  }

  /**
   * The PR-change hook of a volume's LU: PERSISTENT RESERVE OUT answers only after this resolves, and a
   * reservation an initiator was told about must survive a crash (APTPL, SPC-4 §5.13.5). On failure
   * nothing changed (one transaction) and the rejection reaches the LU, which refuses the command.
   */
  private async persistReservations(volumeId: string, lun: number, s: PersistentReservationSnapshot): Promise<void> {
    try {
      await this.state.update((tx) => {
        tx.setReservations(volumeId, lun, s);
      });
    } catch (err) {
      this.log.error({ volumeId, lun, err: errMessage(err) }, 'could not persist reservation state; PERSISTENT RESERVE OUT refused');
      throw err;
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // queries

  /**
   * The Volume of a record, made once per record: records are frozen and replaced on every change, so
   * the cache never goes stale, and a list or a page of ListVolumes does not build N new objects
   * (measured: docs/benchmarks.md, control plane). Volumes handed out are frozen in turn.
   */
  private readonly volumeOf = new WeakMap<VolumeRecord, Volume>();

  private toVolume(rec: VolumeRecord): Volume {
    let v = this.volumeOf.get(rec);
    if (!v) {
      v = freezeVolume(this.makeVolume(rec));
      this.volumeOf.set(rec, v);
    }
    return v;
  }

  private makeVolume(rec: VolumeRecord): Volume {
    return {
      id: rec.id,
      name: rec.name,
      sizeBytes: rec.sizeBytes,
      thin: rec.thin,
      iqn: targetIqn(rec.id),
      lun: 0,
      naa: rec.naa,
      serial: rec.serial,
      portals: this.portalsOf(rec),
      chap: rec.chap,
      allow: [...rec.allow],
      masked: rec.masked,
      publications: { ...rec.publications },
      ...(rec.source ? { source: rec.source } : {}),
      parameters: { ...rec.parameters },
      createdAt: rec.createdAt,
    };
  }

  private toSnapshot(rec: SnapshotRecord): Snapshot {
    return { ...rec, readyToUse: true };
  }

  get(id: string): Volume | undefined {
    const rec = this.state.volume(id);
    return rec ? this.toVolume(rec) : undefined;
  }

  getByName(name: string): Volume | undefined {
    const rec = this.state.volumeByName(name);
    return rec ? this.toVolume(rec) : undefined;
  }

  list(): readonly Volume[] {
    return this.state.volumes().map((r) => this.toVolume(r));
  }

  getSnapshot(id: string): Snapshot | undefined {
    const rec = this.state.snapshot(id);
    return rec ? this.toSnapshot(rec) : undefined;
  }

  getSnapshotByName(name: string): Snapshot | undefined {
    const rec = this.state.snapshotByName(name);
    return rec ? this.toSnapshot(rec) : undefined;
  }

  listSnapshots(): readonly Snapshot[] {
    return this.state.snapshots().map((r) => this.toSnapshot(r));
  }

  sessions(id: string): readonly SessionInfo[] {
    const iqn = targetIqn(id);
    return this.opts.sessions.sessions().filter((s) => s.targetName === iqn);
  }

  async capacity(): Promise<{ readonly availableBytes: number; readonly totalBytes: number }> {
    const st = await fsp.statfs(this.opts.dataDir);
    return { availableBytes: st.bavail * st.bsize, totalBytes: st.blocks * st.bsize };
  }

  async condition(id: string): Promise<VolumeCondition> {
    const rec = this.record(id);
    const problem = this.broken.get(id);
    if (problem) return { abnormal: true, message: problem };
    const path = this.volumePath(id);
    const file = await this.statFile(id);
    const fileProblem = this.fileProblem(rec, file);
    if (fileProblem) return { abnormal: true, message: fileProblem };
    const ov = this.open.get(id);
    if (!ov) return { abnormal: true, message: 'volume is not being served' };
    if (!servesFile(ov, file)) {
      return {
        abnormal: true,
        message: `${path} was replaced while served (another file is there now); \`lunar volume rescan\` serves it`,
      };
    }
    const noSpace = await this.space.condition(id);
    if (noSpace) return noSpace;
    try {
      await ov.store.read(Buffer.alloc(512), 0);
    } catch (err) {
      return { abnormal: true, message: `read error on ${path}: ${errMessage(err)}` };
    }
    return { abnormal: false, message: 'volume is healthy' };
  }

  /** The volume file's stats now, or the error of the stat (missing, unreadable). */
  private statFile(id: string): Promise<Stats | Error> {
    return fsp.stat(this.volumePath(id)).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
  }

  /** What is wrong with the volume's backing file as the data directory holds it now (its stats), or null. */
  private fileProblem(rec: VolumeRecord, file: Stats | Error): string | null {
    const path = this.volumePath(rec.id);
    if (file instanceof Error) return `backing file ${path} is missing: ${file.message}`;
    if (file.size < rec.sizeBytes) return `${path} is ${file.size} bytes, smaller than the volume (${rec.sizeBytes})`;
    return null;
  }

  /**
   * Checks the backing file of a volume that is not served (abnormal since startup: its file was missing
   * or short) again, and serves the volume when the file is back, without a restart. A served volume
   * whose path now holds another file (deleted and put back while served) is served from that file: its
   * sessions end and it is opened again. Answers the condition after the check.
   */
  async rescan(id: string): Promise<VolumeCondition & { readonly reopened: boolean }> {
    this.record(id);
    return this.exclusive(`vol:${id}`, `volume ${id}`, async () => {
      const started = Date.now();
      const rec = this.record(id);
      let reopened = false;
      const served = this.open.get(id);
      const file = await this.statFile(id);
      if (served && !servesFile(served, file) && !this.fileProblem(rec, file)) {
        this.opts.registry.remove(targetIqn(id));
        const closedSessions = this.opts.sessions.closeSessions({ targetName: targetIqn(id) });
        this.open.delete(id);
        await served.device.close().catch(() => undefined);
        await served.store.close().catch(() => undefined);
        this.broken.set(id, 'being opened again');
        this.log.warn(
          { op: 'rescan', volumeId: id, closedSessions },
          'the file at the volume path was replaced while served; serving the new one',
        );
      }
      if (!this.open.has(id)) {
        const problem = this.fileProblem(rec, file);
        if (problem) this.broken.set(id, problem);
        else {
          try {
            await this.openVolume(rec);
            this.broken.delete(id);
            reopened = true;
            this.log.info(
              { op: 'rescan', volumeId: id, name: rec.name, durationMs: Date.now() - started },
              'volume back: its backing file is there again',
            );
          } catch (err) {
            this.broken.set(id, `cannot open ${this.volumePath(id)}: ${errMessage(err)}`);
          }
        }
      }
      return { ...(await this.condition(id)), reopened };
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // helpers

  private record(id: string): VolumeRecord {
    const rec = this.state.volume(id);
    if (!rec) throw new VolumeError('not-found', `volume ${id} does not exist`);
    return rec;
  }

  /** A new volume's portal subset must name portals this server has. */
  private checkPortals(portals: readonly string[] | null): void {
    if (portals === null) return;
    const known = new Set(this.opts.portals.map(portalKey));
    for (const k of portals) {
      if (!known.has(k)) {
        throw new VolumeError('invalid-argument', `portal "${k}" is not one of the server's portals (${[...known].join(', ')})`);
      }
    }
  }

  /** Run fn holding key; a second call while one is in flight fails with busy. */
  private async exclusive<T>(key: string, what: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new VolumeError('failed-precondition', 'Lunar is shutting down');
    const r = await this.locks.tryRun(key, fn);
    if (!r.ran) throw new VolumeError('busy', `${what} has an operation in progress; retry when it completes`);
    return r.value;
  }

  /** The VolumeError for a state change that did not become durable (nothing changed). */
  private notRecorded(what: string, err: unknown): VolumeError {
    return notRecordedError(this.state.location, what, err);
  }

  // ---------------------------------------------------------------------------------------------------
  // create / delete / resize

  async create(spec: VolumeSpec): Promise<Volume> {
    const s = normaliseSpec(spec);
    return this.exclusive(`name:${s.name}`, `volume name "${s.name}"`, async () => {
      const started = Date.now();
      const existing = this.state.volumeByName(s.name);
      if (existing) {
        const diff = specDifferences(existing, s);
        if (diff.length === 0) return this.toVolume(existing);
        throw new VolumeError(
          'already-exists',
          `a volume named "${s.name}" already exists (${existing.id}) with a different specification (${diff.join(', ')}); pick another name or delete it first`,
        );
      }
      checkNewSize(s);
      this.checkPortals(s.portals);
      if (!s.thin) {
        const cap = await this.capacity();
        if (s.sizeBytes > cap.availableBytes) {
          throw new VolumeError(
            'resource-exhausted',
            `not enough space for a thick ${formatSize(s.sizeBytes)} volume: ${formatSize(cap.availableBytes)} available in ${this.opts.dataDir}`,
          );
        }
      }
      const id = newVolumeId();
      const tmp = join(this.volumesDir, `${TMP_PREFIX}${id}.img`);
      const final = this.volumePath(id);
      try {
        if (s.source) {
          await this.fillFromSource(s.source, s.sizeBytes, tmp);
          if (!s.thin) await preallocate(tmp, 0, s.sizeBytes);
        } else {
          const st = await openFileStore(tmp, { create: { size: s.sizeBytes, preallocate: !s.thin } });
          await st.close();
        }
        await fsyncFile(tmp);
        await renameDurable(tmp, final);
      } catch (err) {
        await fsp.rm(tmp, { force: true });
        if (err instanceof VolumeError) throw err;
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
          throw new VolumeError('resource-exhausted', `no space left in ${this.opts.dataDir} for volume "${s.name}"`);
        }
        throw new VolumeError('internal', `could not create the backing file for "${s.name}": ${errMessage(err)}`);
      }
      const rec: VolumeRecord = {
        id,
        name: s.name,
        sizeBytes: s.sizeBytes,
        createdSizeBytes: s.sizeBytes,
        thin: s.thin,
        naa: newNaa6(),
        serial: id.slice(4),
        chap: makeChap(s.chap),
        allow: s.allow,
        masked: s.masked,
        portals: s.portals,
        publications: {},
        ...(s.source ? { source: s.source } : {}),
        parameters: s.parameters,
        createdAt: new Date().toISOString(),
        reservations: {},
      };
      try {
        await this.state.update((tx) => {
          tx.addVolume(rec);
        });
      } catch (err) {
        // Not recorded, so not a volume: its file goes (startup would remove it as an orphan anyway).
        await removeDurable(final).catch(() => undefined);
        throw this.notRecorded(`volume "${s.name}"`, err);
      }
      const recorded = this.record(id);
      try {
        await this.openVolume(recorded);
      } catch (err) {
        this.broken.set(id, `cannot open ${final}: ${errMessage(err)}`);
        this.log.error({ volumeId: id, err: errMessage(err) }, 'created volume could not be opened');
        throw new VolumeError('internal', `volume ${id} was created but cannot be served: ${errMessage(err)}`);
      }
      this.log.info(
        {
          op: 'create',
          volumeId: id,
          name: s.name,
          sizeBytes: s.sizeBytes,
          thin: s.thin,
          source: s.source,
          durationMs: Date.now() - started,
        },
        'volume created',
      );
      return this.toVolume(recorded);
    });
  }

  /** Content for a new volume: a copy of a snapshot or of a live volume (quiesced while copied). */
  private async fillFromSource(src: VolumeSource, sizeBytes: number, dest: string): Promise<void> {
    if (src.kind === 'snapshot') {
      const snap = this.state.snapshot(src.id);
      if (!snap) throw new VolumeError('not-found', `source snapshot ${src.id} does not exist`);
      if (snap.sizeBytes > sizeBytes) {
        throw new VolumeError(
          'out-of-range',
          `volume size ${formatSize(sizeBytes)} is smaller than source snapshot ${src.id} (${formatSize(snap.sizeBytes)})`,
        );
      }
      const path = this.snapshotPath(snap.id);
      await this.exclusive(`snap:${snap.id}`, `source snapshot ${snap.id}`, async () => {
        if (await tryReflink(path, dest)) return;
        const store = await openFileStore(path, { readOnly: true });
        try {
          await copySparse(store, dest);
        } finally {
          await store.close();
        }
      });
    } else {
      const rec = this.state.volume(src.id);
      if (!rec) throw new VolumeError('not-found', `source volume ${src.id} does not exist`);
      if (rec.sizeBytes > sizeBytes) {
        throw new VolumeError(
          'out-of-range',
          `volume size ${formatSize(sizeBytes)} is smaller than source volume ${src.id} (${formatSize(rec.sizeBytes)})`,
        );
      }
      await this.exclusive(`vol:${rec.id}`, `source volume ${rec.id}`, () => this.copyLive(rec.id, dest));
    }
    await growFile(dest, sizeBytes);
  }

  /** Copy a served volume to dest while its LU is quiesced (no write in flight or started). */
  private async copyLive(id: string, dest: string): Promise<void> {
    const ov = this.open.get(id);
    if (!ov)
      throw new VolumeError(
        'failed-precondition',
        `volume ${id} is abnormal (${this.broken.get(id) ?? 'not served'}) and cannot be copied`,
      );
    const lu = ov.device.logicalUnit(0);
    if (!lu) throw new VolumeError('internal', `volume ${id} has no LUN 0`);
    const resume = await lu.quiesce();
    try {
      await ov.store.flush();
      if (!(await tryReflink(ov.store.path, dest))) await copySparse(ov.store, dest);
    } finally {
      resume();
    }
  }

  async delete(id: string): Promise<boolean> {
    if (!this.state.volume(id)) return false;
    return this.exclusive(`vol:${id}`, `volume ${id}`, async () => {
      const started = Date.now();
      const rec = this.state.volume(id);
      if (!rec) return false;
      try {
        await this.state.update((tx) => {
          tx.removeVolume(id);
        });
      } catch (err) {
        throw this.notRecorded(`the deletion of ${id}`, err);
      }
      // No longer a volume: stop serving it, then remove its file.
      const iqn = targetIqn(id);
      this.opts.registry.remove(iqn);
      const closedSessions = this.opts.sessions.closeSessions({ targetName: iqn });
      const ov = this.open.get(id);
      this.open.delete(id);
      this.broken.delete(id);
      this.space.forget(id);
      if (ov) {
        await ov.device.close().catch((err: unknown) => this.log.warn({ volumeId: id, err: errMessage(err) }, 'device close failed'));
        await ov.store.close().catch((err: unknown) => this.log.warn({ volumeId: id, err: errMessage(err) }, 'store close failed'));
      }
      await removeDurable(this.volumePath(id));
      this.opts.stats?.removeLu(id);
      this.log.info({ op: 'delete', volumeId: id, name: rec.name, closedSessions, durationMs: Date.now() - started }, 'volume deleted');
      return true;
    });
  }

  async resize(id: string, sizeBytes: number): Promise<Volume> {
    this.record(id);
    const newSize = checkSize(sizeBytes, 'new size');
    return this.exclusive(`vol:${id}`, `volume ${id}`, async () => {
      const started = Date.now();
      const rec = this.record(id);
      if (newSize < rec.sizeBytes) {
        throw new VolumeError(
          'out-of-range',
          `volume ${id} is ${formatSize(rec.sizeBytes)}; volumes can only grow, not shrink to ${formatSize(newSize)}`,
        );
      }
      if (newSize === rec.sizeBytes) return this.toVolume(rec);
      const ov = this.open.get(id);
      if (!ov)
        throw new VolumeError(
          'failed-precondition',
          `volume ${id} is abnormal (${this.broken.get(id) ?? 'not served'}) and cannot be resized`,
        );
      if (!rec.thin) {
        const cap = await this.capacity();
        if (newSize - rec.sizeBytes > cap.availableBytes) {
          throw new VolumeError(
            'resource-exhausted',
            `not enough space to grow thick volume ${id} by ${formatSize(newSize - rec.sizeBytes)}`,
          );
        }
      }
      const oldSize = rec.sizeBytes;
      try {
        await ov.store.resize(newSize);
        if (!rec.thin) await preallocate(this.volumePath(id), oldSize, newSize - oldSize);
        await ov.store.flush();
      } catch (err) {
        throw new VolumeError('internal', `could not grow ${this.volumePath(id)}: ${errMessage(err)}`);
      }
      try {
        await this.state.update((tx) => {
          tx.setVolumeSize(id, newSize);
        });
      } catch (err) {
        // Not recorded, so not resized: the LU still reports the old capacity (capacityChanged() was not
        // called, so no initiator can address the new blocks) and the file shrinks back, giving back what
        // a thick volume preallocated. Should even that fail, the file stays larger than its record and a
        // restart adopts its size (reconcile.ts) before anything is served.
        await ov.store
          .resize(oldSize)
          .catch((e: unknown) => this.log.error({ volumeId: id, err: errMessage(e) }, 'could not shrink the file of a failed resize back'));
        throw this.notRecorded(`the new size of ${id} (the volume keeps ${formatSize(oldSize)})`, err);
      }
      ov.device.logicalUnit(0)?.capacityChanged();
      this.log.info({ op: 'resize', volumeId: id, oldSize, newSize, durationMs: Date.now() - started }, 'volume resized');
      return this.toVolume(this.record(id));
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // publications (LUN masking)

  private refreshAccess(rec: VolumeRecord): void {
    this.opts.registry.setAccess(targetIqn(rec.id), volumeAccess(rec));
  }

  private initiatorStillAllowed(rec: VolumeRecord, iqn: string): boolean {
    const a = volumeAccess(rec).allow;
    return a === null || a.includes(iqn);
  }

  async publish(id: string, nodeId: string, initiatorName: string): Promise<Volume> {
    this.record(id);
    // The arguments may come from JSON (admin socket): check what the types promise.
    if (typeof (nodeId as unknown) !== 'string' || nodeId.length === 0)
      throw new VolumeError('invalid-argument', 'node id must not be empty');
    if (typeof (initiatorName as unknown) !== 'string' || !isIscsiName(initiatorName)) {
      throw new VolumeError(
        'invalid-argument',
        `${JSON.stringify(initiatorName)} is not a valid iSCSI initiator name (iqn.YYYY-MM.domain:... or eui.<16 hex>)`,
      );
    }
    return this.changePublication(id, nodeId, initiatorName);
  }

  async unpublish(id: string, nodeId: string): Promise<Volume> {
    return this.changePublication(id, nodeId, null);
  }

  /** Records (initiatorName) or removes (null) the publication of volume `id` to `nodeId`, then fixes access. */
  private async changePublication(id: string, nodeId: string, initiatorName: string | null): Promise<Volume> {
    this.record(id);
    const op = initiatorName === null ? 'unpublish' : 'publish';
    return this.exclusive(`vol:${id}`, `volume ${id}`, async () => {
      const started = Date.now();
      const prev = this.record(id).publications[nodeId];
      if ((prev ?? null) === initiatorName) return this.toVolume(this.record(id));
      try {
        await this.state.update((tx) => {
          tx.setPublication(id, nodeId, initiatorName);
        });
      } catch (err) {
        throw this.notRecorded(initiatorName === null ? 'the unpublication' : 'the publication', err);
      }
      const rec = this.record(id);
      this.refreshAccess(rec);
      let closed = 0;
      // The initiator this node used loses its sessions when it is no longer admitted, and on unpublish also
      // when no publication of the volume names it any more, even if a static entry still admits it: unpublish
      // means "this node no longer uses the volume".
      if (
        prev !== undefined &&
        (!this.initiatorStillAllowed(rec, prev) || (initiatorName === null && !Object.values(rec.publications).includes(prev)))
      ) {
        closed = this.opts.sessions.closeSessions({ targetName: targetIqn(id), initiatorName: prev });
      }
      this.log.info(
        { op, volumeId: id, nodeId, initiatorName: initiatorName ?? prev, closedSessions: closed, durationMs: Date.now() - started },
        op === 'publish' ? 'volume published' : 'volume unpublished',
      );
      return this.toVolume(rec);
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // snapshots

  async createSnapshot(volumeId: string, name: string): Promise<Snapshot> {
    const problem = nameProblem(name);
    if (problem !== null) throw new VolumeError('invalid-argument', `snapshot name ${problem}`);
    return this.exclusive(`snapname:${name}`, `snapshot name "${name}"`, async () => {
      const existing = this.state.snapshotByName(name);
      if (existing) {
        if (existing.sourceVolumeId === volumeId) return this.toSnapshot(existing);
        throw new VolumeError('already-exists', `a snapshot named "${name}" already exists for volume ${existing.sourceVolumeId}`);
      }
      const vol = this.record(volumeId);
      const started = Date.now();
      const id = newSnapshotId();
      const tmp = join(this.snapshotsDir, `${TMP_PREFIX}${id}.img`);
      const final = this.snapshotPath(id);
      try {
        await this.exclusive(`vol:${volumeId}`, `volume ${volumeId}`, () => this.copyLive(volumeId, tmp));
        await fsyncFile(tmp);
        await renameDurable(tmp, final);
      } catch (err) {
        await fsp.rm(tmp, { force: true });
        if (err instanceof VolumeError) throw err;
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
          throw new VolumeError('resource-exhausted', `no space left in ${this.opts.dataDir} for snapshot "${name}"`);
        }
        throw new VolumeError('internal', `could not copy volume ${volumeId} for snapshot "${name}": ${errMessage(err)}`);
      }
      const rec: SnapshotRecord = { id, name, sourceVolumeId: volumeId, sizeBytes: vol.sizeBytes, createdAt: new Date().toISOString() };
      try {
        await this.state.update((tx) => {
          tx.addSnapshot(rec);
        });
      } catch (err) {
        await removeDurable(final).catch(() => undefined);
        throw this.notRecorded(`snapshot "${name}"`, err);
      }
      this.log.info({ op: 'snapshot', volumeId, snapshotId: id, name, durationMs: Date.now() - started }, 'snapshot created');
      return this.toSnapshot(rec);
    });
  }

  async deleteSnapshot(id: string): Promise<boolean> {
    if (!this.state.snapshot(id)) return false;
    return this.exclusive(`snap:${id}`, `snapshot ${id}`, async () => {
      const started = Date.now();
      const rec = this.state.snapshot(id);
      if (!rec) return false;
      try {
        await this.state.update((tx) => {
          tx.removeSnapshot(id);
        });
      } catch (err) {
        throw this.notRecorded(`the deletion of snapshot ${id}`, err);
      }
      await removeDurable(this.snapshotPath(id));
      this.log.info(
        { op: 'delete-snapshot', snapshotId: id, volumeId: rec.sourceVolumeId, durationMs: Date.now() - started },
        'snapshot deleted',
      );
      return true;
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // orphans (files without a record: orphans.ts)

  orphans(): Promise<readonly Orphan[]> {
    return listOrphans({ state: this.state, orphansDir: this.orphansDir });
  }

  async adoptOrphan(file: string, spec: AdoptSpec): Promise<Volume> {
    // The spec may come from JSON (admin socket): adoptOrphan checks it.
    const name: unknown = (spec as Partial<AdoptSpec> | null)?.name;
    const ctx: AdoptContext = {
      state: this.state,
      orphansDir: this.orphansDir,
      volumesDir: this.volumesDir,
      log: this.log,
      volumePath: (id) => this.volumePath(id),
      serve: async (rec) => {
        try {
          await this.openVolume(this.record(rec.id));
        } catch (err) {
          this.broken.set(rec.id, `cannot open ${this.volumePath(rec.id)}: ${errMessage(err)}`);
          throw new VolumeError('internal', `volume ${rec.id} was adopted but cannot be served: ${errMessage(err)}`);
        }
      },
    };
    // The name's lock as create takes it, then the file's.
    return this.exclusive(`name:${String(name)}`, `volume name "${String(name)}"`, () =>
      this.exclusive(`orphan:${file}`, `orphan ${file}`, async () => this.toVolume(this.record((await adoptOrphan(ctx, file, spec)).id))),
    );
  }

  /** Close every device and store, then the state (the transport must be closed first). */
  async close(): Promise<void> {
    this.closed = true;
    this.space.close();
    for (const [id, ov] of this.open) {
      this.opts.registry.remove(targetIqn(id));
      await ov.device.close().catch(() => undefined);
      await ov.store.close().catch(() => undefined);
    }
    this.open.clear();
    await this.state.close();
  }
}
