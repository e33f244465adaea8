// An accepted connection moved onto a net.Socket of the transport's own making, which reads into one
// reused buffer per thread (net.Socket `onread`) instead of handing JavaScript a fresh Buffer per read.
//
// Why: every read of a socket made by net.Server becomes a new 64 KiB Buffer (libuv's allocation),
// external memory that V8 reclaims with full collections. For 1 MiB WRITEs that is 1 MiB of garbage
// per command; V8's helper threads then spent more CPU marking the heap than the main thread spent on
// the command (see docs/benchmarks.md). Node's one public way to read into a buffer of one's own is
// the `onread` option of a net.Socket one creates, and an accepted socket is not one: its descriptor is
// duplicated (dup(2) through the native addon, which the caller passes in) into
// `new net.Socket({ fd, onread })`, and the server's socket object closes its copy. Closing one of two
// descriptors of a TCP socket neither shuts it down nor sends anything to the peer.
import { closeSync } from 'node:fs';
import net from 'node:net';

/** Bytes per read; one buffer per thread serves every connection (each read is parsed before the next). */
const RECEIVE_BUFFER_BYTES = 256 * 1024;
let receiveBuffer: Buffer | null = null;

interface OnReadOption {
  readonly onread: {
    /** Called before the first read and after every read: where the next read lands. */
    readonly buffer: () => Uint8Array;
    readonly callback: (bytesWritten: number, buf: Uint8Array) => boolean | undefined;
  };
}

/** What net.Socket exposes of its libuv handle on Linux: the descriptor (not in @types/node). */
interface SocketWithHandle {
  readonly _handle?: { readonly fd?: unknown } | null;
}

/** The socket's descriptor while its libuv handle is open, else -1 (after destroy() there is none). */
export function socketFd(s: net.Socket): number {
  const fd = (s as unknown as SocketWithHandle)._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

/**
 * The accepted socket's connection on a socket of our own whose reads go to onBytes (the chunk is valid
 * only during the call), or null when that cannot be done (no descriptor exposed, dup failed): the
 * caller then keeps the accepted socket. On success the accepted socket is destroyed.
 *
 * readInto, asked after every read, may name the memory the next read lands in (the rest of a Data-Out
 * segment, straight into its command's buffer: no copy from the shared buffer); null: the shared buffer.
 * What it names must stay the caller's until that read has been handed to onBytes.
 */
export function ownSocket(
  accepted: net.Socket,
  duplicateFd: (fd: number) => number,
  onBytes: (chunk: Buffer) => void,
  readInto: () => Buffer | null = () => null,
): net.Socket | null {
  const fd = socketFd(accepted);
  if (fd < 0) return null;
  let copy: number;
  try {
    copy = duplicateFd(fd);
  } catch {
    return null;
  }
  const buffer = (receiveBuffer ??= Buffer.allocUnsafe(RECEIVE_BUFFER_BYTES));
  // Node's net.Socket constructor takes `onread` as net.connect() does (@types/node 20 lists it for connect() only).
  const opts: net.SocketConstructorOpts & OnReadOption = {
    fd: copy,
    readable: true,
    writable: true,
    onread: {
      buffer: () => readInto() ?? buffer,
      callback: (n, buf) => {
        // buf is what buffer() returned last: the shared buffer or a Buffer named by readInto.
        onBytes(buf === buffer ? buffer.subarray(0, n) : Buffer.from(buf.buffer, buf.byteOffset, n));
        return undefined;
      },
    },
  };
  let own: net.Socket;
  try {
    own = new net.Socket(opts);
  } catch {
    closeSync(copy);
    return null;
  }
  accepted.destroy();
  return own;
}
