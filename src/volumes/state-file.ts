// The state store over one JSON file, <data-dir>/state.json (layout: state-json.ts), replaced atomically
// on every change: temporary file, fsync, rename, directory fsync (src/util/atomic-file.ts). After a
// crash the file holds the state before or after a transaction, never a mix.
//
// Transactions queue; whatever queued while a write was running goes into the next write together
// (group commit), so N concurrent changes cost about two writes, not N. A write makes a copy of the
// committed state with the changes applied, writes that, and swaps it in only after the directory fsync:
// a failed write leaves memory as it was. Each write costs time linear in the number of records (the
// whole file is rewritten); a backend whose cost per change does not grow with the state implements the
// same StateStore interface.

import { randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { dirname, join } from 'node:path';
import { fsyncDir, isTempName, writeFileAtomic, writeTempFile } from '../util/atomic-file.js';
import { DelegatingReader, Draft, MemoryState } from './state-memory.js';
import { formatState, parseState } from './state-json.js';
import { StateError, type StateChange, type StateReader, type StateStore, type StateTransaction } from './state.js';

export const STATE_FILE = 'state.json';

interface Queued {
  readonly fn: (tx: StateTransaction) => unknown;
  /** Write even without changes (initialise()). */
  readonly force: boolean;
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: unknown) => void;
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
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

class JsonStateFile extends DelegatingReader implements StateStore {
  private queue: Queued[] = [];
  private draining: Promise<void> | null = null;
  private written: boolean;
  private closed = false;

  constructor(
    readonly location: string,
    private memory: MemoryState,
    readonly created: boolean,
  ) {
    super();
    this.written = !created;
  }

  /** Reads: the committed state. */
  protected current(): StateReader {
    return this.memory;
  }

  // ---- transactions ------------------------------------------------------------------------------

  initialise(): Promise<void> {
    if (this.written) return Promise.resolve();
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
      }
    } finally {
      this.draining = null;
    }
  }

  /** Run the queued transactions in order, each over the ones before it, and write them as one. */
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
    if (changes.length > 0 || (force && !this.written)) {
      try {
        await this.write(changes);
      } catch (err) {
        for (const a of accepted) a.q.reject(err);
        return;
      }
    }
    for (const a of accepted) a.q.resolve(a.result);
  }

  /**
   * Make memory + changes durable, then visible. Writes never overlap: the queue runs one batch at a
   * time, and this is the only writer of the file.
   */
  private async write(changes: readonly StateChange[]): Promise<void> {
    const next = this.memory.with(changes);
    const tmp = await writeTempFile(this.location, formatState(next.toData()));
    try {
      await fsp.rename(tmp, this.location);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    }
    try {
      await fsyncDir(dirname(this.location));
    } catch (err) {
      // The new file is in place but its rename may not be durable: put the committed state back, so
      // that memory and file agree again.
      const restored = await writeFileAtomic(this.location, formatState(this.memory.toData())).then(
        () => '',
        (e: unknown) => `; restoring the previous state failed too (${errMessage(e)}): the file may hold the change until the next write`,
      );
      throw new StateError(`could not make ${this.location} durable: ${errMessage(err)}${restored}`);
    }
    this.memory = next;
    this.written = true;
  }

  async close(): Promise<void> {
    this.closed = true;
    while (this.draining) await this.draining;
  }
}

/**
 * Open the state of a data directory (made if missing). A missing state file gives a new state
 * (created: true) that is not written until initialise() or the first change.
 */
export async function openStateStore(dataDir: string): Promise<StateStore> {
  await fsp.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const path = join(dataDir, STATE_FILE);
  // Leftovers of an interrupted atomic write (never the live file).
  for (const name of await fsp.readdir(dataDir)) {
    if (isTempName(name) && name.includes(STATE_FILE)) await fsp.rm(join(dataDir, name), { force: true });
  }
  let text: string | null = null;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (text === null) {
    const fresh = MemoryState.fromData({ server: { id: randomUUID(), createdAt: new Date().toISOString() }, volumes: {}, snapshots: {} });
    return new JsonStateFile(path, fresh, true);
  }
  return new JsonStateFile(path, MemoryState.fromData(parseState(text, path)), false);
}
