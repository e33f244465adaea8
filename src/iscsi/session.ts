// Full feature phase of one session (RFC 7143 §4.2.2 numbering, §11 PDUs): CmdSN window, SCSI commands
// with immediate/unsolicited/solicited data (R2T), Data-In and status, task management, NOP, text
// (SendTargets; the continuation state of a text exchange is text-exchange.ts), logout. One connection per session
// (MaxConnections=1), ErrorRecoveryLevel 0.
import type { Logger } from 'pino';
import { Asc, SenseKey, TASK_SET_FULL, checkCondition, type AdditionalSense } from '../scsi/sense.js';
import type { ITNexus, ScsiCommand, ScsiResponse, TaskAttribute, TaskManagementFunction, TaskManagementResult } from '../scsi/types.js';
import type { SessionInfo, TargetEntry, TargetRegistry } from '../target/types.js';
import type { IscsiConnection, PduHandler } from './connection.js';
import { sendTargets } from './discovery.js';
import { RejectReason } from './errors.js';
import type { IscsiTuning, SessionParameters, SessionType } from './negotiation.js';
import { Negotiator } from './negotiation.js';
import {
  decodeLun,
  encodePdu,
  Opcode,
  RESERVED_TAG,
  type DataOut,
  type InitiatorPdu,
  type LoginRequest,
  type LogoutRequest,
  type NopOut,
  type ScsiCommandPdu,
  type SnackRequest,
  type TaskMgmtRequest,
  type TextRequest,
} from './pdu.js';
import type { TextPair } from './text.js';
import { TextExchange } from './text-exchange.js';
import { CmdWindow, serialLt } from './cmdsn.js';
import { readBuffers, writeBuffers } from './buffer-pool.js';

// ------------------------------------------------------------ tasks

interface R2TState {
  ttt: number;
  offset: number;
  length: number;
  received: number;
  nextDataSN: number;
}

interface Task {
  readonly itt: number;
  readonly cmdSN: number;
  readonly pdu: ScsiCommandPdu;
  readonly lun: number;
  readonly edtl: number;
  /** Write buffer, EDTL bytes, filled in place (immediate + unsolicited + solicited data). */
  readonly buf: Buffer | null;
  /** Bytes of [0, unsolicitedEnd) expected without R2T (§13.10, §13.14). */
  unsolicitedEnd: number;
  unsolicitedReceived: number;
  unsolicitedDataSN: number;
  /** Next offset to solicit with an R2T. */
  nextR2TOffset: number;
  r2tSN: number;
  readonly r2ts: Map<number, R2TState>;
  received: number;
  state: 'ordering' | 'data' | 'executing' | 'aborted';
  released: boolean;
}

const TMF_FUNCTIONS: Record<number, TaskManagementFunction> = {
  1: 'abort-task',
  2: 'abort-task-set',
  3: 'clear-aca',
  4: 'clear-task-set',
  5: 'logical-unit-reset',
  6: 'target-warm-reset',
  7: 'target-cold-reset',
};
/** §11.6.1 response codes. */
const TMF_RESPONSE: Record<TaskManagementResult, number> = {
  'function-complete': 0,
  'task-does-not-exist': 1,
  'lun-does-not-exist': 2,
  'task-still-allegiant': 3,
  'reassignment-not-supported': 4,
  'function-not-supported': 5,
  'authorization-failed': 6,
  'function-rejected': 255,
};
const ATTRIBUTES: Record<number, TaskAttribute> = { 0: 'untagged', 1: 'simple', 2: 'ordered', 3: 'head-of-queue', 4: 'aca' };

/** Initiator PDUs that take part in CmdSN ordering (§4.2.2.1): all but Data-Out, Login and SNACK. */
type OrderedPdu = Exclude<InitiatorPdu, DataOut | LoginRequest | SnackRequest>;

/** Opcodes of OrderedPdu whose non-immediate form uses up a CmdSN even when rejected (§4.2.2.1). */
const CMDSN_OPCODES: ReadonlySet<number> = new Set([
  Opcode.NOP_OUT,
  Opcode.SCSI_COMMAND,
  Opcode.TASK_MGMT_REQUEST,
  Opcode.TEXT_REQUEST,
  Opcode.LOGOUT_REQUEST,
]);

/** Why a Data-Out PDU does not fit its task (§11.7): checkDataOut() answers with one of these. */
type DataOutFault =
  | 'no-write-data'
  | 'unsolicited-data-sn'
  | 'unsolicited-buffer-offset'
  | 'beyond-first-burst'
  | 'unknown-ttt'
  | 'data-sn'
  | 'buffer-offset'
  | 'beyond-desired-length';

/**
 * The additional sense of the CHECK CONDITION / ABORTED COMMAND that ends a task on a Data-Out fault
 * (§11.4.7.2 lists the iSCSI sense codes; the names are SPC-4 Annex D's).
 */
const DATA_OUT_SENSE: Readonly<Record<DataOutFault, AdditionalSense>> = {
  // §11.7.5: DataSN out of sequence — DATA PHASE ERROR (4Bh/00h).
  'unsolicited-data-sn': Asc.DATA_PHASE_ERROR,
  'data-sn': Asc.DATA_PHASE_ERROR,
  // §11.7.6: Buffer Offset not where the sequence stands — DATA OFFSET ERROR (4Bh/05h).
  'unsolicited-buffer-offset': Asc.DATA_OFFSET_ERROR,
  'buffer-offset': Asc.DATA_OFFSET_ERROR,
  // §11.4.7.2 "incorrect amount of data" (0Ch/0Dh): data the command, FirstBurstLength or the R2T did
  // not ask for, or for a transfer tag that solicited nothing.
  'no-write-data': Asc.WRITE_ERROR_NOT_ENOUGH_UNSOLICITED_DATA,
  'beyond-first-burst': Asc.WRITE_ERROR_NOT_ENOUGH_UNSOLICITED_DATA,
  'unknown-ttt': Asc.WRITE_ERROR_NOT_ENOUGH_UNSOLICITED_DATA,
  'beyond-desired-length': Asc.WRITE_ERROR_NOT_ENOUGH_UNSOLICITED_DATA,
};

