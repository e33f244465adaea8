// Orphans: complete volume or snapshot files that no record accounts for, kept in <data-dir>/orphans/.
//
// A state.json restored from a backup does not know the volumes created after the backup; an interrupted
// create may leave a complete file whose record was never written. Lunar cannot tell which, so it never
// deletes such a file: startup (reconcile.ts) moves it here under its own name, the operator sees it in
// the log, in `lunar status` and `lunar orphans list`, and may re-adopt it as a volume
// (`lunar orphans adopt FILE --name NAME`). Only `.tmp-*` files of interrupted operations are removed.
//
// Moves never overwrite: a file gets a new name by link(2), which fails when the name is taken (then
// "<id>.1.img", "<id>.2.img", ... is tried), and loses the old one by unlink(2). A crash between the two
// leaves one file under two names; startup recognises that by device and inode number and drops the name
// that is not needed (finishOrphanMoves), so no two names of one file ever become two volumes.
//
// Adopting (adoptOrphan): link the orphan to <volumes>/<id>.img, record the volume, unlink the orphan
// name. A failed record unlinks the new name again: the file stays in orphans/ as it was.

import { promises as fsp, type Stats } from 'node:fs';
import { basename, join } from 'node:path';
import type { Logger } from 'pino';
import { fsyncDir } from '../util/atomic-file.js';
import { ID_PATTERN, newNaa6, newVolumeId } from '../util/ids.js';
import { formatSize } from '../util/size.js';
import { nameProblem, normaliseAllow } from './spec.js';
import type { StateReader, StateStore, VolumeRecord } from './state.js';
import { MAX_VOLUME_BYTES, notRecordedError, SIZE_ALIGNMENT, VolumeError, type AdoptSpec, type Orphan } from './types.js';
import { errMessage, isErrno } from '../util/errors.js';

/** Sub-directory of the data directory holding orphans. */
export const ORPHANS_DIR = 'orphans';

const ORPHAN_NAME = new RegExp(`^(${ID_PATTERN})(?:\\.\\d+)?\\.img$`);

/** The id in an orphan's file name ("<id>.img", "<id>.<n>.img"), or null for a name Lunar did not make. */
export function orphanFileId(name: string): string | null {
  return ORPHAN_NAME.exec(name)?.[1] ?? null;
}

/**
 * Whether any record uses id now: as a volume's or a snapshot's id, as a snapshot's source volume or as a
 * volume's content source. An id none of them names is provably unused: giving it to an adopted volume
 * cannot make any record refer to the wrong data.
 */
export function idInUse(state: StateReader, id: string): boolean {
  if (state.volume(id) !== undefined || state.snapshot(id) !== undefined) return true;
  if (state.snapshots().some((s) => s.sourceVolumeId === id)) return true;
  return state.volumes().some((v) => v.source?.id === id);
}

/** A candidate name for the n-th try of placing a file called name (n = 0: the name itself). */
function candidate(name: string, n: number): string {
  if (n === 0) return name;
  const dot = name.endsWith('.img') ? name.length - 4 : name.length;
  return `${name.slice(0, dot)}.${n}${name.slice(dot)}`;
}

/**
 * Move the file at path into dir under its own name, or the first free "<stem>.<n>.img"; never replaces
 * a file. Durable (both directories fsynced) when it resolves; returns the new path.
 */
export async function moveNoReplace(path: string, dir: string): Promise<string> {
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const name = basename(path);
  for (let n = 0; ; n++) {
    const to = join(dir, candidate(name, n));
    try {
      await fsp.link(path, to);
    } catch (err) {
      if (isErrno(err, 'EEXIST') && n < 10_000) continue;
      throw err;
    }
    await fsyncDir(dir);
    await fsp.unlink(path);
    await fsyncDir(join(path, '..'));
    return to;
  }
}

/** device:inode of a file, the identity two names of one file share. */
function inodeKey(st: Stats): string {
  return `${st.dev}:${st.ino}`;
}

