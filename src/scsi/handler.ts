// The contract between a logical unit and its command handlers (spc.ts, sbc.ts, xcopy.ts and the opcode
// table in commands.ts). Rule: handlers and the table see the logical unit only through LogicalUnitView,
// never the LogicalUnit class (lu.ts), so that lu.ts can dispatch through the table without an import loop.
import type { Logger } from '../log.js';
import type { BackingStore } from '../storage/types.js';
import type { AbortFlag, IoGate } from './gate.js';
import type { ModeState } from './mode.js';
import type { LogicalUnitIdentity, ReservationManager, ScsiCommand, ScsiResponse, UnitAttention } from './types.js';

/** Outcome of a completed EXTENDED COPY kept for RECEIVE COPY RESULTS. */
export interface CopyResult {
  readonly segments: number;
  readonly bytes: number;
}

/** What a handler may read and change of one logical unit. */
export interface LogicalUnitView {
  readonly lun: number;
  readonly identity: LogicalUnitIdentity;
  readonly store: BackingStore;
  readonly blockSize: number;
  readonly thinProvisioned: boolean;
  readonly readOnly: boolean;
  readonly reservations: ReservationManager;
  /** Current mode parameters (shared by all I_T nexuses; MODE SELECT replaces them). */
  mode: ModeState;
  /** Writes share it; COMPARE AND WRITE / ORWRITE / quiesce take it exclusively. */
  readonly gate: IoGate;
  readonly log: Logger;
  /** Capacity in logical blocks. */
  readonly blocks: number;
  /** Read-only volume, or write protection through the control mode page (SPC-4 §7.5.8, SWP). */
  readonly writeProtected: boolean;
  queueUnitAttentionAll(ua: UnitAttention, exceptKey?: string): void;
  takeUnitAttention(nexusKey: string): UnitAttention | undefined;
  rememberCopyResult(nexusKey: string, listId: number, r: CopyResult): void;
  copyResult(nexusKey: string, listId: number): CopyResult | undefined;
}

/** What a logical unit needs to know about the target device around it. */
export interface DeviceView {
  luns(): number[];
  /** The logical units of this device (EXTENDED COPY stays inside them). */
  logicalUnits(): LogicalUnitView[];
  readonly targetPorts: readonly number[];
}

/** Everything a command handler gets. */
export interface CommandContext {
  readonly cmd: ScsiCommand;
  readonly lu: LogicalUnitView;
  readonly device: DeviceView;
  /** Aborted by task management; handlers stop before their next I/O. */
  readonly signal: AbortFlag;
}

export type CommandHandler = (ctx: CommandContext) => Promise<ScsiResponse> | ScsiResponse;
