// The one encoder of SCSI status and sense data: fixed-format sense (SPC-4 §4.5.3), the sense keys
// (SPC-4 §4.5.6) and additional sense codes (SPC-4 Annex D) Lunar reports, and the status-only
// responses (SAM-5 §5.3.1).
//
// Part of the SCSI contract together with ./types.ts: the transport (src/iscsi) may import this module
// to end a command it cannot hand to the device (Data-Out sequence errors, buffer limits). It is pure
// and imports only ./types.ts, so the transport reaches no command set through it.
import { ScsiStatus, type ScsiResponse } from './types.js';

/** SPC-4 §4.5.6 Table 48: sense keys. */
export const SenseKey = {
  NO_SENSE: 0x0,
  RECOVERED_ERROR: 0x1,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
  DATA_PROTECT: 0x7,
  BLANK_CHECK: 0x8,
  COPY_ABORTED: 0xa,
  ABORTED_COMMAND: 0xb,
  MISCOMPARE: 0xe,
} as const;

export interface AdditionalSense {
  readonly asc: number;
  readonly ascq: number;
}

const a = (asc: number, ascq: number): AdditionalSense => ({ asc, ascq });

/** SPC-4 Annex D, Table D.1: additional sense codes used here. */
export const Asc = {
  NO_ADDITIONAL_SENSE_INFORMATION: a(0x00, 0x00),
  WRITE_ERROR: a(0x0c, 0x00),
  /** RFC 7143 §11.4.7.2 "unexpected unsolicited data". */
  WRITE_ERROR_UNEXPECTED_UNSOLICITED_DATA: a(0x0c, 0x0c),
  /** RFC 7143 §11.4.7.2 "incorrect amount of data". */
  WRITE_ERROR_NOT_ENOUGH_UNSOLICITED_DATA: a(0x0c, 0x0d),
  COPY_TARGET_DEVICE_NOT_REACHABLE: a(0x0d, 0x02),
  UNRECOVERED_READ_ERROR: a(0x11, 0x00),
  PARAMETER_LIST_LENGTH_ERROR: a(0x1a, 0x00),
  MISCOMPARE_DURING_VERIFY_OPERATION: a(0x1d, 0x00),
  INVALID_COMMAND_OPERATION_CODE: a(0x20, 0x00),
  LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE: a(0x21, 0x00),
  INVALID_FIELD_IN_CDB: a(0x24, 0x00),
  LOGICAL_UNIT_NOT_SUPPORTED: a(0x25, 0x00),
  INVALID_FIELD_IN_PARAMETER_LIST: a(0x26, 0x00),
  PARAMETER_NOT_SUPPORTED: a(0x26, 0x01),
  INVALID_RELEASE_OF_PERSISTENT_RESERVATION: a(0x26, 0x04),
  TOO_MANY_TARGET_DESCRIPTORS: a(0x26, 0x06),
  UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE: a(0x26, 0x07),
  TOO_MANY_SEGMENT_DESCRIPTORS: a(0x26, 0x08),
  UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE: a(0x26, 0x09),
  WRITE_PROTECTED: a(0x27, 0x00),
  SPACE_ALLOCATION_FAILED_WRITE_PROTECT: a(0x27, 0x07),
  POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED: a(0x29, 0x00),
  POWER_ON_OCCURRED: a(0x29, 0x01),
  BUS_DEVICE_RESET_FUNCTION_OCCURRED: a(0x29, 0x03),
  MODE_PARAMETERS_CHANGED: a(0x2a, 0x01),
  RESERVATIONS_PREEMPTED: a(0x2a, 0x03),
  RESERVATIONS_RELEASED: a(0x2a, 0x04),
  REGISTRATIONS_PREEMPTED: a(0x2a, 0x05),
  CAPACITY_DATA_HAS_CHANGED: a(0x2a, 0x09),
  COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: a(0x2f, 0x00),
  SAVING_PARAMETERS_NOT_SUPPORTED: a(0x39, 0x00),
  REPORTED_LUNS_DATA_HAS_CHANGED: a(0x3f, 0x0e),
  INTERNAL_TARGET_FAILURE: a(0x44, 0x00),
  /** iSCSI data phase codes (SPC-4 Annex D, ASC 4Bh), used by the transport for Data-Out errors. */
  DATA_PHASE_ERROR: a(0x4b, 0x00),
  INVALID_TARGET_PORT_TRANSFER_TAG_RECEIVED: a(0x4b, 0x01),
  TOO_MUCH_WRITE_DATA: a(0x4b, 0x02),
  DATA_OFFSET_ERROR: a(0x4b, 0x05),
  INSUFFICIENT_REGISTRATION_RESOURCES: a(0x55, 0x04),
} as const;

export interface SenseOptions {
  /** INFORMATION field with the VALID bit set (SPC-4 §4.5.3), e.g. the miscompare offset of COMPARE AND WRITE (SBC-3 §5.2). */
  information?: number;
  /** Sense-key specific field pointer (SPC-4 §4.5.2.4.2) for ILLEGAL REQUEST. */
  field?: { cdb: boolean; byte: number; bit?: number };
}

