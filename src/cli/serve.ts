// `lunar serve`: read the configuration from options and environment, start the server (src/server.ts),
// print where it listens, and run until SIGTERM or SIGINT.

import { ADMIN_SOCKET } from '../admin/protocol.js';
import { DEFAULT_ADMISSION, type AdmissionLimits } from '../iscsi/admission.js';
import { DEFAULT_TUNING } from '../iscsi/negotiation.js';
import type { KubeTarget } from '../kube/client.js';
import { parseMetricsAddress } from '../metrics/server.js';
import type { LunarConfig } from '../server.js';
import type { ChapCredentials } from '../target/types.js';
import { chapValueProblem } from '../util/ids.js';
import { parsePortals, portalKey, type Portal } from '../util/portal.js';
import { effectivePoolSize, POOL_PRELOAD, WANTED_POOL_SIZE } from '../util/threadpool.js';
import { LUNAR_VERSION } from '../util/version.js';
import { intOpt, noExtra, splitCreds, str, strs } from './args.js';
import type { Command, CommandContext, Io } from './command.js';
import { ExitCode, UsageError } from './errors.js';
import { logUnhandledRejections, runUntilSignal } from './foreground.js';
import { shownDir } from './format.js';

function portalsOf(ctx: CommandContext): Portal[] {
  const given = strs(ctx.values.portal);
  const specs =
    given.length > 0
      ? given
      : (ctx.io.env.LUNAR_PORTALS ?? '127.0.0.1:3260')
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s.length > 0);
  try {
    return parsePortals(specs);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function discoveryChapOf(ctx: CommandContext): ChapCredentials | null {
  const dchap = str(ctx.values['discovery-chap']) ?? ctx.io.env.LUNAR_DISCOVERY_CHAP;
  if (!dchap) return null;
  const creds = splitCreds(dchap, '--discovery-chap');
  const problem = chapValueProblem('discovery CHAP user', creds.user, 1) ?? chapValueProblem('discovery CHAP secret', creds.secret, 12);
  if (problem) throw new UsageError(problem);
  return creds;
}

/** --metrics-address / $LUNAR_METRICS_ADDRESS, checked; "none" when neither is given. */
function metricsAddressOf(ctx: CommandContext): string {
  const address = str(ctx.values['metrics-address']) ?? ctx.io.env.LUNAR_METRICS_ADDRESS ?? 'none';
  try {
    parseMetricsAddress(address);
  } catch (err) {
    throw new UsageError(`--metrics-address: ${(err as Error).message}`);
  }
  return address;
}

/** The caps on peers that have not logged in, and on sessions per initiator (flags, else environment). */
function admissionOf(ctx: CommandContext): AdmissionLimits {
  return {
    maxPendingConnections: intOpt(
      ctx,
      'max-pending-connections',
      'LUNAR_MAX_PENDING_CONNECTIONS',
      DEFAULT_ADMISSION.maxPendingConnections,
      1,
      1_000_000,
    ),
    maxPendingPerAddress: intOpt(
      ctx,
      'max-pending-per-address',
      'LUNAR_MAX_PENDING_PER_ADDRESS',
      DEFAULT_ADMISSION.maxPendingPerAddress,
      1,
      1_000_000,
    ),
    maxSessionsPerInitiator: intOpt(
      ctx,
      'max-sessions-per-initiator',
      'LUNAR_MAX_SESSIONS_PER_INITIATOR',
      DEFAULT_ADMISSION.maxSessionsPerInitiator,
      1,
      65_535,
    ),
    maxSessionsPerAddress: intOpt(
      ctx,
      'max-sessions-per-address',
      'LUNAR_MAX_SESSIONS_PER_ADDRESS',
      DEFAULT_ADMISSION.maxSessionsPerAddress,
      1,
      65_535,
    ),
  };
}

// Kubernetes label syntax: an optional DNS-subdomain prefix and "/", a name of up to 63 characters; values
// up to 63 characters of the same alphabet (possibly empty).
export const LABEL_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

/** --topology KEY=VALUE[,KEY=VALUE] / $LUNAR_TOPOLOGY: the segment every volume is accessible from. */
export function parseTopology(spec: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of spec
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '')) {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : part.slice(eq + 1);
    if (eq < 0 || !LABEL_NAME.test(key) || key.length > 317) {
      throw new UsageError(
        `--topology ${JSON.stringify(part)}: expected KEY=VALUE with KEY a Kubernetes label key (topology.iscsi.lunar.dev/zone=rack-1)`,
      );
    }
    if (!LABEL_VALUE.test(value) || value === '')
      throw new UsageError(`--topology ${key}: ${JSON.stringify(value)} is not a Kubernetes label value`);
    if (key in out) throw new UsageError(`--topology: key ${key} is given twice`);
    out[key] = value;
  }
  return out;
}

