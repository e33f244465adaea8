// Reservations of one logical unit: SPC-4 persistent reservations (PERSISTENT RESERVE IN §6.15,
// PERSISTENT RESERVE OUT §6.16, model §5.13), SPC-2 RESERVE/RELEASE (SPC-2 §7.21, §7.17) with the
// compatible reservation handling exceptions of SPC-4 §5.13.3 (CRH=1), and the command access rules
// of SPC-4 §5.13.1 Table 55 / SBC-3 §4.17 Table 13, read from each command's entry in the opcode table
// (commands.ts).
//
// Durability: a PERSISTENT RESERVE OUT that changes the state is computed on the side, handed to the
// PR-change hook, and committed only when the hook's promise resolves; when it rejects the change is
// discarded and the command ends with CHECK CONDITION. Commands that change reservations (PERSISTENT
// RESERVE OUT, RESERVE, RELEASE) run one at a time per LU, so a discarded change can never undo another
// command's. Every other command keeps flowing meanwhile and sees the committed state: the reservation
// check (conflicts()) and PERSISTENT RESERVE IN answer from the old state until the new one is durable,
// then from the new one — never from a state that may still be refused. A PERSISTENT RESERVE OUT thus
// takes effect at one instant between its arrival and its GOOD status (SAM-5 leaves concurrent commands
// unordered); the unit attentions and task aborts it causes happen at that instant too.
//
// Hand-written: no npm package implements a SCSI device server. This module never touches a socket,
// a task set or a backing store; it talks to its logical unit only through LogicalUnitHooks.

import { allowedUnderReserve, reservationClass } from './commands.js';
import { GOOD, allocated } from './respond.js';
import {
  Asc,
  RESERVATION_CONFLICT,
  SenseKey,
  TASK_ABORTED,
  checkCondition,
  invalidFieldInCdb,
  invalidFieldInParameterList,
  parameterListLengthError,
} from './sense.js';
import type {
  ITNexus,
  LogicalUnitHooks,
  PersistentReservationHook,
  PersistentReservationSnapshot,
  ReservationManager,
  ScsiResponse,
  UnitAttention,
} from './types.js';

// ---------------------------------------------------------------------------------------------
// Codes from the specs

/** The SPC-2 reservation commands, decoded here (SPC-2 §7.21 RESERVE, §7.17 RELEASE). */
const Spc2Op = { RESERVE_6: 0x16, RELEASE_6: 0x17, RESERVE_10: 0x56, RELEASE_10: 0x57 } as const;

/** PERSISTENT RESERVE IN service actions (SPC-4 §6.15.1 Table 166). */
const PrIn = { READ_KEYS: 0, READ_RESERVATION: 1, REPORT_CAPABILITIES: 2, READ_FULL_STATUS: 3 } as const;

/** PERSISTENT RESERVE OUT service actions (SPC-4 §6.16.1 Table 173). */
const PrOut = {
  REGISTER: 0,
  RESERVE: 1,
  RELEASE: 2,
  CLEAR: 3,
  PREEMPT: 4,
  PREEMPT_AND_ABORT: 5,
  REGISTER_AND_IGNORE_EXISTING_KEY: 6,
  REGISTER_AND_MOVE: 7,
} as const;

/** Persistent reservation TYPE codes (SPC-4 §6.15.3.4 Table 169). */
export const PrType = {
  WRITE_EXCLUSIVE: 0x1,
  EXCLUSIVE_ACCESS: 0x3,
  WRITE_EXCLUSIVE_REGISTRANTS_ONLY: 0x5,
  EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: 0x6,
  WRITE_EXCLUSIVE_ALL_REGISTRANTS: 0x7,
  EXCLUSIVE_ACCESS_ALL_REGISTRANTS: 0x8,
} as const;

const LU_SCOPE = 0;

/**
 * Registrations one LU keeps at most. Each I_T nexus registers once, but REGISTER AND MOVE can name
 * initiator ports that never logged in, so the table needs a bound (SPC-4 §6.16.2:
 * INSUFFICIENT REGISTRATION RESOURCES).
 */
export const MAX_REGISTRATIONS = 4096;

/** iSCSI names are at most 223 bytes (RFC 7143 §4.2.7.1). */
const MAX_ISCSI_NAME = 223;

const ZERO_KEY = 0n;
const KEY_MASK = 0xffffffffffffffffn;

/** iSCSI protocol identifier (SPC-4 §7.6.1 Table 444). */
const PROTOCOL_ID_ISCSI = 0x5;

// ---------------------------------------------------------------------------------------------
// Responses (encoded by sense.ts)

const invalidCdb = (byte: number, bit?: number): ScsiResponse => invalidFieldInCdb(byte, bit).toResponse();
const invalidParam = (byte: number, bit?: number): ScsiResponse => invalidFieldInParameterList(byte, bit).toResponse();
const paramListLength = (): ScsiResponse => parameterListLengthError().toResponse();
const invalidRelease = (): ScsiResponse => checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_RELEASE_OF_PERSISTENT_RESERVATION);
const insufficientRegistrationResources = (): ScsiResponse =>
  checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.INSUFFICIENT_REGISTRATION_RESOURCES);