/** Regular files of orphans/ with their stats (none when the directory does not exist). */
async function orphanFiles(orphansDir: string): Promise<Array<{ name: string; st: Stats }>> {
  let names: string[];
  try {
    names = await fsp.readdir(orphansDir);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return [];
    throw err;
  }
  const out: Array<{ name: string; st: Stats }> = [];
  for (const name of names.sort()) {
    const st = await fsp.lstat(join(orphansDir, name)).catch(() => null);
    if (st?.isFile()) out.push({ name, st });
  }
  return out;
}

export interface OrphanContext {
  readonly state: StateStore;
  readonly orphansDir: string;
  readonly volumesDir: string;
  readonly log: Logger;
}

/**
 * Startup, before files without a record are moved: drop the names left by a move that a crash
 * interrupted between its link and its unlink. An orphans/ name of a recorded volume's file is the end of
 * an interrupted adopt (the volume owns the file); `unrecorded` are the paths of files in volumes/ and
 * snapshots/ without a record, and one of them that is also in orphans/ is the start of an interrupted
 * move there. Returns those of `unrecorded` that still need moving.
 */
export async function finishOrphanMoves(ctx: OrphanContext, unrecorded: readonly string[]): Promise<string[]> {
  const orphans = await orphanFiles(ctx.orphansDir);
  const multi = orphans.filter((o) => o.st.nlink > 1);
  if (multi.length === 0) return [...unrecorded];
  const owned = new Set<string>();
  for (const rec of ctx.state.volumes()) {
    const st = await fsp.stat(join(ctx.volumesDir, `${rec.id}.img`)).catch(() => null);
    if (st) owned.add(inodeKey(st));
  }
  const inOrphans = new Set<string>();
  for (const o of multi) {
    const path = join(ctx.orphansDir, o.name);
    if (owned.has(inodeKey(o.st))) {
      await fsp.unlink(path);
      ctx.log.warn({ file: path }, 'removed the orphans/ name of a file an interrupted adopt had already made a volume');
    } else inOrphans.add(inodeKey(o.st));
  }
  await fsyncDir(ctx.orphansDir);
  const left: string[] = [];
  for (const path of unrecorded) {
    const st = await fsp.stat(path);
    if (st.nlink > 1 && inOrphans.has(inodeKey(st))) {
      await fsp.unlink(path);
      await fsyncDir(join(path, '..'));
      ctx.log.warn({ file: path }, 'removed the second name of a file an interrupted move had already put in orphans/');
    } else left.push(path);
  }
  return left;
}

/** The orphans, sorted by file name. */
export async function listOrphans(ctx: Pick<OrphanContext, 'state' | 'orphansDir'>): Promise<Orphan[]> {
  return (await orphanFiles(ctx.orphansDir)).map(({ name, st }) => {
    const id = orphanFileId(name);
    return {
      file: name,
      path: join(ctx.orphansDir, name),
      sizeBytes: st.size,
      modifiedAt: st.mtime.toISOString(),
      id,
      idInUse: id !== null && idInUse(ctx.state, id),
    };
  });
}

/** Why a file cannot become a volume, or null. */
function adoptProblem(file: string, st: Stats): string | null {
  if (st.nlink > 1) return `${file} has ${st.nlink} names (hard links): as a volume its data would change under the others`;
  if (st.size === 0 || st.size % SIZE_ALIGNMENT !== 0) {
    return `${file} is ${st.size} bytes, not a positive multiple of ${formatSize(SIZE_ALIGNMENT)} as every Lunar volume is`;
  }
  if (st.size > MAX_VOLUME_BYTES) return `${file} is larger than the maximum volume size ${formatSize(MAX_VOLUME_BYTES)}`;
  return null;
}

export interface AdoptContext extends OrphanContext {
  /** Path of a volume's file. */
  volumePath(id: string): string;
  /** Serve a newly recorded volume (as create does). */
  serve(rec: VolumeRecord): Promise<void>;
}

