// The CSI gRPC server (Identity + Controller) of Lunar's controller plugin.
//
// Endpoints: "unix:///abs/path.sock", "unix:/abs/path.sock", "unix:relative.sock" or "tcp://host:port".
// Lunar accepts the connections itself and hands each to grpc-js through a connection injector after
// the :authority rewriter (authority.ts), so kubelets and sidecars that send the socket path as
// :authority are served too. Each call is logged once (method, ids, gRPC code, duration, secrets never
// included); a second call on an object that has a call in flight is answered ABORTED.

import { existsSync, promises as fsp } from 'node:fs';
import net from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { componentLogger, type Logger } from '../log.js';
import type { VolumeService } from '../volumes/types.js';
import { rewritingDuplex } from './authority.js';
import { ControllerService } from './controller.js';
import { CsiError, toCsiError } from './errors.js';
import { IdentityService } from './identity.js';
import type {
  ControllerExpandVolumeRequest,
  ControllerGetVolumeRequest,
  ControllerPublishVolumeRequest,
  ControllerUnpublishVolumeRequest,
  CreateSnapshotRequest,
  CreateVolumeRequest,
  DeleteSnapshotRequest,
  DeleteVolumeRequest,
  GetCapacityRequest,
  GetSnapshotRequest,
  ListSnapshotsRequest,
  ListVolumesRequest,
  ValidateVolumeCapabilitiesRequest,
} from './types.js';
import { redact } from './validate.js';

/** proto/csi.proto, found from dist/src/csi/ or src/csi/. */
export function csiProtoPath(): string {
  for (const rel of ['../../../proto/csi.proto', '../../proto/csi.proto']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new Error('proto/csi.proto not found next to the Lunar installation');
}

export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export interface CsiPackage {
  readonly Identity: grpc.ServiceClientConstructor;
  readonly Controller: grpc.ServiceClientConstructor;
  readonly Node: grpc.ServiceClientConstructor;
}

/** Loads proto/csi.proto as grpc-js service constructors (package csi.v1). */
export function loadCsiPackage(): CsiPackage {
  const def = protoLoader.loadSync(csiProtoPath(), PROTO_LOADER_OPTIONS);
  const root = grpc.loadPackageDefinition(def);
  const csi = root.csi as grpc.GrpcObject | undefined;
  const v1 = csi?.v1 as grpc.GrpcObject | undefined;
  const pick = (name: string): grpc.ServiceClientConstructor => {
    const svc = v1?.[name];
    if (typeof svc !== 'function' || !('service' in svc)) throw new Error(`csi.v1.${name} missing from proto/csi.proto`);
    return svc as grpc.ServiceClientConstructor;
  };
  return { Identity: pick('Identity'), Controller: pick('Controller'), Node: pick('Node') };
}

/** Where `lunar serve` listens for CSI when neither --csi-endpoint nor LUNAR_CSI_ENDPOINT is given. */
export function defaultCsiEndpoint(dataDir: string): string {
  return `unix://${resolve(dataDir, 'csi.sock')}`;
}

export type CsiEndpoint =
  { readonly kind: 'unix'; readonly path: string } | { readonly kind: 'tcp'; readonly host: string; readonly port: number };

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
    const hostPort = endpoint.slice('tcp://'.length);
    const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:/\]]+)):(\d{1,5})$/.exec(hostPort);
    const port = m ? Number(m[3]) : -1;
    if (!m || port < 0 || port > 65535) throw new Error(`CSI endpoint ${endpoint}: expected tcp://host:port`);
    return { kind: 'tcp', host: m[1] ?? m[2] ?? '', port };
  }
  throw new Error(`CSI endpoint ${JSON.stringify(endpoint)}: use unix:///path/csi.sock or tcp://host:port`);
}

