// Commands to a SCSI target device as the iSCSI transport hands them over, and the CDBs and parameter
// lists of the persistent-reservation tests (SPC-4 §6.15, §6.16). The I_T nexus comes from the
// transport's own buildNexus (src/iscsi/session.ts).
import assert from 'node:assert/strict';
import type { ITNexus, ScsiResponse, ScsiTargetDevice } from '../../src/scsi/types.js';

/**
 * One SIMPLE command on LUN 0 with the 16-byte CDB field of the BHS (RFC 7143 §11.3.5). dataOut null: a
 * read (when `expected` > 0) or no data; `expected` is the Expected Data Transfer Length.
 */
export async function execute(
  device: ScsiTargetDevice,
  nexus: ITNexus,
  cdb: Buffer,
  dataOut: Buffer | null,
  expected: number,
): Promise<ScsiResponse> {
  const cdb16 = Buffer.alloc(16);
  cdb.copy(cdb16);
  const r = await device.execute({
    nexus,
    lun: 0,
    taskTag: 1,
    attribute: 'simple',
    cdb: cdb16,
    expectedDataLength: expected,
    read: dataOut === null && expected > 0,
    write: dataOut !== null,
    dataOut,
  });
  assert.ok(r, 'the command was not aborted');
  return r;
}

/** A new nexus on the device, its power-on unit attention (SAM-5 §5.14) taken by TEST UNIT READY. */
export async function addNexus(device: ScsiTargetDevice, nexus: ITNexus): Promise<void> {
  device.nexusAdded(nexus);
  for (let i = 0; i < 3 && (await execute(device, nexus, Buffer.alloc(6), null, 0)).status !== 0; i++);
}

/** PERSISTENT RESERVE OUT CDB (SPC-4 §6.16.1): 5Fh, SERVICE ACTION, SCOPE/TYPE, PARAMETER LIST LENGTH (bytes 5-8). */
export function proutCdb(serviceAction: number, type = 0, listLength = 24, scope = 0): Buffer {
  const c = Buffer.alloc(10);
  c[0] = 0x5f;
  c[1] = serviceAction;
  c[2] = (scope << 4) | type;
  c.writeUInt32BE(listLength, 5);
  return c;
}

/** PERSISTENT RESERVE IN CDB (SPC-4 §6.15.1): 5Eh, SERVICE ACTION, ALLOCATION LENGTH (bytes 7-8). */
export function prinCdb(serviceAction: number, allocationLength = 8192): Buffer {
  const c = Buffer.alloc(10);
  c[0] = 0x5e;
  c[1] = serviceAction;
  c.writeUInt16BE(allocationLength, 7);
  return c;
}

/** The basic PERSISTENT RESERVE OUT parameter list (SPC-4 §6.16.3): RESERVATION KEY, SERVICE ACTION RESERVATION KEY, flags. */
export function proutParams(rk: bigint, sark: bigint, flags: { specIPt?: boolean; allTgPt?: boolean; aptpl?: boolean } = {}): Buffer {
  const p = Buffer.alloc(24);
  p.writeBigUInt64BE(rk, 0);
  p.writeBigUInt64BE(sark, 8);
  p[20] = (flags.specIPt ? 0x08 : 0) | (flags.allTgPt ? 0x04 : 0) | (flags.aptpl ? 0x01 : 0);
  return p;
}

/** The keys READ KEYS (SPC-4 §6.15.2) returns, as hex. */
export function readKeysOf(r: ScsiResponse): string[] {
  const d = r.data!;
  const keys: string[] = [];
  for (let o = 8; o < 8 + d.readUInt32BE(4); o += 8) keys.push(d.subarray(o, o + 8).toString('hex'));
  return keys;
}
