// VolumeService over a data directory: sparse files served as LUN 0 of one iSCSI target per volume.
//
// Crash safety (kill -9 at any instant leaves no half-made volume and no orphan file after restart):
// - create/clone/snapshot: the data file is written as <dir>/.tmp-<id>.img, fsynced, renamed to
//   <dir>/<id>.img (+ fsync of the directory), and only then recorded in state.json (atomic replace).
//   The call returns after the record is durable.
// - delete: the record is removed from state.json first, then the file is unlinked.
// - resize: the file grows first, then the record.
// Startup reconciliation (reconcile()): temporary files and files without a record are deleted (they can
// only come from an interrupted create or delete, which never returned success); a record whose file is
// missing is KEPT and its volume reported abnormal (condition()) and not served: dropping it would silently
// lose the volume's identity, and an operator may still restore the file. A file larger than its record
// (interrupted resize) is adopted at the file's size. If state.json is missing while volume files exist,
// startup refuses rather than deleting data.

import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { componentLogger } from '../log.js';
import type { PersistentReservationSnapshot } from '../scsi/types.js';
import { createTargetDevice, type TargetDevice } from '../scsi/device.js';
import { openFileStore } from '../storage/file-store.js';
import type { BackingStore } from '../storage/types.js';
import { portalKey, volumeAccess, type VolumeTargetRegistry } from '../target/registry.js';
import type { ChapCredentials, Portal, SessionInfo } from '../target/types.js';
import { fsyncDir, isTempName, removeDurable, renameDurable, TMP_PREFIX } from '../util/atomic-file.js';
import {
  chapValueProblem,
  isIscsiName,
  isLunarId,
  newChapSecret,
  newNaa6,
  newSnapshotId,
  newVolumeId,
  normaliseAclEntry,
  targetIqn,
} from '../util/ids.js';
import { KeyedMutex } from '../util/mutex.js';
import { alignUp, formatSize } from '../util/size.js';
import { LUNAR_VERSION } from '../util/version.js';
import { copySparse, fsyncFile, growFile, preallocate, tryReflink } from './copy.js';
import { StateError, StateStore, type SnapshotRecord, type VolumeRecord } from './state.js';
import {
  VolumeError,
  type ChapSetting,
  type Snapshot,
  type Volume,
  type VolumeService,
  type VolumeSource,
  type VolumeSpec,
} from './types.js';
import { randomBytes } from 'node:crypto';

/** Volume sizes are rounded up to a multiple of 1 MiB (a whole number of 512 and 4096-byte blocks, and
 * the granularity most partitioning tools align to). */
export const SIZE_ALIGNMENT = 1024 * 1024;
/** Largest volume: 64 TiB (ext4's largest file is 16 TiB with 4 KiB blocks; XFS/btrfs go further). */
export const MAX_VOLUME_BYTES = 64 * 1024 ** 4;

export const VOLUMES_DIR = 'volumes';
export const SNAPSHOTS_DIR = 'snapshots';

/** What the manager needs from the iSCSI transport (IscsiServer). */
export interface SessionControl {
  sessions(): SessionInfo[];
  closeSessions(filter: { targetName?: string; initiatorName?: string }): number;
}

export interface VolumeManagerOptions {
  dataDir: string;
  /** The server's portals (tpgt = relative target port id). */
  portals: readonly Portal[];
  registry: VolumeTargetRegistry;
  logger?: Logger;
}

/** A live volume: its store and SCSI device. */
interface OpenVolume {
  store: BackingStore;
  device: TargetDevice;
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function sameStringSet(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const s = new Set(a);
  return b.every((x) => s.has(x));
}

function sameRecord(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => b[k] === a[k]);
}

function sameSource(a: VolumeSource | undefined, b: VolumeSource | undefined): boolean {
  if (!a || !b) return !a && !b;
  return a.kind === b.kind && a.id === b.id;
}

/** A spec after validation and normalisation. */
interface NormalSpec {
  name: string;
  sizeBytes: number;
  thin: boolean;
  chap: ChapSetting;
  allow: string[];
  masked: boolean;
  portals: string[] | null;
  source?: VolumeSource;
  parameters: Record<string, string>;
}

