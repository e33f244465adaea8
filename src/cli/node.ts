// `lunar node`: the CSI node plugin (Identity + Node) of one Kubernetes node. Reads its options and the
// environment a DaemonSet sets, starts src/node/server.ts and runs until SIGTERM or SIGINT.

import { resolve } from 'node:path';
import { DEFAULT_MULTIPATH_TIMERS, type MultipathTimers } from '../host/multipath.js';
import type { KubeTarget } from '../kube/client.js';
import { parseMetricsAddress } from '../metrics/server.js';
import type { HostExecMode } from '../host/runner.js';
import { DEFAULT_TIMEOUTS } from '../host/types.js';
import { DEFAULT_SESSION_TIMERS, type NodeConfig } from '../node/types.js';
import { LUNAR_VERSION } from '../util/version.js';
import { intOpt, noExtra, str, strs } from './args.js';
import type { Command, CommandContext } from './command.js';
import { ExitCode, UsageError } from './errors.js';
import { kubeTargetFrom, LABEL_NAME } from './serve.js';
import { logUnhandledRejections, runUntilSignal } from './foreground.js';

export const DEFAULT_NODE_STATE_DIR = '/var/lib/lunar-node';
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/** --no-path-retry: checker intervals, or multipath's own "queue" / "fail". */
function noPathRetryOpt(ctx: CommandContext): MultipathTimers['noPathRetry'] {
  const text = str(ctx.values['no-path-retry']);
  if (text === 'queue' || text === 'fail') return text;
  if (text !== undefined && text !== '' && !/^\d+$/.test(text))
    throw new UsageError(`--no-path-retry ${JSON.stringify(text)}: expected a whole number from 0 to 100000, queue or fail`);
  return intOpt(ctx, 'no-path-retry', null, DEFAULT_MULTIPATH_TIMERS.noPathRetry as number, 0, 100_000);
}

