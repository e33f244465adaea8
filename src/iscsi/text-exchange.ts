// The text exchange of full feature phase (RFC 7143 §11.10, §11.11, §6.2): a request gathered across
// PDUs sent with the C bit, each answered by an empty response carrying a Target Transfer Tag to continue
// under; a response longer than one data segment split into chunks the initiator fetches one at a time
// with empty requests carrying our TTT. What the keys mean (SendTargets, negotiation) is the session's
// `answer`; this module owns only the continuation state, so that the session does not.
import { IscsiTextError, RejectReason, type RejectReasonCode } from './errors.js';
import { RESERVED_TAG, type TextRequest } from './pdu.js';
import { encodeText, parseText, splitText, TextAssembler, type TextPair } from './text.js';

/** What the session sends for one Text Request. */
export type TextStep =
  | { readonly kind: 'respond'; readonly payload: Buffer; readonly final: boolean; readonly continue: boolean; readonly ttt: number }
  | { readonly kind: 'reject'; readonly reason: RejectReasonCode };

/** The session's meaning of a whole request: the response pairs, or null to refuse it (Reject, PROTOCOL ERROR). */
export type TextAnswer = (pairs: TextPair[]) => TextPair[] | null;

const EMPTY = Buffer.alloc(0);

export class TextExchange {
  private readonly requestText = new TextAssembler();
  /** The rest of a response being fetched under `ttt` (§6.2). */
  private responseOut: { ttt: number; itt: number; chunks: Buffer[] } | null = null;
  /** The TTT we gave for the next part of a request the initiator continues (§11.10.2). */
  private requestTtt: number | null = null;
  private requestItt = RESERVED_TAG;

  /** allocTtt: the session's one TTT counter (shared with R2T and NOP-In, §11.7.4). */
  constructor(private readonly allocTtt: () => number) {}

  /**
   * One Text Request. maxSegment is read after `answer` ran, because a MaxRecvDataSegmentLength
   * negotiated in the same request applies to its own response (§13.12).
   */
  step(pdu: TextRequest, data: Buffer, answer: TextAnswer, maxSegment: () => number): TextStep {
    if (pdu.targetTransferTag !== RESERVED_TAG) {
      const out = this.responseOut;
      if (out && out.ttt === pdu.targetTransferTag && out.itt === pdu.initiatorTaskTag) {
        // Continuation of a long response we are sending (§6.2: empty request carrying our TTT).
        const chunk = out.chunks.shift()!;
        const last = out.chunks.length === 0;
        if (last) this.responseOut = null;
        return respond(chunk, last, !last, last ? RESERVED_TAG : out.ttt);
      }
      if (this.requestTtt === null || this.requestTtt !== pdu.targetTransferTag || this.requestItt !== pdu.initiatorTaskTag) {
        return { kind: 'reject', reason: RejectReason.INVALID_PDU_FIELD };
      }
      // Otherwise: the next part of a request the initiator continues (C bit) under our TTT.
    } else if (this.requestText.pending && this.requestItt !== pdu.initiatorTaskTag) {
      // §11.10: a new text exchange replaces an unfinished one.
      this.requestText.reset();
    }
    this.responseOut = null;
    this.requestTtt = null;
    this.requestItt = pdu.initiatorTaskTag;
    let pairs: TextPair[];
    try {
      const text = this.requestText.push(data, pdu.continue);
      if (text === null) {
        // §11.10.2: more request text follows; answer with an empty response and a TTT to continue under.
        this.requestTtt = this.allocTtt();
        return respond(EMPTY, false, false, this.requestTtt);
      }
      pairs = parseText(text);
    } catch (e) {
      if (!(e instanceof IscsiTextError)) throw e;
      return { kind: 'reject', reason: RejectReason.PROTOCOL_ERROR };
    }
    const response = answer(pairs);
    if (response === null) return { kind: 'reject', reason: RejectReason.PROTOCOL_ERROR };
    const chunks = splitText(encodeText(response), maxSegment());
    if (chunks.length === 1) return respond(chunks[0]!, true, false, RESERVED_TAG);
    const ttt = this.allocTtt();
    this.responseOut = { ttt, itt: pdu.initiatorTaskTag, chunks: chunks.slice(1) };
    return respond(chunks[0]!, false, true, ttt);
  }
}

function respond(payload: Buffer, final: boolean, cont: boolean, ttt: number): TextStep {
  return { kind: 'respond', payload, final, continue: cont, ttt };
}
