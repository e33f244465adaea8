// The state store of a data directory: a snapshot, <data-dir>/state.json (layout: state-json.ts), and
// an append-only journal of the changes made since, <data-dir>/state.journal.<seq> (framing:
// journal-codec.ts), where <seq> is the snapshot's seq. The cost of a change is one record of its own
// size, not a rewrite of every volume's record.
//
// - Group commit: transactions queue; the ones that queued while a write was running are run in order
//   and written as ONE record with one write(2) and one fdatasync(2). Their promises resolve after the
//   fdatasync, and only then are the changes applied to memory (durable, then visible). A failed write
//   or fdatasync rejects them all and cuts the journal back to where it was: memory and file as before.
//   If even the cut fails, the store refuses every later change until a restart (which then sees a
//   file that is either the old one or holds the whole record: never half of a transaction).
// - Compaction: when the journal holds more than max(1 MiB, size of state.json) of records, the store
//   (between two group commits) creates the next journal, state.journal.<S> with S = seq of the last
//   record, empty and fsynced; replaces state.json atomically (temporary file, fsync, rename, directory
//   fsync: src/util/atomic-file.ts) with a snapshot at seq S; then deletes the old journal. S is larger
//   than the old journal's seq (the old one holds at least one record), so names never collide.
// - Load: state.json, then the records of state.journal.<its seq>, whose seqs must follow on one by one.
//   A torn tail (the process died while appending an unacknowledged record) is cut off. Any other
//   damage stops startup with the file and the byte offset. Journals with another seq are leftovers of
//   an interrupted compaction: older ones are folded into the snapshot already and are deleted; a newer
//   one must be empty (it was made before the snapshot's rename) and is deleted too. Every record is
//   checked (state-json.ts names the field at fault), and names must stay unique across the replay.
// - A version 1 state.json (the whole state, no journal) is migrated at load: a new journal, then a
//   version 2 snapshot.

import { randomUUID } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir, isTempName, writeFileAtomic, writeTempFile } from '../util/atomic-file.js';
import { decodeJournal, encodeFrame, HEADER_BYTES, JournalDamage, journalHeader } from './journal-codec.js';
import { DelegatingReader, Draft, MemoryState } from './state-memory.js';
import { checkUniqueNames, formatRecord, formatState, parseRecord, parseState } from './state-json.js';
import { StateError, type StateChange, type StateReader, type StateStore, type StateTransaction } from './state.js';
import { errMessage } from '../util/errors.js';

export const STATE_FILE = 'state.json';
export const JOURNAL_PREFIX = 'state.journal.';
/** Compaction threshold: the journal's records may reach max(this, size of the snapshot). */
export const COMPACT_MIN_BYTES = 1024 * 1024;

export function journalName(seq: number): string {
  return `${JOURNAL_PREFIX}${seq}`;
}

/** The seq of a journal file name, or null when the name is not one. */
export function journalSeq(name: string): number | null {
  if (!name.startsWith(JOURNAL_PREFIX)) return null;
  const tail = name.slice(JOURNAL_PREFIX.length);
  return /^(0|[1-9][0-9]{0,15})$/.test(tail) ? Number(tail) : null;
}

export interface StateStoreOptions {
  /** Least journal size (bytes of records) that triggers a compaction; default COMPACT_MIN_BYTES. */
  readonly compactMinBytes?: number;
}

interface Queued {
  readonly fn: (tx: StateTransaction) => unknown;
  /** Write even without changes (initialise()). */
  readonly force: boolean;
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: unknown) => void;
}

/** Run fn on a fresh draft and seal it; fn must not return a promise (its changes would come too late). */
function runTransaction<T>(fn: (tx: StateTransaction) => T, draft: Draft): T {
  try {
    const result = fn(draft);
    if (result instanceof Promise) {
      // Whatever it does later fails on the sealed draft; the transaction has failed already.
      result.catch(() => undefined);
      throw new StateError('a state transaction must be synchronous (it returned a promise)');
    }
    return result;
  } finally {
    draft.seal();
  }
}

/** Write all of buf at position (a regular file may take it in several writes). */
async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
}

