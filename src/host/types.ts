// The contract of the host seam: what every host step (iscsiadm.ts, scsi-sysfs.ts, multipath.ts,
// blkid.ts, filesystem.ts, mount.ts) is given. Rule: a step touches the host only through `runner`
// (commands) and `fs` (the host's trees, under --host-root-dir), and never waits past `deadline`, so
// that a unit test gives every step a fake runner and an in-memory tree and checks exactly what it runs.

import type { HostFs } from './host-fs.js';
import type { HostRunner } from './runner.js';

/** Command timeouts (ms) by kind of command. */
export interface HostTimeouts {
  /** iscsiadm calls that only edit the local database (iface, node records). */
  readonly iscsiadmLocal: number;
  /** SendTargets discovery, login, logout: network round trips to the target. */
  readonly iscsiadmNetwork: number;
  /** multipath / multipathd / blockdev / blkid. */
  readonly device: number;
  /** mkfs and filesystem growth: they write metadata across the device. */
  readonly mkfs: number;
  /** mount / umount. */
  readonly mount: number;
  /** One sysfs attribute write (scan of a LUN, delete or rescan of a device): the kernel does the SCSI commands in it. */
  readonly sysfs: number;
  /** Wait for the SCSI devices of a LUN after the scan. */
  readonly deviceWait: number;
  /** Wait for the multipath map with all its paths. */
  readonly mapWait: number;
}

/** Default timeouts and why (docs/node.md "Timers"). */
export const DEFAULT_TIMEOUTS: HostTimeouts = {
  iscsiadmLocal: 10_000,
  // A login to a dead portal ends at the record's login_timeout (set to 5 s) times the retries.
  iscsiadmNetwork: 20_000,
  device: 15_000,
  // mkfs.xfs / mkfs.ext4 with discard off write only metadata: seconds even on large volumes.
  mkfs: 120_000,
  mount: 30_000,
  // A LUN scan is a few SCSI commands (INQUIRY, VPD pages, READ CAPACITY); a path whose target does not
  // answer holds the write for the SCSI command timeout (30 s) and error handling: the stage fails instead.
  sysfs: 15_000,
  deviceWait: 20_000,
  mapWait: 20_000,
};

/** One call's access to the host. */
export interface Host {
  readonly runner: HostRunner;
  /** The host trees: /sys, /dev, /etc/iscsi, /var/lib/iscsi, /etc/multipath, relative to --host-root-dir. */
  readonly fs: HostFs;
  /** The request's deadline (epoch ms; Infinity = none). */
  readonly deadline: number;
  readonly timeouts: HostTimeouts;
  /** A host path as the runner's commands see it (under --host-root-dir in direct mode, as is through nsenter). */
  readonly commandPath: (hostPath: string) => string;
}

/** A host step's view of one iSCSI path: a (portal, iface) pair. */
export interface PathPair {
  /** "host:port" as publish_context lists it. */
  readonly portal: string;
  /** iscsiadm iface name ("default" when no NIC is configured). */
  readonly iface: string;
}
