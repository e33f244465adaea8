// The node plugin's contract: its configuration and what every node operation (stage.ts, unstage.ts,
// publish.ts, expand.ts, stats.ts) is given. Rule: an operation reaches the host only through `env`
// (runner, host trees, kubelet paths, mount table, staging records) and makes a `Host` per call with
// the call's deadline, so that unit tests run every operation over a fake runner and in-memory trees.

import type { Logger } from '../log.js';
import type { HostFs } from '../host/host-fs.js';
import type { MultipathTimers } from '../host/multipath.js';
import type { HostRunner } from '../host/runner.js';
import type { Host, HostTimeouts } from '../host/types.js';
import type { EventSink } from '../kube/types.js';
import type { StagingRecord, StagingRecords } from './staging-record.js';
import type { PathState } from './stats.js';

/** iSCSI session timers set on every node record (seconds; docs/node.md "Timers"). */
export interface SessionTimers {
  readonly noopOutInterval: number;
  readonly noopOutTimeout: number;
  readonly replacementTimeout: number;
  readonly loginTimeout: number;
}

export const DEFAULT_SESSION_TIMERS: SessionTimers = {
  noopOutInterval: 2,
  noopOutTimeout: 2,
  // Only matters without multipath: multipathd writes fast_io_fail_tmo over it on every path it adopts.
  replacementTimeout: 120,
  loginTimeout: 5,
};

export interface NodeConfig {
  readonly nodeName: string;
  /** NICs to bind one iscsiadm iface each to; empty = the default iface. */
  readonly nics: readonly string[];
  /** Use the SCSI device itself when the volume has exactly one path (no multipath). */
  readonly allowSinglePath: boolean;
  /** NodeGetInfo max_volumes_per_node (0 = no limit). */
  readonly maxVolumes: number;
  readonly topology?: Readonly<Record<string, string>>;
  readonly session: SessionTimers;
  readonly multipath: MultipathTimers;
  readonly timeouts: HostTimeouts;
}

export interface NodeEnv {
  readonly config: NodeConfig;
  readonly runner: HostRunner;
  /** The host's trees (/sys, /dev, /etc/iscsi, ...) under --host-root-dir. */
  readonly hostFs: HostFs;
  /** Kubelet's paths (staging and target paths), as the CO names them. */
  readonly localFs: HostFs;
  /** The mount table of the namespace kubelet mounts in. */
  readMountinfo(): Promise<string>;
  readonly records: StagingRecords;
  readonly log: Logger;
  /** Events on the PVC of a volume (VolumeFormatted, VolumeHoldsData, ...); absent = none. */
  readonly events?: EventSink;
  /** A host path as the runner's commands see it (Host.commandPath); absent = as is (host root "/" or nsenter). */
  readonly commandPath?: (hostPath: string) => string;
  /** Told each path check NodeGetVolumeStats makes (path-monitor.ts); absent = none. */
  readonly paths?: PathObserver;
}

/** Takes the result of one path check of a staged volume. */
export interface PathObserver {
  observe(r: StagingRecord, states: readonly PathState[]): Promise<void>;
}

export function hostFor(env: NodeEnv, deadline: number): Host {
  return { runner: env.runner, fs: env.hostFs, deadline, timeouts: env.config.timeouts, commandPath: env.commandPath ?? ((p) => p) };
}
