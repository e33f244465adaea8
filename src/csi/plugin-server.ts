// A CSI plugin's gRPC server: Identity plus the services passed in (Controller for `lunar serve`, Node for
// the node plugin) on one endpoint. Lunar accepts the connections itself (endpoint.ts) and hands each to
// grpc-js through a connection injector after the :authority rewriter (authority.ts), so kubelets and
// sidecars that send the socket path as :authority are served too. Identity's GetPluginCapabilities
// advertises CONTROLLER_SERVICE only when the Controller service is among those served.

import * as grpc from '@grpc/grpc-js';
import { componentLogger, type Logger } from '../log.js';
import { CsiError } from './errors.js';
import { rewritingDuplex } from './authority.js';
import { listenOnEndpoint, parseEndpoint } from './endpoint.js';
import { IdentityService } from './identity.js';
import { inFlightGuard, type InFlightPolicy } from './in-flight.js';
import { loadCsiPackage, type CsiServiceName } from './proto.js';
import type { VolumeExpansionType } from './types.js';
import { unaryCall, type CallObserver, type ServiceContext, type UnaryWrapper } from './unary-call.js';

/** One CSI service served next to Identity. */
export interface CsiServiceBinding {
  readonly name: Exclude<CsiServiceName, 'Identity'>;
  /** How a call on an object that has a call in flight is answered (in-flight.ts). */
  readonly inFlight: InFlightPolicy;
  /** The service's handlers, each built with rpc (readiness, in-flight guard, one log line per call). */
  methods(rpc: UnaryWrapper): grpc.UntypedServiceImplementation;
}

export interface CsiPluginServerOptions {
  readonly endpoint: string;
  readonly pluginName: string;
  readonly version: string;
  readonly ready: () => boolean;
  readonly services: readonly CsiServiceBinding[];
  readonly logger?: Logger;
  /** Topology segment of the volumes (advertises VOLUME_ACCESSIBILITY_CONSTRAINTS); default none. */
  readonly topology?: Readonly<Record<string, string>>;
  /** PluginCapability.VolumeExpansion to advertise; default none. */
  readonly volumeExpansion?: VolumeExpansionType;
  /** Unix socket permissions (default 0o600: only the sidecars running as root reach it). */
  readonly socketMode?: number;
  /** How long close() lets calls in flight finish before cancelling them (default 5000 ms). */
  readonly shutdownGraceMs?: number;
  /** Told every answered call, Identity's included (metrics). */
  readonly observeCall?: CallObserver;
}

export interface CsiServer {
  /** "unix:///path" or "tcp://host:port" actually bound (the port filled in when 0 was asked). */
  readonly address: string;
  close(): Promise<void>;
}

export async function startCsiPluginServer(opts: CsiPluginServerOptions): Promise<CsiServer> {
  const log = opts.logger ? opts.logger.child({ component: 'csi' }) : componentLogger('csi');
  const endpoint = parseEndpoint(opts.endpoint);
  const names = opts.services.map((s) => s.name);
  if (new Set(names).size !== names.length) throw new Error(`CSI services listed twice: ${names.join(', ')}`);
  const identity = new IdentityService({
    pluginName: opts.pluginName,
    version: opts.version,
    ready: opts.ready,
    controllerService: names.includes('Controller'),
    ...(opts.topology ? { topology: opts.topology } : {}),
    ...(opts.volumeExpansion ? { volumeExpansion: opts.volumeExpansion } : {}),
  });
  const pkg = loadCsiPackage();

  const wrapperFor = (service: CsiServiceName, policy: InFlightPolicy): UnaryWrapper => {
    const ctx: ServiceContext = {
      service,
      log,
      ready: opts.ready,
      guard: inFlightGuard(policy),
      ...(opts.observeCall ? { observe: opts.observeCall } : {}),
    };
    return (method, spec) => unaryCall(ctx, method, spec);
  };
  /**
   * impl with every method of the service's definition it lacks answered UNIMPLEMENTED through rpc, so
   * those calls are logged and counted like any other (grpc-js would answer them without a trace).
   */
  const complete = (
    service: CsiServiceName,
    rpc: UnaryWrapper,
    impl: grpc.UntypedServiceImplementation,
  ): grpc.UntypedServiceImplementation => {
    const all: grpc.UntypedServiceImplementation = { ...impl };
    for (const method of Object.keys(pkg[service].service)) {
      if (Object.hasOwn(all, method)) continue;
      all[method] = rpc(method, {
        call: () => Promise.reject(new CsiError(grpc.status.UNIMPLEMENTED, `${service}.${method} is not implemented by this Lunar plugin`)),
        needsReady: false,
      });
    }
    return all;
  };
  const idRpc = wrapperFor('Identity', 'fail-fast');
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
  server.addService(
    pkg.Identity.service,
    complete('Identity', idRpc, {
      GetPluginInfo: idRpc('GetPluginInfo', { call: () => identity.getPluginInfo(), needsReady: false, quiet: true }),
      GetPluginCapabilities: idRpc('GetPluginCapabilities', {
        call: () => identity.getPluginCapabilities(),
        needsReady: false,
        quiet: true,
      }),
      Probe: idRpc('Probe', { call: () => identity.probe(), needsReady: false, quiet: true }),
    }),
  );
  for (const s of opts.services) {
    const rpc = wrapperFor(s.name, s.inFlight);
    server.addService(pkg[s.name].service, complete(s.name, rpc, s.methods(rpc)));
  }
  // The service not served here (Node on the controller, Controller on a node): every call UNIMPLEMENTED, logged.
  for (const other of ['Controller', 'Node'] as const) {
    if (!names.includes(other)) server.addService(pkg[other].service, complete(other, wrapperFor(other, 'fail-fast'), {}));
  }
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());

  const listener = await listenOnEndpoint(endpoint, (socket) => injector.injectConnection(rewritingDuplex(socket)), {
    log,
    ...(opts.socketMode !== undefined ? { socketMode: opts.socketMode } : {}),
  });
  const address = listener.address;
  const served = ['Identity', ...names].join(' and ');
  log.info({ endpoint: address, plugin: opts.pluginName, version: opts.version }, `CSI ${served} services listening`);

  let closing: Promise<void> | null = null;
  return {
    address,
    close(): Promise<void> {
      closing ??= (async () => {
        // Stop accepting; resolves once every connection is gone.
        const listenerClosed = listener.close();
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
        listener.destroyConnections();
        await listenerClosed;
        log.info({ endpoint: address }, 'CSI server stopped');
      })();
      return closing;
    },
  };
}