/** Create (or empty) a journal holding only its header, durable with its directory entry. */
async function createJournal(path: string): Promise<FileHandle> {
  const fh = await fsp.open(path, constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    await writeAll(fh, journalHeader(), 0);
    await fh.sync();
    await fsyncDir(join(path, '..'));
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw err;
  }
  return fh;
}

class JournalStateStore extends DelegatingReader implements StateStore {
  private queue: Queued[] = [];
  private draining: Promise<void> | null = null;
  private closed = false;
  /** Set when the journal could not be put back after a failed write: every later change is refused. */
  private broken: Error | null = null;
  /** After a failed compaction: the journal size at which the next attempt is made. */
  private compactRetryAt = 0;

  constructor(
    private readonly dataDir: string,
    readonly location: string,
    private memory: MemoryState,
    readonly created: boolean,
    /** Seq of the last record applied (snapshot's seq when the journal is empty). */
    private seq: number,
    /** Seq of the snapshot in state.json (= the journal's name). */
    private snapshotSeq: number,
    private snapshotBytes: number,
    /** The open journal (null until the first write of a new store). */
    private journal: FileHandle | null,
    /** End of the journal's last record: the next append goes here. */
    private journalEnd: number,
    private readonly compactMinBytes: number,
  ) {
    super();
  }

  /** Reads: the committed state. */
  protected current(): StateReader {
    return this.memory;
  }

  // ---- transactions ------------------------------------------------------------------------------

  initialise(): Promise<void> {
    if (this.journal) return Promise.resolve();
    return this.enqueue(() => undefined, true).then(() => undefined);
  }

  update<T>(fn: (tx: StateTransaction) => T): Promise<T> {
    return this.enqueue(fn, false) as Promise<T>;
  }

  private enqueue(fn: (tx: StateTransaction) => unknown, force: boolean): Promise<unknown> {
    if (this.closed) return Promise.reject(new StateError(`${this.location} is closed`));
    return new Promise((resolve, reject) => {
      this.queue.push({ fn, force, resolve, reject });
      this.draining ??= this.drain();
    });
  }

