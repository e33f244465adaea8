// The contract between the transport (src/iscsi) and the SCSI command sets (src/scsi).
// The transport never parses a CDB; the command sets never touch a socket.
//
// The SCSI contract is this file and ./sense.ts (the one status and sense encoder, pure, importing only
// this file). src/iscsi and src/target import nothing else of src/scsi; src/volumes also builds target
// devices with ./device.ts. This file imports nothing.

/** The I_T nexus a command arrived on (SAM-5 §4.6; iSCSI port names RFC 7143 §4.2.7). */
export interface ITNexus {
  /** Initiator port name: "<initiator iqn>,i,0x<ISID as 12 hex digits>" (RFC 7143 §4.2.7.1). */
  readonly initiatorPortName: string;
  /** The initiator's iSCSI name (InitiatorName key). */
  readonly initiatorName: string;
  /** ISID, 12 lower-case hex digits. */
  readonly isid: string;
  /** Target port name: "<target iqn>,t,0x<TPGT as 4 hex digits>". */
  readonly targetPortName: string;
  /** Target portal group tag the session logged in through. */
  readonly targetPortalGroupTag: number;
  /** SPC-4 relative target port identifier (1-based; one per portal group). */
  readonly relativeTargetPortId: number;
  /** Unique, stable key for maps: initiatorPortName + "|" + targetPortName. */
  readonly key: string;
}

/** SAM-5 task attributes (RFC 7143 §11.3.1 ATTR field). */
export type TaskAttribute = 'untagged' | 'simple' | 'ordered' | 'head-of-queue' | 'aca';

/** One SCSI command as the transport hands it over, with all its Data-Out already gathered. */
export interface ScsiCommand {
  readonly nexus: ITNexus;
  readonly lun: number;
  /** Initiator task tag (ITT). */
  readonly taskTag: number;
  readonly attribute: TaskAttribute;
  /** The CDB (16 bytes from the BHS, longer when an extended-CDB AHS was sent). */
  readonly cdb: Buffer;
  /** ExpectedDataTransferLength from the SCSI Command PDU. */
  readonly expectedDataLength: number;
  /** R and W bits of the SCSI Command PDU. */
  readonly read: boolean;
  readonly write: boolean;
  /** Data-Out gathered by the transport (immediate + unsolicited + solicited), length <= expectedDataLength; null when none. */
  readonly dataOut: Buffer | null;
  /**
   * Where a command set that returns Data-In of its own making (READ) takes the buffer it fills: the
   * transport's pool, which gets the buffer back once the data has left (SAM-5 §5.4.3: the data-in
   * buffer is the application client's). Absent: allocate.
   */
  readonly dataIn?: DataInAllocator;
}

/** A source of Data-In buffers (ScsiCommand.dataIn). */
export interface DataInAllocator {
  /** A buffer of exactly n bytes, contents undefined. */
  take(n: number): Buffer;
}

/** What a command set answers. */
export interface ScsiResponse {
  /** SAM status byte (GOOD, CHECK CONDITION, ...). */
  readonly status: number;
  /** Data-In; may be shorter than expectedDataLength (underflow). Never longer than expectedDataLength. */
  readonly data: Buffer | null;
  /** Fixed-format sense data (SPC-4 §4.5.3) when status is CHECK CONDITION. */
  readonly sense: Buffer | null;
  /**
   * Bytes the CDB asked to transfer (either direction), when the command set knows it, so that the
   * transport can report residual overflow/underflow against expectedDataLength (RFC 7143 §11.4.5).
   * When absent the transport uses data.length for reads and expectedDataLength for writes.
   */
  readonly transferLength?: number;
}

/** SAM-5 status codes. */
export const ScsiStatus = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  CONDITION_MET: 0x04,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28,
  ACA_ACTIVE: 0x30,
  TASK_ABORTED: 0x40,
} as const;

