// Typed errors of the iSCSI transport. Decoders and state machines throw only these, so that a
// connection can map every failure to a protocol answer (Reject reason, login status) or a close.

/** RFC 7143 §11.17.1 Reject reason codes. */
export const RejectReason = {
  DATA_DIGEST_ERROR: 0x02,
  SNACK_REJECT: 0x03,
  PROTOCOL_ERROR: 0x04,
  COMMAND_NOT_SUPPORTED: 0x05,
  IMMEDIATE_COMMAND_REJECT: 0x06,
  TASK_IN_PROGRESS: 0x07,
  INVALID_DATA_ACK: 0x08,
  INVALID_PDU_FIELD: 0x09,
  LONG_OPERATION_REJECT: 0x0a,
  NEGOTIATION_RESET: 0x0b,
  WAITING_FOR_LOGOUT: 0x0c,
} as const;
export type RejectReasonCode = (typeof RejectReason)[keyof typeof RejectReason];

/**
 * A PDU (or byte stream) that breaks the protocol. `reason` is the Reject reason to answer with;
 * `fatal` says the connection cannot continue (framing lost, ERL 0 recovery = drop the connection).
 */
export class IscsiProtocolError extends Error {
  override readonly name = 'IscsiProtocolError';
  constructor(
    message: string,
    readonly reason: RejectReasonCode = RejectReason.PROTOCOL_ERROR,
    readonly fatal = false,
  ) {
    super(message);
  }
}

/** A text segment (RFC 7143 §6) that cannot be parsed. */
export class IscsiTextError extends Error {
  override readonly name = 'IscsiTextError';
}

/** A login that must end with a non-zero status class/detail (RFC 7143 §11.13.5). */
export class LoginFailure extends Error {
  override readonly name = 'LoginFailure';
  constructor(
    readonly statusClass: number,
    readonly statusDetail: number,
    message: string,
  ) {
    super(message);
  }
}