/** The node plugin's configuration from options and environment; UsageError on a bad value. */
export function nodeOptions(ctx: CommandContext): {
  endpoint: string;
  config: NodeConfig;
  hostExec: HostExecMode;
  hostRootDir: string;
  stateDir: string;
  logLevel: string | undefined;
  iscsidSocket: string | undefined;
  metricsAddress: string;
  topologyKeys: string[];
  kube: KubeTarget | null;
} {
  const env = ctx.io.env;
  const endpoint = str(ctx.values.endpoint) ?? env.CSI_ENDPOINT;
  if (!endpoint) throw new UsageError('node: --endpoint (or CSI_ENDPOINT) is required, e.g. unix:///csi/csi.sock');
  const nodeName = str(ctx.values['node-name']) ?? env.NODE_NAME;
  if (!nodeName) throw new UsageError("node: --node-name (or NODE_NAME, from the pod spec's spec.nodeName) is required");
  if (!/^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/.test(nodeName)) {
    throw new UsageError(`node: node name ${JSON.stringify(nodeName)} is not a Kubernetes node name`);
  }
  const given = strs(ctx.values.iface);
  const nics = (given.length > 0 ? given : (env.LUNAR_NODE_IFACES ?? '').split(',')).map((s) => s.trim()).filter((s) => s !== '');
  for (const n of nics)
    if (!/^[A-Za-z0-9_.:-]{1,15}$/.test(n)) throw new UsageError(`node: --iface ${JSON.stringify(n)} is not a network interface name`);
  const hostExec = str(ctx.values['host-exec']) ?? env.LUNAR_HOST_EXEC ?? 'direct';
  if (hostExec !== 'direct' && hostExec !== 'nsenter')
    throw new UsageError(`node: --host-exec ${JSON.stringify(hostExec)} must be direct or nsenter`);
  const topology: Record<string, string> = {};
  for (const t of strs(ctx.values.topology)) {
    const i = t.indexOf('=');
    if (i <= 0) throw new UsageError(`node: --topology ${JSON.stringify(t)} must be KEY=VALUE`);
    topology[t.slice(0, i)] = t.slice(i + 1);
  }
  const logLevel = str(ctx.values['log-level']) ?? env.LUNAR_LOG_LEVEL;
  if (logLevel !== undefined && !LOG_LEVELS.includes(logLevel))
    throw new UsageError(`node: --log-level must be one of ${LOG_LEVELS.join(', ')}`);
  const noopOutTimeout = intOpt(ctx, 'noop-out-timeout', null, DEFAULT_SESSION_TIMERS.noopOutTimeout, 1, 3600);
  const config: NodeConfig = {
    nodeName,
    nics,
    allowSinglePath: ctx.values['allow-single-path'] === true || env.LUNAR_ALLOW_SINGLE_PATH === 'true',
    maxVolumes: intOpt(ctx, 'max-volumes', 'LUNAR_NODE_MAX_VOLUMES', 0, 0, 1_000_000),
    ...(Object.keys(topology).length > 0 ? { topology } : {}),
    session: {
      noopOutInterval: intOpt(ctx, 'noop-out-interval', null, DEFAULT_SESSION_TIMERS.noopOutInterval, 1, 3600),
      noopOutTimeout,
      replacementTimeout: intOpt(ctx, 'replacement-timeout', null, DEFAULT_SESSION_TIMERS.replacementTimeout, 1, 86400),
      loginTimeout: DEFAULT_SESSION_TIMERS.loginTimeout,
    },
    multipath: {
      fastIoFailTmo: intOpt(ctx, 'fast-io-fail-tmo', null, DEFAULT_MULTIPATH_TIMERS.fastIoFailTmo, 1, 3600),
      noPathRetry: noPathRetryOpt(ctx),
    },
    timeouts: DEFAULT_TIMEOUTS,
  };
  const metricsAddress = str(ctx.values['metrics-address']) ?? env.LUNAR_METRICS_ADDRESS ?? 'none';
  try {
    parseMetricsAddress(metricsAddress);
  } catch (err) {
    throw new UsageError(`node: --metrics-address: ${(err as Error).message}`);
  }
  const keysText = str(ctx.values['topology-keys']) ?? env.LUNAR_TOPOLOGY_KEYS ?? '';
  const topologyKeys = keysText
    .split(',')
    .map((k) => k.trim())
    .filter((k) => k !== '');
  for (const k of topologyKeys)
    if (!LABEL_NAME.test(k) || k.length > 317)
      throw new UsageError(`node: --topology-keys ${JSON.stringify(k)} is not a Kubernetes label key`);
  const kube = kubeTargetFrom(str(ctx.values.kubeconfig) ?? env.LUNAR_KUBECONFIG, env.KUBERNETES_SERVICE_HOST);
  if (topologyKeys.length > 0 && !kube) {
    throw new UsageError('node: --topology-keys needs the Kubernetes API: run in a pod (service account) or give --kubeconfig PATH');
  }
  return {
    endpoint,
    config,
    metricsAddress,
    topologyKeys,
    kube,
    hostExec,
    hostRootDir: resolve(str(ctx.values['host-root-dir']) ?? env.LUNAR_HOST_ROOT_DIR ?? '/'),
    stateDir: resolve(str(ctx.values['state-dir']) ?? env.LUNAR_NODE_STATE_DIR ?? DEFAULT_NODE_STATE_DIR),
    logLevel,
    iscsidSocket: str(ctx.values['iscsid-socket']),
  };
}