/**
 * The answer when the PR-change hook cannot make a new state durable. The change is discarded, so the
 * state is the one before the command and the initiator may retry. SPC-4 has no sense code for a device
 * server that cannot write its own nonvolatile state; HARDWARE ERROR (SPC-4 §4.5.6 Table 48: the device
 * server detected a nonrecoverable failure while performing the command) with INTERNAL TARGET FAILURE
 * (44h/00h, Annex D) says the target failed, not the request — an ILLEGAL REQUEST code such as
 * INSUFFICIENT REGISTRATION RESOURCES would tell the initiator its request was at fault. It is also the
 * answer for any other unexpected backing failure (ioErrorToScsi in sense.ts).
 */
const notPersisted = (): ScsiResponse => checkCondition(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE);

// ---------------------------------------------------------------------------------------------
// Small pure helpers

function isValidType(t: number): boolean {
  return t === 1 || t === 3 || (t >= 5 && t <= 8);
}

/** WE-AR / EA-AR: every registrant is a reservation holder (SPC-4 §5.13.10). */
export function isAllRegistrants(t: number): boolean {
  return t === PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS || t === PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
}

function isRegistrantsOnly(t: number): boolean {
  return t === PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY || t === PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY;
}

function isExclusiveAccess(t: number): boolean {
  return t === PrType.EXCLUSIVE_ACCESS || t === PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY || t === PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS;
}

function keyToHex(k: bigint): string {
  return k.toString(16).padStart(16, '0');
}

function hexToKey(h: string): bigint {
  if (!/^[0-9a-fA-F]{1,16}$/.test(h)) throw new Error(`invalid reservation key "${h}"`);
  return BigInt('0x' + h) & KEY_MASK;
}

/** Parse "<iqn>,i,0x<isid>" into its parts. */
function splitInitiatorPort(portName: string): { name: string; isid: string | null } {
  const m = /^(.*),i,0x([0-9a-fA-F]{12})$/.exec(portName);
  return m ? { name: m[1]!, isid: m[2]!.toLowerCase() } : { name: portName, isid: null };
}

/** Replace the TPGT of a target port name "<iqn>,t,0x<tpgt>" (relative target port id = TPGT here). */
function targetPortNameFor(sample: string, relativeTargetPortId: number): string {
  const m = /^(.*),t,0x[0-9a-fA-F]+$/.exec(sample);
  const iqn = m ? m[1]! : sample;
  return `${iqn},t,0x${relativeTargetPortId.toString(16).padStart(4, '0')}`;
}

/**
 * iSCSI TransportID (SPC-4 §7.6.4.6, Tables 454-455): format 01b,
 * the initiator port name "<iqn>,i,0x<ISID>" NUL-terminated, padded to a multiple of 4 bytes
 * (at least 20 bytes of name field).
 */
export function encodeIscsiTransportId(initiatorPortName: string): Buffer {
  const { isid } = splitInitiatorPort(initiatorPortName);
  const name = Buffer.from(initiatorPortName, 'utf8');
  let len = name.length + 1; // NUL
  len = Math.max(20, (len + 3) & ~3);
  const b = Buffer.alloc(4 + len);
  b[0] = ((isid !== null ? 0x1 : 0x0) << 6) | PROTOCOL_ID_ISCSI;
  b.writeUInt16BE(len, 2);
  name.copy(b, 4);
  return b;
}

/** Decoded iSCSI TransportID: format 00b (name only) or 01b (name + ISID). */
export interface IscsiTransportId {
  readonly name: string;
  /** 12 lower-case hex digits, or null for format 00b. */
  readonly isid: string | null;
  /** Bytes the TransportID occupies. */
  readonly length: number;
}

/** Decode an iSCSI TransportID (SPC-4 §7.6.4.6). Returns an error string when malformed. */
export function decodeIscsiTransportId(buf: Buffer): IscsiTransportId | string {
  if (buf.length < 4) return 'TransportID shorter than its header';
  const format = buf[0]! >> 6;
  const proto = buf[0]! & 0x0f;
  if (proto !== PROTOCOL_ID_ISCSI) return 'TransportID protocol identifier is not iSCSI';
  if (format !== 0 && format !== 1) return 'TransportID format code is not 00b or 01b';
  const addl = buf.readUInt16BE(2);
  if (addl % 4 !== 0 || addl < 4) return 'TransportID additional length is not a multiple of 4';
  if (4 + addl > buf.length) return 'TransportID longer than the parameter data';
  const field = buf.subarray(4, 4 + addl);
  const nul = field.indexOf(0);
  const text = field.subarray(0, nul < 0 ? field.length : nul).toString('utf8');
  if (text.length === 0) return 'TransportID has an empty iSCSI name';
  if (format === 0) {
    if (Buffer.byteLength(text) > MAX_ISCSI_NAME) return 'TransportID iSCSI name longer than 223 bytes';
    return { name: text, isid: null, length: 4 + addl };
  }
  // Format 01b: "<name>,i,0x<ISID>" (separator may be given in either case).
  const m = /^(.*),[iI],0[xX]([0-9a-fA-F]{12})$/.exec(text);
  if (!m) return 'TransportID format 01b lacks ",i,0x<ISID>"';
  if (m[1]!.length === 0 || Buffer.byteLength(m[1]!) > MAX_ISCSI_NAME) return 'TransportID iSCSI name empty or longer than 223 bytes';
  return { name: m[1]!, isid: m[2]!.toLowerCase(), length: 4 + addl };
}

