// Persistent reservations through the volume manager are durable or refused: when the state file cannot
// be written, PERSISTENT RESERVE OUT ends with CHECK CONDITION, the LU keeps its old reservation state,
// and neither memory nor disk keeps the refused change (real data directory, real SCSI device).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IscsiServer } from '../../src/iscsi/server.js';
import { VolumeManager } from '../../src/volumes/manager.js';
import { VolumeTargetRegistry } from '../../src/target/registry.js';
import { decodeSense } from '../../src/scsi/sense.js';
import type { ITNexus, ScsiResponse } from '../../src/scsi/types.js';
import { buildNexus } from '../../src/iscsi/session.js';
import { addNexus, execute, prinCdb, proutCdb, proutParams, readKeysOf } from '../support/scsi.js';
import { liveJournal, stateOnDisk } from '../support/state-on-disk.js';

const run = promisify(execFile);

const MiB = 1024 * 1024;
const portals = [{ host: '127.0.0.1', port: 13340, tpgt: 1 }];

function nexusOf(initiator: string, iqn: string): ITNexus {
  return buildNexus(initiator, '400001370000', iqn, 1);
}

/** A command to the volume's target device. */
function exec(
  reg: VolumeTargetRegistry,
  iqn: string,
  n: ITNexus,
  cdb: Buffer,
  dataOut: Buffer | null,
  expected: number,
): Promise<ScsiResponse> {
  return execute(reg.findTarget(iqn)!.device, n, cdb, dataOut, expected);
}

/** PERSISTENT RESERVE OUT / REGISTER AND IGNORE EXISTING KEY with this service action reservation key, APTPL=1. */
const registerCdb = proutCdb(0x06);
function registerParams(keyHex: string): Buffer {
  return proutParams(0n, BigInt(`0x${keyHex}`), { aptpl: true });
}

async function keysOf(reg: VolumeTargetRegistry, iqn: string, n: ITNexus): Promise<string[]> {
  const r = await exec(reg, iqn, n, prinCdb(0x00, 64), null, 64);
  assert.equal(r.status, 0, 'READ KEYS');
  return readKeysOf(r);
}

async function savedKeys(dir: string, id: string): Promise<string[]> {
  const s = await stateOnDisk(dir);
  return (s.volumes[id]?.reservations['0']?.registrations ?? []).map((r) => r.key);
}

test('a reservation change the state file cannot take is refused with CHECK CONDITION and leaves no trace', async () => {
  const d = await mkdtemp(join(tmpdir(), 'lunar-prd-'));
  try {
    const reg = new VolumeTargetRegistry(portals);
    let m = await VolumeManager.open({ dataDir: d, portals, registry: reg, sessions: new IscsiServer({ registry: reg }) });
    const v = await m.create({ name: 'pr', sizeBytes: MiB });
    const a = nexusOf('iqn.2026-11.test:a', v.iqn);
    const b = nexusOf('iqn.2026-11.test:b', v.iqn);
    for (const n of [a, b]) await addNexus(reg.findTarget(v.iqn)!.device, n);
    assert.equal((await exec(reg, v.iqn, a, registerCdb, registerParams('00000000000000a1'), 24)).status, 0);
    assert.deepEqual(await savedKeys(d, v.id), ['00000000000000a1']);

    // The state journal becomes immutable under the running manager (as root, permission bits would
    // not stop the write): every append now fails with EPERM. Volume files stay open.
    const journal = await liveJournal(d);
    await run('chattr', ['+i', journal]);
    const refused = await exec(reg, v.iqn, b, registerCdb, registerParams('00000000000000b2'), 24);
    assert.equal(refused.status, 2, 'CHECK CONDITION, not GOOD');
    assert.deepEqual(decodeSense(refused.sense!), { key: 0x04, asc: 0x44, ascq: 0x00 }, 'HARDWARE ERROR / INTERNAL TARGET FAILURE');
    assert.deepEqual(await keysOf(reg, v.iqn, a), ['00000000000000a1'], 'READ KEYS shows the old state');
    await run('chattr', ['-i', journal]);
    assert.deepEqual(await savedKeys(d, v.id), ['00000000000000a1'], 'nothing of the refused change on disk');

    // The next save of the state (another volume) must not carry the refused change either.
    await m.create({ name: 'other', sizeBytes: MiB });
    assert.deepEqual(await savedKeys(d, v.id), ['00000000000000a1'], 'nothing of the refused change in memory');

    // With the journal writable again, the same command succeeds and survives a restart.
    assert.equal((await exec(reg, v.iqn, b, registerCdb, registerParams('00000000000000b2'), 24)).status, 0);
    assert.deepEqual((await savedKeys(d, v.id)).sort(), ['00000000000000a1', '00000000000000b2']);
    await m.close();
    const reg2 = new VolumeTargetRegistry(portals);
    m = await VolumeManager.open({ dataDir: d, portals, registry: reg2, sessions: new IscsiServer({ registry: reg2 }) });
    try {
      await addNexus(reg2.findTarget(v.iqn)!.device, a);
      assert.deepEqual((await keysOf(reg2, v.iqn, a)).sort(), ['00000000000000a1', '00000000000000b2']);
    } finally {
      await m.close();
    }
  } finally {
    await run('chattr', ['-R', '-i', d]).catch(() => undefined);
    await rm(d, { recursive: true, force: true });
  }
});
