// Unix stream socket paths: the length limit of a socket address and the claim of a path before listen(),
// shared by the admin socket and the CSI endpoint.

import { promises as fsp } from 'node:fs';
import net from 'node:net';

/** Longest path a unix socket address holds on Linux (sun_path is 108 bytes with the terminating NUL). */
export const UNIX_PATH_MAX = 107;

/** true when path does not fit in a unix socket address (listen() and connect() would fail or truncate). */
export function unixPathTooLong(path: string): boolean {
  return Buffer.byteLength(path) > UNIX_PATH_MAX;
}

/** true when some process accepts connections on the unix socket at path. */
export function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      resolve(false);
    });
  });
}

/**
 * Makes path ready for listen(): nothing there, or a socket file nobody answers on (left by a process that
 * died), which is removed. 'live': a process answers there; 'not-socket': a file of another kind is there.
 * Both are left untouched for the caller to refuse with its own message.
 */
export async function claimSocketPath(path: string): Promise<'free' | 'live' | 'not-socket'> {
  let st;
  try {
    st = await fsp.lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'free';
    throw err;
  }
  if (!st.isSocket()) return 'not-socket';
  if (await socketAnswers(path)) return 'live';
  await fsp.rm(path, { force: true });
  return 'free';
}
