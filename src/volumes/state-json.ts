// The JSON of the state store, both ways: the snapshot <data-dir>/state.json (formatState writes it,
// parseState reads and checks ALL of it, naming the first field that is wrong) and the payload of one
// journal record (formatRecord / parseRecord; the framing is journal-codec.ts).
//
//   state.json, version 2 (version 1 is the same without "seq": read, and migrated by the store):
//   {
//     "format": "lunar-state", "version": 2, "seq": <last journal record folded in>,
//     "server": { "id": "<uuid>", "createdAt": "<ISO 8601>" },
//     "volumes": { "<volume id>": VolumeRecord, ... },
//     "snapshots": { "<snapshot id>": SnapshotRecord, ... }
//   }
//   journal record (one group commit):
//   { "seq": <n>, "changes": [ { "kind": "volume" | "snapshot", "id": "<id>", "record": Record | null }, ... ] }
//
// The checks are a few typed combinators written here rather than a schema library (zod, ajv): one file
// format with a dozen record shapes needs ~100 lines, each error names the JSON path the way an operator
// reads it (`volumes["vol-…"].reservations: missing (expected an object)`), and the `Check<VolumeRecord>`
// annotations below make the compiler prove that the checks and the record types agree.

import type { PersistentReservationSnapshot } from '../scsi/types.js';
import type { ChapCredentials } from '../target/types.js';
import { StateError, type SnapshotRecord, type StateChange, type StateData, type VolumeRecord } from './state.js';
import type { VolumeSource } from './types.js';

export const STATE_FORMAT = 'lunar-state';
export const STATE_VERSION = 2;
/** The layout before the journal: the whole state, no seq. Read and migrated. */
export const STATE_VERSION_V1 = 1;

/** A snapshot's text: pretty-printed (an operator may read it), records in insertion order. */
export function formatState(data: StateData, seq: number): string {
  return JSON.stringify({ format: STATE_FORMAT, version: STATE_VERSION, seq, ...data }, null, 2) + '\n';
}

/** A snapshot as loaded: the state, the seq of the last journal record it holds, the version read. */
export interface LoadedState {
  readonly data: StateData;
  readonly seq: number;
  readonly version: 1 | 2;
}

/** A check: returns the value typed (a fresh copy holding only known fields) or throws Invalid. */
type Check<T> = (v: unknown, at: string) => T;

class Invalid extends Error {
  constructor(
    readonly at: string,
    readonly problem: string,
  ) {
    super(`${at}: ${problem}`);
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return typeof v;
}

function expect<T>(what: string, ok: (v: unknown) => v is T): Check<T> {
  return (v, at) => {
    if (v === undefined) throw new Invalid(at, `missing (expected ${what})`);
    if (!ok(v)) throw new Invalid(at, `expected ${what}, got ${describe(v)}`);
    return v;
  };
}

const isInt = (v: unknown, min: number, max: number): v is number =>
  Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max;

const str = expect('a string', (v): v is string => typeof v === 'string');
const nonEmpty = expect('a non-empty string', (v): v is string => typeof v === 'string' && v.length > 0);
const bool = expect('true or false', (v): v is boolean => typeof v === 'boolean');
const count = expect('a non-negative integer', (v): v is number => isInt(v, 0, Number.MAX_SAFE_INTEGER));
const positive = expect('a positive integer', (v): v is number => isInt(v, 1, Number.MAX_SAFE_INTEGER));
const uint32 = expect('an integer from 0 to 4294967295', (v): v is number => isInt(v, 0, 0xffffffff));

function pattern(what: string, re: RegExp): Check<string> {
  return expect(what, (v): v is string => typeof v === 'string' && re.test(v));
}

function oneOf<T extends string>(...values: T[]): Check<T> {
  return expect(values.map((x) => JSON.stringify(x)).join(' or '), (v): v is T => values.some((x) => x === v));
}

function nullable<T>(c: Check<T>): Check<T | null> {
  return (v, at) => (v === null ? null : c(v, at));
}

const isArray = expect('an array', (v): v is unknown[] => Array.isArray(v));

function arrayOf<T>(c: Check<T>): Check<T[]> {
  return (v, at) => isArray(v, at).map((x, i) => c(x, `${at}[${i}]`));
}

const isObject = expect('an object', (v): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v));

