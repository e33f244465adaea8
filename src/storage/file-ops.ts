// Operations on whole backing files, for making and growing volumes: reflink or sparse copy (clones and
// snapshots), growing, preallocating (thick volumes) and fsync by path.
//
// Copies use a reflink (FICLONE) when the file system shares extents (btrfs, XFS), otherwise they copy
// the mapped extents only, so holes stay holes. fs.copyFile(COPYFILE_FICLONE) alone is not enough:
// libuv's fallback writes every byte, zeroes included, which would allocate a thin volume fully.

import { constants, promises as fsp } from 'node:fs';
import { loadNative } from './native.js';
import type { BackingStore } from './types.js';

const CHUNK = 1024 * 1024;

/** Try a reflink of src to dest (dest must not exist). false when the file system cannot share extents. */
export async function tryReflink(src: string, dest: string): Promise<boolean> {
  try {
    await fsp.copyFile(src, dest, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw err;
    await fsp.rm(dest, { force: true });
    return false;
  }
}

/**
 * Copy the mapped extents of src into a new file dest (created exclusively) of src.size() bytes.
 * Returns the number of bytes copied (holes excluded).
 */
export async function copySparse(src: BackingStore, dest: string): Promise<number> {
  const size = src.size();
  const fh = await fsp.open(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  let copied = 0;
  try {
    await fh.truncate(size);
    const extents = size > 0 ? await src.allocationMap(0, size) : [];
    const buf = Buffer.allocUnsafe(CHUNK);
    for (const ext of extents) {
      if (!ext.mapped) continue;
      let off = ext.offset;
      const end = Math.min(ext.offset + ext.length, size);
      while (off < end) {
        const n = Math.min(CHUNK, end - off);
        const view = n === CHUNK ? buf : buf.subarray(0, n);
        await src.read(view, off);
        let w = 0;
        while (w < n) {
          const { bytesWritten } = await fh.write(view, w, n - w, off + w);
          w += bytesWritten;
        }
        off += n;
        copied += n;
      }
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  return copied;
}

/** Grow the file at path to size bytes (sparse) and make it durable. */
export async function growFile(path: string, size: number): Promise<void> {
  const fh = await fsp.open(path, 'r+');
  try {
    const st = await fh.stat();
    if (st.size < size) await fh.truncate(size);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** fsync a file by path. */
export async function fsyncFile(path: string): Promise<void> {
  const fh = await fsp.open(path, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Allocate [offset, offset+length) of the file at path (fallocate mode 0: data already there is kept,
 * holes become allocated zeroes) and make it durable. Thick volumes: after a clone and after a grow. */
export async function preallocate(path: string, offset: number, length: number): Promise<void> {
  if (length <= 0) return;
  const fh = await fsp.open(path, 'r+');
  try {
    await loadNative().fallocate(fh.fd, 0, offset, length);
    await fh.sync();
  } finally {
    await fh.close();
  }
}
