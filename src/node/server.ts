// The composition root of `lunar node`: the host runner (direct or nsenter), the host trees under
// --host-root-dir, the staging records under the state dir, the Node service and Identity on one CSI
// endpoint. Probe answers ready while iscsid answers on its socket (checked every few seconds).
// Optional: /metrics (the same registry and server as `lunar serve`), and through the Kubernetes API
// (loaded only when configured) the topology segment from the Node's labels and Events on PVCs.

import { readFile } from 'node:fs/promises';
import { DEFAULT_PLUGIN_NAME } from '../csi/identity.js';
import { NodeService, nodeBinding } from '../csi/node.js';
import { startCsiPluginServer, type CsiServer } from '../csi/plugin-server.js';
import { join } from 'node:path';
import { hostFs } from '../host/host-fs.js';
import { iscsidReachable, ISCSID_ABSTRACT_SOCKET } from '../host/iscsid.js';
import { createRunner, type HostExecMode } from '../host/runner.js';
import type { KubeTarget } from '../kube/client.js';
import type { NodeTopology } from '../kube/node-topology.js';
import type { EventSink } from '../kube/types.js';
import type { Logger } from '../log.js';
import { LunarMetrics } from '../metrics/registry.js';
import { parseMetricsAddress, startMetricsServer, type MetricsServer } from '../metrics/server.js';
import { PathMonitor } from './path-monitor.js';
import { LUNAR_VERSION } from '../util/version.js';
import { stagingRecords } from './staging-record.js';
import type { NodeConfig, NodeEnv } from './types.js';

export interface NodePluginOptions {
  readonly endpoint: string;
  readonly config: NodeConfig;
  readonly hostExec: HostExecMode;
  /** Where the host's /dev, /sys, /etc/iscsi, /var/lib/iscsi, /etc/multipath are seen ("/" on the host). */
  readonly hostRootDir: string;
  /** Staging records live in <stateDir>/staged (a hostPath in Kubernetes). */
  readonly stateDir: string;
  readonly logger: Logger;
  /** iscsid's socket (default its abstract name). */
  readonly iscsidSocket?: string;
  /** How often Probe's readiness is refreshed (ms). */
  readonly probeIntervalMs?: number;
  /** /metrics address (":9874", "host:port"; "none" or absent = off). */
  readonly metricsAddress?: string;
  /** Label keys of this node's Node object that form its topology segment (needs kube). */
  readonly topologyKeys?: readonly string[];
  /** The Kubernetes API server (topology, Events on PVCs); absent/null = neither. */
  readonly kube?: KubeTarget | null;
  /** How often every staged volume's paths are checked (ms; default 10000). */
  readonly pathCheckIntervalMs?: number;
}

export interface NodePlugin {
  readonly address: string;
  /** host:port of /metrics, or null when off. */
  readonly metricsAddress: string | null;
  close(): Promise<void>;
}