async function run(ctx: CommandContext): Promise<number> {
  noExtra(ctx.positionals, 0, 'node');
  const o = nodeOptions(ctx);
  const [{ rootLogger }, { startNodePlugin }] = await Promise.all([import('../log.js'), import('../node/server.js')]);
  if (o.logLevel) rootLogger.level = o.logLevel;
  const log = rootLogger.child({ component: 'node' });
  logUnhandledRejections(log);
  let plugin;
  try {
    plugin = await startNodePlugin({
      endpoint: o.endpoint,
      config: o.config,
      hostExec: o.hostExec,
      hostRootDir: o.hostRootDir,
      stateDir: o.stateDir,
      logger: rootLogger,
      metricsAddress: o.metricsAddress,
      topologyKeys: o.topologyKeys,
      kube: o.kube,
      ...(o.iscsidSocket ? { iscsidSocket: o.iscsidSocket.replace(/^@/, '\0') } : {}),
    });
  } catch (err) {
    ctx.io.err(`lunar: node plugin cannot start: ${(err as Error).message}\n`);
    return ExitCode.FAILED;
  }
  ctx.io.out(
    `Lunar ${LUNAR_VERSION} node plugin for ${o.config.nodeName} on ${plugin.address}` +
      (plugin.metricsAddress ? `; metrics http://${plugin.metricsAddress}/metrics` : '') +
      '\n',
  );
  return runUntilSignal(plugin, log);
}

export const node: Command = {
  runsServer: true,
  usage:
    '  lunar node --endpoint ENDPOINT --node-name NAME [--iface NIC]... [--host-exec direct|nsenter]\n' +
    '             [--state-dir DIR] [--host-root-dir DIR] [--allow-single-path] [--max-volumes N]\n' +
    '             [--metrics-address ADDR] [--topology-keys KEY,...] [--kubeconfig PATH]\n',
  help: `node (the CSI node plugin; docs/node.md):
  --endpoint ENDPOINT      unix:///csi/csi.sock or tcp://host:port (default $CSI_ENDPOINT)
  --node-name NAME         Kubernetes node name (default $NODE_NAME); node_id = NAME#<initiator IQN>
  --iface NIC              bind one iSCSI iface to NIC (repeatable; default $LUNAR_NODE_IFACES, a comma
                           list; none = the default iface)
  --host-exec MODE         direct, or nsenter into PID 1's namespaces (pod mode) (default $LUNAR_HOST_EXEC)
  --state-dir DIR          staging records (default $LUNAR_NODE_STATE_DIR, else ${DEFAULT_NODE_STATE_DIR})
  --host-root-dir DIR      where the host's /dev /sys /etc/iscsi /var/lib/iscsi /etc/multipath are (default /)
  --allow-single-path      a volume with one path uses its SCSI device without multipath
  --max-volumes N          NodeGetInfo max_volumes_per_node (default 0 = no limit)
  --topology KEY=VALUE     accessible topology segment (repeatable)
  --topology-keys KEY,...  labels of this node's Node object that form its topology segment
                           (default $LUNAR_TOPOLOGY_KEYS; needs the Kubernetes API)
  --kubeconfig PATH        Kubernetes API for topology and Events on PVCs (default $LUNAR_KUBECONFIG,
                           else the pod's service account in a pod; "none" = off)
  --metrics-address ADDR   serve /metrics on :PORT or HOST:PORT (default $LUNAR_METRICS_ADDRESS, else none)
  --noop-out-interval S, --noop-out-timeout S, --replacement-timeout S   iSCSI session timers (2, 2, 120)
  --fast-io-fail-tmo S, --no-path-retry N|queue|fail                     multipath timers (5, 12)
  --log-level LEVEL        trace|debug|info|warn|error (default $LUNAR_LOG_LEVEL, else info)
`,
  options: {
    endpoint: { type: 'string' },
    'node-name': { type: 'string' },
    iface: { type: 'string', multiple: true },
    'host-exec': { type: 'string' },
    'state-dir': { type: 'string' },
    'host-root-dir': { type: 'string' },
    'allow-single-path': { type: 'boolean' },
    'max-volumes': { type: 'string' },
    topology: { type: 'string', multiple: true },
    'noop-out-interval': { type: 'string' },
    'noop-out-timeout': { type: 'string' },
    'replacement-timeout': { type: 'string' },
    'fast-io-fail-tmo': { type: 'string' },
    'no-path-retry': { type: 'string' },
    'log-level': { type: 'string' },
    'metrics-address': { type: 'string' },
    'topology-keys': { type: 'string' },
    kubeconfig: { type: 'string' },
    'iscsid-socket': { type: 'string' },
  },
  run,
};
