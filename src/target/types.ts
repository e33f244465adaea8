// The contract between the iSCSI transport (src/iscsi) and the target configuration (src/target,
// src/volumes). The transport asks "which targets exist, who may log in, with which secret, and which
// SCSI device answers"; it never reads state files.

import type { ScsiTargetDevice } from '../scsi/types.js';
import type { Portal } from '../util/portal.js';

/** A network portal a target is offered on; defined with its formatters in src/util/portal.ts. */
export type { Portal };

/** CHAP credentials (RFC 7143 §12.1.3). mutual* present = mutual (bidirectional) CHAP. */
export interface ChapCredentials {
  readonly user: string;
  readonly secret: string;
  readonly mutualUser?: string;
  readonly mutualSecret?: string;
}

/** Who may log in to a target. allow = null: anyone; [] : nobody. */
export interface AccessControl {
  /** Entries are initiator IQNs/EUIs (exact match) or CIDRs ("10.0.0.0/8", "::1/128", "127.0.0.1/32"). */
  readonly allow: readonly string[] | null;
}

/** One iSCSI target (one per Lunar volume). */
export interface TargetEntry {
  readonly iqn: string;
  readonly alias?: string;
  /** Portals this target is offered on; empty = every portal of the server. */
  readonly portals: readonly Portal[];
  readonly access: AccessControl;
  /** null: AuthMethod=None accepted. */
  readonly chap: ChapCredentials | null;
  /** The SCSI side: LUN inventory and command execution. */
  readonly device: ScsiTargetDevice;
}

/** What the transport needs from the rest of Lunar. */
export interface TargetRegistry {
  findTarget(iqn: string): TargetEntry | undefined;
  listTargets(): readonly TargetEntry[];
  /** Every portal the server listens on. */
  portals(): readonly Portal[];
  /** Credentials required for discovery sessions; null = none. */
  discoveryChap(): ChapCredentials | null;
}

/** A logged-in session as reported by the transport (for `lunar sessions`, CSI unpublish). */
export interface SessionInfo {
  readonly targetName: string;
  readonly initiatorName: string;
  readonly isid: string;
  readonly tsih: number;
  readonly remoteAddress: string;
  readonly localAddress: string;
  readonly connections: number;
  readonly discovery: boolean;
}