/** The message of a thrown value, for the log. */
function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** §11.4.7: the data segment of a SCSI Response carries the sense data behind its 2-byte length. */
function senseSegment(sense: Buffer | null): Buffer | null {
  if (!sense || sense.length === 0) return null;
  const seg = Buffer.allocUnsafe(2 + sense.length);
  seg.writeUInt16BE(sense.length, 0);
  sense.copy(seg, 2);
  return seg;
}

/** What a session needs from the server. */
export interface SessionHost {
  readonly registry: TargetRegistry;
  readonly tuning: IscsiTuning;
  readonly logger: Logger;
  /** Other sessions of the same target (for resets). */
  sessionsOfTarget(iqn: string): Session[];
  /** Session has ended (remove from the table). */
  sessionEnded(s: Session): void;
}

export interface SessionOptions {
  readonly tsih: number;
  readonly type: SessionType;
  readonly initiatorName: string;
  readonly initiatorAlias: string | null;
  readonly isid: string;
  readonly target: TargetEntry | null;
  readonly portalGroupTag: number;
  readonly params: SessionParameters;
  readonly firstCmdSN: number;
  readonly cid: number;
}

/** Build the I_T nexus identity (src/scsi/types.ts; RFC 7143 §4.2.7 port names). */
export function buildNexus(initiatorName: string, isid: string, targetName: string, tpgt: number): ITNexus {
  const initiatorPortName = `${initiatorName},i,0x${isid.toLowerCase()}`;
  const targetPortName = `${targetName},t,0x${tpgt.toString(16).padStart(4, '0')}`;
  return {
    initiatorPortName,
    initiatorName,
    isid: isid.toLowerCase(),
    targetPortName,
    targetPortalGroupTag: tpgt,
    relativeTargetPortId: tpgt,
    key: `${initiatorPortName}|${targetPortName}`,
  };
}

export class Session implements PduHandler {
  readonly startedAt = Date.now();
  readonly nexus: ITNexus | null;
  readonly window: CmdWindow<InitiatorPdu>;
  private readonly tasks = new Map<number, Task>();
  private readonly recentlyAborted = new Set<number>();
  private nextTtt = 1;
  private ended = false;
  private readonly text = new TextExchange(() => this.allocTtt());
  private readonly ffpNegotiator: Negotiator;
  private pingTtt: number | null = null;
  private pingSentAt = 0;
  private readonly pingTimer: NodeJS.Timeout | null;
  private logoutRequested = false;
  private readonly log: Logger;

  constructor(
    private readonly host: SessionHost,
    readonly conn: IscsiConnection,
    readonly opts: SessionOptions,
  ) {
    this.window = new CmdWindow(opts.firstCmdSN, host.tuning.queueDepth);
    this.nexus = opts.target ? buildNexus(opts.initiatorName, opts.isid, opts.target.iqn, opts.portalGroupTag) : null;
    this.ffpNegotiator = new Negotiator(host.tuning, opts.type);
    this.log = host.logger.child({ target: opts.target?.iqn ?? null, initiator: opts.initiatorName, isid: opts.isid, tsih: opts.tsih });
    conn.handlerSeq = () => ({ expCmdSN: this.window.expCmdSN, maxCmdSN: this.maxCmdSN() });
    if (this.nexus && opts.target) opts.target.device.nexusAdded(this.nexus);
    const interval = host.tuning.nopInIntervalMs;
    if (interval > 0) {
      this.pingTimer = setInterval(
        () => this.guard(() => this.checkAlive()),
        Math.max(100, Math.min(interval, host.tuning.nopInTimeoutMs) / 2),
      );
      this.pingTimer.unref();
    } else {
      this.pingTimer = null;
    }
  }

  get tsih(): number {
    return this.opts.tsih;
  }
  get targetName(): string | null {
    return this.opts.target?.iqn ?? null;
  }
  get params(): SessionParameters {
    return this.opts.params;
  }

  info(): SessionInfo {
    return {
      targetName: this.opts.target?.iqn ?? '',
      initiatorName: this.opts.initiatorName,
      isid: this.opts.isid,
      tsih: this.opts.tsih,
      remoteAddress: this.conn.remoteAddress,
      localAddress: this.conn.localAddress,
      connections: this.ended ? 0 : 1,
      discovery: this.opts.type === 'Discovery',
    };
  }

  maxCmdSN(): number {
    return this.window.maxCmdSN(this.tasks.size + this.window.queued);
  }

  // ------------------------------------------------------------ PduHandler

  dataSink(pdu: InitiatorPdu): Buffer | null {
    if (pdu.opcode === Opcode.SCSI_DATA_OUT) {
      const task = this.tasks.get(pdu.initiatorTaskTag);
      if (!task || !task.buf || this.checkDataOut(task, pdu) !== null) return null;
      return task.buf.subarray(pdu.bufferOffset, pdu.bufferOffset + pdu.dataSegmentLength);
    }
    if (pdu.opcode === Opcode.SCSI_COMMAND && pdu.write && this.opts.type === 'Normal' && !this.tasks.has(pdu.initiatorTaskTag)) {
      if (this.checkImmediateData(pdu) !== null || this.writeRefusal(pdu) !== null) return null;
      if (!pdu.immediate && !this.window.inWindow(pdu.cmdSN)) return null;
      const task = this.createTask(pdu);
      return task.buf!.subarray(0, pdu.dataSegmentLength);
    }
    return null;
  }

