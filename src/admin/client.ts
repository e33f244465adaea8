// Client side of the admin socket (used by the `lunar` CLI and tests).

import net from 'node:net';
import type { AdminErrorCode, AdminResponse } from './protocol.js';

/** The server answered with an error. */
export class AdminError extends Error {
  constructor(
    readonly code: AdminErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'AdminError';
  }
}

/** No server answers on the socket. */
export class AdminUnreachable extends Error {
  constructor(
    readonly path: string,
    readonly errno: NodeJS.ErrnoException,
  ) {
    super(`no Lunar server at ${path} (${errno.code ?? errno.message})`);
    this.name = 'AdminUnreachable';
  }
}

/** One request over a fresh connection; resolves with the result or rejects with AdminError/AdminUnreachable. */
export async function adminCall(path: string, method: string, params: Record<string, unknown> = {}, timeoutMs = 600_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(path);
    let connected = false;
    let buf = '';
    let settled = false;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      fn();
    };
    const timer = setTimeout(
      () => finish(() => reject(new Error(`the Lunar server at ${path} did not answer "${method}" within ${timeoutMs / 1000} s`))),
      timeoutMs,
    );
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      connected = true;
      sock.write(JSON.stringify({ id: 1, method, params }) + '\n');
    });
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      let r: AdminResponse;
      try {
        r = JSON.parse(buf.slice(0, nl)) as AdminResponse;
      } catch (err) {
        finish(() => reject(new Error(`malformed answer from ${path}: ${(err as Error).message}`)));
        return;
      }
      if (r.ok) finish(() => resolve(r.result));
      else finish(() => reject(new AdminError(r.error.code, r.error.message)));
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      finish(() => reject(connected ? new Error(`connection to ${path} failed: ${err.message}`) : new AdminUnreachable(path, err)));
    });
    sock.on('close', () =>
      finish(() => reject(new Error(`the Lunar server at ${path} closed the connection without answering "${method}"`))),
    );
  });
}
