// The state store's records as its files hold them (state.json + the records of its journal), read
// directly without opening a store: for tests that check what is durable, not what is in memory.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeJournal } from '../../src/volumes/journal-codec.js';
import { journalName, STATE_FILE } from '../../src/volumes/state-file.js';
import { parseRecord, parseState } from '../../src/volumes/state-json.js';
import type { SnapshotRecord, VolumeRecord } from '../../src/volumes/state.js';

/** Path of the journal state.json names (the one appended to). */
export async function liveJournal(dataDir: string): Promise<string> {
  const snap = parseState(await readFile(join(dataDir, STATE_FILE), 'utf8'), STATE_FILE);
  return join(dataDir, journalName(snap.seq));
}

export async function stateOnDisk(
  dataDir: string,
): Promise<{ volumes: Record<string, VolumeRecord>; snapshots: Record<string, SnapshotRecord> }> {
  const snap = parseState(await readFile(join(dataDir, STATE_FILE), 'utf8'), STATE_FILE);
  const volumes = new Map(Object.entries(snap.data.volumes));
  const snapshots = new Map(Object.entries(snap.data.snapshots));
  const journal = join(dataDir, journalName(snap.seq));
  for (const r of decodeJournal(await readFile(journal), journal).records) {
    for (const c of parseRecord(r.payload.toString('utf8'), journal).changes) {
      if (c.kind === 'volume') {
        if (c.record) volumes.set(c.id, c.record);
        else volumes.delete(c.id);
      } else if (c.record) snapshots.set(c.id, c.record);
      else snapshots.delete(c.id);
    }
  }
  return { volumes: Object.fromEntries(volumes), snapshots: Object.fromEntries(snapshots) };
}
