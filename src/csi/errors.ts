// gRPC status errors for the CSI services and the mapping of VolumeError codes onto them
// (CSI spec "Error Scheme" and the per-RPC error tables).

import { status } from '@grpc/grpc-js';
import { VolumeError, type VolumeErrorCode } from '../volumes/types.js';

/** A CSI answer other than OK: a gRPC status code and a message saying what to fix. */
export class CsiError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
    this.name = 'CsiError';
  }
}

export const invalidArgument = (message: string): CsiError => new CsiError(status.INVALID_ARGUMENT, message);
export const notFound = (message: string): CsiError => new CsiError(status.NOT_FOUND, message);
export const alreadyExists = (message: string): CsiError => new CsiError(status.ALREADY_EXISTS, message);
export const failedPrecondition = (message: string): CsiError => new CsiError(status.FAILED_PRECONDITION, message);
export const outOfRange = (message: string): CsiError => new CsiError(status.OUT_OF_RANGE, message);
export const aborted = (message: string): CsiError => new CsiError(status.ABORTED, message);

const VOLUME_ERROR_STATUS: Readonly<Record<VolumeErrorCode, status>> = {
  'invalid-argument': status.INVALID_ARGUMENT,
  'not-found': status.NOT_FOUND,
  'already-exists': status.ALREADY_EXISTS,
  'out-of-range': status.OUT_OF_RANGE,
  'resource-exhausted': status.RESOURCE_EXHAUSTED,
  // The volume layer is busy with another operation on the same object: the spec's
  // "operation pending for volume", which the CO retries with back-off.
  busy: status.ABORTED,
  'failed-precondition': status.FAILED_PRECONDITION,
  internal: status.INTERNAL,
};

export function volumeErrorStatus(code: VolumeErrorCode): status {
  return VOLUME_ERROR_STATUS[code];
}

/** Any thrown value -> CsiError. VolumeError codes map by table; anything else is INTERNAL. */
export function toCsiError(err: unknown): CsiError {
  if (err instanceof CsiError) return err;
  if (err instanceof VolumeError) return new CsiError(volumeErrorStatus(err.code), err.message);
  if (err instanceof Error) {
    const errno = (err as NodeJS.ErrnoException).code;
    if (errno === 'ENOSPC' || errno === 'EDQUOT') {
      return new CsiError(status.RESOURCE_EXHAUSTED, `not enough space in the data directory: ${err.message}`);
    }
    return new CsiError(status.INTERNAL, `internal error: ${err.message}`);
  }
  return new CsiError(status.INTERNAL, `internal error: ${String(err)}`);
}
