// One logical unit: unit attention queues per I_T nexus (SPC-4 §5.14), the task set with per-task
// abort (SAM-5 §7), the reservation check (SPC-4 §5.13.1), and command dispatch through the opcode table.
import type { Logger } from '../log.js';
import type { BackingStore } from '../storage/types.js';
import { ioKindOf, lookupCommand, type CommandDescriptor } from './commands.js';
import { AbortedError, IoGate, TaskAbort, type AbortFlag } from './gate.js';
import type { CopyResult, DeviceView, LogicalUnitView } from './handler.js';
import { defaultModeState, type ModeState } from './mode.js';
import { createReservationManager } from './pr.js';
import {
  Asc,
  RESERVATION_CONFLICT,
  ScsiError,
  SenseKey,
  TASK_ABORTED,
  checkCondition,
  invalidOpcode,
  ioErrorToScsi,
  isSpaceAllocationFailure,
} from './sense.js';
import { IoKind, ScsiStatus } from './types.js';
import type {
  CommandObserver,
  SpaceObserver,
  ITNexus,
  LogicalUnitHooks,
  LogicalUnitIdentity,
  PersistentReservationHook,
  PersistentReservationSnapshot,
  ReservationManager,
  ScsiCommand,
  ScsiResponse,
  UnitAttention,
} from './types.js';

export interface LogicalUnitOptions {
  readonly identity: LogicalUnitIdentity;
  readonly store: BackingStore;
  readonly blockSize: number;
  readonly thinProvisioned: boolean;
  readonly readOnly: boolean;
  readonly prState?: PersistentReservationSnapshot;
  /** Makes each new persistent-reservation state durable before PERSISTENT RESERVE OUT answers. */
  readonly onPrChange?: PersistentReservationHook;
  /** Fed once per command answered (per-LU metrics). */
  readonly observer?: CommandObserver;
  /** Told of each command that failed for want of space (27/07). */
  readonly space?: SpaceObserver;
}

interface Task {
  readonly nexusKey: string;
  readonly taskTag: number;
  readonly controller: TaskAbort;
  /**
   * The command's run (it may reject). Waiters take settled(run): building that once per command, for
   * the rare waiter (ORDERED, task management, drain), cost a promise and a microtask per command.
   */
  run: Promise<unknown>;
}

const NOTHING_YET: Promise<unknown> = Promise.resolve();
const ignore = (): void => undefined;
/** Resolves once p has settled, whichever way. */
function settled(p: Promise<unknown>): Promise<void> {
  return p.then(ignore, ignore);
}

/** Most unit attentions kept per nexus; older ones collapse into the newest (SPC-4 §5.14 allows it). */
const MAX_UA_QUEUE = 16;

function sameUa(a: UnitAttention, b: UnitAttention): boolean {
  return a.asc === b.asc && a.ascq === b.ascq;
}

/** signal.aborted read now: an abort can arrive during any await (a direct read is narrowed by the type checker). */
function isAborted(signal: AbortFlag): boolean {
  return signal.aborted;
}

/** Never return more Data-In than ExpectedDataTransferLength (the rest is a residual overflow). */
export function clampToExpected(cmd: ScsiCommand, res: ScsiResponse): ScsiResponse {
  const d = res.data;
  if (!d || d.length <= cmd.expectedDataLength) return res;
  return { ...res, data: d.subarray(0, cmd.expectedDataLength), transferLength: res.transferLength ?? d.length };
}

export class LogicalUnit implements LogicalUnitView {
  readonly identity: LogicalUnitIdentity;
  readonly store: BackingStore;
  readonly blockSize: number;
  readonly thinProvisioned: boolean;
  readonly readOnly: boolean;
  readonly reservations: ReservationManager;
  /** Current mode parameters (shared by all I_T nexuses; nothing saveable). */
  mode: ModeState = defaultModeState();
  /** Writes share it; COMPARE AND WRITE / ORWRITE / quiesce take it exclusively. */
  readonly gate = new IoGate();

