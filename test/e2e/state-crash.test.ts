// kill -9 of a process writing the state store (src/volumes/state-file.ts), at random points, 24 rounds
// on one data directory. The child (this file in child mode) runs 8 transactions in flight at a time,
// each recording a volume and its snapshot (two changes: all or nothing) and publishing an earlier
// volume, with a small compaction threshold so that kills also land inside compactions; it prints
// "A <n>" once transaction n has resolved (acknowledged). After each kill the parent opens the store:
// every acknowledged transaction must be there, no volume without its snapshot or the reverse, and the
// whole state must load (no error: a torn tail is cut, never mistaken for damage).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStateStore } from '../../src/volumes/state-file.js';
import type { SnapshotRecord, VolumeRecord } from '../../src/volumes/state.js';

const CHILD_ENV = 'LUNAR_STATE_CRASH_CHILD';
const ROUNDS = 24;
const COMPACT_BYTES = 16 * 1024;

const hex = (n: number): string => n.toString(16).padStart(16, '0');

function vol(n: number): VolumeRecord {
  return {
    id: `vol-${hex(n)}`,
    name: `crash-${n}`,
    sizeBytes: 1048576 * ((n % 4) + 1),
    createdSizeBytes: 1048576 * ((n % 4) + 1),
    thin: n % 5 !== 0,
    naa: '6024c4e0' + n.toString(16).padStart(24, '0'),
    serial: hex(n),
    chap: n % 3 === 0 ? { user: `u${n}`, secret: `secret-${n}-0123456789` } : null,
    allow: [],
    masked: true,
    portals: null,
    publications: {},
    parameters: { 'csi.storage.k8s.io/pvc/name': `claim-${n}`, pad: 'x'.repeat(n % 200) },
    createdAt: new Date(1_800_000_000_000 + n).toISOString(),
    reservations: {},
  };
}

function snap(n: number): SnapshotRecord {
  return {
    id: `snap-${hex(n)}`,
    name: `crash-snap-${n}`,
    sourceVolumeId: `vol-${hex(n)}`,
    sizeBytes: 1048576,
    createdAt: '2026-11-01T00:00:00.000Z',
  };
}

async function child(dataDir: string, start: number): Promise<void> {
  const s = await openStateStore(dataDir, { compactMinBytes: COMPACT_BYTES });
  process.stdout.write('READY\n');
  let next = start;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (;;) {
        const n = next++;
        await s.update((tx) => {
          tx.addVolume(vol(n));
          tx.addSnapshot(snap(n));
          const earlier = tx.volume(`vol-${hex(n - 5)}`);
          if (earlier) tx.setPublication(earlier.id, `node-${n % 3}`, `iqn.2026-11.test:node-${n}`);
        });
        // Pipes are written synchronously on Linux: once this returns, the parent has the line.
        process.stdout.write(`A ${n}\n`);
      }
    }),
  );
}

/** Run one child until a random moment after it is ready, kill -9 it; the acknowledged numbers. */
function round(dataDir: string, start: number, delayMs: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...process.env, [CHILD_ENV]: `${dataDir}:${start}` },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    let armed = false;
    c.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!armed && out.includes('READY\n')) {
        armed = true;
        setTimeout(() => c.kill('SIGKILL'), delayMs);
      }
    });
    const timer = setTimeout(() => {
      c.kill('SIGKILL');
      reject(new Error(`child not ready in 30 s: ${out.slice(-500)}`));
    }, 30_000);
    c.on('close', (code, sig) => {
      clearTimeout(timer);
      if (sig !== 'SIGKILL') {
        reject(new Error(`child ended with ${code ?? sig} before the kill: ${out.slice(-500)}`));
        return;
      }
      resolve([...out.matchAll(/^A (\d+)$/gm)].map((m) => Number(m[1])));
    });
  });
}

const childArg = process.env[CHILD_ENV];
if (childArg) {
  const i = childArg.lastIndexOf(':');
  await child(childArg.slice(0, i), Number(childArg.slice(i + 1)));
} else {
  test(
    `kill -9 at random points during many creates, ${ROUNDS} rounds: every acknowledged create survives, none half-applied`,
    { timeout: 300_000 },
    async () => {
      const dataDir = mkdtempSync(join(tmpdir(), 'lunar-state-crash-'));
      try {
        const acked = new Set<number>();
        let compactions = 0;
        let lastSnapshotJournal = '';
        for (let r = 0; r < ROUNDS; r++) {
          // Random kill points from just after the load to well into a burst.
          const delay = 1 + Math.floor(Math.random() * 150);
          for (const n of await round(dataDir, r * 100_000, delay)) acked.add(n);
          const s = await openStateStore(dataDir, { compactMinBytes: COMPACT_BYTES });
          try {
            for (const n of acked) {
              assert.ok(s.volume(vol(n).id), `round ${r}: acknowledged create ${n} lost (volume)`);
              assert.ok(s.snapshot(snap(n).id), `round ${r}: acknowledged create ${n} lost (snapshot)`);
            }
            for (const v of s.volumes()) {
              const n = Number.parseInt(v.id.slice(4), 16);
              assert.ok(s.snapshot(snap(n).id), `round ${r}: volume ${n} without its snapshot (half-applied)`);
              assert.deepEqual({ ...v, publications: {} }, vol(n), `round ${r}: volume ${n} recorded whole`);
            }
            for (const x of s.snapshots()) assert.ok(s.volume(x.sourceVolumeId), `round ${r}: snapshot ${x.id} without its volume`);
          } finally {
            await s.close();
          }
          const journal = readdirSync(dataDir).filter((n) => n.startsWith('state.journal.'));
          // Killed before the first write ever finished: nothing on disk yet, and nothing acknowledged.
          assert.equal(journal.length, acked.size > 0 ? 1 : journal.length, `round ${r}: one journal after load (${journal.join(' ')})`);
          assert.ok(journal.length <= 1, `round ${r}: at most one journal after load (${journal.join(' ')})`);
          if (journal[0] !== undefined && journal[0] !== lastSnapshotJournal) compactions++;
          lastSnapshotJournal = journal[0] ?? '';
        }
        process.stdout.write(`${acked.size} acknowledged creates, ${compactions} snapshots seen\n`);
        assert.ok(acked.size > ROUNDS, `the children acknowledged work (${acked.size})`);
        assert.ok(compactions > 1, `compactions happened between kills (${compactions})`);
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
  );
}