/**
 * The API server for Events: --kubeconfig PATH / $LUNAR_KUBECONFIG; "none" turns Events off; without
 * either, the pod's service account when running in a pod ($KUBERNETES_SERVICE_HOST), else none.
 */
function kubeTargetOf(ctx: CommandContext): KubeTarget | null {
  return kubeTargetFrom(str(ctx.values.kubeconfig) ?? ctx.io.env.LUNAR_KUBECONFIG, ctx.io.env.KUBERNETES_SERVICE_HOST);
}

/** The same rule for `lunar serve` and `lunar node`: the given kubeconfig, "none", or in-cluster in a pod. */
export function kubeTargetFrom(given: string | undefined, serviceHost: string | undefined): KubeTarget | null {
  if (given === 'none') return null;
  if (given !== undefined && given !== '') return { kubeconfig: given };
  return serviceHost ? { inCluster: true } : null;
}

/** Why the server could not start, with what to change. */
function explainStartError(err: unknown, io: Io, shownDataDir: string): void {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
  if (e.code === 'EADDRINUSE') {
    io.err(
      `lunar: cannot listen on ${e.address ?? ''}:${e.port ?? ''}: address already in use — another iSCSI target (tgtd, LIO, another Lunar) holds it; pick another with --portal HOST:PORT\n`,
    );
  } else if (e.code === 'EACCES' && e.port !== undefined) {
    io.err(
      `lunar: cannot listen on ${e.address ?? ''}:${e.port}: permission denied — ports below 1024 need root or CAP_NET_BIND_SERVICE\n`,
    );
  } else if (e.code === 'EACCES' || e.code === 'EROFS') {
    io.err(
      `lunar: ${e.message} — check that the data directory ${shownDataDir} is writable by this user, or choose another with --data-dir\n`,
    );
  } else if (e.code === 'EADDRNOTAVAIL') {
    io.err(`lunar: ${e.message} — the portal address is not configured on this machine; check --portal\n`);
  } else {
    io.err(`lunar: cannot start: ${e.message}\n`);
  }
}

async function run(ctx: CommandContext): Promise<number> {
  noExtra(ctx.positionals, 0, 'serve');
  const portals = portalsOf(ctx);
  const discoveryChap = discoveryChapOf(ctx);
  const csiEndpoint = str(ctx.values['csi-endpoint']) ?? ctx.io.env.LUNAR_CSI_ENDPOINT ?? ctx.io.env.CSI_ENDPOINT;
  const topologySpec = str(ctx.values.topology) ?? ctx.io.env.LUNAR_TOPOLOGY;
  const topology = topologySpec ? parseTopology(topologySpec) : {};
  const config: LunarConfig = {
    dataDir: ctx.dataDir,
    portals,
    discoveryChap,
    ...(csiEndpoint ? { csiEndpoint } : {}),
    ...(Object.keys(topology).length > 0 ? { topology } : {}),
    metricsAddress: metricsAddressOf(ctx),
    kube: kubeTargetOf(ctx),
    admission: admissionOf(ctx),
    loginTimeoutMs: intOpt(ctx, 'login-timeout', 'LUNAR_LOGIN_TIMEOUT', DEFAULT_TUNING.loginTimeoutMs / 1000, 1, 3600) * 1000,
  };
  const shown = shownDir(ctx.dataDir);

  // Loaded here, so that the other commands do not load the server (gRPC, the target, the logger) to talk to it.
  const [{ rootLogger }, { startLunar }] = await Promise.all([import('../log.js'), import('../server.js')]);
  const log = rootLogger.child({ component: 'server' });
  const pool = effectivePoolSize(ctx.poolSizeAtStart);
  if (pool < WANTED_POOL_SIZE) {
    log.warn(
      { uvThreadpoolSize: pool, wanted: WANTED_POOL_SIZE },
      `file I/O runs on ${pool} libuv threads; start Lunar through the \`lunar\` command, or set UV_THREADPOOL_SIZE=${WANTED_POOL_SIZE} (or node --import=${POOL_PRELOAD})`,
    );
  }
  logUnhandledRejections(log);
  let server;
  try {
    server = await startLunar({ ...config, logger: rootLogger });
  } catch (err) {
    explainStartError(err, ctx.io, shown);
    return ExitCode.FAILED;
  }
  ctx.io.out(
    `Lunar ${LUNAR_VERSION} serving ${shown} on ${portals.map((p) => portalKey(p)).join(', ')} ` +
      `(${server.volumes.list().length} volume(s)); admin socket ${shown}/${ADMIN_SOCKET}` +
      (server.csiEndpoint ? `; CSI ${server.csiEndpoint}` : '') +
      (server.metricsAddress ? `; metrics http://${server.metricsAddress}/metrics` : '') +
      '\n',
  );
  return runUntilSignal(server, log);
}