  #blocks: number;
  readonly #observer: CommandObserver | undefined;
  readonly #space: SpaceObserver | undefined;
  readonly #ua = new Map<string, UnitAttention[]>();
  readonly #nexuses = new Map<string, ITNexus>();
  /** Tasks by #taskKey(nexus, task tag). */
  readonly #tasks = new Map<number, Task>();
  /**
   * A small number per nexus key seen, so that a task's key is a number: a string key built per command
   * (`${nexusKey}#${tag}`, ~90 characters) was allocated and hashed on every command (callgrind,
   * docs/benchmarks.md). Entries stay for the LU's life: one per I_T nexus that ever sent a command.
   */
  readonly #nexusIds = new Map<string, number>();

  #taskKey(nexusKey: string, taskTag: number): number {
    let id = this.#nexusIds.get(nexusKey);
    if (id === undefined) {
      id = this.#nexusIds.size;
      this.#nexusIds.set(nexusKey, id);
    }
    // Task tags are 32-bit; ids stay far below 2^21, so the key is an exact integer.
    return id * 0x1_0000_0000 + taskTag;
  }
  /** Completed EXTENDED COPY lists by nexus and LIST IDENTIFIER (RECEIVE COPY RESULTS). */
  readonly #copyResults = new Map<string, Map<number, CopyResult>>();
  /** Completion of the youngest ORDERED task still running. */
  #barrier: Promise<unknown> | null = null;

  constructor(
    readonly lun: number,
    opts: LogicalUnitOptions,
    private readonly device: DeviceView,
    readonly log: Logger,
  ) {
    if (opts.blockSize !== 512 && opts.blockSize !== 4096) {
      throw new Error(`block size must be 512 or 4096, got ${opts.blockSize}`);
    }
    this.identity = opts.identity;
    this.store = opts.store;
    this.blockSize = opts.blockSize;
    this.thinProvisioned = opts.thinProvisioned;
    this.readOnly = opts.readOnly;
    this.#observer = opts.observer;
    this.#space = opts.space;
    this.#blocks = Math.floor(opts.store.size() / opts.blockSize);
    const hooks: LogicalUnitHooks = {
      queueUnitAttention: (key, ua) => this.queueUnitAttention(key, ua),
      nexusKeys: () => [...this.#nexuses.keys()],
      abortTasksOf: (keys) => {
        const set = new Set(keys);
        for (const t of this.#tasks.values()) if (set.has(t.nexusKey)) t.controller.abort();
      },
    };
    this.reservations = createReservationManager(hooks, opts.prState, opts.onPrChange);
  }

  /** Number of logical blocks (capacity). */
  get blocks(): number {
    return this.#blocks;
  }

  /** Write protected: read-only LU or SWP set in the control mode page. */
  get writeProtected(): boolean {
    return this.readOnly || this.mode.swp;
  }

  /** After store.resize(): new capacity, CAPACITY DATA HAS CHANGED (2Ah/09h) to every I_T nexus (SPC-4 §5.14). */
  capacityChanged(): void {
    const blocks = Math.floor(this.store.size() / this.blockSize);
    if (blocks === this.#blocks) return;
    this.#blocks = blocks;
    this.queueUnitAttentionAll(Asc.CAPACITY_DATA_HAS_CHANGED);
    this.log.info({ lun: this.lun, blocks }, 'capacity changed');
  }

  /** Block new writes, wait for in-flight ones, flush. Call the returned function to resume. */
  async quiesce(): Promise<() => void> {
    const release = await this.gate.acquire(true);
    try {
      await this.store.flush();
    } catch (e) {
      release();
      throw e;
    }
    return release;
  }

  // ---- I_T nexus and unit attentions ----------------------------------------------------------------

  nexusAdded(n: ITNexus): void {
    this.#nexuses.set(n.key, n);
    this.#ua.set(n.key, [Asc.POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED]);
  }

  nexusRemoved(n: ITNexus): void {
    this.#copyResults.delete(n.key);
    void this.abortTasks((t) => t.nexusKey === n.key);
    this.#nexuses.delete(n.key);
    this.#ua.delete(n.key);
    this.reservations.nexusRemoved(n);
  }

  queueUnitAttention(nexusKey: string, ua: UnitAttention): void {
    const q = this.#ua.get(nexusKey);
    if (!q) {
      if (this.#nexuses.has(nexusKey)) this.#ua.set(nexusKey, [ua]);
      return;
    }
    if (q.some((u) => sameUa(u, ua))) return;
    q.push(ua);
    if (q.length > MAX_UA_QUEUE) q.shift();
  }

  queueUnitAttentionAll(ua: UnitAttention, exceptKey?: string): void {
    for (const key of this.#nexuses.keys()) if (key !== exceptKey) this.queueUnitAttention(key, ua);
  }

  /** Take the oldest pending unit attention of a nexus (REQUEST SENSE, or any command but INQUIRY/REPORT LUNS). */
  takeUnitAttention(nexusKey: string): UnitAttention | undefined {
    const q = this.#ua.get(nexusKey);
    return q && q.length > 0 ? q.shift() : undefined;
  }

  pendingUnitAttentions(nexusKey: string): readonly UnitAttention[] {
    return this.#ua.get(nexusKey) ?? [];
  }

  rememberCopyResult(nexusKey: string, listId: number, r: CopyResult): void {
    let m = this.#copyResults.get(nexusKey);
    if (!m) this.#copyResults.set(nexusKey, (m = new Map<number, CopyResult>()));
    m.delete(listId);
    m.set(listId, r);
    if (m.size > 16) m.delete(m.keys().next().value!);
  }

  copyResult(nexusKey: string, listId: number): CopyResult | undefined {
    return this.#copyResults.get(nexusKey)?.get(listId);
  }

  // ---- execution ----------------------------------------------------------------------------------

  /**
   * Run one command (ScsiTargetDevice.execute): the response at once when the command finished without
   * waiting (a READ from the page cache), else a promise of it. Never throws, never rejects for SCSI
   * errors (CHECK CONDITION responses); null when task management aborted it.
   */
  execute(cmd: ScsiCommand): ScsiResponse | null | Promise<ScsiResponse | null> {
    // performance.now() is a double (process.hrtime.bigint() would allocate a BigInt per command).
    const arrived = this.#observer ? performance.now() : 0;
    const nexusKey = cmd.nexus.key;
    if (!this.#nexuses.has(nexusKey)) this.nexusAdded(cmd.nexus); // a nexus we were not told about: treat as new
    const taskKey = this.#taskKey(nexusKey, cmd.taskTag);
    const controller = new TaskAbort();
    const task: Task = { nexusKey, taskTag: cmd.taskTag, controller, run: NOTHING_YET };
    const prior = this.#tasks.get(taskKey);
    // SAM-5 §8.6 task attributes: an ORDERED task starts after every older task has completed, and
    // younger SIMPLE tasks start after it; HEAD OF QUEUE starts at once. (Linux sends SIMPLE only.)
    let waitFor: Promise<unknown> | null = null;
    if (cmd.attribute === 'ordered') {
      const older: Promise<unknown>[] = [...this.#tasks.values()].map((t) => settled(t.run));
      if (this.#barrier) older.push(this.#barrier);
      waitFor = Promise.all(older);
    } else if (cmd.attribute !== 'head-of-queue' && this.#barrier) {
      waitFor = this.#barrier;
    }
    this.#tasks.set(taskKey, task);
    if (waitFor) {
      // An aborted task stops waiting for its turn at once.
      const abortedWait = new Promise<void>((resolve) => controller.addEventListener('abort', () => resolve()));
      waitFor = Promise.race([waitFor, abortedWait]);
    }
    const run = waitFor ? waitFor.then(() => this.#run(cmd, controller)) : this.#run(cmd, controller);
    // Finished at once (nothing to wait for, served without I/O): answered in this same call.
    if (!(run instanceof Promise)) return this.#finish(cmd, task, taskKey, prior, run, arrived);
    task.run = run;
    if (cmd.attribute === 'ordered') {
      const barrier = settled(run);
      this.#barrier = barrier;
      void barrier.then(() => {
        if (this.#barrier === barrier) this.#barrier = null;
      });
    }
    return run.then(
      (res) => this.#finish(cmd, task, taskKey, prior, res, arrived),
      (e: unknown) => {
        this.#untrack(task, taskKey, prior);
        throw e;
      },
    );
  }

  /** A command's end: its answer (null when aborted), its statistics, and its place in the task table freed. */
  #finish(cmd: ScsiCommand, task: Task, taskKey: number, prior: Task | undefined, res: ScsiResponse, arrived: number): ScsiResponse | null {
    try {
      const answer = task.controller.aborted ? null : res;
      if (this.#observer) this.#observe(this.#observer, cmd, answer, arrived);
      if (this.#space && answer?.status === ScsiStatus.CHECK_CONDITION && isSpaceAllocationFailure(answer.sense)) {
        this.#space.spaceAllocationFailed();
      }
      return answer;
    } finally {
      this.#untrack(task, taskKey, prior);
    }
  }

  #untrack(task: Task, taskKey: number, prior: Task | undefined): void {
    if (this.#tasks.get(taskKey) === task) {
      if (prior && prior !== task) this.#tasks.set(taskKey, prior);
      else this.#tasks.delete(taskKey);
    }
  }

  /** One command's statistics: its kind from the opcode table, the bytes it moved, its latency and outcome. */
  #observe(observer: CommandObserver, cmd: ScsiCommand, res: ScsiResponse | null, arrived: number): void {
    const kind = ioKindOf(cmd.cdb);
    const ok = res !== null && (res.status === ScsiStatus.GOOD || res.status === ScsiStatus.CONDITION_MET);
    let bytes = 0;
    if (ok && kind === IoKind.Read) bytes = res.data?.length ?? 0;
    else if (ok && kind === IoKind.Write) bytes = cmd.dataOut?.length ?? 0;
    observer.record(kind, bytes, (performance.now() - arrived) / 1000, ok);
  }

  /** Not async: returning #dispatch's promise from an async function would cost a promise and three microtask hops per command. */
  #run(cmd: ScsiCommand, signal: AbortFlag): ScsiResponse | Promise<ScsiResponse> {
    return this.log.isLevelEnabled('debug') ? this.#runLogged(cmd, signal) : this.#dispatch(cmd, signal);
  }

  async #runLogged(cmd: ScsiCommand, signal: AbortFlag): Promise<ScsiResponse> {
    const started = process.hrtime.bigint();
    const res = await this.#dispatch(cmd, signal);
    const us = Number(process.hrtime.bigint() - started) / 1000;
    this.log.debug({ opcode: cmd.cdb[0], itt: cmd.taskTag, status: res.status, sense: res.sense?.toString('hex'), us }, 'scsi command');
    return res;
  }

  /** Look the command up and run its handler: synchronous when the handler was (see execute). */
  #dispatch(cmd: ScsiCommand, signal: AbortFlag): ScsiResponse | Promise<ScsiResponse> {
    if (signal.aborted) return TASK_ABORTED;
    const entry: CommandDescriptor | 'invalid-service-action' | undefined = lookupCommand(cmd.cdb, this);
    // SPC-4 §5.14: a pending unit attention is reported for any command but INQUIRY, REPORT LUNS and
    // REQUEST SENSE (which reports it as its parameter data).
    if (!(typeof entry === 'object' && entry.unitAttentionExempt)) {
      const ua = this.takeUnitAttention(cmd.nexus.key);
      if (ua) return checkCondition(SenseKey.UNIT_ATTENTION, ua);
    }
    try {
      if (entry === undefined) throw invalidOpcode();
      if (entry === 'invalid-service-action')
        throw new ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, { field: { cdb: true, byte: 1, bit: 4 } });
      if (cmd.cdb.length < entry.cdbUsage.length) throw invalidOpcode();
      if (this.reservations.conflicts(cmd.nexus, cmd.cdb)) return RESERVATION_CONFLICT;
      const res = entry.handler({ cmd, lu: this, device: this.device, signal });
      if (!(res instanceof Promise)) return clampToExpected(cmd, res);
      return res.then(
        (r) => clampToExpected(cmd, r),
        (e: unknown) => this.#failed(cmd, entry, signal, e),
      );
    } catch (e) {
      return this.#failed(cmd, entry, signal, e);
    }
  }

  /** What a command that threw (or whose handler rejected) answers: the one mapping of errors to responses. */
  #failed(cmd: ScsiCommand, entry: CommandDescriptor | 'invalid-service-action' | undefined, signal: AbortFlag, e: unknown): ScsiResponse {
    if (e instanceof ScsiError) return e.toResponse();
    if (e instanceof AbortedError || isAborted(signal)) return TASK_ABORTED;
    const writing = typeof entry === 'object' && entry.writes === true;
    this.log.error({ lun: this.lun, opcode: cmd.cdb[0], err: e }, 'command failed');
    return ioErrorToScsi(e, writing).toResponse();
  }

  // ---- task management ------------------------------------------------------------------------------

  /** Abort matching tasks and wait until each has stopped touching the medium. Returns how many. */
  abortTasks(match: (t: Task) => boolean): Promise<number> {
    const victims = [...this.#tasks.values()].filter(match);
    for (const t of victims) t.controller.abort();
    return Promise.all(victims.map((t) => settled(t.run))).then(() => victims.length);
  }

  /** ABORT TASK (SAM-5 §7.2). */
  async abortTask(nexusKey: string, taskTag: number): Promise<boolean> {
    const t = this.#tasks.get(this.#taskKey(nexusKey, taskTag));
    if (!t) return false;
    await this.abortTasks((x) => x === t);
    return true;
  }

  /** ABORT TASK SET (SAM-5 §7.3): the tasks of this I_T nexus. */
  async abortTaskSet(nexusKey: string): Promise<void> {
    await this.abortTasks((t) => t.nexusKey === nexusKey);
  }

  /** CLEAR TASK SET (SAM-5 §7.5): every task; other nexuses that lost tasks get COMMANDS CLEARED BY ANOTHER INITIATOR. */
  async clearTaskSet(nexusKey: string): Promise<void> {
    const others = new Set([...this.#tasks.values()].map((t) => t.nexusKey).filter((k) => k !== nexusKey));
    await this.abortTasks(() => true);
    for (const k of others) this.queueUnitAttention(k, Asc.COMMANDS_CLEARED_BY_ANOTHER_INITIATOR);
  }

  /**
   * LOGICAL UNIT RESET (SAM-5 §7.7): abort every task, release SPC-2 reservations and establish
   * BUS DEVICE RESET FUNCTION OCCURRED for every I_T nexus, the requesting one included.
   */
  async reset(ua: UnitAttention = Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED): Promise<void> {
    await this.abortTasks(() => true);
    this.reservations.reset();
    this.queueUnitAttentionAll(ua);
  }

  /** Tasks in the task set (for tests and diagnostics). */
  taskCount(): number {
    return this.#tasks.size;
  }

  /** Wait for every task to finish (device close). */
  async drain(): Promise<void> {
    await Promise.all([...this.#tasks.values()].map((t) => settled(t.run)));
  }
}