/** An object used as a map: every value checked, keys by key (when given). */
function recordOf<T>(c: Check<T>, key?: Check<string>): Check<Record<string, T>> {
  return (v, at) => {
    const entries = Object.entries(isObject(v, at)).map(([k, x]): [string, T] => {
      const here = `${at}[${JSON.stringify(k)}]`;
      if (key) {
        try {
          key(k, here);
        } catch (err) {
          if (err instanceof Invalid) throw new Invalid(here, `bad key: ${err.problem}`);
          throw err;
        }
      }
      return [k, c(x, here)];
    });
    // fromEntries: a key such as "__proto__" stays an own key instead of setting the prototype.
    return Object.fromEntries(entries);
  };
}

interface Optional<T> {
  readonly optional: Check<T>;
}
function optional<T>(c: Check<T>): Optional<T> {
  return { optional: c };
}

type Shape = Record<string, Check<unknown> | Optional<unknown>>;
type RequiredOf<S extends Shape> = { [K in keyof S as S[K] extends Check<unknown> ? K : never]: S[K] extends Check<infer T> ? T : never };
type Optionals<S extends Shape> = {
  [K in keyof S as S[K] extends Optional<unknown> ? K : never]?: S[K] extends Optional<infer T> ? T : never;
};

/** An object with these fields (fields not listed are dropped); optional fields may be absent. */
function object<S extends Shape>(
  shape: S,
  also?: (o: RequiredOf<S> & Optionals<S>, at: string) => void,
): Check<RequiredOf<S> & Optionals<S>> {
  return (v, at) => {
    const o = isObject(v, at);
    const out: Record<string, unknown> = {};
    for (const [k, c] of Object.entries(shape)) {
      const here = at === '' ? k : `${at}.${k}`;
      if (typeof c === 'function') out[k] = c(o[k], here);
      else if (o[k] !== undefined) out[k] = c.optional(o[k], here);
    }
    const typed = out as RequiredOf<S> & Optionals<S>;
    also?.(typed, at);
    return typed;
  };
}

// ---- the records ---------------------------------------------------------------------------------

const LUNAR_ID = /^(vol|snap)-[0-9a-f]{16}$/;
const volumeId = pattern('a volume id (vol-<16 hex digits>)', /^vol-[0-9a-f]{16}$/);
const snapshotId = pattern('a snapshot id (snap-<16 hex digits>)', /^snap-[0-9a-f]{16}$/);
/** A reservation key as the SCSI layer writes it (up to 16 hex digits). */
const reservationKey = pattern('a reservation key (1 to 16 hex digits)', /^[0-9a-fA-F]{1,16}$/);

const chap: Check<ChapCredentials> = object(
  { user: nonEmpty, secret: nonEmpty, mutualUser: optional(nonEmpty), mutualSecret: optional(nonEmpty) },
  (c, at) => {
    if ((c.mutualUser === undefined) !== (c.mutualSecret === undefined)) {
      throw new Invalid(at, 'mutualUser and mutualSecret must be given together');
    }
  },
);

const source: Check<VolumeSource> = object({ kind: oneOf('snapshot', 'volume'), id: pattern('a volume or snapshot id', LUNAR_ID) });

const reservations: Check<PersistentReservationSnapshot> = object({
  generation: uint32,
  registrations: arrayOf(
    object({ initiatorPortName: nonEmpty, targetPortName: nonEmpty, relativeTargetPortId: count, key: reservationKey }),
  ),
  reservation: nullable(object({ holder: nonEmpty, type: count, key: reservationKey })),
  aptpl: bool,
});

const volumeRecord: Check<VolumeRecord> = object({
  id: volumeId,
  name: nonEmpty,
  sizeBytes: positive,
  createdSizeBytes: positive,
  thin: bool,
  naa: pattern('32 hex digits (an NAA 6h designator)', /^6[0-9a-f]{31}$/),
  serial: nonEmpty,
  chap: nullable(chap),
  allow: arrayOf(str),
  masked: bool,
  portals: nullable(arrayOf(nonEmpty)),
  publications: recordOf(nonEmpty),
  source: optional(source),
  parameters: recordOf(str),
  createdAt: str,
  reservations: recordOf(reservations, pattern('a LUN number', /^(0|[1-9][0-9]{0,4})$/)),
});

const snapshotRecord: Check<SnapshotRecord> = object({
  id: snapshotId,
  name: nonEmpty,
  sourceVolumeId: volumeId,
  sizeBytes: positive,
  createdAt: str,
});