/** SPC-4 §4.5.3: 18-byte fixed-format sense data, response code 70h (current error). */
export function encodeFixedSense(key: number, sense: AdditionalSense, opts: SenseOptions = {}): Buffer {
  const b = Buffer.alloc(18);
  b[0] = 0x70;
  b[2] = key & 0x0f;
  if (opts.information !== undefined) {
    b[0] |= 0x80;
    b.writeUInt32BE(opts.information >>> 0, 3);
  }
  b[7] = 10; // ADDITIONAL SENSE LENGTH
  b[12] = sense.asc;
  b[13] = sense.ascq;
  if (opts.field) {
    const f = opts.field;
    b[15] = 0x80 | (f.cdb ? 0x40 : 0) | (f.bit !== undefined ? 0x08 | (f.bit & 7) : 0);
    b.writeUInt16BE(f.byte & 0xffff, 16);
  }
  return b;
}

/** A SCSI-level failure raised by a command handler; becomes a CHECK CONDITION response. */
export class ScsiError extends Error {
  constructor(
    readonly key: number,
    readonly sense: AdditionalSense,
    readonly opts: SenseOptions = {},
  ) {
    super(`sense ${key.toString(16)}/${sense.asc.toString(16).padStart(2, '0')}/${sense.ascq.toString(16).padStart(2, '0')}`);
    this.name = 'ScsiError';
  }

  toResponse(): ScsiResponse {
    return checkCondition(this.key, this.sense, this.opts);
  }
}

/** CHECK CONDITION with fixed-format sense data: the only way a CHECK CONDITION response is built. */
export function checkCondition(key: number, sense: AdditionalSense, opts?: SenseOptions): ScsiResponse {
  return { status: ScsiStatus.CHECK_CONDITION, data: null, sense: encodeFixedSense(key, sense, opts) };
}

/** SAM-5 §5.3.1: RESERVATION CONFLICT carries no sense data. */
export const RESERVATION_CONFLICT: ScsiResponse = { status: ScsiStatus.RESERVATION_CONFLICT, data: null, sense: null };

/** SAM-5 §5.3.1: TASK SET FULL (out of task resources), no sense data. */
export const TASK_SET_FULL: ScsiResponse = { status: ScsiStatus.TASK_SET_FULL, data: null, sense: null };

/** SAM-5 §5.3.1: TASK ABORTED, no sense data. */
export const TASK_ABORTED: ScsiResponse = { status: ScsiStatus.TASK_ABORTED, data: null, sense: null };

/** ILLEGAL REQUEST / INVALID FIELD IN CDB with a field pointer to CDB byte (and bit). */
export function invalidFieldInCdb(byte: number, bit?: number): ScsiError {
  return new ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB, {
    field: bit === undefined ? { cdb: true, byte } : { cdb: true, byte, bit },
  });
}

/** ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST with a field pointer into the parameter data. */
export function invalidFieldInParameterList(byte: number, bit?: number): ScsiError {
  return new ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_PARAMETER_LIST, {
    field: bit === undefined ? { cdb: false, byte } : { cdb: false, byte, bit },
  });
}

export function lbaOutOfRange(): ScsiError {
  return new ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE);
}

export function parameterListLengthError(): ScsiError {
  return new ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.PARAMETER_LIST_LENGTH_ERROR);
}

export function invalidOpcode(): ScsiError {
  return new ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE, { field: { cdb: true, byte: 0 } });
}

export function writeProtected(): ScsiError {
  return new ScsiError(SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED);
}

/** SBC-3 §5.2 / §5.22: MISCOMPARE DURING VERIFY OPERATION, INFORMATION = offset of the first differing byte. */
export function miscompare(offset: number): ScsiError {
  return new ScsiError(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY_OPERATION, { information: offset });
}

/** Decode sense key / ASC / ASCQ from fixed or descriptor format sense data (for tests and logs). */
export function decodeSense(b: Buffer): { key: number; asc: number; ascq: number; information?: number } {
  const code = b[0]! & 0x7f;
  if (code === 0x72 || code === 0x73) return { key: b[1]! & 0x0f, asc: b[2]!, ascq: b[3]! };
  const out: { key: number; asc: number; ascq: number; information?: number } = {
    key: b[2]! & 0x0f,
    asc: b[12]!,
    ascq: b[13]!,
  };
  if (b[0]! & 0x80) out.information = b.readUInt32BE(3);
  return out;
}

/** Is this sense data DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT (27/07), what ENOSPC becomes? */
export function isSpaceAllocationFailure(sense: Buffer | null): boolean {
  if (!sense || sense.length < 4) return false;
  const code = sense[0]! & 0x7f;
  if (code !== 0x72 && code !== 0x73 && sense.length < 14) return false;
  const d = decodeSense(sense);
  const want = Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT;
  return d.key === SenseKey.DATA_PROTECT && d.asc === want.asc && d.ascq === want.ascq;
}

/**
 * Map a backing-store failure to sense data (sense keys of SPC-4 §4.5.6): EIO is a MEDIUM ERROR, an
 * exhausted file system a DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT (the thin provisioning
 * resource exhaustion of SBC-3), anything else a HARDWARE ERROR / INTERNAL TARGET FAILURE.
 */
export function ioErrorToScsi(e: unknown, writing: boolean): ScsiError {
  const code = typeof e === 'object' && e !== null && 'code' in e ? String(e.code) : '';
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new ScsiError(SenseKey.DATA_PROTECT, Asc.SPACE_ALLOCATION_FAILED_WRITE_PROTECT);
  }
  if (code === 'EIO') {
    return new ScsiError(SenseKey.MEDIUM_ERROR, writing ? Asc.WRITE_ERROR : Asc.UNRECOVERED_READ_ERROR);
  }
  return new ScsiError(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE);
}
