// Building ScsiResponses that respect the CDB's ALLOCATION LENGTH and the iSCSI ExpectedDataTransferLength.
import { ScsiStatus, type ScsiCommand, type ScsiResponse } from './types.js';

export const GOOD: ScsiResponse = { status: ScsiStatus.GOOD, data: null, sense: null };

/** GOOD with no data; transferLength = bytes the CDB asked to move (for residual counts). */
export function good(transferLength?: number): ScsiResponse {
  return transferLength === undefined ? GOOD : { status: ScsiStatus.GOOD, data: null, sense: null, transferLength };
}

/**
 * SPC-4 §4.2.5.6: return at most allocationLength bytes of the parameter data, never more than the
 * transport's expected length. transferLength = what the device server would have sent.
 */
export function dataIn(cmd: ScsiCommand, data: Buffer, allocationLength: number): ScsiResponse {
  const want = Math.min(data.length, allocationLength);
  const n = Math.min(want, cmd.expectedDataLength);
  return {
    status: ScsiStatus.GOOD,
    data: n === data.length ? data : data.subarray(0, n),
    sense: null,
    transferLength: want,
  };
}

/**
 * GOOD with parameter data cut to ALLOCATION LENGTH (SPC-4 §4.2.5.6), for device servers that do not see
 * the ScsiCommand; the LU cuts it to ExpectedDataTransferLength (lu.ts clampToExpected).
 */
export function allocated(data: Buffer, allocationLength: number): ScsiResponse {
  return { status: ScsiStatus.GOOD, data: data.length > allocationLength ? data.subarray(0, allocationLength) : data, sense: null };
}

/** The first `length` bytes of the Data-Out buffer (may be shorter when the initiator sent less). */
export function parameterList(cmd: ScsiCommand, length: number): Buffer {
  const d = cmd.dataOut;
  if (!d || length === 0) return Buffer.alloc(0);
  return d.length <= length ? d : d.subarray(0, length);
}
