// The SCSI target device of one iSCSI target: its LUN inventory and task router (SAM-5 §4.6).
import { componentLogger } from '../log.js';
import type { BackingStore } from '../storage/types.js';
import { commandFor } from './commands.js';
import type { DeviceView } from './handler.js';
import { LogicalUnit } from './lu.js';
import { Asc, ScsiError, SenseKey, checkCondition } from './sense.js';
import type {
  CommandObserver,
  SpaceObserver,
  ITNexus,
  LogicalUnitIdentity,
  PersistentReservationHook,
  PersistentReservationSnapshot,
  ScsiCommand,
  ScsiResponse,
  ScsiTargetDevice,
  TaskManagementFunction,
  TaskManagementResult,
} from './types.js';

export { LogicalUnit } from './lu.js';

export interface LogicalUnitConfig {
  identity: LogicalUnitIdentity;
  store: BackingStore;
  /** 512 (default) or 4096. */
  blockSize?: number;
  thinProvisioned: boolean;
  readOnly?: boolean;
  prState?: PersistentReservationSnapshot;
  /** Makes each new persistent-reservation state durable before PERSISTENT RESERVE OUT answers. */
  onPrChange?: PersistentReservationHook;
  /** Per-LU statistics, fed once per command. */
  observer?: CommandObserver;
  /** Told of each command that failed for want of space (27/07). */
  space?: SpaceObserver;
}

export interface TargetDevice extends ScsiTargetDevice {
  logicalUnit(lun: number): LogicalUnit | undefined;
  /** Wait for in-flight commands, then flush every LU. Stores stay open: their owner closes them. */
  close(): Promise<void>;
}

export function createTargetDevice(opts: {
  luns: ReadonlyMap<number, LogicalUnitConfig>;
  /** Relative target port ids (= TPGTs). */
  targetPorts: readonly number[];
}): TargetDevice {
  const log = componentLogger('scsi');
  const lunNumbers = [...opts.luns.keys()].sort((a, b) => a - b);
  for (const n of lunNumbers) {
    if (!Number.isInteger(n) || n < 0 || n > 16383) throw new RangeError(`LUN ${n} out of range 0..16383`);
  }
  const units = new Map<number, LogicalUnit>();
  const view: DeviceView = { luns: () => [...lunNumbers], logicalUnits: () => [...units.values()], targetPorts: [...opts.targetPorts] };
  for (const n of lunNumbers) {
    const c = opts.luns.get(n)!;
    const lu = new LogicalUnit(
      n,
      {
        identity: c.identity,
        store: c.store,
        blockSize: c.blockSize ?? 512,
        thinProvisioned: c.thinProvisioned,
        readOnly: c.readOnly ?? false,
        ...(c.prState ? { prState: c.prState } : {}),
        ...(c.onPrChange ? { onPrChange: c.onPrChange } : {}),
        ...(c.observer ? { observer: c.observer } : {}),
        ...(c.space ? { space: c.space } : {}),
      },
      view,
      log.child({ lun: n, naa: c.identity.naa }),
    );
    units.set(n, lu);
  }
  let closed = false;

  /** Commands to a LUN without a logical unit: the table entry's answer, else LOGICAL UNIT NOT SUPPORTED (SPC-4 §4.5.6). */
  function noSuchLun(cmd: ScsiCommand): ScsiResponse {
    try {
      const answer = commandFor(cmd.cdb)?.withoutLogicalUnit;
      return answer ? answer(cmd, lunNumbers) : checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED);
    } catch (e) {
      if (e instanceof ScsiError) return e.toResponse();
      throw e;
    }
  }

  const device: TargetDevice = {
    luns: () => [...lunNumbers],

    logicalUnit: (lun) => units.get(lun),

    // Not async: an async function returning the LU's promise would add a promise and three microtask
    // hops to every command (the resolve-thenable job), measured in docs/benchmarks.md.
    execute(cmd) {
      const lu = units.get(cmd.lun);
      if (lu && !closed) return lu.execute(cmd);
      try {
        return noSuchLun(cmd);
      } catch (e) {
        return Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
    },

    async taskManagement(fn: TaskManagementFunction, nexus: ITNexus, lun: number, refTaskTag?: number): Promise<TaskManagementResult> {
      const started = Date.now();
      const lu = units.get(lun);
      let result: TaskManagementResult;
      switch (fn) {
        case 'abort-task':
          if (!lu) result = 'lun-does-not-exist';
          else if (refTaskTag === undefined) result = 'function-rejected';
          else result = (await lu.abortTask(nexus.key, refTaskTag)) ? 'function-complete' : 'task-does-not-exist';
          break;
        case 'abort-task-set':
          if (!lu) result = 'lun-does-not-exist';
          else {
            await lu.abortTaskSet(nexus.key);
            result = 'function-complete';
          }
          break;
        case 'clear-task-set':
          if (!lu) result = 'lun-does-not-exist';
          else {
            await lu.clearTaskSet(nexus.key);
            result = 'function-complete';
          }
          break;
        case 'logical-unit-reset':
          if (!lu) result = 'lun-does-not-exist';
          else {
            await lu.reset();
            result = 'function-complete';
          }
          break;
        case 'target-warm-reset':
          // SAM-5 §7.8 / RFC 7143 §11.5.1: a logical unit reset of every LU.
          await Promise.all([...units.values()].map((u) => u.reset()));
          result = 'function-complete';
          break;
        case 'target-cold-reset':
          // Also a power-on for every LU; the transport closes every connection afterwards.
          await Promise.all([...units.values()].map((u) => u.reset(Asc.POWER_ON_OCCURRED)));
          result = 'function-complete';
          break;
        case 'clear-aca':
          result = 'function-not-supported'; // NACA is not supported (control byte NACA bit unused)
          break;
      }
      log.info({ tmf: fn, lun, refTaskTag, initiator: nexus.initiatorPortName, result, ms: Date.now() - started }, 'task management');
      return result;
    },

    nexusAdded(nexus) {
      for (const u of units.values()) u.nexusAdded(nexus);
    },

    nexusRemoved(nexus) {
      for (const u of units.values()) u.nexusRemoved(nexus);
    },

    async close() {
      closed = true;
      await Promise.all([...units.values()].map((u) => u.drain()));
      await Promise.all(
        [...units.values()].map((u) => u.store.flush().catch((err: unknown) => log.error({ lun: u.lun, err }, 'flush on close failed'))),
      );
    },
  };
  return device;
}