  handle(pdu: InitiatorPdu, data: Buffer): void {
    if (this.ended) return;
    switch (pdu.opcode) {
      case Opcode.SCSI_DATA_OUT:
        this.onDataOut(pdu, data);
        return;
      case Opcode.SNACK_REQUEST: // §11.16 SNACK: only meaningful at ERL > 0.
        this.reject(RejectReason.PROTOCOL_ERROR, pdu);
        return;
      case Opcode.NOP_OUT:
        if (pdu.initiatorTaskTag === RESERVED_TAG) {
          // §11.18: answer to our ping (or an unanswered-ping NOP); never consumes CmdSN.
          if (pdu.targetTransferTag !== RESERVED_TAG && pdu.targetTransferTag === this.pingTtt) this.pingTtt = null;
          return;
        }
        break;
      default:
        break;
    }
    if (pdu.opcode === Opcode.LOGIN_REQUEST) return; // handled by the connection
    // Commands: immediate ones now, others in CmdSN order (§4.2.2.1).
    const cmd: OrderedPdu = pdu;
    if (cmd.immediate) {
      this.execute(cmd, data);
      return;
    }
    // The data segment travels with the command until it is in CmdSN order (immediate data that did not
    // land in a task buffer, NOP-Out ping data, text).
    this.pendingData.set(cmd, data);
    const ready = this.window.offer(cmd.cmdSN, cmd);
    if (ready === null) {
      // Outside the window or duplicate: silently ignored (§4.2.2.1); drop any buffer made for it.
      this.pendingData.delete(cmd);
      const t = cmd.opcode === Opcode.SCSI_COMMAND ? this.tasks.get(cmd.initiatorTaskTag) : undefined;
      if (t && t.pdu === cmd) this.dropTask(t);
      this.log.debug({ cmdSN: cmd.cmdSN, expCmdSN: this.window.expCmdSN }, 'command outside the CmdSN window ignored');
      return;
    }
    for (const c of ready) {
      const d = this.pendingData.get(c) ?? null;
      this.pendingData.delete(c);
      if (!this.consumed.has(c)) this.execute(c as OrderedPdu, d);
    }
  }

  private readonly pendingData = new Map<InitiatorPdu, Buffer>();
  /** Stand-ins for rejected commands in the CmdSN window: they use up a CmdSN and do nothing. */
  private readonly consumed = new WeakSet<InitiatorPdu>();

  rejected(header: Buffer): void {
    // A non-immediate command rejected before decoding still occupies its CmdSN (RFC 7143 §4.2.2.1);
    // without this the window would wait forever for it.
    const op = header[0]! & 0x3f;
    if ((header[0]! & 0x40) !== 0 || !CMDSN_OPCODES.has(op) || header.length < 48) return;
    if (op === Opcode.NOP_OUT && header.readUInt32BE(16) === RESERVED_TAG) return;
    const cmdSN = header.readUInt32BE(24);
    const stand: InitiatorPdu = {
      opcode: Opcode.NOP_OUT,
      immediate: false,
      dataSegmentLength: 0,
      lun: 0n,
      initiatorTaskTag: RESERVED_TAG,
      targetTransferTag: RESERVED_TAG,
      cmdSN,
      expStatSN: 0,
    };
    this.consumed.add(stand);
    const ready = this.window.offer(cmdSN, stand);
    for (const c of ready ?? []) {
      const d = this.pendingData.get(c) ?? null;
      this.pendingData.delete(c);
      if (!this.consumed.has(c)) this.execute(c as OrderedPdu, d);
    }
  }

  connectionClosed(reason: string): void {
    this.end(reason);
  }

  // ------------------------------------------------------------ dispatch of ordered commands

  private execute(pdu: OrderedPdu, data: Buffer | null): void {
    switch (pdu.opcode) {
      case Opcode.NOP_OUT:
        this.onNopOut(pdu, data);
        return;
      case Opcode.SCSI_COMMAND:
        this.onScsiCommand(pdu, data);
        return;
      case Opcode.TASK_MGMT_REQUEST:
        this.onTaskManagement(pdu).catch((e: unknown) =>
          this.guard(() => {
            throw e;
          }),
        );
        return;
      case Opcode.TEXT_REQUEST:
        this.onText(pdu, data ?? Buffer.alloc(0));
        return;
      case Opcode.LOGOUT_REQUEST:
        this.onLogout(pdu);
        return;
    }
  }

