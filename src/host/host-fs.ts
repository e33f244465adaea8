// File access to the host's trees (/sys, /dev, /etc/iscsi, /var/lib/iscsi, /etc/multipath): the node
// steps name host paths as the host sees them ("/sys/class/scsi_host/host3/scan"), and a HostFs maps them
// under its root (--host-root-dir, "/" by default; a pod that mounts the host's / at /host uses /host).
// The interface is what the steps need and no more, so that unit tests give them an in-memory tree.

import { constants, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-file.js';

export interface HostFs {
  /** The file's text, or null when it does not exist (or is a sysfs attribute of an object being removed). */
  readText(path: string): Promise<string | null>;
  /** Replaces the file atomically (temporary file, fsync, rename), creating its directory. */
  writeAtomic(path: string, data: string, mode?: number): Promise<void>;
  /** Entry names, or [] when the directory does not exist. */
  readdir(path: string): Promise<string[]>;
  /** The link's target, or null when it is missing. */
  readlink(path: string): Promise<string | null>;
  /** length bytes at offset (fewer at the end of the file). */
  readBytes(path: string, offset: number, length: number): Promise<Buffer>;
  exists(path: string): Promise<boolean>;
  /** mkdir -p (mode 0750). */
  mkdir(path: string): Promise<void>;
  /** Creates an empty file when there is none (the target of a block volume's bind mount). */
  createFile(path: string): Promise<void>;
  /** Removes a file or an empty directory; a missing one is fine. */
  remove(path: string): Promise<void>;
}

function isEnoent(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * A sysfs attribute of an object the kernel is removing (a session logging out, a map being flushed)
 * reads as ENODEV: the object is gone. Seen with 10 volumes unstaged in parallel (bench/node-stage.ts),
 * while one unstage walked every session and map.
 */
export function isGone(err: unknown): boolean {
  return isEnoent(err) || (err as NodeJS.ErrnoException).code === 'ENODEV';
}

/** The real host tree under root. */
export function hostFs(root = '/'): HostFs {
  const at = (p: string): string => (root === '/' ? p : join(root, p));
  return {
    async readText(path) {
      try {
        return await fsp.readFile(at(path), 'utf8');
      } catch (err) {
        if (isGone(err)) return null;
        throw err;
      }
    },
    async writeAtomic(path, data, mode = 0o600) {
      const full = at(path);
      await fsp.mkdir(join(full, '..'), { recursive: true });
      await writeFileAtomic(full, data, mode);
    },
    async readdir(path) {
      try {
        return await fsp.readdir(at(path));
      } catch (err) {
        if (isGone(err)) return [];
        throw err;
      }
    },
    async readlink(path) {
      try {
        return await fsp.readlink(at(path));
      } catch (err) {
        if (isEnoent(err) || (err as NodeJS.ErrnoException).code === 'EINVAL') return null;
        throw err;
      }
    },
    async readBytes(path, offset, length) {
      const fh = await fsp.open(at(path), constants.O_RDONLY);
      try {
        const buf = Buffer.alloc(length);
        const { bytesRead } = await fh.read(buf, 0, length, offset);
        return buf.subarray(0, bytesRead);
      } finally {
        await fh.close();
      }
    },
    async exists(path) {
      try {
        await fsp.access(at(path));
        return true;
      } catch {
        return false;
      }
    },
    async mkdir(path) {
      await fsp.mkdir(at(path), { recursive: true, mode: 0o750 });
    },
    async createFile(path) {
      await fsp.mkdir(join(at(path), '..'), { recursive: true, mode: 0o750 });
      const fh = await fsp.open(at(path), constants.O_WRONLY | constants.O_CREAT, 0o640);
      await fh.close();
    },
    async remove(path) {
      try {
        const st = await fsp.lstat(at(path));
        if (st.isDirectory()) await fsp.rmdir(at(path));
        else await fsp.rm(at(path));
      } catch (err) {
        if (!isEnoent(err)) throw err;
      }
    },
  };
}