/**
 * Make the orphan `file` (a name in orphans/) a volume called spec.name: the orphan's own id when it is a
 * volume id that no record uses (idInUse), else a new one; the rest of its identity (NAA, serial) is new,
 * its access is spec's. The caller holds the locks of the name and the file.
 */
export async function adoptOrphan(ctx: AdoptContext, file: string, spec: AdoptSpec): Promise<VolumeRecord> {
  const started = Date.now();
  if (typeof (file as unknown) !== 'string' || file === '' || file !== basename(file) || file.startsWith('.')) {
    throw new VolumeError('invalid-argument', `orphan file must be a file name in ${ctx.orphansDir} (see \`lunar orphans list\`)`);
  }
  const problem = nameProblem(spec.name);
  if (problem !== null) throw new VolumeError('invalid-argument', `volume name ${problem}`);
  const allow = normaliseAllow(spec.allow);
  const taken = ctx.state.volumeByName(spec.name);
  if (taken) throw new VolumeError('already-exists', `a volume named "${spec.name}" already exists (${taken.id}); pick another name`);
  const from = join(ctx.orphansDir, file);
  let st: Stats;
  try {
    st = await fsp.lstat(from);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new VolumeError('not-found', `no orphan "${file}" in ${ctx.orphansDir} (see \`lunar orphans list\`)`);
    throw err;
  }
  if (!st.isFile()) throw new VolumeError('failed-precondition', `${from} is not a regular file`);
  const why = adoptProblem(from, st);
  if (why !== null) throw new VolumeError('failed-precondition', why);

  const oldId = orphanFileId(file);
  const keepId = oldId !== null && oldId.startsWith('vol-') && !idInUse(ctx.state, oldId);
  const id = keepId ? oldId : newVolumeId();
  const to = ctx.volumePath(id);
  try {
    await fsp.link(from, to);
    await fsyncDir(ctx.volumesDir);
  } catch (err) {
    if (isErrno(err, 'EEXIST')) {
      throw new VolumeError('already-exists', `${to} exists already; move it away or adopt ${file} under a new id`);
    }
    throw new VolumeError('internal', `could not link ${from} to ${to}: ${errMessage(err)}`);
  }
  const rec: VolumeRecord = {
    id,
    name: spec.name,
    sizeBytes: st.size,
    createdSizeBytes: st.size,
    // Fewer blocks allocated than the size: a sparse (thin) file.
    thin: st.blocks * 512 < st.size,
    naa: newNaa6(),
    serial: id.slice(4),
    chap: null,
    allow,
    masked: spec.masked ?? false,
    portals: null,
    publications: {},
    parameters: {},
    createdAt: new Date().toISOString(),
    reservations: {},
  };
  try {
    await ctx.state.update((tx) => {
      // Checked again inside the transaction: nothing may have started using the id meanwhile.
      if (keepId && idInUse(tx, id)) throw new VolumeError('busy', `id ${id} was taken while ${file} was being adopted; retry`);
      tx.addVolume(rec);
    });
  } catch (err) {
    // Not recorded: the file stays what it was, an orphan.
    await fsp.unlink(to).catch(() => undefined);
    await fsyncDir(ctx.volumesDir).catch(() => undefined);
    throw notRecordedError(ctx.state.location, `volume "${spec.name}"`, err, `; ${file} stays in ${ctx.orphansDir}`);
  }
  // Recorded: the volume owns the file; its orphans/ name goes (a crash before this is finished at startup).
  await fsp.unlink(from);
  await fsyncDir(ctx.orphansDir);
  await ctx.serve(rec);
  ctx.log.info(
    { op: 'adopt', volumeId: id, name: spec.name, file: from, keptId: keepId, sizeBytes: st.size, durationMs: Date.now() - started },
    'orphan adopted as a volume',
  );
  return rec;
}
