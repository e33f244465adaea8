// The composition root of `lunar serve`: one process holding the data directory, the iSCSI target on
// every portal, the admin socket for the CLI and the CSI controller endpoint.
//
// Start order: admin socket first (it doubles as the data directory's lock: a second server on the same
// directory finds it answering and refuses), then state + volumes, then the iSCSI listeners, then CSI,
// then /metrics. The Kubernetes API client (Events on PVCs) is loaded only when one is configured.
// Until everything is up, admin requests other than "ping" get failed-precondition and ping says ready:false.

import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import { startAdminServer, type AdminServer } from './admin/server.js';
import { adminSocketPath } from './admin/protocol.js';
import { DEFAULT_PLUGIN_NAME } from './csi/identity.js';
import { startControllerServer, type CsiServer } from './csi/controller-server.js';
import { defaultCsiEndpoint } from './csi/endpoint.js';
import type { AdmissionLimits } from './iscsi/admission.js';
import { IscsiServer } from './iscsi/server.js';
import type { KubeTarget } from './kube/client.js';
import type { EventSink } from './kube/types.js';
import { rootLogger } from './log.js';
import { LunarMetrics } from './metrics/registry.js';
import { parseMetricsAddress, startMetricsServer, type MetricsServer } from './metrics/server.js';
import { loadNative } from './storage/native.js';
import { VolumeTargetRegistry } from './target/registry.js';
import type { ChapCredentials, Portal } from './target/types.js';
import { portalKey } from './util/portal.js';
import { unixPathTooLong } from './util/unix-socket.js';
import { LUNAR_VERSION } from './util/version.js';
import { VolumeManager } from './volumes/manager.js';
import { VolumeError, type VolumeService } from './volumes/types.js';

export interface LunarConfig {
  /** Data directory: state.json, volumes/, snapshots/, admin.sock. */
  dataDir: string;
  /** iSCSI portals; tpgt should be 1, 2, ... in order. */
  portals: Portal[];
  /** CHAP required for SendTargets discovery sessions; null/absent = none. */
  discoveryChap?: ChapCredentials | null;
  /**
   * CSI gRPC endpoint: unix:///abs/path, unix:rel/path or tcp://host:port. Absent = unix://<data-dir>/csi.sock
   * (skipped with a warning when that path is too long for a unix socket); "none" = no CSI server.
   */
  csiEndpoint?: string;
  /** CSI plugin name (GetPluginInfo); default iscsi.lunar.dev. */
  csiPluginName?: string;
  /** The topology segment of every volume (CSI accessibility constraints); absent or empty = none. */
  topology?: Readonly<Record<string, string>>;
  /** /metrics address (":9873", "host:port"; "none" or absent = off). */
  metricsAddress?: string;
  /** The Kubernetes API server for Events on PVCs; absent/null = no Events. */
  kube?: KubeTarget | null;
  /** Caps on peers that have not logged in and on sessions per initiator; absent fields = defaults. */
  admission?: Partial<AdmissionLimits>;
  /** Close a connection that has not completed login by then (ms); default 15 000. */
  loginTimeoutMs?: number;
  logger?: Logger;
}

export interface LunarServer {
  readonly volumes: VolumeService;
  readonly iscsi: IscsiServer;
  /** The CSI endpoint bound ("tcp://host:port" with the real port when 0 was asked), or null when CSI is off. */
  readonly csiEndpoint: string | null;
  /** true once every listener is up and until close() starts. */
  readonly ready: () => boolean;
  /** host:port of /metrics, or null when off. */
  readonly metricsAddress: string | null;
  close(): Promise<void>;
}