  /**
   * Run work that happens outside the connection's data handler (promise callbacks, timers): an
   * unexpected error must end this connection, never surface as an unhandled rejection.
   */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.log.error({ err: errText(e) }, 'internal error, closing connection');
      this.conn.destroy('internal error');
    }
  }

  private reject(reason: number, pdu: InitiatorPdu): void {
    this.conn.sendReject(reason, encodePdu(pdu));
  }

  // ------------------------------------------------------------ NOP (§11.18, §11.19)

  private onNopOut(pdu: NopOut, data: Buffer | null): void {
    const echo =
      data && data.length > 0 ? Buffer.from(data.subarray(0, Math.min(data.length, this.params.maxXmitDataSegmentLength))) : null;
    this.conn.sendPdu(
      {
        opcode: Opcode.NOP_IN,
        dataSegmentLength: echo?.length ?? 0,
        lun: pdu.lun,
        initiatorTaskTag: pdu.initiatorTaskTag,
        targetTransferTag: RESERVED_TAG,
        statSN: this.conn.nextStatSN(),
        expCmdSN: this.window.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
      },
      echo,
    );
  }

  /** Ping an idle initiator; drop it when it does not answer (§11.19: NOP-In with a TTT asks for a NOP-Out). */
  private checkAlive(): void {
    if (this.ended) return;
    const now = Date.now();
    if (this.pingTtt !== null) {
      if (now - this.pingSentAt > this.host.tuning.nopInTimeoutMs && now - this.conn.lastReceived > this.host.tuning.nopInTimeoutMs) {
        this.conn.peerWarn('unanswered-ping', {}, 'initiator did not answer NOP-In, dropping connection', this.log);
        this.conn.destroy('NOP-In timeout');
      }
      return;
    }
    if (now - this.conn.lastReceived >= this.host.tuning.nopInIntervalMs) {
      this.pingTtt = this.allocTtt();
      this.pingSentAt = now;
      this.conn.sendPdu({
        opcode: Opcode.NOP_IN,
        dataSegmentLength: 0,
        lun: 0n,
        initiatorTaskTag: RESERVED_TAG,
        targetTransferTag: this.pingTtt,
        statSN: this.conn.statSN,
        expCmdSN: this.window.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
      });
    }
  }

  private allocTtt(): number {
    const t = this.nextTtt;
    this.nextTtt = (this.nextTtt + 1) >>> 0;
    if (this.nextTtt === RESERVED_TAG || this.nextTtt === 0) this.nextTtt = 1;
    return t;
  }

  // ------------------------------------------------------------ SCSI command (§11.3) and data (§11.7, §11.8)

  /** Immediate data rules (§13.11, §13.14). Returns an error message or null. */
  private checkImmediateData(pdu: ScsiCommandPdu): string | null {
    const p = this.params;
    const dsl = pdu.dataSegmentLength;
    if (dsl === 0) return null;
    if (!pdu.write) return 'data segment on a command without W bit';
    if (!p.immediateData) return 'immediate data sent with ImmediateData=No';
    if (dsl > pdu.expectedDataTransferLength) return 'immediate data longer than ExpectedDataTransferLength';
    if (dsl > p.firstBurstLength) return 'immediate data longer than FirstBurstLength';
    return null;
  }

  /** Resource limits for a write's buffer: the response to end the command with, or null. */
  private writeRefusal(pdu: ScsiCommandPdu): ScsiResponse | null {
    if (!pdu.write) return null;
    const edtl = pdu.expectedDataTransferLength;
    // A transfer longer than the target accepts (the MAXIMUM TRANSFER LENGTH of the SBC-3 Block Limits
    // VPD page) → ILLEGAL REQUEST, INVALID FIELD IN CDB.
    if (edtl > this.host.tuning.maxWriteLength) return checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    // SAM-5 §5.3.1: out of task resources → TASK SET FULL.
    if (this.writeBufferBytes + edtl > this.host.tuning.maxSessionWriteBuffer) return TASK_SET_FULL;
    return null;
  }

  private writeBufferBytes = 0;

  private createTask(pdu: ScsiCommandPdu): Task {
    const p = this.params;
    const edtl = pdu.expectedDataTransferLength;
    const immediate = pdu.dataSegmentLength;
    // §13.10/§13.14: unsolicited data = immediate data, plus Data-Out up to FirstBurstLength when
    // InitialR2T=No and the command's F bit is 0.
    const unsolicitedEnd = !pdu.final && !p.initialR2T ? Math.min(edtl, p.firstBurstLength) : immediate;
    const task: Task = {
      itt: pdu.initiatorTaskTag,
      cmdSN: pdu.cmdSN,
      pdu,
      lun: decodeLun(pdu.lun),
      edtl,
      buf: pdu.write && edtl > 0 ? writeBuffers.take(edtl) : null,
      unsolicitedEnd,
      unsolicitedReceived: immediate,
      unsolicitedDataSN: 0,
      nextR2TOffset: unsolicitedEnd,
      r2tSN: 0,
      r2ts: new Map(),
      received: immediate,
      state: 'ordering',
      released: false,
    };
    this.tasks.set(task.itt, task);
    if (task.buf) this.writeBufferBytes += task.buf.length;
    return task;
  }

  /** Forget a task; release its share of the write buffer budget. */
  private dropTask(task: Task): void {
    if (this.tasks.get(task.itt) === task) this.tasks.delete(task.itt);
    if (task.buf && !task.released) {
      task.released = true;
      this.writeBufferBytes -= task.buf.length;
    }
  }

  private onScsiCommand(pdu: ScsiCommandPdu, data: Buffer | null): void {
    if (this.opts.type === 'Discovery' || !this.opts.target || !this.nexus) {
      // §4.3 (discovery sessions carry only Text, Logout and NOP).
      this.reject(RejectReason.PROTOCOL_ERROR, pdu);
      return;
    }
    let task = this.tasks.get(pdu.initiatorTaskTag);
    if (task && task.pdu !== pdu) {
      this.reject(RejectReason.TASK_IN_PROGRESS, pdu);
      return;
    }
    const err =
      this.checkImmediateData(pdu) ??
      (pdu.write && pdu.expectedDataTransferLength > 0 && !pdu.final && this.params.initialR2T
        ? 'unsolicited Data-Out announced with InitialR2T=Yes'
        : null) ??
      (!pdu.final && !pdu.write ? 'F bit clear on a command without W bit' : null);
    if (err) {
      if (task) this.dropTask(task);
      this.conn.peerWarn('reject', { itt: pdu.initiatorTaskTag, err }, 'SCSI command rejected', this.log);
      this.reject(RejectReason.PROTOCOL_ERROR, pdu);
      return;
    }
    if (pdu.initiatorTaskTag === RESERVED_TAG) {
      this.reject(RejectReason.INVALID_PDU_FIELD, pdu);
      return;
    }
    const refusal = task ? null : this.writeRefusal(pdu);
    if (refusal) {
      this.conn.peerWarn(
        'reject',
        { itt: pdu.initiatorTaskTag, edtl: pdu.expectedDataTransferLength, status: refusal.status },
        'write refused: buffer limits',
        this.log,
      );
      this.failCommand(pdu.initiatorTaskTag, refusal);
      return;
    }
    if (!task) {
      task = this.createTask(pdu);
      if (task.buf && data && data.length > 0) data.copy(task.buf, 0);
    }
    task.state = 'data';
    this.recentlyAborted.delete(task.itt);
    this.solicit(task);
    this.maybeRun(task);
  }

  /** Send R2Ts (§11.8) for the solicited part, at most MaxOutstandingR2T at a time, each ≤ MaxBurstLength. */
  private solicit(task: Task): void {
    const p = this.params;
    while (task.buf && task.state === 'data' && task.nextR2TOffset < task.edtl && task.r2ts.size < p.maxOutstandingR2T) {
      const length = Math.min(p.maxBurstLength, task.edtl - task.nextR2TOffset);
      const r: R2TState = { ttt: this.allocTtt(), offset: task.nextR2TOffset, length, received: 0, nextDataSN: 0 };
      task.r2ts.set(r.ttt, r);
      task.nextR2TOffset += length;
      this.conn.sendPdu({
        opcode: Opcode.R2T,
        dataSegmentLength: 0,
        lun: task.pdu.lun,
        initiatorTaskTag: task.itt,
        targetTransferTag: r.ttt,
        statSN: this.conn.statSN,
        expCmdSN: this.window.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
        r2tSN: task.r2tSN++,
        bufferOffset: r.offset,
        desiredDataTransferLength: length,
      });
    }
  }

  /** §11.7: DataSN, Buffer Offset and length of a Data-Out against the task's state; null when it fits. */
  private checkDataOut(task: Task, pdu: DataOut): DataOutFault | null {
    const len = pdu.dataSegmentLength;
    if (!task.buf) return 'no-write-data';
    if (pdu.targetTransferTag === RESERVED_TAG) {
      if (pdu.dataSN !== task.unsolicitedDataSN) return 'unsolicited-data-sn';
      if (pdu.bufferOffset !== task.unsolicitedReceived) return 'unsolicited-buffer-offset';
      if (pdu.bufferOffset + len > task.unsolicitedEnd) return 'beyond-first-burst';
      return null;
    }
    const r = task.r2ts.get(pdu.targetTransferTag);
    if (!r) return 'unknown-ttt';
    if (pdu.dataSN !== r.nextDataSN) return 'data-sn';
    if (pdu.bufferOffset !== r.offset + r.received) return 'buffer-offset';
    if (r.received + len > r.length) return 'beyond-desired-length';
    return null;
  }

  private onDataOut(pdu: DataOut, data: Buffer): void {
    const task = this.tasks.get(pdu.initiatorTaskTag);
    if (!task || task.state === 'executing' || task.state === 'aborted') {
      if (this.recentlyAborted.has(pdu.initiatorTaskTag)) return; // §11.5.1: data of an aborted task is discarded
      this.reject(RejectReason.INVALID_PDU_FIELD, pdu);
      return;
    }
    const fault = this.checkDataOut(task, pdu);
    if (fault) {
      // ERL 0 has no within-command recovery (§7.1.5): the command ends with CHECK CONDITION, ABORTED
      // COMMAND (§11.4.7.2) and its remaining Data-Out is discarded. The connection stays up.
      this.conn.peerWarn(
        'reject',
        {
          itt: task.itt,
          fault,
          ttt: pdu.targetTransferTag,
          dataSN: pdu.dataSN,
          bufferOffset: pdu.bufferOffset,
          length: pdu.dataSegmentLength,
        },
        'Data-Out sequence error, command aborted',
        this.log,
      );
      this.failTask(task, DATA_OUT_SENSE[fault]);
      return;
    }
    const len = pdu.dataSegmentLength;
    // The data normally already landed in task.buf through dataSink(); copy only when it was gathered.
    const target = task.buf!.subarray(pdu.bufferOffset, pdu.bufferOffset + len);
    if (data.buffer !== target.buffer || data.byteOffset !== target.byteOffset) data.copy(task.buf!, pdu.bufferOffset, 0, len);
    task.received += len;
    if (pdu.targetTransferTag === RESERVED_TAG) {
      task.unsolicitedDataSN++;
      task.unsolicitedReceived += len;
    } else {
      const r = task.r2ts.get(pdu.targetTransferTag)!;
      r.nextDataSN++;
      r.received += len;
      if (r.received === r.length) {
        task.r2ts.delete(r.ttt);
        this.solicit(task);
      }
    }
    this.maybeRun(task);
  }

  /** End a task in the transport with CHECK CONDITION / ABORTED COMMAND and the given additional sense. */
  private failTask(task: Task, sense: AdditionalSense): void {
    this.dropTask(task);
    task.state = 'aborted';
    this.failCommand(task.itt, checkCondition(SenseKey.ABORTED_COMMAND, sense));
  }

  /** Answer a command the transport ends itself with a response built by src/scsi/sense.ts. Later Data-Out for it is discarded. */
  private failCommand(itt: number, resp: ScsiResponse): void {
    this.rememberAborted(itt);
    const senseData = senseSegment(resp.sense);
    this.conn.sendPdu(
      {
        opcode: Opcode.SCSI_RESPONSE,
        dataSegmentLength: senseData?.length ?? 0,
        bidiOverflow: false,
        bidiUnderflow: false,
        overflow: false,
        underflow: false,
        response: 0x00,
        status: resp.status,
        initiatorTaskTag: itt,
        snackTag: 0,
        statSN: this.conn.nextStatSN(),
        expCmdSN: this.window.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
        expDataSN: 0,
        bidiReadResidualCount: 0,
        residualCount: 0,
      },
      senseData,
    );
  }

  private maybeRun(task: Task): void {
    if (task.state !== 'data') return;
    const need = task.buf ? task.edtl : 0;
    if (task.received < need) return;
    task.state = 'executing';
    const p = task.pdu;
    const cmd: ScsiCommand = {
      nexus: this.nexus!,
      lun: task.lun,
      taskTag: task.itt,
      attribute: ATTRIBUTES[p.attr] ?? 'simple',
      cdb: p.cdb,
      expectedDataLength: task.edtl,
      read: p.read,
      write: p.write,
      dataOut: task.buf,
      dataIn: readBuffers,
    };
    const device = this.opts.target!.device;
    let result: ScsiResponse | null | Promise<ScsiResponse | null>;
    try {
      result = device.execute(cmd);
    } catch (e) {
      result = Promise.reject(e instanceof Error ? e : new Error(errText(e)));
    }
    if (!(result instanceof Promise)) {
      // Finished at once (a READ from the page cache, a small write): Data-In and status go out now.
      const resp = result;
      this.guard(() => this.complete(task, resp));
      return;
    }
    result.then(
      (resp) => this.guard(() => this.complete(task, resp)),
      (e: unknown) => {
        this.log.error({ itt: task.itt, err: errText(e) }, 'SCSI device failed a command');
        // §11.4.3 response 0x01: target failure.
        this.guard(() => this.complete(task, null, true));
      },
    );
  }

  /** Send Data-In (§11.7) and status (§11.4) for a finished command. */
  private complete(task: Task, resp: ScsiResponse | null, targetFailure = false): void {
    this.dropTask(task);
    // The device is done with the Data-Out buffer (and no Data-Out can land in it any more: the task ran
    // only after all of it arrived). Reuse it unless the response carries a view of it.
    // (A write's response has no data: then no `.buffer` is read, a call into V8's C++ builtins.)
    if (task.buf && (!resp?.data || resp.data.buffer !== task.buf.buffer)) writeBuffers.give(task.buf);
    if (this.idleWaiters.length > 0) queueMicrotask(() => this.idleWaiters.forEach((w) => w()));
    if (this.ended || task.state === 'aborted') {
      if (resp?.data) readBuffers.give(resp.data);
      return;
    }
    if (!resp && !targetFailure) return; // aborted by task management: no response (§11.5.1)
    const c = this.conn;
    const p = this.params;
    const edtl = task.edtl;
    if (targetFailure || !resp) {
      c.sendPdu({
        opcode: Opcode.SCSI_RESPONSE,
        dataSegmentLength: 0,
        bidiOverflow: false,
        bidiUnderflow: false,
        overflow: false,
        underflow: false,
        response: 0x01,
        status: 0,
        initiatorTaskTag: task.itt,
        snackTag: 0,
        statSN: c.nextStatSN(),
        expCmdSN: this.window.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
        expDataSN: 0,
        bidiReadResidualCount: 0,
        residualCount: 0,
      });
      return;
    }
    // The pooled buffer itself where it fits (no view per command: see buffer-pool.ts give()).
    const readData = task.pdu.read && resp.data ? (resp.data.length <= edtl ? resp.data : resp.data.subarray(0, edtl)) : null;
    // §11.4.5 residuals: what the CDB asked for vs ExpectedDataTransferLength.
    const transferLength = resp.transferLength ?? (task.pdu.read && !task.pdu.write ? (resp.data?.length ?? 0) : edtl);
    const overflow = transferLength > edtl;
    const underflow = transferLength < edtl;
    const residual = overflow ? transferLength - edtl : underflow ? edtl - transferLength : 0;
    const collapse = resp.sense === null || resp.sense.length === 0;
    let dataSN = 0;
    if (readData && readData.length > 0) {
      let referenced = false;
      let statusSent = false;
      const seg = Math.max(512, p.maxXmitDataSegmentLength);
      for (let off = 0; off < readData.length; off += seg) {
        const n = Math.min(seg, readData.length - off);
        const last = off + n === readData.length;
        const burstEnd = (off + n) % p.maxBurstLength === 0;
        const withStatus = last && collapse;
        const byReference = c.sendPdu(
          {
            opcode: Opcode.SCSI_DATA_IN,
            dataSegmentLength: n,
            final: last || burstEnd,
            acknowledge: false,
            overflow: withStatus && overflow,
            underflow: withStatus && underflow,
            statusPresent: withStatus,
            status: withStatus ? resp.status : 0,
            lun: task.pdu.lun,
            initiatorTaskTag: task.itt,
            targetTransferTag: RESERVED_TAG,
            statSN: withStatus ? c.nextStatSN() : 0,
            expCmdSN: this.window.expCmdSN,
            maxCmdSN: this.maxCmdSN(),
            dataSN: dataSN++,
            bufferOffset: off,
            residualCount: withStatus ? residual : 0,
          },
          n === readData.length ? readData : readData.subarray(off, off + n),
        );
        referenced ||= byReference;
        statusSent = withStatus;
      }
      // The Data-In buffer goes back to its pool (if it came from one) once the socket has its bytes.
      if (referenced) c.afterWrite(() => readBuffers.give(readData));
      else readBuffers.give(readData);
      if (statusSent) return;
    } else if (resp.data) {
      readBuffers.give(resp.data);
    }
    const senseData = senseSegment(resp.sense);
    c.sendPdu(
      {
        opcode: Opcode.SCSI_RESPONSE,
        dataSegmentLength: senseData?.length ?? 0,
        bidiOverflow: false,
        bidiUnderflow: false,
        overflow,
        underflow,
        response: 0x00,
        status: resp.status,
        initiatorTaskTag: task.itt,
        snackTag: 0,
        statSN: c.nextStatSN(),
        expCmdSN: this.window.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
        expDataSN: dataSN + task.r2tSN,
        bidiReadResidualCount: 0,
        residualCount: residual,
      },
      senseData,
    );
  }

  // ------------------------------------------------------------ task management (§11.5, §11.6)

  /** Drop transport-held tasks (waiting for data) that match; returns how many. */
  abortPending(lun: number | null, filter: (t: Task) => boolean = () => true): number {
    let n = 0;
    for (const t of [...this.tasks.values()]) {
      if (t.state !== 'executing' && (lun === null || t.lun === lun) && filter(t)) {
        t.state = 'aborted';
        this.dropTask(t);
        this.rememberAborted(t.itt);
        n++;
      }
    }
    return n;
  }

  private rememberAborted(itt: number): void {
    this.recentlyAborted.add(itt);
    if (this.recentlyAborted.size > 1024) {
      const first = this.recentlyAborted.values().next().value;
      if (first !== undefined) this.recentlyAborted.delete(first);
    }
  }

  private async onTaskManagement(pdu: TaskMgmtRequest): Promise<void> {
    const fn = TMF_FUNCTIONS[pdu.function];
    const lun = decodeLun(pdu.lun);
    let result: TaskManagementResult;
    try {
      result = await this.taskManagement(pdu, fn, lun);
    } catch (e) {
      this.log.error({ err: errText(e), fn }, 'task management failed');
      result = 'function-rejected';
    }
    if (this.ended) return;
    this.conn.sendPdu({
      opcode: Opcode.TASK_MGMT_RESPONSE,
      dataSegmentLength: 0,
      response: TMF_RESPONSE[result],
      initiatorTaskTag: pdu.initiatorTaskTag,
      statSN: this.conn.nextStatSN(),
      expCmdSN: this.window.expCmdSN,
      maxCmdSN: this.maxCmdSN(),
    });
    this.log.info({ fn: fn ?? pdu.function, lun, result }, 'task management');
    if (fn === 'target-cold-reset' && result === 'function-complete' && this.opts.target) {
      // §11.5.1: a cold reset also ends every session of the target, after the response.
      for (const s of this.host.sessionsOfTarget(this.opts.target.iqn)) s.conn.endAfterFlush('target cold reset');
    }
  }

  private async taskManagement(pdu: TaskMgmtRequest, fn: TaskManagementFunction | undefined, lun: number): Promise<TaskManagementResult> {
    if (pdu.function === 8) return 'reassignment-not-supported'; // TASK REASSIGN needs ERL 2
    if (!fn) return 'function-not-supported';
    if (!this.opts.target || !this.nexus) return 'function-rejected';
    const device = this.opts.target.device;
    switch (fn) {
      case 'abort-task': {
        const t = this.tasks.get(pdu.referencedTaskTag);
        if (!t) {
          // §11.5.1: unknown task: complete if its CmdSN is within the window (it may still arrive), else does not exist.
          if (serialLt(pdu.refCmdSN, this.window.expCmdSN) || !serialLt(pdu.refCmdSN, pdu.cmdSN)) return 'task-does-not-exist';
          return 'function-complete';
        }
        if (t.state !== 'executing') {
          this.abortPending(null, (x) => x === t);
          return 'function-complete';
        }
        return device.taskManagement('abort-task', this.nexus, t.lun, t.itt);
      }
      case 'abort-task-set':
      case 'clear-task-set':
      case 'clear-aca': {
        if (fn !== 'clear-aca') this.abortPending(lun);
        return device.taskManagement(fn, this.nexus, lun);
      }
      case 'logical-unit-reset':
        for (const s of this.host.sessionsOfTarget(this.opts.target.iqn)) s.abortPending(lun);
        return device.taskManagement(fn, this.nexus, lun);
      case 'target-warm-reset':
      case 'target-cold-reset':
        for (const s of this.host.sessionsOfTarget(this.opts.target.iqn)) s.abortPending(null);
        return device.taskManagement(fn, this.nexus, lun);
    }
  }

  // ------------------------------------------------------------ text (§11.10, §11.11): SendTargets and FFP keys

  private onText(pdu: TextRequest, data: Buffer): void {
    const c = this.conn;
    const step = this.text.step(
      pdu,
      data,
      (pairs) => this.answerText(pairs),
      () => this.params.maxXmitDataSegmentLength,
    );
    if (step.kind === 'reject') {
      this.reject(step.reason, pdu);
      return;
    }
    c.sendPdu(
      {
        opcode: Opcode.TEXT_RESPONSE,
        dataSegmentLength: step.payload.length,
        final: step.final,
        continue: step.continue,
        lun: pdu.lun,
        initiatorTaskTag: pdu.initiatorTaskTag,
        targetTransferTag: step.ttt,
        statSN: c.nextStatSN(),
        expCmdSN: this.window.expCmdSN,
        maxCmdSN: this.maxCmdSN(),
      },
      step.payload,
    );
  }

  /** The meaning of one whole text request (SendTargets §13.3, FFP keys §13), or null to refuse it. */
  private answerText(pairs: TextPair[]): TextPair[] | null {
    // §13.3: SendTargets=All, =<iSCSI name> or empty. A request with a malformed SendTargets value or
    // without any key we know is refused with a Reject (as LIO does; libiscsi's iSCSISendTargets tests it).
    const known = pairs.some((p) => p.key === 'SendTargets' || this.ffpNegotiator.knows(p.key));
    const badValue = pairs.some((p) => p.key === 'SendTargets' && !/^(?:All|(?:iqn|eui|naa)\..+)?$/.test(p.value));
    if (!known || badValue) {
      this.conn.peerWarn('reject', { keys: pairs.slice(0, 16).map((p) => p.key.slice(0, 64)) }, 'text request refused', this.log);
      return null;
    }
    const response: TextPair[] = [];
    const rest: TextPair[] = [];
    for (const p of pairs) {
      if (p.key === 'SendTargets') {
        response.push(
          ...sendTargets(this.host.registry, {
            initiatorName: this.opts.initiatorName,
            remoteAddress: this.conn.remoteAddress,
            localAddress: this.conn.localAddress,
            value: p.value,
            sessionTarget: this.opts.type === 'Normal' ? (this.opts.target?.iqn ?? null) : null,
          }),
        );
      } else {
        rest.push(p);
      }
    }
    if (rest.length > 0) {
      const neg = this.ffpNegotiator.negotiate(rest, 'ffp');
      response.push(...neg.response);
      const mrdsl = rest.find((p) => p.key === 'MaxRecvDataSegmentLength');
      if (mrdsl && neg.response.every((r) => r.key !== 'MaxRecvDataSegmentLength')) {
        this.opts.params.maxXmitDataSegmentLength = this.ffpNegotiator.params.maxXmitDataSegmentLength;
      }
    }
    return response;
  }

  // ------------------------------------------------------------ logout (§11.14, §11.15)

  /** Resolves when no command is executing in the device (or after timeoutMs). */
  private quiesce(timeoutMs: number): Promise<void> {
    const busy = [...this.tasks.values()].some((t) => t.state === 'executing');
    if (!busy) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, timeoutMs);
      t.unref();
      const waiter = (): void => {
        if (![...this.tasks.values()].some((x) => x.state === 'executing')) done();
      };
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.idleWaiters.push(waiter);
    });
  }

  private idleWaiters: Array<() => void> = [];

  private onLogout(pdu: LogoutRequest): void {
    // §11.14: commands still running finish (their responses go first), commands waiting for data
    // that will never come are dropped; then the Logout Response.
    const closing = pdu.reasonCode === 0 || (pdu.reasonCode === 1 && pdu.cid === this.opts.cid);
    if (!closing) {
      this.logoutNow(pdu);
      return;
    }
    this.abortPending(null);
    void this.quiesce(5000).then(() =>
      this.guard(() => {
        if (!this.ended) this.logoutNow(pdu);
      }),
    );
  }

  private logoutNow(pdu: LogoutRequest): void {
    let response = 0;
    if (pdu.reasonCode === 1 && pdu.cid !== this.opts.cid)
      response = 1; // CID not found
    else if (pdu.reasonCode === 2)
      response = 2; // connection recovery not supported (ERL 0)
    else if (pdu.reasonCode > 2) {
      this.reject(RejectReason.INVALID_PDU_FIELD, pdu);
      return;
    }
    this.conn.sendPdu({
      opcode: Opcode.LOGOUT_RESPONSE,
      dataSegmentLength: 0,
      response,
      initiatorTaskTag: pdu.initiatorTaskTag,
      statSN: this.conn.nextStatSN(),
      expCmdSN: this.window.expCmdSN,
      maxCmdSN: this.maxCmdSN(),
      time2Wait: this.params.defaultTime2Wait,
      time2Retain: this.params.defaultTime2Retain,
    });
    if (response === 0) {
      this.logoutRequested = true;
      this.conn.endAfterFlush('logout');
    }
  }

  /**
   * Ask the initiator to log out (§11.9.1 AsyncEvent 1, Parameter3 = seconds it has to do so).
   * Resolves when the session has ended or the grace time passed.
   */
  requestLogout(graceMs: number): Promise<void> {
    if (this.ended) return Promise.resolve();
    this.conn.sendPdu({
      opcode: Opcode.ASYNC_MESSAGE,
      dataSegmentLength: 0,
      lun: 0n,
      statSN: this.conn.nextStatSN(),
      expCmdSN: this.window.expCmdSN,
      maxCmdSN: this.maxCmdSN(),
      asyncEvent: 1,
      asyncVCode: 0,
      parameter1: 0,
      parameter2: 0,
      parameter3: Math.max(1, Math.ceil(graceMs / 1000)),
    });
    return new Promise((resolve) => {
      const t = setTimeout(resolve, graceMs);
      t.unref();
      this.endWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private endWaiters: Array<() => void> = [];

  // ------------------------------------------------------------ end

  /** End the session: abort tasks (device.nexusRemoved), stop timers, log once. */
  end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    if (this.pingTimer) clearInterval(this.pingTimer);
    for (const t of this.tasks.values()) t.state = 'aborted';
    this.tasks.clear();
    this.window.clear();
    this.pendingData.clear();
    if (this.nexus && this.opts.target) {
      try {
        this.opts.target.device.nexusRemoved(this.nexus);
      } catch (e) {
        this.log.error({ err: errText(e) }, 'nexusRemoved failed');
      }
    }
    this.log.info(
      {
        event: this.logoutRequested ? 'logout' : 'session-end',
        reason,
        remote: this.conn.remoteAddress,
        durationMs: Date.now() - this.startedAt,
        discovery: this.opts.type === 'Discovery',
      },
      this.logoutRequested ? 'iSCSI logout' : 'iSCSI session ended',
    );
    this.conn.close(reason);
    this.host.sessionEnded(this);
    for (const w of this.endWaiters.splice(0)) w();
  }
}