/** Removes a socket file no process listens on; refuses to touch a live socket or a non-socket file. */
async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await fsp.lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new Error(`CSI endpoint ${path} exists and is not a socket; refusing to replace it`);
  const alive = await new Promise<boolean>((res) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      res(true);
    });
    c.once('error', () => res(false));
  });
  if (alive) throw new Error(`CSI endpoint ${path} is in use by another process`);
  await fsp.unlink(path);
}

export interface CsiServerOptions {
  readonly endpoint: string;
  readonly volumes: VolumeService;
  readonly pluginName: string;
  readonly version: string;
  readonly ready: () => boolean;
  readonly logger?: Logger;
  /** Topology segment of the volumes (advertises VOLUME_ACCESSIBILITY_CONSTRAINTS); default none. */
  readonly topology?: Readonly<Record<string, string>>;
  /** Unix socket permissions (default 0o600: only the sidecars running as root reach it). */
  readonly socketMode?: number;
  /** How long close() lets calls in flight finish before cancelling them (default 5000 ms). */
  readonly shutdownGraceMs?: number;
}

export interface CsiServer {
  /** "unix:///path" or "tcp://host:port" actually bound (the port filled in when 0 was asked). */
  readonly address: string;
  close(): Promise<void>;
}

/** What one RPC does, which objects it locks, and which ids go to its log line. */
interface MethodSpec<Req, Res> {
  readonly call: (req: Req) => Promise<Res>;
  readonly locks?: (req: Req) => string[];
  readonly ids?: (req: Req) => Record<string, string>;
  /** Controller calls wait for readiness; Identity calls never do. */
  readonly needsReady: boolean;
  readonly quiet?: boolean;
}

const CODE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(grpc.status)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => [v as number, k]),
);