  /** Commit batches until the queue is empty; `draining` is cleared in the same turn the queue is found empty. */
  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        await this.commitBatch(batch);
        const threshold = Math.max(this.compactMinBytes, this.snapshotBytes);
        if (this.journal && this.journalEnd - HEADER_BYTES > threshold && this.journalEnd >= this.compactRetryAt) {
          if (!(await this.compact())) {
            // Not before the journal has grown by another eighth: a compaction that keeps failing
            // (no space for the snapshot) must not cost a whole snapshot's formatting per change.
            this.compactRetryAt = this.journalEnd + Math.ceil(threshold / 8);
          }
        }
      }
    } finally {
      this.draining = null;
    }
  }

  /** Run the queued transactions in order, each over the ones before it, and write them as one record. */
  private async commitBatch(batch: readonly Queued[]): Promise<void> {
    let view: StateReader = this.memory;
    const accepted: Array<{ q: Queued; result: unknown }> = [];
    const changes: StateChange[] = [];
    let force = false;
    for (const q of batch) {
      const draft = new Draft(view);
      let result: unknown;
      try {
        result = runTransaction(q.fn, draft);
      } catch (err) {
        q.reject(err);
        continue;
      }
      accepted.push({ q, result });
      force ||= q.force;
      if (draft.changed) {
        changes.push(...draft.changes());
        view = draft.view;
      }
    }
    if (changes.length > 0 || (force && !this.journal)) {
      try {
        await this.write(changes);
      } catch (err) {
        for (const a of accepted) a.q.reject(err);
        return;
      }
    }
    for (const a of accepted) a.q.resolve(a.result);
  }

  /** Make changes durable (one record), then visible. Writes never overlap: the queue runs one batch at a time. */
  private async write(changes: readonly StateChange[]): Promise<void> {
    if (this.broken) throw this.broken;
    if (!this.journal) {
      // First write of a new data directory: journal 0, then the snapshot naming it.
      const next = this.memory.with(changes);
      const path = join(this.dataDir, journalName(0));
      const fh = await createJournal(path);
      try {
        const text = formatState(next.toData(), 0);
        await writeFileAtomic(this.location, text);
        this.snapshotBytes = Buffer.byteLength(text);
      } catch (err) {
        await fh.close().catch(() => undefined);
        await fsp.rm(path, { force: true }).catch(() => undefined);
        throw err;
      }
      this.journal = fh;
      this.journalEnd = HEADER_BYTES;
      this.memory = next;
      return;
    }
    const seq = this.seq + 1;
    const frame = encodeFrame(Buffer.from(formatRecord({ seq, changes }), 'utf8'));
    const at = this.journalEnd;
    const fh = this.journal;
    try {
      await writeAll(fh, frame, at);
      await fh.datasync();
    } catch (err) {
      await this.cutBack(fh, at, err);
      throw err;
    }
    this.journalEnd = at + frame.length;
    this.seq = seq;
    this.memory.apply(changes);
  }

  /** After a failed append: cut the journal back to `at`, or refuse every later change when that fails. */
  private async cutBack(fh: FileHandle, at: number, cause: unknown): Promise<void> {
    try {
      if ((await fh.stat()).size === at) return;
      await fh.truncate(at);
      await fh.datasync();
    } catch (err) {
      this.broken = new StateError(
        `${this.location}: a write failed (${errMessage(cause)}) and its partial record could not be removed from the journal (${errMessage(err)}); restart Lunar to reload the state`,
      );
    }
  }

  /** Fold the journal into a new snapshot (see the top of the file for the order and why); false when it could not. */
  private async compact(): Promise<boolean> {
    const old = this.journal;
    if (!old || this.seq === this.snapshotSeq || this.broken) return false;
    const s = this.seq;
    const newPath = join(this.dataDir, journalName(s));
    const oldPath = join(this.dataDir, journalName(this.snapshotSeq));
    let fh: FileHandle;
    try {
      fh = await createJournal(newPath);
    } catch {
      // Nothing changed: the old journal stays live; the next commit tries again.
      await fsp.rm(newPath, { force: true }).catch(() => undefined);
      return false;
    }
    const text = formatState(this.memory.toData(), s);
    let tmp: string;
    try {
      tmp = await writeTempFile(this.location, text);
      await fsp.rename(tmp, this.location).catch(async (err: unknown) => {
        await fsp.rm(tmp, { force: true });
        throw err;
      });
    } catch {
      // Not replaced (no space for the new snapshot, say): the old journal stays live, the empty new
      // one goes, and the next commit tries again.
      await fh.close().catch(() => undefined);
      await fsp.rm(newPath, { force: true }).catch(() => undefined);
      return false;
    }
    try {
      await fsyncDir(this.dataDir);
    } catch (err) {
      await fh.close().catch(() => undefined);
      // Whether the rename is durable is unknown: state.json may be either snapshot after a crash, and
      // both agree with the old journal only as long as nothing more is appended to either.
      this.broken = new StateError(
        `${this.location}: compaction could not make the new snapshot durable (${errMessage(err)}); restart Lunar to reload the state`,
      );
      return false;
    }
    this.journal = fh;
    this.journalEnd = HEADER_BYTES;
    this.snapshotSeq = s;
    this.snapshotBytes = Buffer.byteLength(text);
    await old.close().catch(() => undefined);
    // A journal left behind is deleted at the next load.
    await fsp.rm(oldPath, { force: true }).catch(() => undefined);
    return true;
  }

  async close(): Promise<void> {
    this.closed = true;
    while (this.draining) await this.draining;
    const fh = this.journal;
    this.journal = null;
    await fh?.close();
  }
}