// ---------------------------------------------------------------------------------------------
// The manager

// Registrations and reservations are immutable values: a change replaces them, so a copy of the map is
// a complete copy of the state (see PrState).
interface Registration {
  readonly initiatorPortName: string;
  /** "*" when registered with ALL_TG_PT=1 (every target port). */
  readonly targetPortName: string;
  /** 0 when registered with ALL_TG_PT=1. */
  readonly relativeTargetPortId: number;
  readonly key: bigint;
}

interface Reservation {
  /** Nexus key of the holder, or "*" for all-registrants types. */
  readonly holder: string;
  readonly type: number;
  readonly key: bigint;
}

/** The persistent reservation state of one LU (the SPC-2 reservation is not persistent and not part of it). */
interface PrState {
  readonly regs: Map<string, Registration>;
  readonly reservation: Reservation | null;
  readonly generation: number;
  readonly aptpl: boolean;
}

/** A PERSISTENT RESERVE OUT being computed: whether it changed the state, and its deferred hook calls. */
interface Transaction {
  changed: boolean;
  /** Unit attentions and task aborts, run when the change is committed. */
  readonly effects: Array<() => void>;
}

function regId(initiatorPortName: string, targetPortName: string): string {
  return `${initiatorPortName}|${targetPortName}`;
}

/**
 * Create the reservation state of one logical unit. `initial` restores a persisted snapshot;
 * `persist` gets a snapshot of every new persistent reservation state, and the change is committed only
 * when its promise resolves (see the opening comment). Without it changes are committed at once.
 */