export async function startCsiServer(opts: CsiServerOptions): Promise<CsiServer> {
  const log = opts.logger ? opts.logger.child({ component: 'csi' }) : componentLogger('csi');
  const endpoint = parseEndpoint(opts.endpoint);
  const identity = new IdentityService({
    pluginName: opts.pluginName,
    version: opts.version,
    ready: opts.ready,
    ...(opts.topology ? { topology: opts.topology } : {}),
  });
  const controller = new ControllerService({ volumes: opts.volumes, ...(opts.topology ? { topology: opts.topology } : {}) });
  const pkg = loadCsiPackage();
  const inFlight = new Set<string>();

  function unary<Req, Res>(service: string, method: string, spec: MethodSpec<Req, Res>): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const started = process.hrtime.bigint();
      const req = call.request;
      let ids: Record<string, string> = {};
      const held: string[] = [];
      const finish = (err: CsiError | null, res?: Res): void => {
        for (const k of held) inFlight.delete(k);
        const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
        const code = err ? err.code : grpc.status.OK;
        const line: Record<string, unknown> = {
          rpc: method,
          service,
          ...ids,
          code: CODE_NAMES[code] ?? String(code),
          durationMs: Math.round(durationMs * 1000) / 1000,
        };
        // At debug level the same single line carries the request and response, secrets redacted.
        if (log.isLevelEnabled('debug')) {
          line.request = redact(req);
          if (!err) line.response = redact(res);
        }
        if (!err) {
          if (spec.quiet) log.debug(line, `${method} OK`);
          else log.info(line, `${method} OK`);
        } else if (code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN) {
          log.error({ ...line, err: err.message }, `${method} failed`);
        } else {
          log.warn({ ...line, err: err.message }, `${method} refused`);
        }
        if (err) callback({ code: err.code, details: err.message }, null);
        else callback(null, res);
      };
      try {
        ids = spec.ids ? Object.fromEntries(Object.entries(spec.ids(req)).filter(([, v]) => v !== '')) : {};
        if (spec.needsReady && !opts.ready()) {
          finish(new CsiError(grpc.status.UNAVAILABLE, 'Lunar is still starting; retry shortly'));
          return;
        }
        const keys = spec.locks ? spec.locks(req).filter((k) => !k.endsWith(':')) : [];
        const busy = keys.find((k) => inFlight.has(k));
        if (busy !== undefined) {
          finish(
            new CsiError(grpc.status.ABORTED, `an operation on ${busy.replace(':', ' ')} is already in progress; retry after it completes`),
          );
          return;
        }
        for (const k of keys) {
          inFlight.add(k);
          held.push(k);
        }
      } catch (err) {
        finish(toCsiError(err));
        return;
      }
      spec.call(req).then(
        (res) => finish(null, res),
        (err: unknown) => finish(toCsiError(err)),
      );
    };
  }

  const vol = (id: string | undefined): string => `volume:${id ?? ''}`;
  const identityImpl: grpc.UntypedServiceImplementation = {
    GetPluginInfo: unary('Identity', 'GetPluginInfo', { call: () => identity.getPluginInfo(), needsReady: false, quiet: true }),
    GetPluginCapabilities: unary('Identity', 'GetPluginCapabilities', {
      call: () => identity.getPluginCapabilities(),
      needsReady: false,
      quiet: true,
    }),
    Probe: unary('Identity', 'Probe', { call: () => identity.probe(), needsReady: false, quiet: true }),
  };
  const controllerImpl: grpc.UntypedServiceImplementation = {
    CreateVolume: unary('Controller', 'CreateVolume', {
      call: (r: CreateVolumeRequest) => controller.createVolume(r),
      locks: (r) => [
        `volume name:${r.name ?? ''}`,
        ...(r.volume_content_source?.volume ? [vol(r.volume_content_source.volume.volume_id)] : []),
        ...(r.volume_content_source?.snapshot ? [`snapshot:${r.volume_content_source.snapshot.snapshot_id ?? ''}`] : []),
      ],
      ids: (r) => ({ name: r.name ?? '' }),
      needsReady: true,
    }),
    DeleteVolume: unary('Controller', 'DeleteVolume', {
      call: (r: DeleteVolumeRequest) => controller.deleteVolume(r),
      locks: (r) => [vol(r.volume_id)],
      ids: (r) => ({ volumeId: r.volume_id ?? '' }),
      needsReady: true,
    }),
    ControllerPublishVolume: unary('Controller', 'ControllerPublishVolume', {
      call: (r: ControllerPublishVolumeRequest) => controller.controllerPublishVolume(r),
      locks: (r) => [vol(r.volume_id)],
      ids: (r) => ({ volumeId: r.volume_id ?? '', nodeId: r.node_id ?? '' }),
      needsReady: true,
    }),
    ControllerUnpublishVolume: unary('Controller', 'ControllerUnpublishVolume', {
      call: (r: ControllerUnpublishVolumeRequest) => controller.controllerUnpublishVolume(r),
      locks: (r) => [vol(r.volume_id)],
      ids: (r) => ({ volumeId: r.volume_id ?? '', nodeId: r.node_id ?? '' }),
      needsReady: true,
    }),
    ValidateVolumeCapabilities: unary('Controller', 'ValidateVolumeCapabilities', {
      call: (r: ValidateVolumeCapabilitiesRequest) => controller.validateVolumeCapabilities(r),
      ids: (r) => ({ volumeId: r.volume_id ?? '' }),
      needsReady: true,
    }),
    ListVolumes: unary('Controller', 'ListVolumes', { call: (r: ListVolumesRequest) => controller.listVolumes(r), needsReady: true }),
    GetCapacity: unary('Controller', 'GetCapacity', { call: (r: GetCapacityRequest) => controller.getCapacity(r), needsReady: true }),
    ControllerGetCapabilities: unary('Controller', 'ControllerGetCapabilities', {
      call: () => controller.controllerGetCapabilities(),
      needsReady: false,
      quiet: true,
    }),
    ControllerGetVolume: unary('Controller', 'ControllerGetVolume', {
      call: (r: ControllerGetVolumeRequest) => controller.controllerGetVolume(r),
      ids: (r) => ({ volumeId: r.volume_id ?? '' }),
      needsReady: true,
    }),
    CreateSnapshot: unary('Controller', 'CreateSnapshot', {
      call: (r: CreateSnapshotRequest) => controller.createSnapshot(r),
      // The source is locked too: a snapshot must not race a delete or a resize of its volume.
      locks: (r) => [`snapshot name:${r.name ?? ''}`, vol(r.source_volume_id)],
      ids: (r) => ({ volumeId: r.source_volume_id ?? '', name: r.name ?? '' }),
      needsReady: true,
    }),
    DeleteSnapshot: unary('Controller', 'DeleteSnapshot', {
      call: (r: DeleteSnapshotRequest) => controller.deleteSnapshot(r),
      locks: (r) => [`snapshot:${r.snapshot_id ?? ''}`],
      ids: (r) => ({ snapshotId: r.snapshot_id ?? '' }),
      needsReady: true,
    }),
    ListSnapshots: unary('Controller', 'ListSnapshots', {
      call: (r: ListSnapshotsRequest) => controller.listSnapshots(r),
      needsReady: true,
    }),
    GetSnapshot: unary('Controller', 'GetSnapshot', {
      call: (r: GetSnapshotRequest) => controller.getSnapshot(r),
      ids: (r) => ({ snapshotId: r.snapshot_id ?? '' }),
      needsReady: true,
    }),
    ControllerExpandVolume: unary('Controller', 'ControllerExpandVolume', {
      call: (r: ControllerExpandVolumeRequest) => controller.controllerExpandVolume(r),
      locks: (r) => [vol(r.volume_id)],
      ids: (r) => ({ volumeId: r.volume_id ?? '' }),
      needsReady: true,
    }),
    // ControllerModifyVolume is not implemented: grpc-js answers UNIMPLEMENTED.
  };

  const server = new grpc.Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
  server.addService(pkg.Identity.service, identityImpl);
  server.addService(pkg.Controller.service, controllerImpl);
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());

  const sockets = new Set<net.Socket>();
  const listener = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', (err) => log.debug({ err: err.message }, 'CSI connection error'));
    injector.injectConnection(rewritingDuplex(socket));
  });
  let address: string;
  if (endpoint.kind === 'unix') {
    await fsp.mkdir(dirname(endpoint.path), { recursive: true });
    await removeStaleSocket(endpoint.path);
    await new Promise<void>((res, rej) => {
      listener.once('error', rej);
      listener.listen(endpoint.path, () => {
        listener.off('error', rej);
        res();
      });
    });
    await fsp.chmod(endpoint.path, opts.socketMode ?? 0o600);
    address = `unix://${endpoint.path}`;
  } else {
    await new Promise<void>((res, rej) => {
      listener.once('error', rej);
      listener.listen(endpoint.port, endpoint.host, () => {
        listener.off('error', rej);
        res();
      });
    });
    const a = listener.address() as net.AddressInfo;
    address = `tcp://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }
  listener.on('error', (err) => log.error({ err: err.message }, 'CSI listener error'));
  log.info({ endpoint: address, plugin: opts.pluginName, version: opts.version }, 'CSI Identity and Controller services listening');

  let closing: Promise<void> | null = null;
  return {
    address,
    close(): Promise<void> {
      closing ??= (async () => {
        // Stop accepting; the callback fires once every connection is gone.
        const listenerClosed = new Promise<void>((res) => listener.close(() => res()));
        const grace = opts.shutdownGraceMs ?? 5000;
        await new Promise<void>((res) => {
          const timer = setTimeout(() => {
            log.warn({ graceMs: grace }, 'CSI calls still in flight at shutdown; cancelling them');
            server.forceShutdown();
            res();
          }, grace);
          timer.unref();
          injector.drain(grace);
          server.tryShutdown(() => {
            clearTimeout(timer);
            res();
          });
        });
        injector.destroy();
        for (const s of sockets) s.destroy();
        await listenerClosed;
        if (endpoint.kind === 'unix') await fsp.rm(endpoint.path, { force: true });
        log.info({ endpoint: address }, 'CSI server stopped');
      })();
      return closing;
    },
  };
}
