// Startup reconciliation of a data directory's files with its state, before any volume is served.
//
// The volume manager's crash-safety order makes every interrupted operation leave one of these:
// - create/clone/snapshot write <dir>/.tmp-<id>.img, fsync it, rename it to <dir>/<id>.img and only
//   then record it; delete removes the record first, then the file. So a temporary file comes only from
//   an operation that never returned success: it is deleted. A complete <id>.img without a record may be
//   an interrupted create, but also a volume created after the backup of state.json that was restored:
//   it is never deleted but moved to <data-dir>/orphans/ (orphans.ts), one warn line per file.
// - A record whose file is missing is KEPT and its volume reported abnormal and not served: dropping it
//   would silently lose the volume's identity, and an operator may still restore the file. A file
//   smaller than its record is abnormal too.
// - resize grows the file first, then the record: a file larger than its record is adopted at the
//   file's size.
// - A missing state file while volume files exist stops startup rather than moving them all aside.
// Only names Lunar itself makes (<id>.img, .tmp-<id>.img) are touched; anything else is left alone.

import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { fsyncDir, isTempName, TMP_PREFIX } from '../util/atomic-file.js';
import { isLunarId } from '../util/ids.js';
import { finishOrphanMoves, listOrphans, moveNoReplace } from './orphans.js';
import { StateError, type StateStore } from './state.js';
import { errMessage } from '../util/errors.js';

export interface ReconcileContext {
  readonly state: StateStore;
  readonly volumesDir: string;
  readonly snapshotsDir: string;
  readonly orphansDir: string;
  readonly volumePath: (id: string) => string;
  readonly log: Logger;
}

/** The id in a name Lunar makes (<id>.img, .tmp-<id>.img), or null. */
function lunarFileId(name: string): string | null {
  const base = isTempName(name) ? name.slice(TMP_PREFIX.length) : name;
  const id = base.endsWith('.img') ? base.slice(0, -4) : '';
  return isLunarId(id) ? id : null;
}

/**
 * Bring files and state into agreement as described above. Returns the volumes not to serve, each with
 * the reason. Throws StateError when the state file is missing next to existing volume files.
 */
export async function reconcile(ctx: ReconcileContext): Promise<Map<string, string>> {
  const { state, log } = ctx;
  const unrecorded: string[] = [];
  for (const [dir, kind, recorded] of [
    [ctx.volumesDir, 'volume', (id: string) => state.volume(id) !== undefined],
    [ctx.snapshotsDir, 'snapshot', (id: string) => state.snapshot(id) !== undefined],
  ] as const) {
    const names = await fsp.readdir(dir);
    const images = names.filter((n) => !isTempName(n) && lunarFileId(n) !== null);
    if (state.created && images.length > 0) {
      throw new StateError(
        `${state.location} is missing but ${dir} holds ${images.length} ${kind} file(s); Lunar will not start ` +
          `and put them all aside as orphans — restore state.json or move ${dir} away`,
      );
    }
    let removed = 0;
    for (const n of names) {
      const id = lunarFileId(n);
      if (id === null) {
        log.warn({ file: join(dir, n), kind }, 'ignoring a file Lunar did not create');
        continue;
      }
      if (isTempName(n)) {
        await fsp.rm(join(dir, n), { force: true });
        removed++;
        log.warn({ file: join(dir, n), kind }, 'removed temporary file left by an interrupted operation');
      } else if (!recorded(id)) unrecorded.push(join(dir, n));
    }
    if (removed > 0) await fsyncDir(dir);
  }
  for (const path of await finishOrphanMoves(ctx, unrecorded)) {
    const sizeBytes = (await fsp.stat(path)).size;
    let movedTo: string;
    try {
      movedTo = await moveNoReplace(path, ctx.orphansDir);
    } catch (err) {
      // Left where it is, unserved and still not deleted; the next start tries again.
      log.error(
        { file: path, sizeBytes, err: errMessage(err) },
        `file without a record could not be moved to ${ctx.orphansDir}; left in place`,
      );
      continue;
    }
    log.warn(
      { file: path, movedTo, sizeBytes },
      'file without a record moved to orphans/ (a restored older state.json, or a create interrupted before its record): see `lunar orphans list`',
    );
  }
  const orphans = await listOrphans(ctx);
  if (orphans.length > 0) {
    log.warn(
      { orphans: orphans.length, dir: ctx.orphansDir, bytes: orphans.reduce((n, o) => n + o.sizeBytes, 0) },
      'files without a record are kept in orphans/: adopt them (`lunar orphans adopt FILE --name NAME`) or remove them',
    );
  }

  const broken = new Map<string, string>();
  for (const rec of state.volumes()) {
    const path = ctx.volumePath(rec.id);
    let size: number;
    try {
      size = (await fsp.stat(path)).size;
    } catch (err) {
      broken.set(rec.id, `backing file ${path} is missing or unreadable: ${errMessage(err)}`);
      log.error({ volumeId: rec.id, problem: broken.get(rec.id) }, 'volume abnormal');
      continue;
    }
    if (size > rec.sizeBytes) {
      log.warn({ volumeId: rec.id, recorded: rec.sizeBytes, file: size }, 'adopting size of interrupted resize');
      await state.update((tx) => {
        tx.setVolumeSize(rec.id, size);
      });
    } else if (size < rec.sizeBytes) {
      broken.set(rec.id, `${path} is ${size} bytes, smaller than the recorded ${rec.sizeBytes}`);
      log.error({ volumeId: rec.id, problem: broken.get(rec.id) }, 'volume abnormal');
    }
  }
  return broken;
}