export const serve: Command = {
  runsServer: true,
  usage:
    '  lunar serve [--data-dir DIR] [--portal HOST:PORT[=ADVERTISE]]... [--discovery-chap USER:SECRET]\n' +
    '              [--csi-endpoint ENDPOINT] [--metrics-address ADDR] [--topology KEY=VALUE] [--kubeconfig PATH]\n' +
    '              [--max-pending-connections N] [--max-pending-per-address N] [--max-sessions-per-initiator N]\n' +
    '              [--max-sessions-per-address N] [--login-timeout SECONDS]\n',
  help: `serve:
  --portal HOST:PORT[=ADVERTISE]  listen on HOST:PORT (repeatable; default $LUNAR_PORTALS, a comma list,
                                  else 127.0.0.1:3260). Portal group tags are 1, 2, ... in order.
                                  =ADVERTISE reports that address in SendTargets (NAT, 0.0.0.0 binds).
                                  IPv6: [::1]:3260.
  --discovery-chap USER:SECRET    require CHAP for SendTargets discovery (default $LUNAR_DISCOVERY_CHAP)
  --csi-endpoint ENDPOINT         CSI Identity+Controller endpoint: unix:///path, tcp://host:port or none
                                  (default $LUNAR_CSI_ENDPOINT, $CSI_ENDPOINT, else unix://DIR/csi.sock)
  --metrics-address ADDR          serve Prometheus /metrics on :PORT, HOST:PORT or none
                                  (default $LUNAR_METRICS_ADDRESS, else none)
  --topology KEY=VALUE[,...]      every volume is accessible from the nodes with these labels (CSI
                                  accessibility constraints; default $LUNAR_TOPOLOGY, else none)
  --kubeconfig PATH|none          Kubernetes API server for Events on PVCs (default $LUNAR_KUBECONFIG,
                                  else the pod's service account when run in a pod, else none)
  --max-pending-connections N     connections not logged in yet, all peers together; more are closed at
                                  accept (default $LUNAR_MAX_PENDING_CONNECTIONS, else ${DEFAULT_ADMISSION.maxPendingConnections})
  --max-pending-per-address N     the same from one source address (default $LUNAR_MAX_PENDING_PER_ADDRESS,
                                  else ${DEFAULT_ADMISSION.maxPendingPerAddress})
  --max-sessions-per-initiator N  sessions of one initiator name; a login beyond is answered "out of
                                  resources" (default $LUNAR_MAX_SESSIONS_PER_INITIATOR, else ${DEFAULT_ADMISSION.maxSessionsPerInitiator})
  --max-sessions-per-address N    sessions from one source address, whatever their initiator names; the
                                  same answer (default $LUNAR_MAX_SESSIONS_PER_ADDRESS, else ${DEFAULT_ADMISSION.maxSessionsPerAddress})
  --login-timeout SECONDS         a connection that has not completed login by then is closed
                                  (default $LUNAR_LOGIN_TIMEOUT, else ${DEFAULT_TUNING.loginTimeoutMs / 1000})
  Stops cleanly on SIGTERM or SIGINT. Logs are JSON lines on stderr (LUNAR_LOG_LEVEL=debug|info|warn).
`,
  options: {
    portal: { type: 'string', multiple: true },
    'discovery-chap': { type: 'string' },
    'csi-endpoint': { type: 'string' },
    'metrics-address': { type: 'string' },
    topology: { type: 'string' },
    kubeconfig: { type: 'string' },
    'max-pending-connections': { type: 'string' },
    'max-pending-per-address': { type: 'string' },
    'max-sessions-per-address': { type: 'string' },
    'max-sessions-per-initiator': { type: 'string' },
    'login-timeout': { type: 'string' },
  },
  run,
};