export function createReservationManager(
  hooks: LogicalUnitHooks,
  initial?: PersistentReservationSnapshot,
  persist?: PersistentReservationHook,
): ReservationManager {
  /** Registrations keyed by "initiatorPortName|targetPortName" ("|*" for ALL_TG_PT). */
  let regs = new Map<string, Registration>();
  let reservation: Reservation | null = null;
  let generation = 0;
  let aptpl = false;
  /** SPC-2 reservation holder (nexus key), not persistent. */
  let spc2Holder: string | null = null;

  if (initial) {
    generation = initial.generation >>> 0;
    aptpl = initial.aptpl;
    for (const r of initial.registrations) {
      regs.set(regId(r.initiatorPortName, r.targetPortName), {
        initiatorPortName: r.initiatorPortName,
        targetPortName: r.targetPortName,
        relativeTargetPortId: r.relativeTargetPortId,
        key: hexToKey(r.key),
      });
    }
    if (initial.reservation) {
      if (!isValidType(initial.reservation.type)) {
        throw new Error(`invalid persistent reservation snapshot: reservation type ${initial.reservation.type}`);
      }
      reservation = {
        holder: initial.reservation.holder,
        type: initial.reservation.type,
        key: hexToKey(initial.reservation.key),
      };
    }
  }

  // --- state and transactions ---

  /** The PERSISTENT RESERVE OUT being computed (see transact()). */
  let txn: Transaction | null = null;
  /** Tail of the commands that change reservations (PERSISTENT RESERVE OUT, RESERVE, RELEASE). */
  let tail: Promise<unknown> = Promise.resolve();

  function current(): PrState {
    return { regs, reservation, generation, aptpl };
  }

  function restore(st: PrState): void {
    regs = st.regs;
    reservation = st.reservation;
    generation = st.generation;
    aptpl = st.aptpl;
  }

  function snapshotOf(st: PrState): PersistentReservationSnapshot {
    const r = st.reservation;
    return {
      generation: st.generation,
      aptpl: st.aptpl,
      registrations: [...st.regs.values()].map((x) => ({
        initiatorPortName: x.initiatorPortName,
        targetPortName: x.targetPortName,
        relativeTargetPortId: x.relativeTargetPortId,
        key: keyToHex(x.key),
      })),
      reservation: r ? { holder: r.holder, type: r.type, key: keyToHex(r.key) } : null,
    };
  }

  /** The committed state. */
  function snapshot(): PersistentReservationSnapshot {
    return snapshotOf(current());
  }

  function changed(): void {
    if (txn) txn.changed = true;
  }

  /** Run a hook call now, or when the change being computed is committed. */
  function effect(fn: () => void): void {
    if (txn) txn.effects.push(fn);
    else fn();
  }

  /** Run fn after every earlier command that changes reservations has completed. */
  function serialised(fn: () => ScsiResponse | Promise<ScsiResponse>): Promise<ScsiResponse> {
    const run = tail.then(fn);
    tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Compute a PERSISTENT RESERVE OUT on the live state, then put the committed state back at once (in
   * the same synchronous step, so no other command sees the new one), persist the new state and commit
   * it — state and effects together — only when that succeeded.
   */
  async function transact(op: () => ScsiResponse): Promise<ScsiResponse> {
    const before: PrState = { ...current(), regs: new Map(regs) };
    const t: Transaction = { changed: false, effects: [] };
    txn = t;
    let res: ScsiResponse;
    try {
      res = op();
    } catch (e) {
      restore(before);
      throw e;
    } finally {
      txn = null;
    }
    if (!t.changed) {
      for (const fn of t.effects) fn();
      return res;
    }
    const after = current();
    if (persist) {
      restore(before);
      try {
        await persist(snapshotOf(after));
      } catch {
        return notPersisted();
      }
      restore(after);
    }
    for (const fn of t.effects) fn();
    return res;
  }

  function bumpGeneration(): void {
    generation = (generation + 1) >>> 0;
  }

  /** The registration of this I_T nexus: its own, else its initiator port's ALL_TG_PT registration. */
  function regOf(nexus: ITNexus): Registration | undefined {
    return regs.get(nexus.key) ?? regs.get(regId(nexus.initiatorPortName, '*'));
  }

  function regIdOf(r: Registration): string {
    return regId(r.initiatorPortName, r.targetPortName);
  }

  /** The I_T nexus keys a registration stands for (one, or every known nexus of the port for ALL_TG_PT). */
  function nexusKeysOf(r: Registration): string[] {
    if (r.targetPortName !== '*') return [regIdOf(r)];
    const prefix = r.initiatorPortName + '|';
    return hooks.nexusKeys().filter((k) => k.startsWith(prefix));
  }

  /** Is this nexus a persistent reservation holder (SPC-4 §5.13.10)? */
  function isHolder(nexus: ITNexus): boolean {
    if (!reservation) return false;
    if (isAllRegistrants(reservation.type)) return regOf(nexus) !== undefined;
    return reservation.holder === nexus.key;
  }

  /** Unit attention to every I_T nexus of the given registrations. */
  function notify(registrations: Iterable<Registration>, ua: UnitAttention, except?: ITNexus): void {
    const sent = new Set<string>();
    for (const r of registrations) {
      for (const k of nexusKeysOf(r)) {
        if (except && k === except.key) continue;
        if (sent.has(k)) continue;
        sent.add(k);
        effect(() => hooks.queueUnitAttention(k, ua));
      }
    }
  }

  /**
   * Remove a registration with the side effects of SPC-4 §5.13.11.2.3 / §5.13.11.2.4: when it held a
   * non-all-registrants reservation, that reservation is released (and RESERVATIONS RELEASED goes to
   * the remaining registrants for registrants-only types); when the last registrant of an
   * all-registrants reservation goes, the reservation goes too.
   */
  function unregister(r: Registration, opts: { releaseUa: boolean }): void {
    regs.delete(regIdOf(r));
    if (!reservation) return;
    if (isAllRegistrants(reservation.type)) {
      if (regs.size === 0) reservation = null;
      return;
    }
    if (!holderRegistration()) {
      const type = reservation.type;
      reservation = null;
      if (opts.releaseUa && isRegistrantsOnly(type)) notify(regs.values(), Asc.RESERVATIONS_RELEASED);
    }
  }

  /** The registration of the holder of a non-all-registrants reservation. */
  function holderRegistration(): Registration | undefined {
    if (!reservation || reservation.holder === '*') return undefined;
    const h = reservation.holder;
    const bar = h.indexOf('|');
    return regs.get(h) ?? regs.get(regId(bar < 0 ? h : h.slice(0, bar), '*'));
  }

  function holderBelongsTo(holderNexusKey: string, r: Registration): boolean {
    return holderNexusKey.startsWith(r.initiatorPortName + '|');
  }

  // --- SPC-4 §5.13.1 Table 55 ---

  function spc2Conflicts(nexus: ITNexus, cdb: Buffer): boolean {
    return spc2Holder !== null && spc2Holder !== nexus.key && !allowedUnderReserve(cdb);
  }

  /**
   * SPC-4 §5.13.3 (CRH=1): RESERVE and RELEASE from a persistent reservation holder, or from a
   * registrant while a registrants-only or all-registrants reservation exists, complete with GOOD and
   * change nothing.
   */
  function spc2Exempt(nexus: ITNexus): boolean {
    if (!reservation) return false;
    if (isHolder(nexus)) return true;
    return regOf(nexus) !== undefined && (isRegistrantsOnly(reservation.type) || isAllRegistrants(reservation.type));
  }

  /** RESERVE(6)/(10) would get RESERVATION CONFLICT (SPC-2 §5.5.1, §7.21; SPC-4 §5.13.3). */
  function reserveConflicts(nexus: ITNexus): boolean {
    if (regs.size > 0) return !spc2Exempt(nexus);
    return spc2Holder !== null && spc2Holder !== nexus.key;
  }

  /** RELEASE(6)/(10) would get RESERVATION CONFLICT (SPC-2 §5.5.1; SPC-4 §5.13.3). */
  function releaseConflicts(nexus: ITNexus): boolean {
    if (regs.size > 0) return !spc2Exempt(nexus);
    return false;
  }

  function conflicts(nexus: ITNexus, cdb: Buffer): boolean {
    const op = cdb[0] ?? 0;
    if (op === Spc2Op.RESERVE_6 || op === Spc2Op.RESERVE_10) return reserveConflicts(nexus);
    if (op === Spc2Op.RELEASE_6 || op === Spc2Op.RELEASE_10) return releaseConflicts(nexus);
    if (spc2Conflicts(nexus, cdb)) return true;
    if (!reservation) return false;
    const access = reservationClass(cdb);
    if (access === 'allowed' || access === 'own') return false;
    if (isHolder(nexus)) return false;
    const registered = regOf(nexus) !== undefined;
    // Registrants-only types: a registered I_T nexus has full access (Table 55).
    if (registered && isRegistrantsOnly(reservation.type)) return false;
    if (isExclusiveAccess(reservation.type)) return true;
    return access === 'write';
  }

  // --- PERSISTENT RESERVE IN (SPC-4 §6.15) ---

  function persistentReserveIn(nexus: ITNexus, cdb: Buffer): ScsiResponse {
    if (cdb.length < 10) return invalidCdb(0);
    if (spc2Conflicts(nexus, cdb)) return RESERVATION_CONFLICT;
    const sa = cdb[1]! & 0x1f;
    const allocationLength = cdb.readUInt16BE(7);
    let data: Buffer;
    switch (sa) {
      case PrIn.READ_KEYS:
        data = readKeys();
        break;
      case PrIn.READ_RESERVATION:
        data = readReservation();
        break;
      case PrIn.REPORT_CAPABILITIES:
        data = reportCapabilities();
        break;
      case PrIn.READ_FULL_STATUS:
        data = readFullStatus();
        break;
      default:
        return invalidCdb(1, 4);
    }
    return allocated(data, allocationLength);
  }

  /** READ KEYS parameter data (SPC-4 §6.15.2). */
  function readKeys(): Buffer {
    const list = [...regs.values()];
    const b = Buffer.alloc(8 + 8 * list.length);
    b.writeUInt32BE(generation, 0);
    b.writeUInt32BE(8 * list.length, 4);
    list.forEach((r, i) => b.writeBigUInt64BE(r.key, 8 + 8 * i));
    return b;
  }

  /** READ RESERVATION parameter data (SPC-4 §6.15.3). */
  function readReservation(): Buffer {
    if (!reservation) {
      const b = Buffer.alloc(8);
      b.writeUInt32BE(generation, 0);
      return b;
    }
    const b = Buffer.alloc(24);
    b.writeUInt32BE(generation, 0);
    b.writeUInt32BE(16, 4);
    b.writeBigUInt64BE(isAllRegistrants(reservation.type) ? ZERO_KEY : reservation.key, 8);
    b[21] = (LU_SCOPE << 4) | reservation.type;
    return b;
  }

  /** REPORT CAPABILITIES parameter data (SPC-4 §6.15.4). */
  function reportCapabilities(): Buffer {
    const b = Buffer.alloc(8);
    b.writeUInt16BE(8, 0);
    // RLR_C=0, CRH=1 (SPC-4 §5.13.3 exceptions implemented), SIP_C=0 (SPEC_I_PT refused),
    // ATP_C=1 (ALL_TG_PT supported), PTPL_C=1.
    b[2] = 0x10 | 0x04 | 0x01;
    // TMV=1; ALLOW COMMANDS=001b (TEST UNIT READY allowed through WE and EA); PTPL_A.
    b[3] = 0x80 | (0x1 << 4) | (aptpl ? 0x01 : 0x00);
    // PERSISTENT RESERVATION TYPE MASK: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX / EX_AC_AR.
    b[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
    b[5] = 0x01;
    return b;
  }

  /** READ FULL STATUS parameter data (SPC-4 §6.15.5). */
  function readFullStatus(): Buffer {
    const descriptors: Buffer[] = [];
    for (const r of regs.values()) {
      const tid = encodeIscsiTransportId(r.initiatorPortName);
      const d = Buffer.alloc(24 + tid.length);
      d.writeBigUInt64BE(r.key, 0);
      const allTgPt = r.targetPortName === '*';
      let holder = false;
      if (reservation) {
        holder = isAllRegistrants(reservation.type)
          ? true
          : reservation.holder === regIdOf(r) || (allTgPt && holderBelongsTo(reservation.holder, r));
      }
      d[12] = (allTgPt ? 0x02 : 0) | (holder ? 0x01 : 0);
      if (holder && reservation) d[13] = (LU_SCOPE << 4) | reservation.type;
      d.writeUInt16BE(allTgPt ? 0 : r.relativeTargetPortId, 18);
      d.writeUInt32BE(tid.length, 20);
      tid.copy(d, 24);
      descriptors.push(d);
    }
    const body = Buffer.concat(descriptors);
    const head = Buffer.alloc(8);
    head.writeUInt32BE(generation, 0);
    head.writeUInt32BE(body.length, 4);
    return Buffer.concat([head, body]);
  }

  // --- PERSISTENT RESERVE OUT (SPC-4 §6.16) ---

  function persistentReserveOut(
    nexus: ITNexus,
    cdb: Buffer,
    dataOut: Buffer | null,
    signal?: { readonly aborted: boolean },
  ): Promise<ScsiResponse> {
    // An aborted command that is still waiting for its turn never runs (SAM-5 §7.2).
    return serialised(() => (signal?.aborted ? TASK_ABORTED : transact(() => prOut(nexus, cdb, dataOut))));
  }

  function prOut(nexus: ITNexus, cdb: Buffer, dataOut: Buffer | null): ScsiResponse {
    if (cdb.length < 10) return invalidCdb(0);
    if (spc2Conflicts(nexus, cdb)) return RESERVATION_CONFLICT;
    const sa = cdb[1]! & 0x1f;
    const scope = cdb[2]! >> 4;
    const type = cdb[2]! & 0x0f;
    const listLength = cdb.readUInt32BE(5);
    if (sa > PrOut.REGISTER_AND_MOVE) return invalidCdb(1, 4);
    const data = dataOut ?? Buffer.alloc(0);
    if (listLength < 24 || data.length < Math.min(listLength, 24)) return paramListLength();
    const params = data.subarray(0, Math.min(listLength, data.length));
    if (sa === PrOut.REGISTER_AND_MOVE) return registerAndMove(nexus, scope, type, params, listLength);

    const rk = params.readBigUInt64BE(0);
    const sark = params.readBigUInt64BE(8);
    const specIPt = (params[20]! & 0x08) !== 0;
    const allTgPt = (params[20]! & 0x04) !== 0;
    const aptplBit = (params[20]! & 0x01) !== 0;
    // SPEC_I_PT is not supported (SIP_C=0): INVALID FIELD IN PARAMETER LIST (SPC-4 §6.16.3).
    if (specIPt) return invalidParam(20, 3);
    if (listLength !== 24) return paramListLength();

    switch (sa) {
      case PrOut.REGISTER:
        return register(nexus, rk, sark, allTgPt, aptplBit, false);
      case PrOut.REGISTER_AND_IGNORE_EXISTING_KEY:
        return register(nexus, rk, sark, allTgPt, aptplBit, true);
      case PrOut.RESERVE:
        return reserveOut(nexus, rk, scope, type);
      case PrOut.RELEASE:
        return releaseOut(nexus, rk, scope, type);
      case PrOut.CLEAR:
        return clear(nexus, rk);
      case PrOut.PREEMPT:
        return preempt(nexus, rk, sark, scope, type, false);
      case PrOut.PREEMPT_AND_ABORT:
        return preempt(nexus, rk, sark, scope, type, true);
      default:
        return invalidCdb(1, 4);
    }
  }

  /** REGISTER / REGISTER AND IGNORE EXISTING KEY (SPC-4 §5.13.7). */
  function register(nexus: ITNexus, rk: bigint, sark: bigint, allTgPt: boolean, aptplBit: boolean, ignoreExisting: boolean): ScsiResponse {
    const existing = regOf(nexus);
    if (!existing) {
      if (!ignoreExisting && rk !== ZERO_KEY) return RESERVATION_CONFLICT;
      if (sark === ZERO_KEY) return GOOD; // nothing to register, nothing changes
      if (regs.size >= MAX_REGISTRATIONS) return insufficientRegistrationResources();
      // One ALL_TG_PT registration stands for every I_T nexus of the initiator port; it cannot be mixed
      // with registrations the port already holds through other target ports (each with its own key).
      if (allTgPt && [...regs.values()].some((x) => x.initiatorPortName === nexus.initiatorPortName)) {
        return invalidParam(20, 2);
      }
      const r: Registration = allTgPt
        ? { initiatorPortName: nexus.initiatorPortName, targetPortName: '*', relativeTargetPortId: 0, key: sark }
        : {
            initiatorPortName: nexus.initiatorPortName,
            targetPortName: nexus.targetPortName,
            relativeTargetPortId: nexus.relativeTargetPortId,
            key: sark,
          };
      regs.set(regIdOf(r), r);
      aptpl = aptplBit;
      bumpGeneration();
      changed();
      return GOOD;
    }
    if (!ignoreExisting && rk !== existing.key) return RESERVATION_CONFLICT;
    if (sark === ZERO_KEY) {
      unregister(existing, { releaseUa: true });
      if (regs.size === 0) aptpl = false;
      else aptpl = aptplBit;
    } else {
      // A reservation keeps the holder's new key (READ RESERVATION reports the holder's key).
      if (reservation && !isAllRegistrants(reservation.type) && holderRegistration() === existing)
        reservation = { ...reservation, key: sark };
      regs.set(regIdOf(existing), { ...existing, key: sark });
      aptpl = aptplBit;
    }
    bumpGeneration();
    changed();
    return GOOD;
  }

  /** RESERVE (SPC-4 §5.13.9). */
  function reserveOut(nexus: ITNexus, rk: bigint, scope: number, type: number): ScsiResponse {
    const r = regOf(nexus);
    if (!r || r.key !== rk) return RESERVATION_CONFLICT;
    if (scope !== LU_SCOPE) return invalidCdb(2, 7);
    if (!isValidType(type)) return invalidCdb(2, 3);
    if (reservation) {
      if (isHolder(nexus) && reservation.type === type) return GOOD;
      return RESERVATION_CONFLICT;
    }
    reservation = isAllRegistrants(type) ? { holder: '*', type, key: ZERO_KEY } : { holder: nexus.key, type, key: r.key };
    changed(); // generation is not incremented by RESERVE (SPC-4 §6.15.2)
    return GOOD;
  }

  /** RELEASE (SPC-4 §5.13.11.2.2). */
  function releaseOut(nexus: ITNexus, rk: bigint, scope: number, type: number): ScsiResponse {
    const r = regOf(nexus);
    if (!r || r.key !== rk) return RESERVATION_CONFLICT;
    if (!reservation || !isHolder(nexus)) return GOOD;
    if (scope !== LU_SCOPE || type !== reservation.type) return invalidRelease();
    const released = reservation.type;
    reservation = null;
    if (isRegistrantsOnly(released) || isAllRegistrants(released)) {
      notify(regs.values(), Asc.RESERVATIONS_RELEASED, nexus);
    }
    changed();
    return GOOD;
  }

  /** CLEAR (SPC-4 §5.13.11.2.6). */
  function clear(nexus: ITNexus, rk: bigint): ScsiResponse {
    const r = regOf(nexus);
    if (!r || r.key !== rk) return RESERVATION_CONFLICT;
    const others = [...regs.values()];
    regs.clear();
    reservation = null;
    aptpl = false;
    notify(others, Asc.RESERVATIONS_PREEMPTED, nexus);
    bumpGeneration();
    changed();
    return GOOD;
  }

  /** PREEMPT / PREEMPT AND ABORT (SPC-4 §5.13.11.2.4, §5.13.11.2.5). */
  function preempt(nexus: ITNexus, rk: bigint, sark: bigint, scope: number, type: number, abort: boolean): ScsiResponse {
    const own = regOf(nexus);
    if (!own || own.key !== rk) return RESERVATION_CONFLICT;
    const ownId = regIdOf(own);

    const removeWithKey = (key: bigint | null): Registration[] => {
      const removed: Registration[] = [];
      for (const [id, r] of regs) {
        if (id === ownId) continue; // the preempting I_T nexus keeps its registration
        if (key === null || r.key === key) {
          regs.delete(id);
          removed.push(r);
        }
      }
      return removed;
    };
    const finish = (removed: Registration[], releasedFor: Registration[] | null): ScsiResponse => {
      notify(removed, Asc.REGISTRATIONS_PREEMPTED, nexus);
      if (releasedFor) notify(releasedFor, Asc.RESERVATIONS_RELEASED, nexus);
      if (abort) {
        const keys = new Set<string>();
        for (const r of removed) for (const k of nexusKeysOf(r)) if (k !== nexus.key) keys.add(k);
        if (keys.size > 0) effect(() => hooks.abortTasksOf([...keys]));
      }
      bumpGeneration();
      changed();
      return GOOD;
    };

    if (!reservation) {
      // No reservation: remove the registrations with that key (SPC-4 §5.13.11.2.4.2).
      if (sark === ZERO_KEY) return invalidParam(8);
      const matching = [...regs.values()].some((r) => r.key === sark && regIdOf(r) !== ownId) || own.key === sark;
      if (!matching) return RESERVATION_CONFLICT;
      return finish(removeWithKey(sark), null);
    }

    if (scope !== LU_SCOPE) return invalidCdb(2, 7);
    if (!isValidType(type)) return invalidCdb(2, 3);

    if (isAllRegistrants(reservation.type)) {
      if (sark === ZERO_KEY) {
        // Preempt the all-registrants reservation: every other registration goes, the sender holds the new one.
        const removed = removeWithKey(null);
        reservation = isAllRegistrants(type) ? { holder: '*', type, key: ZERO_KEY } : { holder: nexus.key, type, key: own.key };
        return finish(removed, null);
      }
      const matching = [...regs.values()].some((r) => r.key === sark);
      if (!matching) return RESERVATION_CONFLICT;
      return finish(removeWithKey(sark), null);
    }

    if (sark === reservation.key) {
      // Preempt the reservation holder (possibly itself): remove every registration with that key,
      // establish the new reservation for the sender (SPC-4 §5.13.11.2.4.3).
      const oldType = reservation.type;
      const removed = removeWithKey(sark);
      reservation = isAllRegistrants(type) ? { holder: '*', type, key: ZERO_KEY } : { holder: nexus.key, type, key: own.key };
      const typeChanged = oldType !== type;
      return finish(removed, typeChanged ? [...regs.values()] : null);
    }
    if (sark === ZERO_KEY) return invalidParam(8);
    const matching = [...regs.values()].some((r) => r.key === sark && regIdOf(r) !== ownId);
    if (!matching) return RESERVATION_CONFLICT;
    return finish(removeWithKey(sark), null);
  }

  /** REGISTER AND MOVE (SPC-4 §5.13.8, parameter list §6.16.4). */
  function registerAndMove(nexus: ITNexus, _scope: number, _type: number, params: Buffer, listLength: number): ScsiResponse {
    const rk = params.readBigUInt64BE(0);
    const sark = params.readBigUInt64BE(8);
    const unreg = (params[17]! & 0x02) !== 0;
    const aptplBit = (params[17]! & 0x01) !== 0;
    const rtpi = params.readUInt16BE(18);
    const tidLength = params.readUInt32BE(20);
    if (24 + tidLength > listLength || 24 + tidLength > params.length) return paramListLength();

    const own = regOf(nexus);
    if (!own || own.key !== rk) return RESERVATION_CONFLICT;
    if (!reservation || isAllRegistrants(reservation.type) || !isHolder(nexus)) return RESERVATION_CONFLICT;
    if (sark === ZERO_KEY) return invalidParam(8);
    const tid = decodeIscsiTransportId(params.subarray(24, 24 + tidLength));
    if (typeof tid === 'string') return invalidParam(24);
    if (rtpi === 0) return invalidParam(18);

    const targetPortName = targetPortNameFor(nexus.targetPortName, rtpi);
    let initiatorPortName: string;
    if (tid.isid !== null) {
      initiatorPortName = `${tid.name},i,0x${tid.isid}`;
    } else {
      // Format 00b names an initiator device, not a port: accept it only when exactly one known
      // I_T nexus of that initiator exists on the destination target port.
      const candidates = hooks
        .nexusKeys()
        .filter((k) => k.endsWith('|' + targetPortName) && splitInitiatorPort(k.slice(0, k.indexOf('|'))).name === tid.name);
      if (candidates.length !== 1) return invalidParam(24);
      const c = candidates[0]!;
      initiatorPortName = c.slice(0, c.indexOf('|'));
    }
    const destId = regId(initiatorPortName, targetPortName);
    if (destId === nexus.key) return invalidParam(24);

    const dest = regs.get(destId) ?? regs.get(regId(initiatorPortName, '*'));
    if (dest) {
      regs.set(regIdOf(dest), { ...dest, key: sark });
    } else {
      if (regs.size >= MAX_REGISTRATIONS) return insufficientRegistrationResources();
      regs.set(destId, { initiatorPortName, targetPortName, relativeTargetPortId: rtpi, key: sark });
    }
    // Move the reservation, same scope and type, to the destination I_T nexus.
    reservation = { holder: destId, type: reservation.type, key: sark };
    // UNREG cannot remove the source when one ALL_TG_PT registration covers both I_T nexuses.
    if (unreg && dest !== own) regs.delete(regIdOf(own));
    aptpl = aptplBit;
    bumpGeneration();
    changed();
    return GOOD;
  }

  // --- SPC-2 RESERVE / RELEASE ---

  function reserve(nexus: ITNexus, cdb: Buffer): Promise<ScsiResponse> {
    return serialised(() => reserveNow(nexus, cdb));
  }

  function release(nexus: ITNexus, cdb: Buffer): Promise<ScsiResponse> {
    return serialised(() => releaseNow(nexus, cdb));
  }

  function reserveNow(nexus: ITNexus, cdb: Buffer): ScsiResponse {
    const op = cdb[0] ?? 0;
    if (op === Spc2Op.RESERVE_6) {
      if (cdb.length < 6) return invalidCdb(0);
      // Extents and third-party reservations (obsolete since SPC-2) are not supported.
      if ((cdb[1]! & 0x01) !== 0) return invalidCdb(1, 0);
      if ((cdb[1]! & 0x10) !== 0) return invalidCdb(1, 4);
    } else {
      if (cdb.length < 10) return invalidCdb(0);
      if ((cdb[1]! & 0x10) !== 0) return invalidCdb(1, 4); // 3RDPTY
      if ((cdb[1]! & 0x02) !== 0) return invalidCdb(1, 1); // LONGID
    }
    if (reserveConflicts(nexus)) return RESERVATION_CONFLICT;
    if (regs.size > 0) return GOOD; // SPC-4 §5.13.3 exception: GOOD, no reservation established
    spc2Holder = nexus.key;
    return GOOD;
  }

  function releaseNow(nexus: ITNexus, cdb: Buffer): ScsiResponse {
    const op = cdb[0] ?? 0;
    if (op === Spc2Op.RELEASE_6) {
      if (cdb.length < 6) return invalidCdb(0);
      if ((cdb[1]! & 0x01) !== 0) return invalidCdb(1, 0);
      if ((cdb[1]! & 0x10) !== 0) return invalidCdb(1, 4);
    } else {
      if (cdb.length < 10) return invalidCdb(0);
      if ((cdb[1]! & 0x10) !== 0) return invalidCdb(1, 4);
      if ((cdb[1]! & 0x02) !== 0) return invalidCdb(1, 1);
    }
    if (releaseConflicts(nexus)) return RESERVATION_CONFLICT;
    if (regs.size > 0) return GOOD; // SPC-4 §5.13.3 exception: GOOD, the persistent reservation stays
    // A RELEASE from an I_T nexus that holds no SPC-2 reservation completes with GOOD and changes nothing.
    if (spc2Holder === nexus.key) spc2Holder = null;
    return GOOD;
  }

  function reset(): void {
    spc2Holder = null;
  }

  function nexusRemoved(nexus: ITNexus): void {
    if (spc2Holder === nexus.key) spc2Holder = null;
  }

  // A restored reservation whose holder is no longer registered cannot exist (SPC-4 §5.13.11.2.3).
  if (reservation && (isAllRegistrants(reservation.type) ? regs.size === 0 : !holderRegistration())) reservation = null;

  return {
    conflicts,
    persistentReserveIn,
    persistentReserveOut,
    reserve,
    release,
    reset,
    nexusRemoved,
    snapshot,
  };
}
