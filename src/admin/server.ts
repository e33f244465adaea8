// The admin socket server: <data-dir>/admin.sock, newline-delimited JSON (see protocol.ts). Only the
// owner of the data directory can connect (mode 0600); it is how the `lunar` CLI talks to `lunar serve`.

import { promises as fsp } from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import { componentLogger } from '../log.js';
import { claimSocketPath, UNIX_PATH_MAX, unixPathTooLong } from '../util/unix-socket.js';
import type { SessionInfo } from '../target/types.js';
import { VolumeError, type ChapSetting, type Volume, type VolumeService, type VolumeSpec } from '../volumes/types.js';
import { MAX_LINE, type AdminErrorCode, type AdminResponse } from './protocol.js';

export interface AdminContext {
  /** The volume service; throws (failed-precondition) while the server is still starting. */
  volumes(): VolumeService;
  allSessions(): readonly SessionInfo[];
  info(): Record<string, unknown>;
}

class BadRequest extends Error {
  constructor(
    readonly code: AdminErrorCode,
    message: string,
  ) {
    super(message);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(params: Record<string, unknown>, key: string): string {
  const v = params[key];
  if (typeof v !== 'string' || v.length === 0) throw new VolumeError('invalid-argument', `"${key}" must be a non-empty string`);
  return v;
}

function optStrings(params: Record<string, unknown>, key: string): string[] | undefined {
  const v = params[key];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string'))
    throw new VolumeError('invalid-argument', `"${key}" must be a list of strings`);
  return v;
}

function resolveVolume(volumes: VolumeService, ref: string): Volume {
  const v = volumes.get(ref) ?? volumes.getByName(ref);
  if (!v) throw new VolumeError('not-found', `no volume with id or name "${ref}" (see \`lunar volume list\`)`);
  return v;
}

function parseSpec(p: Record<string, unknown>): VolumeSpec {
  const name = str(p, 'name');
  const sizeBytes = p.sizeBytes;
  if (typeof sizeBytes !== 'number') throw new VolumeError('invalid-argument', '"sizeBytes" must be a number');
  if (p.thin !== undefined && typeof p.thin !== 'boolean') throw new VolumeError('invalid-argument', '"thin" must be a boolean');
  if (p.masked !== undefined && typeof p.masked !== 'boolean') throw new VolumeError('invalid-argument', '"masked" must be a boolean');
  let chap: ChapSetting | undefined;
  if (p.chap !== undefined) {
    if (!isObject(p.chap) || typeof p.chap.mode !== 'string')
      throw new VolumeError('invalid-argument', '"chap" must be {mode, credentials?}');
    const mode = p.chap.mode;
    if (mode === 'none') chap = { mode: 'none' };
    else if (mode === 'chap' || mode === 'mutual') {
      const c = p.chap.credentials;
      if (c === undefined) chap = { mode };
      else {
        if (!isObject(c)) throw new VolumeError('invalid-argument', '"chap.credentials" must be an object');
        const user = str(c, 'user');
        const secret = str(c, 'secret');
        const mu = c.mutualUser;
        const ms = c.mutualSecret;
        if ((mu !== undefined && typeof mu !== 'string') || (ms !== undefined && typeof ms !== 'string')) {
          throw new VolumeError('invalid-argument', '"mutualUser"/"mutualSecret" must be strings');
        }
        chap = {
          mode,
          credentials: { user, secret, ...(mu !== undefined ? { mutualUser: mu } : {}), ...(ms !== undefined ? { mutualSecret: ms } : {}) },
        };
      }
    } else throw new VolumeError('invalid-argument', `unknown CHAP mode "${mode}"`);
  }
  let source: VolumeSpec['source'];
  if (p.source !== undefined) {
    if (!isObject(p.source) || (p.source.kind !== 'snapshot' && p.source.kind !== 'volume')) {
      throw new VolumeError('invalid-argument', '"source" must be {kind: "snapshot"|"volume", id}');
    }
    source = { kind: p.source.kind, id: str(p.source, 'id') };
  }
  let parameters: Record<string, string> | undefined;
  if (p.parameters !== undefined) {
    if (!isObject(p.parameters) || !Object.values(p.parameters).every((x) => typeof x === 'string')) {
      throw new VolumeError('invalid-argument', '"parameters" must map strings to strings');
    }
    parameters = p.parameters as Record<string, string>;
  }
  const allow = optStrings(p, 'allow');
  const portals = optStrings(p, 'portals');
  return {
    name,
    sizeBytes,
    ...(p.thin !== undefined ? { thin: p.thin } : {}),
    ...(p.masked !== undefined ? { masked: p.masked } : {}),
    ...(chap ? { chap } : {}),
    ...(allow ? { allow } : {}),
    ...(portals ? { portals } : {}),
    ...(source ? { source } : {}),
    ...(parameters ? { parameters } : {}),
  };
}

/** Execute one admin method. */
export async function handleAdminRequest(ctx: AdminContext, method: string, params: Record<string, unknown>): Promise<unknown> {
  if (method === 'ping') return ctx.info();
  const vs = ctx.volumes();
  switch (method) {
    case 'volume.create':
      return vs.create(parseSpec(params));
    case 'volume.list':
      // condition: true adds each volume's condition (what `volume list` and `status` show).
      if (params.condition === true) return Promise.all(vs.list().map(async (v) => ({ ...v, condition: await vs.condition(v.id) })));
      return vs.list();
    case 'volume.get':
      return resolveVolume(vs, str(params, 'volume'));
    case 'volume.delete': {
      const ref = str(params, 'volume');
      const v = vs.get(ref) ?? vs.getByName(ref);
      if (!v) return { deleted: false, id: null, name: null };
      return { deleted: await vs.delete(v.id), id: v.id, name: v.name };
    }
    case 'volume.resize': {
      const v = resolveVolume(vs, str(params, 'volume'));
      if (typeof params.sizeBytes !== 'number') throw new VolumeError('invalid-argument', '"sizeBytes" must be a number');
      return vs.resize(v.id, params.sizeBytes);
    }
    case 'volume.publish': {
      const v = resolveVolume(vs, str(params, 'volume'));
      return vs.publish(v.id, str(params, 'nodeId'), str(params, 'initiator'));
    }
    case 'volume.unpublish': {
      const v = resolveVolume(vs, str(params, 'volume'));
      return vs.unpublish(v.id, str(params, 'nodeId'));
    }
    case 'volume.condition': {
      const v = resolveVolume(vs, str(params, 'volume'));
      return vs.condition(v.id);
    }
    case 'volume.rescan': {
      const targets = params.volume === undefined ? vs.list() : [resolveVolume(vs, str(params, 'volume'))];
      const out = [];
      for (const v of targets) out.push({ id: v.id, name: v.name, ...(await vs.rescan(v.id)) });
      return out;
    }
    case 'snapshot.create': {
      const v = resolveVolume(vs, str(params, 'volume'));
      return vs.createSnapshot(v.id, str(params, 'name'));
    }
    case 'snapshot.list':
      return vs.listSnapshots();
    case 'snapshot.delete': {
      const ref = str(params, 'snapshot');
      const s = vs.getSnapshot(ref) ?? vs.getSnapshotByName(ref);
      if (!s) return { deleted: false, id: null, name: null };
      return { deleted: await vs.deleteSnapshot(s.id), id: s.id, name: s.name };
    }
    case 'sessions': {
      if (params.volume !== undefined) {
        const v = resolveVolume(vs, str(params, 'volume'));
        return vs.sessions(v.id);
      }
      return ctx.allSessions();
    }
    case 'capacity':
      return vs.capacity();
    case 'orphan.list':
      return vs.orphans();
    case 'orphan.adopt': {
      if (params.masked !== undefined && typeof params.masked !== 'boolean')
        throw new VolumeError('invalid-argument', '"masked" must be a boolean');
      const allow = optStrings(params, 'allow');
      const v = await vs.adoptOrphan(str(params, 'file'), {
        name: str(params, 'name'),
        ...(allow ? { allow } : {}),
        ...(params.masked !== undefined ? { masked: params.masked } : {}),
      });
      return v;
    }
    default:
      throw new BadRequest('unknown-method', `unknown method "${method}"`);
  }
}

export interface AdminServer {
  readonly path: string;
  close(): Promise<void>;
}

/** Listen on path. Refuses when another process answers there; removes a stale socket file. */
export async function startAdminServer(path: string, ctx: AdminContext, logger?: Logger): Promise<AdminServer> {
  const log = logger ?? componentLogger('admin');
  if (unixPathTooLong(path)) {
    throw new Error(`admin socket path ${path} is longer than the ${UNIX_PATH_MAX} bytes a Unix socket allows; use a shorter --data-dir`);
  }
  const state = await claimSocketPath(path);
  if (state === 'live') {
    throw new Error(`another Lunar server is already running with this data directory (it answers on ${path}); stop it first`);
  }
  if (state === 'not-socket') throw new Error(`${path} exists and is not a socket; remove it or use another --data-dir`);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    let buf = '';
    const send = (r: AdminResponse): void => {
      if (!sock.destroyed) sock.write(JSON.stringify(r) + '\n');
    };
    const handleLine = (line: string): void => {
      if (line.trim() === '') return;
      let id: number | null = null;
      let method: string;
      let params: Record<string, unknown>;
      try {
        const req: unknown = JSON.parse(line);
        if (!isObject(req)) throw new BadRequest('bad-request', 'request must be a JSON object');
        if (typeof req.id === 'number') id = req.id;
        if (typeof req.method !== 'string') throw new BadRequest('bad-request', 'request needs a "method" string');
        if (req.params !== undefined && !isObject(req.params)) throw new BadRequest('bad-request', '"params" must be an object');
        method = req.method;
        params = req.params ?? {};
      } catch (err) {
        const message = err instanceof BadRequest ? err.message : `malformed JSON: ${(err as Error).message}`;
        send({ id, ok: false, error: { code: 'bad-request', message } });
        return;
      }
      const started = Date.now();
      handleAdminRequest(ctx, method, params).then(
        (result) => {
          log.debug({ method, durationMs: Date.now() - started }, 'admin request');
          send({ id, ok: true, result });
        },
        (err: unknown) => {
          const code: AdminErrorCode = err instanceof VolumeError || err instanceof BadRequest ? err.code : 'internal';
          const message = err instanceof Error ? err.message : String(err);
          if (code === 'internal') log.error({ method, err: message }, 'admin request failed');
          else log.info({ method, code, err: message, durationMs: Date.now() - started }, 'admin request refused');
          send({ id, ok: false, error: { code, message } });
        },
      );
    };
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        handleLine(line);
      }
      if (buf.length > MAX_LINE) {
        send({ id: null, ok: false, error: { code: 'bad-request', message: `request line longer than ${MAX_LINE} bytes` } });
        sock.end();
        buf = '';
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') {
        reject(
          new Error(
            `another Lunar server is already running with this data directory (${path} was created while this one started); stop it first`,
          ),
        );
      } else reject(err);
    });
    server.listen(path, () => {
      server.removeAllListeners('error');
      server.on('error', (e) => log.error({ err: e.message, path }, 'admin socket error'));
      resolve();
    });
  });
  await fsp.chmod(path, 0o600);
  log.info({ path }, 'admin socket listening');
  return {
    path,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      await fsp.rm(path, { force: true });
    },
  };
}
