// The controller plugin's CSI server (`lunar serve`): Identity and Controller over a VolumeService, the
// Controller answering ABORTED at once for a call on an object that has a call in flight.

import type { EventSink } from '../kube/types.js';
import type { Logger } from '../log.js';
import type { VolumeService } from '../volumes/types.js';
import { ControllerService } from './controller.js';
import { controllerBinding } from './controller-rpcs.js';
import { startCsiPluginServer, type CsiServer } from './plugin-server.js';
import type { CallObserver } from './unary-call.js';

export type { CsiServer };

export interface ControllerServerOptions {
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
  /** Told every answered call (metrics). */
  readonly observeCall?: CallObserver;
  /** Events on the PVC of a volume the controller refuses (InsufficientCapacity); default none. */
  readonly events?: EventSink;
  /** The discovery CHAP of the target, handed to the nodes in publish_context; default none. */
  readonly discoveryChap?: { readonly user: string; readonly secret: string } | null;
}

export function startControllerServer(opts: ControllerServerOptions): Promise<CsiServer> {
  const { volumes, topology, events, discoveryChap, ...rest } = opts;
  const controller = new ControllerService({
    volumes,
    ...(topology ? { topology } : {}),
    ...(events ? { events } : {}),
    ...(discoveryChap ? { discoveryChap } : {}),
  });
  return startCsiPluginServer({
    ...rest,
    ...(topology ? { topology } : {}),
    services: [controllerBinding(controller)],
    // The LU grows while in use and initiators get CAPACITY DATA HAS CHANGED.
    volumeExpansion: 'ONLINE',
  });
}