/** Records keyed by their id, with names unique. */
function keyedRecords<R extends { readonly id: string; readonly name: string }>(c: Check<R>): Check<Record<string, R>> {
  const map = recordOf(c);
  return (v, at) => {
    const out = map(v, at);
    const names = new Map<string, string>();
    for (const [k, r] of Object.entries(out)) {
      const here = `${at}[${JSON.stringify(k)}]`;
      if (r.id !== k) throw new Invalid(`${here}.id`, `${JSON.stringify(r.id)} differs from its key ${JSON.stringify(k)}`);
      const other = names.get(r.name);
      if (other !== undefined)
        throw new Invalid(`${here}.name`, `${JSON.stringify(r.name)} is also the name of ${at}[${JSON.stringify(other)}]`);
      names.set(r.name, k);
    }
    return out;
  };
}

const checkStateData: Check<StateData> = object({
  server: object({ id: nonEmpty, createdAt: str }),
  volumes: keyedRecords(volumeRecord),
  snapshots: keyedRecords(snapshotRecord),
});

/** Parse and check the text of a state file (version 1 or 2); throws StateError naming the file and what is wrong. */
export function parseState(text: string, path: string): LoadedState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new StateError(
      `${path} is not valid JSON (${err instanceof Error ? err.message : String(err)}); Lunar will not start over a damaged state file — restore it from a backup or move the data directory away`,
    );
  }
  const top = typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? (raw as Record<string, unknown>) : {};
  if (top.format !== STATE_FORMAT) throw new StateError(`${path} is not a Lunar state file (missing "format": "${STATE_FORMAT}")`);
  if (top.version !== STATE_VERSION && top.version !== STATE_VERSION_V1) {
    throw new StateError(
      `${path} has state version ${describe(top.version)}; this Lunar reads versions ${STATE_VERSION_V1} and ${STATE_VERSION}`,
    );
  }
  try {
    const seq = top.version === STATE_VERSION ? count(top.seq, 'seq') : 0;
    return { data: checkStateData(raw, ''), seq, version: top.version === STATE_VERSION ? 2 : 1 };
  } catch (err) {
    if (err instanceof Invalid) throw new StateError(`${path}: ${err.at}: ${err.problem}`);
    throw err;
  }
}

/**
 * What a replay can break that no single record check sees: a name used by two records of a kind.
 * (Every record was checked on its own: the snapshot by parseState, each change by parseRecord; checking
 * all of them again would cost 0.4 s at 10,000 volumes on every start, measured.) Throws StateError
 * naming both records.
 */
export function checkUniqueNames(data: StateData, where: string): void {
  for (const kind of ['volumes', 'snapshots'] as const) {
    const names = new Map<string, string>();
    const records: Readonly<Record<string, { readonly name: string }>> = data[kind];
    for (const [id, r] of Object.entries(records)) {
      const other = names.get(r.name);
      if (other !== undefined) {
        throw new StateError(
          `${where}: ${kind}[${JSON.stringify(id)}].name: ${JSON.stringify(r.name)} is also the name of ${kind}[${JSON.stringify(other)}]`,
        );
      }
      names.set(r.name, id);
    }
  }
}

/** One journal record: the group commit's seq and its changes in order. */
export interface JournalEntry {
  readonly seq: number;
  readonly changes: readonly StateChange[];
}

export function formatRecord(entry: JournalEntry): string {
  return JSON.stringify(entry);
}

const change: Check<StateChange> = (v, at) => {
  const o = isObject(v, at);
  const kind = oneOf('volume', 'snapshot')(o.kind, `${at}.kind`);
  if (kind === 'volume') {
    const id = volumeId(o.id, `${at}.id`);
    const record = nullable(volumeRecord)(o.record, `${at}.record`);
    if (record && record.id !== id)
      throw new Invalid(`${at}.record.id`, `${JSON.stringify(record.id)} differs from the change's id ${JSON.stringify(id)}`);
    return { kind, id, record };
  }
  const id = snapshotId(o.id, `${at}.id`);
  const record = nullable(snapshotRecord)(o.record, `${at}.record`);
  if (record && record.id !== id)
    throw new Invalid(`${at}.record.id`, `${JSON.stringify(record.id)} differs from the change's id ${JSON.stringify(id)}`);
  return { kind, id, record };
};

const journalEntry: Check<JournalEntry> = object({ seq: positive, changes: arrayOf(change) });

/** Parse and check one record's payload; `where` names the file and offset in errors. */
export function parseRecord(text: string, where: string): JournalEntry {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new StateError(`${where}: record is not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  try {
    return journalEntry(raw, '');
  } catch (err) {
    if (err instanceof Invalid) throw new StateError(`${where}: ${err.at}: ${err.problem}`);
    throw err;
  }
}
