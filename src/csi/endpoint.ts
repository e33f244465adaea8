// CSI endpoints: the CSI_ENDPOINT forms Lunar accepts, and the listener that accepts connections on one.
//
// Forms: "unix:///abs/path.sock", "unix:/abs/path.sock", "unix:relative.sock" (resolved against the working
// directory, as gRPC's naming allows) and "tcp://host:port" (port 0 = any free port). The listener hands
// every accepted socket to the caller (the gRPC server's connection injector) and reports the address it
// actually bound, the port filled in when 0 was asked.

import { promises as fsp } from 'node:fs';
import net from 'node:net';
import { dirname, resolve } from 'node:path';
import type { Logger } from '../log.js';
import { hostPort } from '../util/portal.js';
import { claimSocketPath, UNIX_PATH_MAX, unixPathTooLong } from '../util/unix-socket.js';

export type CsiEndpoint =
  { readonly kind: 'unix'; readonly path: string } | { readonly kind: 'tcp'; readonly host: string; readonly port: number };

/** Where `lunar serve` listens for CSI when neither --csi-endpoint nor LUNAR_CSI_ENDPOINT is given. */
export function defaultCsiEndpoint(dataDir: string): string {
  return `unix://${resolve(dataDir, 'csi.sock')}`;
}

/** CSI_ENDPOINT forms Lunar accepts (CSI spec "CSI_ENDPOINT"; unix:path as gRPC's naming allows). */
export function parseEndpoint(endpoint: string): CsiEndpoint {
  if (endpoint.startsWith('unix://')) {
    const path = endpoint.slice('unix://'.length);
    if (!path.startsWith('/')) throw new Error(`CSI endpoint ${endpoint}: unix:// needs an absolute path (unix:///path/csi.sock)`);
    return { kind: 'unix', path };
  }
  if (endpoint.startsWith('unix:')) {
    const path = endpoint.slice('unix:'.length);
    if (path === '') throw new Error(`CSI endpoint ${endpoint}: no socket path`);
    return { kind: 'unix', path: resolve(path) };
  }
  if (endpoint.startsWith('tcp://')) {
    const hostPortText = endpoint.slice('tcp://'.length);
    const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:/\]]+)):(\d{1,5})$/.exec(hostPortText);
    const port = m ? Number(m[3]) : -1;
    if (!m || port < 0 || port > 65535) throw new Error(`CSI endpoint ${endpoint}: expected tcp://host:port`);
    return { kind: 'tcp', host: m[1] ?? m[2] ?? '', port };
  }
  throw new Error(`CSI endpoint ${JSON.stringify(endpoint)}: use unix:///path/csi.sock or tcp://host:port`);
}

export interface EndpointListenOptions {
  /** Unix socket permissions (default 0o600: only the sidecars running as root reach it). */
  readonly socketMode?: number;
  readonly log: Logger;
}

export interface EndpointListener {
  /** "unix:///path" or "tcp://host:port" actually bound (the port filled in when 0 was asked). */
  readonly address: string;
  /** Stops accepting; resolves once every accepted connection is closed and the socket file removed. */
  close(): Promise<void>;
  /** Ends every accepted connection still open. */
  destroyConnections(): void;
}

/** Listens on endpoint; a stale unix socket file is replaced, a live one or a file of another kind refused. */
export async function listenOnEndpoint(
  endpoint: CsiEndpoint,
  onConnection: (socket: net.Socket) => void,
  opts: EndpointListenOptions,
): Promise<EndpointListener> {
  const { log } = opts;
  const sockets = new Set<net.Socket>();
  const listener = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', (err) => {
      log.debug({ err: err.message }, 'CSI connection error');
    });
    onConnection(socket);
  });
  const listen = (options: net.ListenOptions): Promise<void> =>
    new Promise<void>((res, rej) => {
      listener.once('error', rej);
      listener.listen(options, () => {
        listener.off('error', rej);
        res();
      });
    });

  let address: string;
  if (endpoint.kind === 'unix') {
    if (unixPathTooLong(endpoint.path)) {
      throw new Error(`CSI endpoint ${endpoint.path} is longer than the ${UNIX_PATH_MAX} bytes a unix socket path allows`);
    }
    await fsp.mkdir(dirname(endpoint.path), { recursive: true });
    const state = await claimSocketPath(endpoint.path);
    if (state === 'not-socket') throw new Error(`CSI endpoint ${endpoint.path} exists and is not a socket; refusing to replace it`);
    if (state === 'live') throw new Error(`CSI endpoint ${endpoint.path} is in use by another process`);
    await listen({ path: endpoint.path });
    await fsp.chmod(endpoint.path, opts.socketMode ?? 0o600);
    address = `unix://${endpoint.path}`;
  } else {
    await listen({ port: endpoint.port, host: endpoint.host });
    const bound = listener.address() as net.AddressInfo;
    address = `tcp://${hostPort(bound.address, bound.port)}`;
  }
  listener.on('error', (err) => {
    log.error({ err: err.message }, 'CSI listener error');
  });

  let closed: Promise<void> | null = null;
  return {
    address,
    close(): Promise<void> {
      closed ??= (async () => {
        // The callback fires once every accepted connection is gone.
        await new Promise<void>((res) => listener.close(() => res()));
        if (endpoint.kind === 'unix') await fsp.rm(endpoint.path, { force: true });
      })();
      return closed;
    },
    destroyConnections(): void {
      for (const s of sockets) s.destroy();
    },
  };
}