/** Replay a journal over data; returns the last seq and where the last whole record ends. */
async function replay(path: string, memory: MemoryState, snapshotSeq: number): Promise<{ seq: number; end: number }> {
  const buf = await fsp.readFile(path);
  let decoded;
  try {
    decoded = decodeJournal(buf, path);
  } catch (err) {
    if (err instanceof JournalDamage) {
      throw new StateError(`${err.message}; Lunar will not start over a damaged journal — restore the data directory from a backup`);
    }
    throw err;
  }
  let seq = snapshotSeq;
  for (const r of decoded.records) {
    const where = `${path} at byte ${r.offset}`;
    const entry = parseRecord(r.payload.toString('utf8'), where);
    if (entry.seq !== seq + 1) throw new StateError(`${where}: record seq ${entry.seq} where ${seq + 1} was expected`);
    memory.apply(entry.changes);
    seq = entry.seq;
  }
  if (decoded.torn !== null) {
    // The unacknowledged tail of a write the process did not finish: cut it, durably.
    const fh = await fsp.open(path, 'r+');
    try {
      if (decoded.end < HEADER_BYTES) {
        await fh.truncate(0);
        await writeAll(fh, journalHeader(), 0);
      } else {
        await fh.truncate(decoded.end);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
  return { seq, end: Math.max(decoded.end, HEADER_BYTES) };
}

/**
 * Open the state of a data directory (made if missing). A missing state file gives a new state
 * (created: true) that is not written until initialise() or the first change.
 */
export async function openStateStore(dataDir: string, options: StateStoreOptions = {}): Promise<StateStore> {
  const compactMinBytes = options.compactMinBytes ?? COMPACT_MIN_BYTES;
  await fsp.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const path = join(dataDir, STATE_FILE);
  const names = await fsp.readdir(dataDir);
  // Leftovers of an interrupted atomic write (never the live file).
  for (const name of names) {
    if (isTempName(name) && name.includes(STATE_FILE)) await fsp.rm(join(dataDir, name), { force: true });
  }
  const journals = names.flatMap((n) => {
    const seq = journalSeq(n);
    return seq === null ? [] : [{ name: n, seq }];
  });
  let text: string | null = null;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (text === null) {
    // A journal with no snapshot: never written that way (journal 0 is made just before the first
    // snapshot, so only an empty one can be left).
    for (const j of journals) await removeEmptyJournal(join(dataDir, j.name), path, true);
    const fresh = MemoryState.fromData({ server: { id: randomUUID(), createdAt: new Date().toISOString() }, volumes: {}, snapshots: {} });
    return new JournalStateStore(dataDir, path, fresh, true, 0, 0, 0, null, 0, compactMinBytes);
  }
  const loaded = parseState(text, path);
  const memory = MemoryState.fromData(loaded.data);
  if (loaded.version === 1) {
    // Migration: journal 0, then the version 2 snapshot (a crash between the two leaves the v1 file
    // and an empty journal, and the next start migrates again).
    for (const j of journals) await removeEmptyJournal(join(dataDir, j.name), path);
    const fh = await createJournal(join(dataDir, journalName(0)));
    const v2 = formatState(memory.toData(), 0);
    try {
      await writeFileAtomic(path, v2);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
    return new JournalStateStore(dataDir, path, memory, false, 0, 0, Buffer.byteLength(v2), fh, HEADER_BYTES, compactMinBytes);
  }
  const live = join(dataDir, journalName(loaded.seq));
  if (!journals.some((j) => j.seq === loaded.seq)) {
    throw new StateError(
      `${path} (seq ${loaded.seq}) has no journal ${live}: changes made after the snapshot may be missing; restore the data directory from a backup`,
    );
  }
  for (const j of journals) {
    if (j.seq < loaded.seq) await fsp.rm(join(dataDir, j.name), { force: true });
    else if (j.seq > loaded.seq) await removeEmptyJournal(join(dataDir, j.name), path);
  }
  const { seq, end } = await replay(live, memory, loaded.seq);
  checkUniqueNames(memory.toData(), `${path} with ${live}`);
  const fh = await fsp.open(live, 'r+');
  return new JournalStateStore(dataDir, path, memory, false, seq, loaded.seq, Buffer.byteLength(text), fh, end, compactMinBytes);
}

/** Remove a journal left by an interrupted compaction or first write; one holding records is an error. */
async function removeEmptyJournal(journal: string, snapshot: string, snapshotMissing = false): Promise<void> {
  const buf = await fsp.readFile(journal);
  let records = 0;
  try {
    records = decodeJournal(buf, journal).records.length;
  } catch (err) {
    if (!(err instanceof JournalDamage)) throw err;
    records = -1;
  }
  if (records !== 0 && snapshotMissing) {
    throw new StateError(
      `${snapshot} is missing but ${journal} holds changes; restore state.json from a backup or move the data directory away`,
    );
  }
  if (records !== 0) {
    throw new StateError(
      `${journal} does not belong to ${snapshot} (another seq) but is not empty; restore the data directory from a backup`,
    );
  }
  await fsp.rm(journal, { force: true });
}
