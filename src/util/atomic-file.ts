// Crash-safe replacement of small state files: write a temporary file in the same directory, fsync it,
// rename it over the target (atomic on POSIX file systems), then fsync the directory so the rename itself
// is durable. After a crash the file holds either the old or the new content, never a mix.

import { randomBytes } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** fsync a directory so that entries created, renamed or removed in it are durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Temporary names start with this; startup code may remove leftovers matching it. */
export const TMP_PREFIX = '.tmp-';

export function isTempName(name: string): boolean {
  return name.startsWith(TMP_PREFIX);
}

/** Atomically replace `path` with `data` (mode defaults to 0600: state files may hold CHAP secrets). */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = await writeTempFile(path, data, mode);
  try {
    await fsp.rename(tmp, path);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dirname(path));
}

/** Rename then fsync the directory (both paths must be in the same directory). */
export async function renameDurable(from: string, to: string): Promise<void> {
  await fsp.rename(from, to);
  await fsyncDir(dirname(to));
}

/** Remove a file (missing is fine) and make the removal durable. */
export async function removeDurable(path: string): Promise<void> {
  await fsp.rm(path, { force: true });
  await fsyncDir(dirname(path));
}

/**
 * First half of an atomic replace, asynchronous: write data to a new temporary file next to path and
 * fsync it. Returns the temporary path; the caller renames it over path and fsyncs the directory (or
 * removes it).
 */
export async function writeTempFile(path: string, data: string | Uint8Array, mode = 0o600): Promise<string> {
  const tmp = join(dirname(path), `${TMP_PREFIX}${basename(path)}.${randomBytes(6).toString('hex')}`);
  const fh = await fsp.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  return tmp;
}