export async function startNodePlugin(o: NodePluginOptions): Promise<NodePlugin> {
  const log = o.logger.child({ component: 'node' });
  // The mount table of the namespace the mounts are made in: the host's (PID 1) when commands run there.
  const mountinfo = o.hostExec === 'nsenter' ? '/proc/1/mountinfo' : '/proc/self/mountinfo';
  const kube = o.kube ? await kubeParts(o, o.kube, log) : null;
  if ((o.topologyKeys ?? []).length > 0 && !kube) throw new Error('topology keys need the Kubernetes API (kubeconfig or in-cluster)');
  // The Node's labels first: NodeGetInfo must never report a segment without them.
  const topology = { ...(o.config.topology ?? {}), ...((await kube?.topology?.start()) ?? {}) };
  const config: NodeConfig = Object.keys(topology).length > 0 ? { ...o.config, topology } : o.config;
  const metricsAddress = o.metricsAddress ?? 'none';
  const metrics = parseMetricsAddress(metricsAddress) ? new LunarMetrics('node') : null;
  const paths: { monitor: PathMonitor | null } = { monitor: null };
  const env: NodeEnv = {
    config,
    runner: createRunner(o.hostExec),
    hostFs: hostFs(o.hostRootDir),
    localFs: hostFs('/'),
    readMountinfo: () => readFile(mountinfo, 'utf8'),
    records: stagingRecords(o.stateDir),
    // Commands run through nsenter see the host's tree at /; direct ones see it where hostFs does.
    ...(o.hostExec === 'direct' && o.hostRootDir !== '/' ? { commandPath: (p: string) => join(o.hostRootDir, p) } : {}),
    log,
    ...(kube ? { events: kube.events } : {}),
    paths: { observe: (r, states) => paths.monitor?.observe(r, states) ?? Promise.resolve() },
  };
  paths.monitor = new PathMonitor(env);
  const staged = await env.records.list();
  let iscsidUp = false;
  const check = async (): Promise<void> => {
    const up = await iscsidReachable(o.iscsidSocket ?? ISCSID_ABSTRACT_SOCKET);
    if (up !== iscsidUp) log.info({ iscsid: up }, up ? 'iscsid reachable' : 'iscsid not reachable: Probe answers not ready');
    iscsidUp = up;
  };
  await check();
  const timer = setInterval(() => void check(), o.probeIntervalMs ?? 3000);
  timer.unref();
  const monitor = paths.monitor;
  monitor.start(o.pathCheckIntervalMs ?? 10_000);
  let server: CsiServer | null = null;
  let metricsServer: MetricsServer | null = null;
  const stop = async (): Promise<void> => {
    clearInterval(timer);
    await monitor.stop();
    await kube?.topology?.stop();
    await metricsServer?.close();
    await server?.close();
  };
  try {
    server = await startCsiPluginServer({
      endpoint: o.endpoint,
      pluginName: DEFAULT_PLUGIN_NAME,
      version: LUNAR_VERSION,
      ready: () => iscsidUp,
      services: [nodeBinding(new NodeService(env, metrics ? metrics.observeNodeOperation.bind(metrics) : undefined))],
      logger: o.logger,
      ...(metrics ? { observeCall: metrics.observeCsiCall.bind(metrics) } : {}),
      // VOLUME_ACCESSIBILITY_CONSTRAINTS only when the node reports a segment.
      ...(config.topology ? { topology: config.topology } : {}),
    });
    if (metrics) {
      metrics.setPathsSource(() => monitor.counts());
      metricsServer = await startMetricsServer(metricsAddress, metrics, o.logger.child({ component: 'metrics' }));
    }
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  log.info(
    {
      nodeName: o.config.nodeName,
      nics: o.config.nics,
      hostExec: o.hostExec,
      hostRootDir: o.hostRootDir,
      stateDir: o.stateDir,
      staged: staged.length,
      topology: config.topology ?? null,
      metricsAddress: metricsServer?.address ?? null,
      events: kube !== null,
    },
    'Lunar node plugin ready',
  );
  return {
    address: server.address,
    metricsAddress: metricsServer?.address ?? null,
    close: stop,
  };
}

/** The Kubernetes API parts of the node plugin (the client is loaded only here). */
async function kubeParts(
  o: NodePluginOptions,
  target: KubeTarget,
  log: Logger,
): Promise<{ events: EventSink; topology: NodeTopology | null }> {
  const [{ KubeClient }, { PvcEvents }, { NodeTopology }] = await Promise.all([
    import('../kube/client.js'),
    import('../kube/events.js'),
    import('../kube/node-topology.js'),
  ]);
  const client = new KubeClient(target, { component: 'node' });
  const kubeLog = o.logger.child({ component: 'kube' });
  const keys = o.topologyKeys ?? [];
  log.debug({ topologyKeys: keys }, 'Kubernetes API configured');
  return {
    events: new PvcEvents({ client, component: 'lunar-node', host: o.config.nodeName, logger: kubeLog }),
    topology: keys.length > 0 ? new NodeTopology({ client, nodeName: o.config.nodeName, keys, logger: kubeLog }) : null,
  };
}