/** The CSI endpoint to serve, or null for none. */
function csiEndpointFor(config: LunarConfig): string | null {
  if (config.csiEndpoint === 'none') return null;
  if (config.csiEndpoint !== undefined) return config.csiEndpoint;
  const endpoint = defaultCsiEndpoint(config.dataDir);
  const path = endpoint.replace(/^unix:\/\//, '');
  if (unixPathTooLong(path)) {
    (config.logger ?? rootLogger).warn(
      { path },
      'default CSI socket path is too long for a unix socket; CSI not started (set --csi-endpoint)',
    );
    return null;
  }
  return endpoint;
}

export async function startLunar(config: LunarConfig): Promise<LunarServer> {
  // Components log through children of the base logger, each with its own `component` binding.
  const base = config.logger ?? rootLogger;
  const log = base.child({ component: 'server' });
  const started = Date.now();
  if (config.portals.length === 0) throw new Error('at least one portal is needed');
  const seen = new Set<string>();
  for (const p of config.portals) {
    const k = portalKey(p);
    if (seen.has(k)) throw new Error(`portal ${k} is listed twice`);
    seen.add(k);
  }

  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  let manager: VolumeManager | null = null;
  let iscsi: IscsiServer | null = null;
  let isReady = false;
  let closing: Promise<void> | null = null;

  const admin: AdminServer = await startAdminServer(
    adminSocketPath(config.dataDir),
    {
      volumes: () => {
        if (!manager || !isReady) {
          throw new VolumeError('failed-precondition', closing ? 'Lunar is shutting down' : 'Lunar is still starting; retry in a moment');
        }
        return manager;
      },
      allSessions: () => iscsi?.sessions() ?? [],
      info: () => ({
        version: LUNAR_VERSION,
        ready: isReady,
        pid: process.pid,
        dataDir: config.dataDir,
        serverId: manager?.serverId() ?? null,
        portals: config.portals,
      }),
    },
    base.child({ component: 'admin' }),
  );

  // Filled in by the CSI block below (an object so the shutdown closure sees the assignment).
  const csi: { server: CsiServer | null } = { server: null };
  const metricsAddress = config.metricsAddress ?? 'none';
  // With /metrics off the data path keeps no statistics (no clock reads per command).
  const metrics = parseMetricsAddress(metricsAddress) ? new LunarMetrics('controller') : null;
  let metricsServer: MetricsServer | null = null;
  try {
    // The transport exists before the volumes (they list and end its sessions) and listens after them,
    // so that no initiator logs in before every volume is served.
    const registry = new VolumeTargetRegistry(config.portals, config.discoveryChap ?? null);
    const native = loadNative();
    iscsi = new IscsiServer({
      registry,
      logger: base.child({ component: 'iscsi' }),
      duplicateFd: (fd) => native.duplicateFd(fd),
      sendNoWait: (fd, buffers) => native.sendNoWait(fd, buffers),
      ...(config.admission ? { admission: config.admission } : {}),
      ...(config.loginTimeoutMs !== undefined ? { tuning: { loginTimeoutMs: config.loginTimeoutMs } } : {}),
    });
    manager = await VolumeManager.open({
      dataDir: config.dataDir,
      portals: config.portals,
      registry,
      sessions: iscsi,
      ...(metrics ? { stats: metrics } : {}),
      logger: base.child({ component: 'volumes' }),
    });
    await iscsi.listen();
    const events = config.kube ? await pvcEvents(config.kube, base) : null;

    // ---- CSI Identity + Controller on the endpoint (default unix://<data-dir>/csi.sock; "none" = off).
    const endpoint = csiEndpointFor(config);
    if (endpoint !== null) {
      csi.server = await startControllerServer({
        endpoint,
        volumes: manager,
        pluginName: config.csiPluginName ?? DEFAULT_PLUGIN_NAME,
        version: LUNAR_VERSION,
        // Probe: the state is loaded and every portal still listens.
        ready: () => isReady && (iscsi?.allListening() ?? false),
        logger: base, // the CSI server adds component=csi itself
        ...(metrics ? { observeCall: metrics.observeCsiCall.bind(metrics) } : {}),
        ...(config.topology && Object.keys(config.topology).length > 0 ? { topology: config.topology } : {}),
        ...(events ? { events } : {}),
        ...(config.discoveryChap ? { discoveryChap: config.discoveryChap } : {}),
      });
    }
    if (metrics) {
      const volumes = manager;
      const transport = iscsi;
      metrics.setSessionsSource(() => sessionsPerVolume(volumes, transport));
      metrics.setCapacitySource(() => volumes.capacity());
      metrics.setPeerSource(() => transport.peerStats());
      metricsServer = await startMetricsServer(metricsAddress, metrics, base.child({ component: 'metrics' }));
    }
    // ---------------------------------------------------------------------------------------------------
  } catch (err) {
    await csi.server?.close().catch(() => undefined);
    await iscsi?.close().catch(() => undefined);
    await manager?.close().catch(() => undefined);
    await admin.close().catch(() => undefined);
    throw err;
  }

  isReady = true;
  const m = manager;
  const t = iscsi;
  const ms = metricsServer;
  log.info(
    {
      dataDir: config.dataDir,
      portals: config.portals.map(portalKey),
      csiEndpoint: csi.server?.address ?? null,
      metricsAddress: metricsServer?.address ?? null,
      topology: config.topology ?? null,
      events: config.kube ? true : false,
      volumes: m.list().length,
      durationMs: Date.now() - started,
    },
    'Lunar ready',
  );

  return {
    volumes: m,
    iscsi: t,
    csiEndpoint: csi.server?.address ?? null,
    ready: () => isReady && t.allListening(),
    metricsAddress: metricsServer?.address ?? null,
    close: () => {
      closing ??= (async () => {
        isReady = false;
        const t0 = Date.now();
        await admin.close().catch((err: unknown) => log.warn({ err: String(err) }, 'admin socket close failed'));
        await ms?.close().catch((err: unknown) => log.warn({ err: String(err) }, 'metrics server close failed'));
        await csi.server?.close().catch((err: unknown) => log.warn({ err: String(err) }, 'CSI server close failed'));
        await t.close().catch((err: unknown) => log.warn({ err: String(err) }, 'iSCSI server close failed'));
        await m.close();
        log.info({ durationMs: Date.now() - t0 }, 'Lunar stopped');
      })();
      return closing;
    },
  };
}

/** iSCSI sessions per volume (every volume listed, 0 when none is logged in). */
function sessionsPerVolume(volumes: VolumeManager, transport: IscsiServer): [string, number][] {
  const byTarget = new Map<string, number>();
  for (const s of transport.sessions()) byTarget.set(s.targetName, (byTarget.get(s.targetName) ?? 0) + 1);
  return volumes.list().map((v) => [v.id, byTarget.get(v.iqn) ?? 0]);
}

/** Events on PVCs through the Kubernetes API (the client is loaded only here). */
async function pvcEvents(target: KubeTarget, base: Logger): Promise<EventSink> {
  const [{ KubeClient }, { PvcEvents }] = await Promise.all([import('./kube/client.js'), import('./kube/events.js')]);
  const client = new KubeClient(target, { component: 'controller' });
  return new PvcEvents({ client, component: 'lunar-controller', logger: base.child({ component: 'kube' }) });
}