export class VolumeManager implements VolumeService {
  private readonly log: Logger;
  private readonly locks = new KeyedMutex();
  private readonly open = new Map<string, OpenVolume>();
  /** Volumes recorded in state but not served, with the reason. */
  private readonly broken = new Map<string, string>();
  private transport: SessionControl | null = null;
  private readonly volumesDir: string;
  private readonly snapshotsDir: string;
  private closed = false;

  private constructor(
    private readonly opts: VolumeManagerOptions,
    private readonly state: StateStore,
  ) {
    this.log = opts.logger ?? componentLogger('volumes');
    this.volumesDir = join(opts.dataDir, VOLUMES_DIR);
    this.snapshotsDir = join(opts.dataDir, SNAPSHOTS_DIR);
  }

  /** Load (or create) the data directory's state, reconcile files with it and open every volume. */
  static async open(opts: VolumeManagerOptions): Promise<VolumeManager> {
    const state = await StateStore.open(opts.dataDir);
    const m = new VolumeManager(opts, state);
    await fsp.mkdir(m.volumesDir, { recursive: true, mode: 0o700 });
    await fsp.mkdir(m.snapshotsDir, { recursive: true, mode: 0o700 });
    await m.reconcile();
    if (state.created) await state.save();
    for (const rec of Object.values(state.data.volumes).sort((a, b) => (a.id < b.id ? -1 : 1))) {
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

  /** The iSCSI server, once it exists (sessions, closing sessions on delete/unpublish). */
  attachTransport(t: SessionControl): void {
    this.transport = t;
  }

  /** Identity of this data directory (made once). */
  serverId(): string {
    return this.state.data.server.id;
  }

  volumePath(id: string): string {
    return join(this.volumesDir, `${id}.img`);
  }

  snapshotPath(id: string): string {
    return join(this.snapshotsDir, `${id}.img`);
  }

  // ---------------------------------------------------------------------------------------------------
  // startup

  private async reconcile(): Promise<void> {
    const data = this.state.data;
    for (const [dir, records, kind] of [
      [this.volumesDir, data.volumes, 'volume'],
      [this.snapshotsDir, data.snapshots, 'snapshot'],
    ] as const) {
      const names = await fsp.readdir(dir);
      const images = names.filter((n) => n.endsWith('.img') && isLunarId(n.slice(0, -4)));
      if (this.state.created && images.length > 0) {
        throw new StateError(
          `${this.state.path} is missing but ${dir} holds ${images.length} ${kind} file(s); Lunar will not start ` +
            `and delete them as orphans — restore state.json or move ${dir} away`,
        );
      }
      let removed = 0;
      for (const n of names) {
        // Only names Lunar itself makes: <id>.img and .tmp-<id>.img. Anything else is left alone.
        const base = isTempName(n) ? n.slice(TMP_PREFIX.length) : n;
        const id = base.endsWith('.img') ? base.slice(0, -4) : '';
        if (!isLunarId(id)) {
          this.log.warn({ file: join(dir, n), kind }, 'ignoring a file Lunar did not create');
          continue;
        }
        if (isTempName(n) || !Object.hasOwn(records, id)) {
          await fsp.rm(join(dir, n), { force: true });
          removed++;
          this.log.warn({ file: join(dir, n), kind }, 'removed orphan file left by an interrupted operation');
        }
      }
      if (removed > 0) await fsyncDir(dir);
    }
    for (const rec of Object.values(data.volumes)) {
      try {
        const st = await fsp.stat(this.volumePath(rec.id));
        if (st.size > rec.sizeBytes) {
          this.log.warn({ volumeId: rec.id, recorded: rec.sizeBytes, file: st.size }, 'adopting size of interrupted resize');
          rec.sizeBytes = st.size;
          await this.state.save();
        } else if (st.size < rec.sizeBytes) {
          this.broken.set(rec.id, `${this.volumePath(rec.id)} is ${st.size} bytes, smaller than the recorded ${rec.sizeBytes}`);
        }
      } catch (err) {
        this.broken.set(rec.id, `backing file ${this.volumePath(rec.id)} is missing or unreadable: ${errMessage(err)}`);
      }
      if (this.broken.has(rec.id)) this.log.error({ volumeId: rec.id, problem: this.broken.get(rec.id) }, 'volume abnormal');
    }
  }

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
            },
          ],
        ]),
        targetPorts: portals.map((p) => p.tpgt),
      });
    } catch (err) {
      await store.close().catch(() => undefined);
      throw err;
    }
    this.open.set(rec.id, { store, device });
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
   * reservation an initiator was told about must survive a crash (APTPL, SPC-4 §5.13.5). On failure the
   * record gets its previous state back and the rejection reaches the LU, which refuses the command.
   */
  private async persistReservations(volumeId: string, lun: number, s: PersistentReservationSnapshot): Promise<void> {
    const rec = this.state.data.volumes[volumeId];
    if (!rec) throw new Error(`volume ${volumeId} is not in the state any more`);
    const key = String(lun);
    const previous = rec.reservations[key];
    rec.reservations[key] = s;
    try {
      await this.state.save();
    } catch (err) {
      if (rec.reservations[key] === s) {
        if (previous) rec.reservations[key] = previous;
        else rec.reservations = Object.fromEntries(Object.entries(rec.reservations).filter(([k]) => k !== key));
      }
      this.log.error({ volumeId, lun, err: errMessage(err) }, 'could not persist reservation state; PERSISTENT RESERVE OUT refused');
      throw err;
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // queries

  private toVolume(rec: VolumeRecord): Volume {
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
    const rec = this.state.data.volumes[id];
    return rec && Object.hasOwn(this.state.data.volumes, id) ? this.toVolume(rec) : undefined;
  }

  getByName(name: string): Volume | undefined {
    const rec = Object.values(this.state.data.volumes).find((v) => v.name === name);
    return rec ? this.toVolume(rec) : undefined;
  }

  list(): readonly Volume[] {
    return Object.values(this.state.data.volumes)
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map((r) => this.toVolume(r));
  }

  getSnapshot(id: string): Snapshot | undefined {
    const rec = Object.hasOwn(this.state.data.snapshots, id) ? this.state.data.snapshots[id] : undefined;
    return rec ? this.toSnapshot(rec) : undefined;
  }

  getSnapshotByName(name: string): Snapshot | undefined {
    const rec = Object.values(this.state.data.snapshots).find((s) => s.name === name);
    return rec ? this.toSnapshot(rec) : undefined;
  }

  listSnapshots(): readonly Snapshot[] {
    return Object.values(this.state.data.snapshots)
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map((r) => this.toSnapshot(r));
  }

  sessions(id: string): readonly SessionInfo[] {
    const iqn = targetIqn(id);
    return (this.transport?.sessions() ?? []).filter((s) => s.targetName === iqn);
  }

  async capacity(): Promise<{ readonly availableBytes: number; readonly totalBytes: number }> {
    const st = await fsp.statfs(this.opts.dataDir);
    return { availableBytes: st.bavail * st.bsize, totalBytes: st.blocks * st.bsize };
  }

  async condition(id: string): Promise<{ readonly abnormal: boolean; readonly message: string }> {
    const rec = this.record(id);
    const problem = this.broken.get(id);
    if (problem) return { abnormal: true, message: problem };
    const path = this.volumePath(id);
    try {
      const st = await fsp.stat(path);
      if (st.size < rec.sizeBytes) {
        return { abnormal: true, message: `${path} is ${st.size} bytes, smaller than the volume (${rec.sizeBytes})` };
      }
    } catch (err) {
      return { abnormal: true, message: `backing file ${path} is missing: ${errMessage(err)}` };
    }
    const ov = this.open.get(id);
    if (!ov) return { abnormal: true, message: 'volume is not being served' };
    try {
      await ov.store.read(Buffer.alloc(512), 0);
    } catch (err) {
      return { abnormal: true, message: `read error on ${path}: ${errMessage(err)}` };
    }
    return { abnormal: false, message: 'volume is healthy' };
  }

  // ---------------------------------------------------------------------------------------------------
  // validation

  private record(id: string): VolumeRecord {
    const rec = Object.hasOwn(this.state.data.volumes, id) ? this.state.data.volumes[id] : undefined;
    if (!rec) throw new VolumeError('not-found', `volume ${id} does not exist`);
    return rec;
  }

  private checkSize(sizeBytes: number, what: string): number {
    if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
      throw new VolumeError('invalid-argument', `${what} must be a positive whole number of bytes, got ${String(sizeBytes)}`);
    }
    const aligned = alignUp(sizeBytes, SIZE_ALIGNMENT);
    if (aligned > MAX_VOLUME_BYTES) {
      throw new VolumeError(
        'out-of-range',
        `${what} ${formatSize(sizeBytes)} is larger than the maximum volume size ${formatSize(MAX_VOLUME_BYTES)}`,
      );
    }
    return aligned;
  }

  private normaliseChap(setting: ChapSetting | undefined): ChapSetting {
    if (!setting || setting.mode === 'none') return { mode: 'none' };
    if (setting.mode !== 'chap' && setting.mode !== 'mutual') {
      throw new VolumeError('invalid-argument', `chap mode must be "none", "chap" or "mutual"`);
    }
    const c = setting.credentials;
    if (!c) return { mode: setting.mode };
    const problems = [chapValueProblem('CHAP user', c.user, 1), chapValueProblem('CHAP secret', c.secret, 12)];
    if (setting.mode === 'chap' && (c.mutualUser !== undefined || c.mutualSecret !== undefined)) {
      problems.push('mutual CHAP credentials given with mode "chap" (use mode "mutual")');
    }
    if (setting.mode === 'mutual' && (c.mutualUser !== undefined || c.mutualSecret !== undefined)) {
      if (c.mutualUser === undefined || c.mutualSecret === undefined) {
        problems.push('mutual CHAP needs both a user and a secret for the target');
      } else {
        problems.push(chapValueProblem('mutual CHAP user', c.mutualUser, 1));
        problems.push(chapValueProblem('mutual CHAP secret', c.mutualSecret, 12));
        if (c.mutualSecret === c.secret) {
          problems.push('the mutual CHAP secret must differ from the initiator secret (RFC 7143 §12.1.3)');
        }
      }
    }
    const p = problems.filter((x): x is string => x !== null);
    if (p.length > 0) throw new VolumeError('invalid-argument', p.join('; '));
    return { mode: setting.mode, credentials: { ...c } };
  }

  private normaliseSpec(spec: VolumeSpec): NormalSpec {
    if (typeof spec !== 'object' || spec === null) throw new VolumeError('invalid-argument', 'volume spec missing');
    const name = spec.name;
    if (typeof name !== 'string' || name.length === 0) throw new VolumeError('invalid-argument', 'volume name must not be empty');
    if (Buffer.byteLength(name) > 255 || /[\x00-\x1f\x7f]/.test(name)) {
      throw new VolumeError('invalid-argument', 'volume name must be at most 255 bytes without control characters');
    }
    const sizeBytes = this.checkSize(spec.sizeBytes, 'volume size');
    const allow: string[] = [];
    for (const e of spec.allow ?? []) {
      const r = normaliseAclEntry(String(e));
      if (!r.ok) throw new VolumeError('invalid-argument', r.error);
      if (!allow.includes(r.value)) allow.push(r.value);
    }
    let portals: string[] | null = null;
    if (spec.portals && spec.portals.length > 0) {
      const known = new Map(this.opts.portals.map((p) => [portalKey(p), p]));
      portals = [];
      for (const k of spec.portals) {
        if (!known.has(k)) {
          throw new VolumeError('invalid-argument', `portal "${k}" is not one of the server's portals (${[...known.keys()].join(', ')})`);
        }
        if (!portals.includes(k)) portals.push(k);
      }
    }
    const parameters: Record<string, string> = {};
    for (const [k, v] of Object.entries(spec.parameters ?? {})) {
      if (typeof v !== 'string') throw new VolumeError('invalid-argument', `parameter "${k}" must be a string`);
      parameters[k] = v;
    }
    if (spec.source && spec.source.kind !== 'snapshot' && spec.source.kind !== 'volume') {
      throw new VolumeError('invalid-argument', 'source kind must be "snapshot" or "volume"');
    }
    return {
      name,
      sizeBytes,
      thin: spec.thin ?? true,
      chap: this.normaliseChap(spec.chap),
      allow,
      masked: spec.masked ?? false,
      portals,
      ...(spec.source ? { source: { kind: spec.source.kind, id: String(spec.source.id) } } : {}),
      parameters,
    };
  }

  /** Differences between an existing volume and a create request with the same name. */
  private specDifferences(rec: VolumeRecord, s: NormalSpec): string[] {
    const d: string[] = [];
    if (rec.createdSizeBytes !== s.sizeBytes) d.push(`size ${formatSize(rec.createdSizeBytes)} vs ${formatSize(s.sizeBytes)}`);
    if (rec.thin !== s.thin) d.push(`thin ${rec.thin} vs ${s.thin}`);
    const recMode = rec.chap === null ? 'none' : rec.chap.mutualUser !== undefined ? 'mutual' : 'chap';
    if (recMode !== s.chap.mode) d.push(`CHAP ${recMode} vs ${s.chap.mode}`);
    else if (s.chap.mode !== 'none' && s.chap.credentials && rec.chap) {
      const c = s.chap.credentials;
      if (
        c.user !== rec.chap.user ||
        c.secret !== rec.chap.secret ||
        (c.mutualUser !== undefined && c.mutualUser !== rec.chap.mutualUser) ||
        (c.mutualSecret !== undefined && c.mutualSecret !== rec.chap.mutualSecret)
      ) {
        d.push('CHAP credentials');
      }
    }
    if (!sameStringSet(rec.allow, s.allow)) d.push('allow list');
    if (rec.masked !== s.masked) d.push(`masked ${rec.masked} vs ${s.masked}`);
    if (!sameStringSet(rec.portals ?? [], s.portals ?? [])) d.push('portals');
    if (!sameSource(rec.source, s.source)) d.push('content source');
    if (!sameRecord(rec.parameters, s.parameters)) d.push('parameters');
    return d;
  }

  private makeChap(setting: ChapSetting): ChapCredentials | null {
    if (setting.mode === 'none') return null;
    const c = setting.credentials;
    const user = c?.user ?? `lunar-${randomBytes(4).toString('hex')}`;
    const secret = c?.secret ?? newChapSecret();
    if (setting.mode === 'chap') return { user, secret };
    let mutualSecret = c?.mutualSecret ?? newChapSecret();
    while (mutualSecret === secret) mutualSecret = newChapSecret();
    return { user, secret, mutualUser: c?.mutualUser ?? `lunar-target-${randomBytes(4).toString('hex')}`, mutualSecret };
  }

  /** Run fn holding key; a second call while one is in flight fails with busy. */
  private async exclusive<T>(key: string, what: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new VolumeError('failed-precondition', 'Lunar is shutting down');
    const r = await this.locks.tryRun(key, fn);
    if (!r.ran) throw new VolumeError('busy', `${what} has an operation in progress; retry when it completes`);
    return r.value;
  }

  // ---------------------------------------------------------------------------------------------------
  // create / delete / resize

  async create(spec: VolumeSpec): Promise<Volume> {
    const s = this.normaliseSpec(spec);
    return this.exclusive(`name:${s.name}`, `volume name "${s.name}"`, async () => {
      const started = Date.now();
      const existing = Object.values(this.state.data.volumes).find((v) => v.name === s.name);
      if (existing) {
        const diff = this.specDifferences(existing, s);
        if (diff.length === 0) return this.toVolume(existing);
        throw new VolumeError(
          'already-exists',
          `a volume named "${s.name}" already exists (${existing.id}) with a different specification (${diff.join(', ')}); pick another name or delete it first`,
        );
      }
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
        chap: this.makeChap(s.chap),
        allow: s.allow,
        masked: s.masked,
        portals: s.portals,
        publications: {},
        ...(s.source ? { source: s.source } : {}),
        parameters: s.parameters,
        createdAt: new Date().toISOString(),
        reservations: {},
      };
      this.state.data.volumes[id] = rec;
      try {
        await this.state.save();
      } catch (err) {
        delete this.state.data.volumes[id];
        await removeDurable(final).catch(() => undefined);
        throw new VolumeError('internal', `could not record volume "${s.name}" in ${this.state.path}: ${errMessage(err)}`);
      }
      try {
        await this.openVolume(rec);
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
      return this.toVolume(rec);
    });
  }

  /** Content for a new volume: a copy of a snapshot or of a live volume (quiesced while copied). */
  private async fillFromSource(src: VolumeSource, sizeBytes: number, dest: string): Promise<void> {
    if (src.kind === 'snapshot') {
      const snap = Object.hasOwn(this.state.data.snapshots, src.id) ? this.state.data.snapshots[src.id] : undefined;
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
      const rec = Object.hasOwn(this.state.data.volumes, src.id) ? this.state.data.volumes[src.id] : undefined;
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
    if (!Object.hasOwn(this.state.data.volumes, id)) return false;
    return this.exclusive(`vol:${id}`, `volume ${id}`, async () => {
      const started = Date.now();
      const rec = this.state.data.volumes[id];
      if (!rec) return false;
      const iqn = targetIqn(id);
      this.opts.registry.remove(iqn);
      const closedSessions = this.transport?.closeSessions({ targetName: iqn }) ?? 0;
      const ov = this.open.get(id);
      this.open.delete(id);
      if (ov) {
        await ov.device.close().catch((err: unknown) => this.log.warn({ volumeId: id, err: errMessage(err) }, 'device close failed'));
        await ov.store.close().catch((err: unknown) => this.log.warn({ volumeId: id, err: errMessage(err) }, 'store close failed'));
      }
      delete this.state.data.volumes[id];
      try {
        await this.state.save();
      } catch (err) {
        // Put it back as it was; the file is untouched.
        this.state.data.volumes[id] = rec;
        await this.openVolume(rec).catch(() => undefined);
        throw new VolumeError('internal', `could not record deletion of ${id}: ${errMessage(err)}`);
      }
      this.broken.delete(id);
      await removeDurable(this.volumePath(id));
      this.log.info({ op: 'delete', volumeId: id, name: rec.name, closedSessions, durationMs: Date.now() - started }, 'volume deleted');
      return true;
    });
  }

  async resize(id: string, sizeBytes: number): Promise<Volume> {
    this.record(id);
    const newSize = this.checkSize(sizeBytes, 'new size');
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
      rec.sizeBytes = newSize;
      try {
        await this.state.save();
      } catch (err) {
        // The file is larger than the record; startup adopts the file size, so the grow is not lost.
        this.log.error({ volumeId: id, err: errMessage(err) }, 'resize not recorded');
      }
      ov.device.logicalUnit(0)?.capacityChanged();
      this.log.info({ op: 'resize', volumeId: id, oldSize, newSize, durationMs: Date.now() - started }, 'volume resized');
      return this.toVolume(rec);
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
    if (typeof nodeId !== 'string' || nodeId.length === 0) throw new VolumeError('invalid-argument', 'node id must not be empty');
    if (typeof initiatorName !== 'string' || !isIscsiName(initiatorName)) {
      throw new VolumeError(
        'invalid-argument',
        `"${String(initiatorName)}" is not a valid iSCSI initiator name (iqn.YYYY-MM.domain:... or eui.<16 hex>)`,
      );
    }
    return this.exclusive(`vol:${id}`, `volume ${id}`, async () => {
      const started = Date.now();
      const rec = this.record(id);
      const prev = rec.publications[nodeId];
      if (prev === initiatorName) return this.toVolume(rec);
      rec.publications[nodeId] = initiatorName;
      try {
        await this.state.save();
      } catch (err) {
        if (prev === undefined) delete rec.publications[nodeId];
        else rec.publications[nodeId] = prev;
        throw new VolumeError('internal', `could not record publication: ${errMessage(err)}`);
      }
      this.refreshAccess(rec);
      if (prev !== undefined && !this.initiatorStillAllowed(rec, prev)) {
        this.transport?.closeSessions({ targetName: targetIqn(id), initiatorName: prev });
      }
      this.log.info({ op: 'publish', volumeId: id, nodeId, initiatorName, durationMs: Date.now() - started }, 'volume published');
      return this.toVolume(rec);
    });
  }

  async unpublish(id: string, nodeId: string): Promise<Volume> {
    this.record(id);
    return this.exclusive(`vol:${id}`, `volume ${id}`, async () => {
      const started = Date.now();
      const rec = this.record(id);
      const prev = rec.publications[nodeId];
      if (prev === undefined) return this.toVolume(rec);
      delete rec.publications[nodeId];
      try {
        await this.state.save();
      } catch (err) {
        rec.publications[nodeId] = prev;
        throw new VolumeError('internal', `could not record unpublication: ${errMessage(err)}`);
      }
      this.refreshAccess(rec);
      let closed = 0;
      if (!this.initiatorStillAllowed(rec, prev) || !Object.values(rec.publications).includes(prev)) {
        // The node is gone from this volume: its sessions end even when a static entry still admits it,
        // so that unpublish means "this node no longer uses the volume".
        closed = this.transport?.closeSessions({ targetName: targetIqn(id), initiatorName: prev }) ?? 0;
      }
      this.log.info(
        { op: 'unpublish', volumeId: id, nodeId, initiatorName: prev, closedSessions: closed, durationMs: Date.now() - started },
        'volume unpublished',
      );
      return this.toVolume(rec);
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // snapshots

  async createSnapshot(volumeId: string, name: string): Promise<Snapshot> {
    if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > 255 || /[\x00-\x1f\x7f]/.test(name)) {
      throw new VolumeError('invalid-argument', 'snapshot name must be 1 to 255 bytes without control characters');
    }
    return this.exclusive(`snapname:${name}`, `snapshot name "${name}"`, async () => {
      const existing = Object.values(this.state.data.snapshots).find((s) => s.name === name);
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
      this.state.data.snapshots[id] = rec;
      try {
        await this.state.save();
      } catch (err) {
        delete this.state.data.snapshots[id];
        await removeDurable(final).catch(() => undefined);
        throw new VolumeError('internal', `could not record snapshot "${name}": ${errMessage(err)}`);
      }
      this.log.info({ op: 'snapshot', volumeId, snapshotId: id, name, durationMs: Date.now() - started }, 'snapshot created');
      return this.toSnapshot(rec);
    });
  }

  async deleteSnapshot(id: string): Promise<boolean> {
    if (!Object.hasOwn(this.state.data.snapshots, id)) return false;
    return this.exclusive(`snap:${id}`, `snapshot ${id}`, async () => {
      const started = Date.now();
      const rec = this.state.data.snapshots[id];
      if (!rec) return false;
      delete this.state.data.snapshots[id];
      try {
        await this.state.save();
      } catch (err) {
        this.state.data.snapshots[id] = rec;
        throw new VolumeError('internal', `could not record deletion of snapshot ${id}: ${errMessage(err)}`);
      }
      await removeDurable(this.snapshotPath(id));
      this.log.info(
        { op: 'delete-snapshot', snapshotId: id, volumeId: rec.sourceVolumeId, durationMs: Date.now() - started },
        'snapshot deleted',
      );
      return true;
    });
  }

  /** Close every device and store (the transport must be closed first). */
  async close(): Promise<void> {
    this.closed = true;
    for (const [id, ov] of this.open) {
      this.opts.registry.remove(targetIqn(id));
      await ov.device.close().catch(() => undefined);
      await ov.store.close().catch(() => undefined);
    }
    this.open.clear();
    await this.state.save().catch((err: unknown) => this.log.error({ err: errMessage(err) }, 'final state save failed'));
  }
}