/** Task management functions (SAM-5 §7; RFC 7143 §11.5.1 function codes). */
export type TaskManagementFunction =
  'abort-task' | 'abort-task-set' | 'clear-aca' | 'clear-task-set' | 'logical-unit-reset' | 'target-warm-reset' | 'target-cold-reset';

/** RFC 7143 §11.6.1 response codes, as names. */
export type TaskManagementResult =
  | 'function-complete'
  | 'task-does-not-exist'
  | 'lun-does-not-exist'
  | 'task-still-allegiant'
  | 'reassignment-not-supported'
  | 'function-not-supported'
  | 'authorization-failed'
  | 'function-rejected';

/**
 * A SCSI target device as the transport sees it: the LUN inventory of one iSCSI target plus its task
 * router. Implemented in src/scsi (ScsiTargetDevice); one per target IQN.
 */
export interface ScsiTargetDevice {
  /** LUNs present, ascending. */
  luns(): number[];
  /**
   * Execute one command. Returns the response, or null when the task was aborted by task management
   * (the transport then sends no SCSI Response for it): at once when the command finished without
   * waiting (a READ from the page cache, a small write: no promise, no microtask turn), else as a
   * promise. Never rejects for a SCSI-level error: those are CHECK CONDITION responses. A command to a
   * LUN that does not exist gets LOGICAL UNIT NOT SUPPORTED (or REPORT LUNS / INQUIRY answers for the
   * well-known cases).
   */
  execute(cmd: ScsiCommand): ScsiResponse | null | Promise<ScsiResponse | null>;
  /** Task management (SAM-5 §7). refTaskTag for ABORT TASK. */
  taskManagement(fn: TaskManagementFunction, nexus: ITNexus, lun: number, refTaskTag?: number): Promise<TaskManagementResult>;
  /** A new I_T nexus exists (login): it owes a POWER ON, RESET, OR BUS DEVICE RESET OCCURRED unit attention. */
  nexusAdded(nexus: ITNexus): void;
  /** The I_T nexus is gone (logout, connection failure after cleanup): abort its tasks, drop its UAs. */
  nexusRemoved(nexus: ITNexus): void;
}

/**
 * What a command does to the LU's data, for per-LU statistics; the opcode table (commands.ts) gives each
 * command its kind, and IO_KIND_NAMES[kind] is the name metrics report it under.
 */
export const IoKind = { Read: 0, Write: 1, Flush: 2, Unmap: 3, Other: 4 } as const;
export type IoKind = (typeof IoKind)[keyof typeof IoKind];
export const IO_KIND_NAMES: readonly string[] = ['read', 'write', 'flush', 'unmap', 'other'];

/**
 * Per-LU statistics a logical unit feeds once per command it answers (src/metrics/lu-stats.ts implements
 * it; the volume layer hands one to each LU). Called on the data path: it must not allocate.
 * bytes: Data-In sent (reads) or Data-Out received (writes), else 0; seconds: from the command's arrival
 * at the LU to its response; ok: status GOOD or CONDITION MET (an aborted task is not ok).
 */
export interface CommandObserver {
  record(kind: IoKind, bytes: number, seconds: number, ok: boolean): void;
}

/**
 * Told each time a command of the LU ends with DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT
 * (27/07; the backing store ran out of space, ENOSPC or EDQUOT): the volume layer logs, counts and reports
 * it. Called only on that failure, never on the good path.
 */
export interface SpaceObserver {
  spaceAllocationFailed(): void;
}

/** Identity of one logical unit, fixed at creation and persisted: what VPD 0x80/0x83 report. */
export interface LogicalUnitIdentity {
  /** NAA IEEE Registered Extended (6h) designator, 16 bytes as 32 hex digits (SPC-4 §7.8.6.6.4). */
  readonly naa: string;
  /** Unit serial number (VPD 0x80), ASCII. */
  readonly serial: string;
  /** T10 vendor identification, ≤ 8 ASCII chars (padded by the encoder). */
  readonly vendor: string;
  /** Product identification, ≤ 16 ASCII chars. */
  readonly product: string;
  /** Product revision level, ≤ 4 ASCII chars. */
  readonly revision: string;
}

