// The composition root of `lunar node`: the host runner (direct or nsenter), the host trees under
// --host-root-dir, the staging records under the state dir, the Node service and Identity on one CSI
// endpoint. Probe answers ready while iscsid answers on its socket (checked every few seconds).

import { readFile } from 'node:fs/promises';
import { DEFAULT_PLUGIN_NAME } from '../csi/identity.js';
import { NodeService, nodeBinding } from '../csi/node.js';
import { startCsiPluginServer, type CsiServer } from '../csi/plugin-server.js';
import { hostFs } from '../host/host-fs.js';
import { iscsidReachable, ISCSID_ABSTRACT_SOCKET } from '../host/iscsid.js';
import { createRunner, type HostExecMode } from '../host/runner.js';
import type { Logger } from '../log.js';
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
}

export interface NodePlugin {
  readonly address: string;
  close(): Promise<void>;
}

export async function startNodePlugin(o: NodePluginOptions): Promise<NodePlugin> {
  const log = o.logger.child({ component: 'node' });
  // The mount table of the namespace the mounts are made in: the host's (PID 1) when commands run there.
  const mountinfo = o.hostExec === 'nsenter' ? '/proc/1/mountinfo' : '/proc/self/mountinfo';
  const env: NodeEnv = {
    config: o.config,
    runner: createRunner(o.hostExec),
    hostFs: hostFs(o.hostRootDir),
    localFs: hostFs('/'),
    readMountinfo: () => readFile(mountinfo, 'utf8'),
    records: stagingRecords(o.stateDir),
    log,
  };
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
  let server: CsiServer;
  try {
    server = await startCsiPluginServer({
      endpoint: o.endpoint,
      pluginName: DEFAULT_PLUGIN_NAME,
      version: LUNAR_VERSION,
      ready: () => iscsidUp,
      services: [nodeBinding(new NodeService(env))],
      logger: o.logger,
      ...(o.config.topology && Object.keys(o.config.topology).length > 0 ? { topology: o.config.topology } : {}),
    });
  } catch (err) {
    clearInterval(timer);
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
    },
    'Lunar node plugin ready',
  );
  return {
    address: server.address,
    close: async () => {
      clearInterval(timer);
      await server.close();
    },
  };
}