/** A unit attention condition (SPC-4 §5.14): its additional sense code and qualifier. */
export interface UnitAttention {
  readonly asc: number;
  readonly ascq: number;
}

/**
 * Hooks a logical unit offers to its reservation manager (src/scsi/pr.ts) so that reservations never
 * reach into the task set or UA queues directly.
 */
export interface LogicalUnitHooks {
  /** Queue a unit attention for the I_T nexus with that key (SPC-4 §5.14). */
  queueUnitAttention(nexusKey: string, ua: UnitAttention): void;
  /** Every I_T nexus currently known to the LU (keys). */
  nexusKeys(): string[];
  /** Abort every task of these I_T nexuses (PREEMPT AND ABORT, SPC-4 §5.13.11.2.5). */
  abortTasksOf(nexusKeys: readonly string[]): void;
}

/** Serializable persistent-reservation state of one LU (persisted by the volume layer, APTPL or not). */
export interface PersistentReservationSnapshot {
  readonly generation: number;
  readonly registrations: ReadonlyArray<{
    readonly initiatorPortName: string;
    readonly targetPortName: string;
    readonly relativeTargetPortId: number;
    /** 8-byte reservation key as 16 hex digits. */
    readonly key: string;
  }>;
  readonly reservation: {
    /** initiatorPortName|targetPortName of the holder; for all-registrants types, "*". */
    readonly holder: string;
    /** PR TYPE code (SPC-4 Table 169). */
    readonly type: number;
    readonly key: string;
  } | null;
  /** Activate Persist Through Power Loss was set by the last registration. */
  readonly aptpl: boolean;
}

/**
 * The PR-change hook: makes a new persistent-reservation state durable (the volume layer writes it to
 * its state file; SPC-4 §5.13.5 for APTPL, and Lunar keeps every state across restarts). Resolves once
 * the state is durable; a rejection refuses the change, and PERSISTENT RESERVE OUT ends with
 * CHECK CONDITION with the state left as it was.
 */
export type PersistentReservationHook = (s: PersistentReservationSnapshot) => Promise<void>;

/**
 * Reservations of one LU: PERSISTENT RESERVE IN/OUT (SPC-4 §6.15, §6.16), RESERVE/RELEASE (SPC-2),
 * and the access check of SPC-4 §5.13.1 Table 55. Implemented in src/scsi/pr.ts.
 *
 * The commands that change reservations (persistentReserveOut, reserve, release) run one at a time; a
 * PERSISTENT RESERVE OUT change becomes visible only once the PR-change hook has made it durable, and
 * until then conflicts() and persistentReserveIn() answer from the state before it.
 */
export interface ReservationManager {
  /** true: cmd from nexus must get RESERVATION CONFLICT under the committed reservation state. */
  conflicts(nexus: ITNexus, cdb: Buffer): boolean;
  persistentReserveIn(nexus: ITNexus, cdb: Buffer): ScsiResponse;
  /** Resolves after the change (if any) is durable and committed, or refused. signal: the task was aborted. */
  persistentReserveOut(nexus: ITNexus, cdb: Buffer, dataOut: Buffer | null, signal?: { readonly aborted: boolean }): Promise<ScsiResponse>;
  /** RESERVE(6)/(10) and RELEASE(6)/(10) (SPC-2 §7.21, §7.17). */
  reserve(nexus: ITNexus, cdb: Buffer): Promise<ScsiResponse>;
  release(nexus: ITNexus, cdb: Buffer): Promise<ScsiResponse>;
  /** Logical unit reset / target reset: SPC-2 reservations are released; persistent ones stay. */
  reset(): void;
  /** The I_T nexus is gone: an SPC-2 reservation it held is released. */
  nexusRemoved(nexus: ITNexus): void;
  /** The committed persistent-reservation state. */
  snapshot(): PersistentReservationSnapshot;
}
